"""The ``registration:`` section: align the moving image onto the reference before correlating."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..core.interpolation import INTERPOLATIONS
from .messages import short

__all__ = ["RegistrationConfig"]

_STRICT = ConfigDict(frozen=True, extra="forbid", strict=True, hide_input_in_errors=True)


class RegistrationConfig(BaseModel):
    """How the moving image is registered to the reference (scikit-image's shift convention, ``(y, x)``)."""

    model_config = _STRICT

    method: Literal["none", "translation", "local"] = "none"
    """``none``: correlate as given; ``translation``: one global subpixel shift (per frame for video),
    estimated or given as ``shift``; ``local``: the global shift, plus a shift per tile written as
    ``shift_field`` (the NCC map itself uses the global shift)."""
    upsample: Annotated[int, Field(ge=1, le=1000)] = 20
    """Subpixel precision of the phase-correlation step, 1/upsample px (a refinement follows)."""
    max_shift: Annotated[float, Field(gt=0)] = 200.0
    """Largest shift (px, per axis) an estimate may have; a larger one is an error, not a wrap-around."""
    shift: list[float] | list[list[float]] | None = None
    """A known shift ``[dy, dx]`` instead of an estimate; for video one for every frame ``[[dy, dx], ...]``
    or one pair for all frames."""
    reference_frame: Literal["each"] | Annotated[int, Field(ge=0)] = "each"
    """Video: ``each`` registers every moving frame to its own reference frame (and correlates it with that
    frame); an index registers every moving frame to that one reference frame and correlates it with it."""
    interpolation: Literal[INTERPOLATIONS] = "cubic"  # type: ignore[valid-type]
    """The local kernel that applies the fractional part of the shift (2, 4 or 6 taps per axis)."""
    tolerance: Annotated[float, Field(gt=0)] = 0.5
    """``translation``: tiles whose own shifts differ from the global one by more than this (px) mean the
    pair is not related by one translation: an error suggesting ``method: local``."""
    tile: Annotated[int, Field(ge=16)] = 64
    """``local``: the side (px) of the tiles that each get a shift."""
    search: Annotated[int, Field(ge=1)] | None = None
    """``local``: how far (px) a tile's shift may differ from the global one; default tile / 4."""

    @field_validator("reference_frame", mode="before")
    @classmethod
    def _frame(cls, value):
        if value == "each" or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            return value
        raise ValueError(f"expected each or a frame index >= 0, got {short(value)}")

    @field_validator("shift", mode="before")
    @classmethod
    def _numbers(cls, value):
        as_float = lambda v: float(v) if isinstance(v, int) and not isinstance(v, bool) else v  # noqa: E731
        if isinstance(value, list):
            return [[as_float(v) for v in item] if isinstance(item, list) else as_float(item) for item in value]
        return value

    @field_validator("shift")
    @classmethod
    def _pairs(cls, value):
        if value is None:
            return value
        rows = value if value and isinstance(value[0], list) else [value]
        if not rows or any(len(row) != 2 for row in rows):
            raise ValueError(f"expected [dy, dx] or one [dy, dx] per frame, got {short(value)}")
        if not all(math.isfinite(v) for row in rows for v in row):
            raise ValueError(f"expected finite shifts in pixels, got {short(value)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RegistrationConfig:
        if self.method == "none" and self.shift is not None:
            raise ValueError("shift is given but method is none; set method: translation to apply it "
                             "(or remove shift)")
        return self

    @property
    def enabled(self) -> bool:
        return self.method != "none"

    def known_shifts(self) -> list[tuple[float, float]] | None:
        """The given shift(s) as a list of (dy, dx), or None when they are to be estimated."""
        if self.shift is None:
            return None
        rows = self.shift if isinstance(self.shift[0], list) else [self.shift]
        return [(float(a), float(b)) for a, b in rows]

