"""The one base class of every problem with a user's input, files or environment.

`mnist-lit` shows these as one `error:` line naming the input and the fix, exit status 1;
anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem the user can fix; the message says which input is wrong and what would be right."""
