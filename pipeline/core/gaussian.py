"""Local NCC with gaussian weights (as SSIM weighs its windows): the weighted Pearson correlation of each
window, for blocks already padded by the window's radius.

The weights are scipy.ndimage's truncated gaussian: ``w(d) = exp(-d**2 / (2 sigma**2))`` for
``|d| <= radius = int(truncate * sigma + 0.5)``, normalised to sum 1 along each axis, the 2-D weight the
product of the 1-D ones. Each window's weighted sums (of the valid weight, of both images, their squares
and their product) are made by two separable passes in float64 over values centred on the block's mean,
so the cost grows with the radius, not its square. Where a window's variance is too small for those sums
to resolve (nearly flat windows, large offsets) it is recomputed by the direct weighted two-pass formula.
A window is flat, and gets the ``flat`` value, when its valid values are all equal in either image:
decided by comparing them (a running minimum and maximum over the window), never by an epsilon.

This module holds the maths only: numpy in, numpy out.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["gaussian_radius", "gaussian_weights", "gaussian_ncc_padded"]

#: A window whose variance is below this share of its mean square is recomputed by the two-pass formula: the
#: one-pass sums lose about 1e-16 / share of the variance to rounding.
_RESOLVE = 1e-7


def gaussian_radius(sigma: float, truncate: float = 3.5) -> int:
    """The window radius of a gaussian of ``sigma`` pixels cut at ``truncate`` sigmas (scipy's rule)."""
    if not sigma > 0 or not math.isfinite(sigma):
        raise ValueError(f"sigma must be a positive number of pixels, got {sigma}")
    if not truncate > 0 or not math.isfinite(truncate):
        raise ValueError(f"truncate must be a positive number of sigmas, got {truncate}")
    return int(truncate * sigma + 0.5)


def gaussian_weights(sigma: float, truncate: float = 3.5) -> np.ndarray:
    """The normalised 1-D weights (length ``2 radius + 1``, float64), as scipy.ndimage.gaussian_filter's."""
    radius = gaussian_radius(sigma, truncate)
    d = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (d / sigma) ** 2)
    return w / w.sum()


@numba.njit(nogil=True, cache=True)
def _direct(a, b, m, masked, w, i, j, ca, cb, flat):
    """One window by the weighted two-pass formula (the windows the one-pass sums cannot resolve)."""
    n = w.size
    s0 = 0.0
    sa = 0.0
    sb = 0.0
    for y in range(n):
        for x in range(n):
            if masked and m[i + y, j + x]:
                continue
            wt = w[y] * w[x]
            s0 += wt
            sa += wt * (np.float64(a[i + y, j + x]) - ca)
            sb += wt * (np.float64(b[i + y, j + x]) - cb)
    ma, mb = sa / s0, sb / s0
    vaa = 0.0
    vbb = 0.0
    vab = 0.0
    for y in range(n):
        for x in range(n):
            if masked and m[i + y, j + x]:
                continue
            wt = w[y] * w[x]
            da = np.float64(a[i + y, j + x]) - ca - ma
            db = np.float64(b[i + y, j + x]) - cb - mb
            vaa += wt * da * da
            vbb += wt * db * db
            vab += wt * da * db
    if vaa <= 0.0 or vbb <= 0.0:
        return flat
    r = vab / math.sqrt(vaa * vbb)
    return min(1.0, max(-1.0, r))


@numba.njit(nogil=True, cache=True)
def _vertical(a, b, m, masked, w, ca, cb, i, v0, va, vb, vaa, vbb, vab, lo_a, hi_a, lo_b, hi_b):
    """The vertical pass for output row ``i``: each padded column's weighted sums over the window's rows, and
    the minimum and maximum of its valid values, row by row over whole rows."""
    cols = a.shape[1]
    v0[:] = 0.0
    va[:] = 0.0
    vb[:] = 0.0
    vaa[:] = 0.0
    vbb[:] = 0.0
    vab[:] = 0.0
    lo_a[:] = np.inf
    hi_a[:] = -np.inf
    lo_b[:] = np.inf
    hi_b[:] = -np.inf
    for y in range(w.size):
        wy = w[y]
        row = i + y
        for c in range(cols):
            if masked and m[row, c]:
                continue
            xa = np.float64(a[row, c])
            xb = np.float64(b[row, c])
            da = xa - ca
            db = xb - cb
            v0[c] += wy
            va[c] += wy * da
            vb[c] += wy * db
            vaa[c] += wy * da * da
            vbb[c] += wy * db * db
            vab[c] += wy * da * db
            lo_a[c] = min(lo_a[c], xa)
            hi_a[c] = max(hi_a[c], xa)
            lo_b[c] = min(lo_b[c], xb)
            hi_b[c] = max(hi_b[c], xb)


