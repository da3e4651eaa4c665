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
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ..errors import InputError

__all__ = ["INTERPOLATIONS", "SUPPORT", "taps", "source_span", "resample", "shift_region", "shift_image",
           "as_missing"]

#: The interpolation kernels, by config name.
INTERPOLATIONS = ("linear", "cubic", "lanczos3")

#: Each kernel's half-width: its taps are ``k = -(r - 1) .. r`` around the integer part of the source position.
SUPPORT = {"linear": 1, "cubic": 2, "lanczos3": 3}


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
def _resample(src, wy, wx, tmp, out):
    ny, nx = wy.shape[0], wx.shape[0]
    h, w = out.shape
    for i in range(src.shape[0]):  # along x first, every source row the outputs need
        for j in range(w):
            acc = 0.0
            for q in range(nx):
                acc += wx[q] * src[i, j + q]
            tmp[i, j] = acc
    for i in range(h):
        for j in range(w):
            acc = 0.0
            for p in range(ny):
                acc += wy[p] * tmp[i + p, j]
            out[i, j] = acc


def resample(src: np.ndarray, wy: np.ndarray, wx: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Separable resampling: ``out[i, j] = sum_p sum_q wy[p] wx[q] src[i + p, j + q]`` (float64 sums).

    ``src`` (float64, NaN = missing) has ``len(wy) - 1`` more rows and ``len(wx) - 1`` more columns than
    ``out``; a NaN anywhere in an output's taps makes it NaN. Leading axes of ``src`` and ``out`` are frames.
    """
    src = np.ascontiguousarray(src, dtype=np.float64)
    if src.ndim == 2:
        tmp = np.empty((src.shape[0], out.shape[1]))
        _resample(src, np.ascontiguousarray(wy, dtype=np.float64), np.ascontiguousarray(wx, dtype=np.float64),
                  tmp, out)
        return out
    for index in np.ndindex(*src.shape[:-2]):
        resample(src[index], wy, wx, out[index])
    return out


def shift_region(read, region: tuple[slice, slice], size: tuple[int, int], shift, kind: str,
                 out: np.ndarray) -> np.ndarray:
    """Fill ``out`` with the shifted moving image over ``region`` (a 2-D region of the reference's grid).

    ``read(source_region, target)`` fills ``target`` (float64) with the moving image's values over
    ``source_region`` (step-1 slices inside the image), missing pixels as NaN; ``size`` is the moving
    image's ``(height, width)``. Source pixels outside the image are NaN. This is the one place a shifted
    block is computed: whole images, stored blocks and dask blocks all come through it.
    """
    plans = [taps(float(s), kind) for s in shift]
    spans = [(r.start + first, r.stop + first + len(w) - 1) for r, (first, w) in zip(region, plans)]
    src = np.full(tuple(hi - lo for lo, hi in spans), np.nan)
    inside = [(max(lo, 0), min(hi, n)) for (lo, hi), n in zip(spans, size)]
    if all(a < b for a, b in inside):
        target = tuple(slice(a - lo, b - lo) for (a, b), (lo, _) in zip(inside, spans))
        read(tuple(slice(a, b) for a, b in inside), src[target])
    return resample(src, plans[0][1], plans[1][1], out)


def as_missing(values: np.ndarray, nodata=None, valid=None) -> np.ndarray:
    """``values`` as float64 with every missing pixel NaN: non-finite values, ``nodata``, False in ``valid``."""
    values = np.asarray(values)
    out = np.array(values, dtype=np.float64)  # always a copy
    out[~np.isfinite(out)] = np.nan
    if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
        out[values == nodata] = np.nan
    if valid is not None:
        out[~np.asarray(valid, dtype=bool)] = np.nan
    return out


def shift_image(image: np.ndarray, shift, kind: str = "cubic", *, nodata=None, valid=None) -> np.ndarray:
    """The whole moving image shifted onto the reference's grid, float32, NaN where a tap is missing.

    ``shift`` is ``(dy, dx)`` for a 2-D image; for ``(t, y, x)`` either one pair for every frame or an
    array of shape ``(t, 2)``. ``nodata`` and ``valid`` (a mask, True = valid) mark missing pixels too.
    """
    image = np.asarray(image)
    shifts = np.asarray(shift, dtype=np.float64)
    out = np.empty(image.shape, dtype=np.float32)
    frames = image.reshape((-1,) + image.shape[-2:])
    masks = None if valid is None else np.asarray(valid).reshape(frames.shape)
    for t in range(frames.shape[0]):
        frame_shift = shifts if shifts.ndim == 1 else shifts[t]

        def read(where, target, t=t):
            target[...] = as_missing(frames[t][where], nodata, None if masks is None else masks[t][where])

        whole = (slice(0, image.shape[-2]), slice(0, image.shape[-1]))
        shift_region(read, whole, image.shape[-2:], frame_shift, kind, out.reshape(frames.shape)[t])
    return out
