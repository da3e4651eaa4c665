"""Nodata: which pixels of a pair are invalid, and the one form nodata values take (a pair of values)."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["invalid_mask", "nodata_pair"]


def nodata_pair(nodata) -> tuple[float | None, float | None]:
    """Nodata as ``(reference, moving)``: a pair as it is, one value (or None) for both images."""
    if isinstance(nodata, tuple):
        return nodata
    return nodata, nodata


def invalid_mask(reference, moving, nodata=(None, None), reference_mask=None, moving_mask=None):
    """Pixels that are nodata in either image: NaN/Inf, a nodata value, or False in a mask.

    Works on numpy and dask arrays alike. Returns None when no pixel can be
    invalid (integer images without nodata values or masks).
    """
    parts = []
    for image, value, mask in ((reference, nodata[0], reference_mask), (moving, nodata[1], moving_mask)):
        if np.dtype(image.dtype).kind == "f":
            parts.append(~np.isfinite(image))
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            parts.append(image == value)
        if mask is not None:
            parts.append(~mask.astype(bool))
    if not parts:
        return None
    out = parts[0]
    for part in parts[1:]:
        out = out | part
    return out
