"""The project's error types: each message says what was expected, what came and the fix."""

from __future__ import annotations

__all__ = ["LnccError", "ConfigError", "InputError"]


class LnccError(Exception):
    """Base class of the errors lncc reports to users (CLI exit code 2)."""


class ConfigError(LnccError, ValueError):
    """The configuration is invalid: names the key path, the value and the fix."""


class InputError(LnccError, ValueError):
    """The input arrays (or the output path) cannot be used as given."""
