"""How config errors read: bounded reprs of what came, and one line per pydantic error with its fix."""

from __future__ import annotations

import reprlib
from typing import Any

from pydantic import ValidationError

__all__ = ["short", "clip", "describe", "format_errors", "NOT_SHOWN", "STORAGE_OPTIONS_EXPECTED"]


#: Errors listed in one message (the rest are counted), and characters of any one error's text.
_MAX_ERRORS = 10


_MAX_TEXT = 200


class _ShortRepr(reprlib.Repr):
    """reprlib's bounded repr, also for bytes (``!!binary``), which reprlib would repr whole before cutting."""

    def repr_bytes(self, value: bytes, level: int) -> str:
        text = repr(value[: self.maxstring])
        return text if len(value) <= self.maxstring else text[:-1] + "..." + text[-1]

    repr_bytearray = repr_bytes


_REPR = _ShortRepr()


_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 60


_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 60


_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 60


_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = 6


_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = 6


_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = 6


_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = 6


_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = 6


_REPR.maxlevel = 3


def short(value: Any) -> str:
    """A repr of at most ~100 characters, built without ever building the whole repr of ``value``."""
    return _REPR.repr(value)


def clip(text: str, limit: int = _MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(value: Any) -> str:
    return f"{short(value)} ({type(value).__name__})"


#: The message for any problem under storage_options, whose values are never echoed.
STORAGE_OPTIONS_EXPECTED = "expected a mapping of fsspec options such as endpoint_url, profile"


NOT_SHOWN = "(value not shown: it may hold credentials)"


def _storage_options_hint(error: dict[str, Any]) -> str:
    kind = type(error.get("input")).__name__
    came = f"a key of type {kind}" if "[key]" in error["loc"] else f"a value of type {kind}"
    return f"{STORAGE_OPTIONS_EXPECTED}, keyed by option name, got {came} {NOT_SHOWN}"


def _hint(error: dict[str, Any]) -> str:
    value = error.get("input")
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key; remove it or check its spelling (see configs/reference.yaml)"
    if kind == "missing":
        return "required key is missing"
    if isinstance(value, str) and kind in ("float_type", "int_type"):
        try:
            float(value)
        except ValueError:
            pass
        else:
            if "e" in value.lower() and "." not in value:
                return (f"expected a number, got the string {short(value)}: YAML 1.1 reads '1e-5' as a string; "
                        "write it with a dot (1.0e-5) or as 0.00001")
            return f"expected a number, got the string {short(value)}; write it without quotes"
    if isinstance(value, bool) and kind in ("float_type", "int_type"):
        return (f"expected a number, got {value} (bool): YAML 1.1 reads yes/no/on/off as booleans; "
                "write a number")
    if isinstance(value, bool) and kind in ("string_type", "literal_error"):
        expected = clip(error["msg"]).lower().removeprefix("input should be ")
        return (f"expected {expected}, got {value} (bool): YAML 1.1 reads no/yes/on/off as booleans; quote the value, "
                "e.g. 'no'")
    # pydantic's message text is not ours to trust for length: clip it.
    message = clip(error["msg"].removeprefix("Value error, "))
    if kind.startswith("value_error") or kind == "assertion_error":
        return message
    return f"{message[0].lower() + message[1:]}, got {describe(value)}"


def format_errors(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    parts = []
    for error in errors[:_MAX_ERRORS]:
        loc = error["loc"]
        if loc and loc[0] == "storage_options":
            parts.append(f"storage_options: {_storage_options_hint(error)}")
            continue
        # Mapping keys (under chunks, say) come from the file and can be any length.
        path = ".".join(clip(str(p), 60) for p in loc) or "(top level)"
        parts.append(f"{path}: {_hint(error)}")
    if len(errors) > _MAX_ERRORS:
        parts.append(f"and {len(errors) - _MAX_ERRORS:,} more errors")
    return "config error: " + "; ".join(parts)
