"""Subpixel shifts with local interpolation kernels: what a registered moving image holds at each pixel.

A shift ``s`` (scikit-image's convention: the shift that registers the moving image onto the reference)
gives output pixel ``i`` the moving image's value at ``i - s``. Writing ``-s = n + a`` with an integer
``n`` and ``0 <= a < 1``, the value is ``sum_k w_k(a) * moving[i + n + k]`` over the kernel's taps ``k``.

Every kernel here is *local* (linear: 2 taps, Keys cubic convolution: 4, Lanczos-3: 6): an output
pixel depends only on its taps, computed in one fixed order, so a shifted block equals the same
block of the shifted whole image bit for bit, whatever the chunking (scipy's spline ``shift`` prefilters
the whole array and would not). A pixel any of whose taps is missing (outside the moving image, NaN,
nodata or masked) is NaN: missing data, never reflected or zero-filled values. An integer shift
(``a == 0``) copies values exactly, with one tap.

The shifted image of an 8-bit image is kept in **fixed point**: int32 holding ``round(value * 2**16)``,
with :data:`MISSING` where it is missing: 1.5e-5 of a grey level, what float32 holds at full scale,
and it lets the NCC kernel's exact integer path run, about 2.5 times the float path's speed (NCC
ignores the scale). Other images (16-bit, whose low-range images would lose precision that way, float,
32- and 64-bit integers), and runs that report the moving image's std, are shifted into float32, NaN
where missing.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ..errors import InputError
from .threads import thread_buffer

__all__ = ["INTERPOLATIONS", "SUPPORT", "MISSING", "FRACTION_BITS", "shifted_dtype", "missing_value", "fixed_scale",
           "taps",
           "source_span", "resample", "shift_region", "shift_image", "as_missing"]

#: The interpolation kernels, by config name.
INTERPOLATIONS = ("linear", "cubic", "lanczos3")

#: Each kernel's half-width: its taps are ``k = -(r - 1) .. r`` around the integer part of the source position.
SUPPORT = {"linear": 1, "cubic": 2, "lanczos3": 3}


#: Fractional bits of the fixed-point shifted image, by the moving image's integer itemsize.
FRACTION_BITS = {1: 16}

#: The fixed-point shifted image's value where it is missing (int32's smallest: no image value reaches it).
MISSING = int(np.iinfo(np.int32).min)


def shifted_dtype(moving_dtype, reference_dtype=None, *, fixed: bool = True) -> np.dtype:
    """The dtype a shifted moving image is kept in: int32 fixed point for 8-bit images (and a reference, if
    given, of 8 or 16 bits: a pair read as one array has one dtype), else float32. ``fixed=False`` (a run
    that reports the moving image's std, in its own units) always gives float32."""
    moving = np.dtype(moving_dtype)
    reference = np.dtype(reference_dtype) if reference_dtype is not None else moving
    fixed = fixed and moving.kind in "iu" and moving.itemsize in FRACTION_BITS and reference.kind in "iu" \
        and reference.itemsize <= 2
    return np.dtype(np.int32) if fixed else np.dtype(np.float32)


def missing_value(dtype) -> float | None:
    """The nodata value marking missing pixels of a shifted image of ``dtype``: :data:`MISSING` for fixed point,
    None for float32 (NaN marks them)."""
    return MISSING if np.dtype(dtype) == np.int32 else None


def fixed_scale(moving_dtype, out_dtype) -> float:
    """The fixed-point scale of a shifted image (0.0: float output)."""
    if np.dtype(out_dtype) != np.int32:
        return 0.0
    return float(2 ** FRACTION_BITS[np.dtype(moving_dtype).itemsize])


def _kernel(kind: str, x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    if kind == "linear":
        return np.maximum(0.0, 1.0 - x)
    if kind == "cubic":  # Keys (1981) cubic convolution, a = -0.5: exact for quadratics
        return np.where(x <= 1, (1.5 * x - 2.5) * x * x + 1,
                        np.where(x < 2, ((-0.5 * x + 2.5) * x - 4) * x + 2, 0.0))
    if kind == "lanczos3":
        return np.where(x < 3, np.sinc(x) * np.sinc(x / 3), 0.0)
    raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {kind!r}")


def taps(shift: float, kind: str) -> tuple[int, np.ndarray]:
    """The taps of a shift along one axis: output ``i`` is ``sum_k weights[k] * source[i + first + k]``.

    Returns ``(first, weights)``: the offset of the first tap and the float64 weights (summing to 1).
    An integer shift has the single weight 1.
    """
    if kind not in SUPPORT:
        raise InputError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {kind!r}")
    if not math.isfinite(shift):
        raise InputError(f"a shift must be a finite number of pixels, got {shift!r}")
    position = -float(shift)
    n = math.floor(position)
    a = position - n
    if a == 0.0:
        return n, np.ones(1)
    r = SUPPORT[kind]
    k = np.arange(-(r - 1), r + 1)
    weights = _kernel(kind, a - k)
    return n - (r - 1), weights / weights.sum()  # Lanczos is not a partition of unity by itself


def source_span(start: int, stop: int, shift: float, kind: str) -> tuple[int, int]:
    """The source indices ``[lo, hi)`` the outputs ``[start, stop)`` of an axis read (before clipping)."""
    first, weights = taps(shift, kind)
    return start + first, stop + first + len(weights) - 1


@numba.njit(cache=True, nogil=True)
def _checked_tap_sum(raw, r, c0, nodata, has_nodata, valid, has_valid, wx):
    """One x-pass value with every tap checked: NaN when a tap is outside ``raw`` or missing."""
    rows, cols = raw.shape
    acc = 0.0
    for q in range(wx.shape[0]):
        c = c0 + q
        if r < 0 or r >= rows or c < 0 or c >= cols:
            return np.nan
        v = np.float64(raw[r, c])
        if not np.isfinite(v) or (has_nodata and v == nodata) or (has_valid and not valid[r, c]):
            return np.nan
        acc += wx[q] * v
    return acc


@numba.njit(cache=True, nogil=True, inline="always")
def _x_pass(raw, r, ox, nodata, has_nodata, valid, has_valid, wx, lo, hi, dest):
    """Source row ``r`` of the taps along x into ``dest`` (columns ``lo .. hi - 1`` have all their taps inside
    ``raw``): the same sum in the same order whichever branch computes a value."""
    rows = raw.shape[0]
    if has_nodata or has_valid or r < 0 or r >= rows:
        for j in range(dest.shape[0]):
            dest[j] = _checked_tap_sum(raw, r, j - ox, nodata, has_nodata, valid, has_valid, wx)
        return
    for j in range(lo):
        dest[j] = _checked_tap_sum(raw, r, j - ox, nodata, has_nodata, valid, has_valid, wx)
    for j in range(hi, dest.shape[0]):
        dest[j] = _checked_tap_sum(raw, r, j - ox, nodata, has_nodata, valid, has_valid, wx)
    inner = dest[lo:hi]  # 1-D views: numba vectorises these loops (not the 2-D indexing)
    for k in range(hi - lo):
        inner[k] = 0.0
    for q in range(wx.shape[0]):
        weight = wx[q]
        source = raw[r, lo + q - ox:hi + q - ox]
        for k in range(hi - lo):
            inner[k] += weight * np.float64(source[k])


@numba.njit(cache=True, nogil=True)
def _shift_kernel(raw, oy, ox, nodata, has_nodata, valid, has_valid, wy, wx, ring, out, scale):
    """The separable resampling of one frame, straight from the stored values.

    Source row ``i`` and column ``j`` of the taps (``i < out rows + len(wy) - 1``) are ``raw[i - oy, j - ox]``
    when inside ``raw`` and valid (finite, not ``nodata``, ``valid`` True), else missing (NaN): the
    conversion to float64 happens here, so no float64 copy of the source is ever made. With ``scale`` the
    output is fixed point: ``round(value * scale)``, :data:`MISSING` where missing.

    The x-pass of each source row goes into ``ring`` (``len(wy)`` rows, reused in turn), so what the y-pass
    reads stays in cache. Every value is the same sum in the same order, whichever branch computes it: the
    columns whose taps all lie inside ``raw`` skip the checks when nothing can be missing but non-finite
    values, which then propagate to a non-finite result (made missing at the end).
    """
    ny, nx = wy.shape[0], wx.shape[0]
    h, w = out.shape
    cols = raw.shape[1]
    lo = min(max(ox, 0), w)  # columns lo .. hi - 1 have all their taps inside raw
    hi = max(min(cols - nx + 1 + ox, w), lo)
    for i in range(ny - 1):
        _x_pass(raw, i - oy, ox, nodata, has_nodata, valid, has_valid, wx, lo, hi, ring[i])
    row = np.empty(w)
    for i in range(h):
        last = i + ny - 1
        _x_pass(raw, last - oy, ox, nodata, has_nodata, valid, has_valid, wx, lo, hi, ring[last % ny])
        for k in range(w):
            row[k] = 0.0
        for p in range(ny - 1):
            weight = wy[p]
            above = ring[(i + p) % ny]
            for k in range(w):
                row[k] += weight * above[k]
        weight, above = wy[ny - 1], ring[(i + ny - 1) % ny]  # the last tap, in the pass that writes the output
        target = out[i]
        if scale == 0.0:
            for k in range(w):
                acc = row[k] + weight * above[k]
                target[k] = acc if np.isfinite(acc) else np.nan
        else:
            for k in range(w):
                acc = row[k] + weight * above[k]
                if not np.isfinite(acc):
                    target[k] = _MISSING
                else:
                    target[k] = np.floor(acc * scale + 0.5)


_NO_MASK = np.ones((1, 1), dtype=np.bool_)
_MISSING = np.int32(MISSING)


def resample(raw: np.ndarray, wy: np.ndarray, wx: np.ndarray, out: np.ndarray, *, offset=(0, 0), nodata=None,
             valid: np.ndarray | None = None, scale: float = 0.0) -> np.ndarray:
    """Separable resampling: ``out[i, j] = sum_p sum_q wy[p] wx[q] src[i + p, j + q]`` in float64.

    ``src[i, j]`` is ``raw[i - offset[0], j - offset[1]]`` (any real dtype) where that lies inside ``raw``,
    is finite, is not ``nodata`` and is True in ``valid`` (``raw``'s shape); anything else is missing, and a
    missing value anywhere in an output's taps makes it NaN. ``out`` (float32 or float64; int32 for fixed
    point with ``scale``, see :func:`shifted_dtype`) is 2-D, or has leading frame axes shared with ``raw``.
    """
    if out.ndim > 2:
        for index in np.ndindex(*out.shape[:-2]):
            resample(raw[index], wy, wx, out[index], offset=offset, nodata=nodata,
                     valid=None if valid is None else valid[index], scale=scale)
        return out
    raw = raw if raw.dtype.kind in "biuf" and raw.dtype != np.float16 else raw.astype(np.float64)
    if raw.dtype.byteorder not in ("=", "|"):
        raw = raw.astype(raw.dtype.newbyteorder("="))
    check = nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata))
    if check and raw.dtype.kind == "f":  # compared as numpy compares it with the image: in the image's dtype
        nodata = float(raw.dtype.type(nodata))
    ring = thread_buffer("resample", (len(wy), out.shape[1]), np.float64)
    _shift_kernel(raw, int(offset[0]), int(offset[1]), float(nodata) if check else 0.0, check,
                  _NO_MASK if valid is None else np.asarray(valid, dtype=np.bool_), valid is not None,
                  np.ascontiguousarray(wy, dtype=np.float64), np.ascontiguousarray(wx, dtype=np.float64), ring, out,
                  float(scale))
    return out


