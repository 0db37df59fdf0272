"""The base classes of every problem with a user's input, files or environment.

`mnist-lit` shows these as one `error:` line naming the input and the fix, with exit status 2 for
bad arguments and 1 for bad files or the environment; anything else is a bug and keeps its
traceback.
"""


class UserError(Exception):
    """A problem the user can fix; the message says which input is wrong and what would be right."""

    exit_status = 1


class ConfigError(UserError, ValueError):
    """An argument value that cannot work, named by its flag."""

    exit_status = 2


def require(condition: bool, flag: str, value: object, expected: str) -> None:
    """Raise ConfigError `--flag value: must be expected` unless `condition` holds."""
    if not condition:
        raise ConfigError(f"--{flag} {value}: must be {expected}")