@numba.njit(nogil=True, cache=True)
def _frame(a, b, m, masked, w, ca, cb, flat, min_weight, out):
    n = w.size
    height, width = out.shape
    cols = a.shape[1]
    rows = np.empty((10, cols))  # the vertical pass's sums and extremes
    sums = np.empty((10, width))  # and the horizontal pass's, for one output row
    for i in range(height):
        _vertical(a, b, m, masked, w, ca, cb, i, rows[0], rows[1], rows[2], rows[3], rows[4], rows[5],
                  rows[6], rows[7], rows[8], rows[9])
        for k in range(6):
            sums[k, :] = 0.0
        for k in (6, 8):
            sums[k, :] = np.inf
            sums[k + 1, :] = -np.inf
        for x in range(n):
            wx = w[x]
            for k in range(6):
                acc = sums[k]
                src = rows[k]
                for j in range(width):
                    acc[j] += wx * src[j + x]
            for k in (6, 8):
                lo, hi = sums[k], sums[k + 1]
                slo, shi = rows[k], rows[k + 1]
                for j in range(width):
                    lo[j] = min(lo[j], slo[j + x])
                    hi[j] = max(hi[j], shi[j + x])
        for j in range(width):
            s0 = sums[0, j]
            if s0 < min_weight or sums[6, j] > sums[7, j]:
                out[i, j] = np.nan
                continue
            if sums[6, j] == sums[7, j] or sums[8, j] == sums[9, j]:
                out[i, j] = flat
                continue
            ma, mb = sums[1, j] / s0, sums[2, j] / s0
            saa, sbb = sums[3, j] / s0, sums[4, j] / s0
            var_a = saa - ma * ma
            var_b = sbb - mb * mb
            if var_a <= _RESOLVE * saa or var_b <= _RESOLVE * sbb:
                out[i, j] = _direct(a, b, m, masked, w, i, j, ca, cb, flat)
                continue
            r = (sums[5, j] / s0 - ma * mb) / math.sqrt(var_a * var_b)
            out[i, j] = min(1.0, max(-1.0, r))


def _centre(a: np.ndarray, valid: np.ndarray | None) -> float:
    values = a if valid is None else a[valid]
    values = values[np.isfinite(values)] if values.dtype.kind == "f" else values
    return float(np.mean(values, dtype=np.float64)) if values.size else 0.0


def gaussian_ncc_padded(a: np.ndarray, b: np.ndarray, sigma: float, truncate: float = 3.5, flat: float = 0.0, *,
                        invalid: np.ndarray | None = None, min_valid: float = 0.5,
                        out: np.ndarray | None = None) -> np.ndarray:
    """Gaussian-weighted local NCC of two blocks padded by ``gaussian_radius(sigma, truncate)`` on their last
    two axes.

    Parameters
    ----------
    a, b : ndarray
        Padded blocks of one shape, 2-D ``(y, x)`` or 3-D ``(t, y, x)``, any real dtype; NaN and +-inf in
        float blocks are nodata.
    sigma, truncate : float
        The gaussian's standard deviation (pixels) and where it is cut (sigmas).
    flat : float
        Value for windows whose valid values are all equal in either block.
    invalid : ndarray of bool, optional
        Padded like ``a``: True where a pixel is nodata in either image. A window then weighs only the valid
        pixels (its weights renormalised over them); with less than ``min_valid`` of its weight valid it
        is NaN.
    min_valid : float
        Share of the window's weight that must be valid, in [0, 1].
    out : ndarray of float32, optional
        Where to write the result.

    Returns
    -------
    ndarray of float32
        The unpadded shape; values in [-1, 1], ``flat`` or NaN.
    """
    w = gaussian_weights(sigma, truncate)
    radius = w.size // 2
    if a.shape != b.shape:
        raise ValueError(f"blocks of different shapes {a.shape} and {b.shape}")
    shape = a.shape[:-2] + (a.shape[-2] - 2 * radius, a.shape[-1] - 2 * radius)
    if min(shape[-2:]) < 1:
        raise ValueError(f"blocks of shape {a.shape} are smaller than twice the radius {radius}")
    nonfinite = [~np.isfinite(x) for x in (a, b) if x.dtype.kind == "f"]
    mask = invalid
    for extra in nonfinite:
        mask = extra if mask is None else (mask | extra)
    result = np.empty(shape, np.float32) if out is None else out
    frames = [(a, b, mask, result)] if a.ndim == 2 else [
        (a[k], b[k], None if mask is None else mask[k], result[k]) for k in range(a.shape[0])]
    for fa, fb, fm, fo in frames:
        valid = None if fm is None else ~fm
        ca, cb = _centre(fa, valid), _centre(fb, valid)
        m = np.zeros((1, 1), dtype=np.bool_) if fm is None else np.ascontiguousarray(fm)
        _frame(fa, fb, m, fm is not None, w, ca, cb, np.float64(flat), float(min_valid), fo)
    return result