def shift_region(read, region: tuple[slice, slice], size: tuple[int, int], shift, kind: str,
                 out: np.ndarray, *, nodata=None, read_valid=None, moving_dtype=None) -> np.ndarray:
    """Fill ``out`` with the shifted moving image over ``region`` (a 2-D region of the reference's grid).

    ``read(source_region)`` returns the moving image's stored values over ``source_region`` (step-1 slices
    inside the image, which is ``size`` = ``(height, width)``); ``read_valid`` likewise its mask (True =
    valid), if any; ``nodata`` is its nodata value. Source pixels outside the image are missing. An int32
    ``out`` is fixed point for a moving image of ``moving_dtype`` (see :func:`shifted_dtype`). This is
    the one place a shifted block is computed: whole images, stored blocks and dask blocks all come here.
    """
    plans = [taps(float(s), kind) for s in shift]
    spans = [(r.start + first, r.stop + first + len(w) - 1) for r, (first, w) in zip(region, plans)]
    inside = [(min(max(lo, 0), n), max(min(hi, n), 0)) for (lo, hi), n in zip(spans, size)]
    if any(a >= b for a, b in inside):  # nothing of the moving image under this region
        out[...] = MISSING if out.dtype == np.int32 else np.nan
        return out
    where = tuple(slice(a, b) for a, b in inside)
    offset = tuple(a - lo for (a, _), (lo, _) in zip(inside, spans))
    valid = None if read_valid is None else read_valid(where)
    raw = read(where)
    return resample(raw, plans[0][1], plans[1][1], out, offset=offset, nodata=nodata, valid=valid,
                    scale=fixed_scale(moving_dtype if moving_dtype is not None else raw.dtype, out.dtype))


