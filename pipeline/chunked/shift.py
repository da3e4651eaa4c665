"""A lazy shifted moving image for dask inputs: the integer part by slicing, the fractional part per block.

Each output block is :func:`pipeline.core.interpolation.resample` of its own source rows and columns plus
the kernel's few taps after them (``map_overlap`` with a one-sided halo), so it equals the same block of
:func:`pipeline.core.interpolation.shift_image` of the whole image bit for bit.
"""

from __future__ import annotations

import dask.array as da
import numpy as np

from ..core.interpolation import as_missing, fixed_scale, missing_value, resample, shift_image, shifted_dtype, taps
from ..core.masks import nodata_pair
from ..errors import InputError
from .graph import halo_chunks

__all__ = ["shift_dask", "apply_shift", "one_frame"]


def shift_dask(moving: da.Array, shift, kind: str, *, nodata=None, valid: da.Array | None = None,
               dtype=None) -> da.Array:
    """``moving`` shifted onto the reference's grid (same shape and chunks), missing where a tap is missing.

    ``shift`` is ``(dy, dx)``, or for ``(t, y, x)`` an array of shape ``(t, 2)``; ``nodata`` and ``valid``
    (True = valid) mark missing pixels, and ``dtype`` is the result's, as in
    :func:`pipeline.core.interpolation.shift_image`.
    """
    dtype = shifted_dtype(moving.dtype) if dtype is None else np.dtype(dtype)
    scale = fixed_scale(moving.dtype, dtype)
    args = [moving] + ([valid.rechunk(moving.chunks)] if valid is not None else [])
    # float64 even for integers with nothing missing: the source is padded with NaN below
    values = da.map_blocks(lambda v, m=None: np.asarray(as_missing(v, nodata, m), dtype=np.float64), *args,
                           dtype=np.float64,
                           meta=np.empty((0,) * moving.ndim))
    shifts = np.asarray(shift, dtype=np.float64)
    if moving.ndim == 2:
        return _shift_frame(values, shifts.reshape(2), kind, dtype, scale)
    frames = [_shift_frame(values[t], (shifts.reshape(-1, 2)[t] if shifts.size > 2 else shifts.reshape(2)), kind,
                           dtype, scale) for t in range(moving.shape[0])]
    return da.stack(frames).rechunk(moving.chunks)


def _shift_frame(values: da.Array, shift: np.ndarray, kind: str, dtype: np.dtype, scale: float) -> da.Array:
    plans = [taps(float(s), kind) for s in shift]
    if any(first >= size or first + size + len(w) - 1 <= 0 for (first, w), size in zip(plans, values.shape)):
        # No output pixel has a source inside the image: all missing (padding by the shift would not end).
        return da.full(values.shape, missing_value(dtype) or np.nan, dtype=dtype, chunks=values.chunks)
    source = values
    for axis, ((first, weights), size) in enumerate(zip(plans, values.shape)):
        length = size + len(weights) - 1  # source positions first .. first + length - 1
        lo, hi = max(0, -first), max(0, first + length - size)
        widths = [(0, 0), (0, 0)]
        widths[axis] = (lo, hi)
        padded = da.pad(source, widths, mode="constant", constant_values=np.nan) if lo or hi else source
        where = [slice(None), slice(None)]
        where[axis] = slice(first + lo, first + lo + length)
        source = padded[tuple(where)]
    extra = [len(w) - 1 for _, w in plans]
    # The output's chunks (at least as long as the halo), the last one extended by the taps after it.
    out_chunks = halo_chunks(values.chunks, max(extra + [1]))
    source = source.rechunk(tuple(c[:-1] + (c[-1] + e,) for c, e in zip(out_chunks, extra)))
    shifted = da.map_overlap(_resample_block, source, depth={0: (0, extra[0]), 1: (0, extra[1])},
                             boundary="none", trim=False, chunks=out_chunks, dtype=dtype,
                             meta=np.empty((0, 0), dtype=dtype), wy=plans[0][1], wx=plans[1][1], scale=scale)
    return shifted if shifted.chunks == values.chunks else shifted.rechunk(values.chunks)


def _resample_block(block: np.ndarray, *, wy: np.ndarray, wx: np.ndarray, scale: float) -> np.ndarray:
    out = np.empty((block.shape[0] - len(wy) + 1, block.shape[1] - len(wx) + 1),
                   dtype=np.int32 if scale else np.float32)
    return resample(block, wy, wx, out, scale=scale)


def apply_shift(reference, moving, shift, kind: str, nodata, moving_mask, *, fixed: bool = True):
    """The moving image shifted onto ``reference``'s grid, and the nodata and mask options that then apply.

    ``moving`` may be numpy or dask (the result is of the same kind); its nodata value and mask become NaN in
    the shifted image, so the result's ``(nodata, moving_mask)`` keep the reference's nodata value and the
    shifted image's own marker of missing pixels (:func:`pipeline.core.interpolation.missing_value`).
    ``fixed=False`` keeps the shifted image in float32 (for a std in the moving image's units).
    """
    shifts = np.asarray(shift, dtype=np.float64)
    frames = np.shape(moving)[0] if len(np.shape(moving)) == 3 else None
    if shifts.shape != (2,) and not (frames is not None and shifts.shape == (frames, 2)):
        wanted = "(dy, dx)" + ("" if frames is None else f" or one per frame, shape ({frames}, 2)")
        raise InputError(f"shift must be {wanted}, got an array of shape {shifts.shape}; give the shift in "
                         "pixels in (y, x) order (scikit-image's convention)")
    if not np.isfinite(shifts).all():
        raise InputError(f"shift must be finite numbers of pixels, got {shifts.tolist()}")
    if np.shape(reference) != np.shape(moving):
        raise InputError(f"reference and moving must have the same shape, got {np.shape(reference)} and "
                         f"{np.shape(moving)}")
    reference_nodata, moving_nodata = nodata_pair(nodata)
    dtype = shifted_dtype(moving.dtype, reference.dtype, fixed=fixed)
    if isinstance(moving, da.Array) or isinstance(moving_mask, da.Array):
        mask = None if moving_mask is None else da.asarray(moving_mask)
        shifted = shift_dask(da.asarray(moving), shifts, kind, nodata=moving_nodata, valid=mask, dtype=dtype)
    else:
        shifted = shift_image(np.asarray(moving), shifts, kind, nodata=moving_nodata, valid=moving_mask, dtype=dtype)
    return shifted, (reference_nodata, missing_value(dtype)), None


def one_frame(frames: da.Array, frame: int) -> da.Array:
    """A ``(t, y, x)`` array whose every frame is ``frames[frame]``, with ``frames``' chunks."""
    return da.broadcast_to(frames[frame:frame + 1], frames.shape).rechunk(frames.chunks)
