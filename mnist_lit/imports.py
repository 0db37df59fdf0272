"""Which packages configs, flags and environment variables may name classes from.

jsonargparse imports whatever a `class_path` names while parsing, so a shared config.yaml could
otherwise run any code; its import allowlist refuses the rest before anything is imported.
"""

import os

from jsonargparse import set_parsing_settings

from mnist_lit.errors import ConfigError

ALLOWED_IMPORTS = ["torch", "lightning", "torchmetrics", "mnist_lit"]
ALLOW_MORE = "MNIST_LIT_ALLOW_IMPORTS"  # comma-separated: users' own callbacks, loggers, ...


def allow_imports() -> None:
    """Deny every import path but ALLOWED_IMPORTS and those named in $MNIST_LIT_ALLOW_IMPORTS."""
    more = [name.strip() for name in os.environ.get(ALLOW_MORE, "").split(",") if name.strip()]
    try:
        set_parsing_settings(
            import_path_denylist=["*"], import_path_allowlist=ALLOWED_IMPORTS + more
        )
    except ValueError as error:
        raise ConfigError(f"{ALLOW_MORE}={os.environ[ALLOW_MORE]!r}: {error}") from None