def as_missing(values: np.ndarray, nodata=None, valid=None) -> np.ndarray:
    """``values`` as float64 with every missing pixel NaN: non-finite values, ``nodata``, False in ``valid``.

    Integer values with no ``nodata`` and no ``valid`` have nothing missing: they come back as they are (not
    copied, not converted: a whole video frame is kept in its 8 bits, and only the regions used are converted).
    """
    values = np.asarray(values)
    no_value = nodata is None or (isinstance(nodata, float) and math.isnan(nodata))
    if values.dtype.kind in "biu" and no_value and valid is None:
        return values
    out = np.array(values, dtype=np.float64)  # always a copy
    if values.dtype.kind not in "biu":  # integers are always finite
        out[~np.isfinite(out)] = np.nan
    if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
        out[values == nodata] = np.nan
    if valid is not None:
        out[~np.asarray(valid, dtype=bool)] = np.nan
    return out


def shift_image(image: np.ndarray, shift, kind: str = "cubic", *, nodata=None, valid=None,
                dtype=None) -> np.ndarray:
    """The whole moving image shifted onto the reference's grid, missing where a tap is missing.

    ``shift`` is ``(dy, dx)`` for a 2-D image; for ``(t, y, x)`` either one pair for every frame or an
    array of shape ``(t, 2)``. ``nodata`` and ``valid`` (a mask, True = valid) mark missing pixels too.
    The result's ``dtype`` is :func:`shifted_dtype`'s by default: int32 fixed point (:data:`MISSING` where
    missing) for 8- and 16-bit integer images, float32 (NaN) for the others; ``float32`` may be asked for.
    """
    image = np.asarray(image)
    shifts = np.asarray(shift, dtype=np.float64)
    out = np.empty(image.shape, dtype=shifted_dtype(image.dtype) if dtype is None else np.dtype(dtype))
    frames = image.reshape((-1,) + image.shape[-2:])
    masks = None if valid is None else np.asarray(valid, dtype=bool).reshape(frames.shape)
    whole = (slice(0, image.shape[-2]), slice(0, image.shape[-1]))
    for t, target in enumerate(out.reshape(frames.shape)):
        frame_shift = shifts if shifts.ndim == 1 else shifts[t]
        shift_region(lambda where, t=t: frames[t][where], whole, image.shape[-2:], frame_shift, kind, target,
                     nodata=nodata, read_valid=None if masks is None else (lambda where, t=t: masks[t][where]),
                     moving_dtype=image.dtype)
    return out
