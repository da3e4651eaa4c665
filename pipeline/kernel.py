"""Local normalized cross-correlation of in-memory blocks (numpy in, numpy out).

This module holds the maths and nothing else: no dask, no zarr, no xarray.

The kernel is a fused, single-pass running-sum filter compiled with numba. For
every output pixel it keeps the five window sums ``Sx, Sy, Sxx, Syy, Sxy`` up to
date in O(1) work, whatever the window size, and derives

    ncc = (n Sxy - Sx Sy) / sqrt((n Sxx - Sx^2) (n Syy - Sy^2))

which is algebraically the textbook ``mean((x-mx)(y-my)) / (std(x) std(y))``.

Two accumulation paths keep it float64-accurate:

* **integers** (8- and 16-bit, and any integer data whose sums fit): the sums
  are exact ``int64``, so the variances are exact and a window is flat exactly
  when its variance is 0. Wider integers (32- and 64-bit) first become exact
  unsigned differences from the block's smallest valid value, so their sums
  are exact whenever the block's *range* (not its dtype) lets them be;
* **floats** (and integer blocks whose range is too wide for exact sums): the
  sums are float64 of values shifted by the block mean, restarted every
  ``_RESTART`` rows and columns to bound drift. Where a window's variance is
  too small for the running sums to resolve it to ~1e-7 (nearly flat windows,
  large offsets) the window is recomputed directly with the two-pass formula
  (for integers on exact differences from one of the window's own values), and
  flatness is decided by comparing the values themselves, never by an epsilon.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

__all__ = [
    "BOUNDARIES",
    "local_ncc_numpy",
    "ncc_padded",
    "warm_up",
    "pad",
    "nan_border",
    "pad_sources",
    "fill_border",
    "check_window",
    "invalid_mask",
]

#: Boundary modes, with scipy.ndimage's meaning for ``reflect`` and ``nearest``.
BOUNDARIES = ("reflect", "nearest", "constant", "nan")

_NUMPY_PAD_MODE = {"reflect": "symmetric", "nearest": "edge", "constant": "constant", "nan": "constant"}

# Running float64 sums are recomputed from scratch this often (rows and columns),
# so rounding drift stays below ~2 * _RESTART * 1.1e-16 of the block's magnitude.
_RESTART = 128
# A float window whose variance is below this fraction of the block's largest
# squared deviation is recomputed two-pass: there the running sums could not
# guarantee ~1e-7 on the NCC (worst-case drift bound; typical error is ~1e-9).
_FALLBACK_TOL = 1e-6


def check_window(window: int) -> int:
    """Validate a window side length and return its radius.

    Raises
    ------
    ValueError
        If ``window`` is not an odd integer >= 3.
    """
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)):
        raise TypeError(f"window must be an odd integer >= 3, got {window!r} ({type(window).__name__})")
    if window < 3:
        raise ValueError(f"window must be an odd integer >= 3, got {window}; use 3 or more")
    if window % 2 == 0:
        raise ValueError(f"window must be odd so that it has a centre pixel, got {window}; use {window - 1} or {window + 1}")
    return int(window) // 2


def pad(a: np.ndarray, radius: int, boundary: str) -> np.ndarray:
    """Pad the last two axes of ``a`` by ``radius`` according to ``boundary``.

    ``reflect`` is scipy's ``reflect`` (numpy's ``symmetric``: d c b a | a b c d),
    ``nearest`` repeats the edge value, ``constant`` and ``nan`` pad with zeros
    (``nan`` later blanks the border with :func:`nan_border`).
    """
    if boundary not in _NUMPY_PAD_MODE:
        raise ValueError(f"boundary must be one of {', '.join(BOUNDARIES)}, got {boundary!r}")
    widths = [(0, 0)] * (a.ndim - 2) + [(radius, radius)] * 2
    return np.pad(a, widths, mode=_NUMPY_PAD_MODE[boundary])


def pad_sources(start: int, stop: int, size: int, radius: int, boundary: str) -> np.ndarray:
    """The image index each padded position of an axis takes its value from, as :func:`pad` pads.

    Positions ``start - radius`` to ``stop + radius - 1`` of an axis of length
    ``size``; positions inside the image map to themselves, those outside to
    the position ``boundary`` copies (-1: the constant zero).
    """
    if boundary not in _NUMPY_PAD_MODE:
        raise ValueError(f"boundary must be one of {', '.join(BOUNDARIES)}, got {boundary!r}")
    i = np.arange(start - radius, stop + radius)
    if boundary == "reflect":  # numpy's symmetric, repeated for pads wider than the image: period 2 * size
        j = np.mod(i, 2 * size)
        return np.where(j >= size, 2 * size - 1 - j, j)
    if boundary == "nearest":
        return np.clip(i, 0, size - 1)
    return np.where((i >= 0) & (i < size), i, -1)


def fill_border(block: np.ndarray, start: tuple[int, int], full_shape: tuple[int, int], radius: int,
                boundary: str) -> None:
    """Fill, in place, the positions of a padded block that lie outside the image, as :func:`pad` would.

    ``block[..., i, j]`` stands for image pixel ``(start[0] - radius + i,
    start[1] - radius + j)``; wherever that pixel is inside the image, the block
    must already hold it. Each of the last two axes spans its block plus
    ``radius`` on both sides, so the positions to fill are the ones past the
    image's edges, and the values they copy (under ``reflect`` and ``nearest``)
    lie within the block.
    """
    ndim = block.ndim
    for axis in (ndim - 1, ndim - 2):  # x first on every row, then whole rows (corners as np.pad makes them)
        s, size, n = start[axis - ndim + 2], full_shape[axis - ndim + 2], block.shape[axis]
        sources = pad_sources(s, s + n - 2 * radius, size, radius, boundary)
        position = np.arange(s - radius, s - radius + n)
        outside = np.flatnonzero((position < 0) | (position >= size))
        if not outside.size:
            continue
        where = [slice(None)] * ndim
        where[axis] = outside
        if boundary in ("constant", "nan"):
            block[tuple(where)] = 0
        else:
            block[tuple(where)] = np.take(block, sources[outside] - (s - radius), axis=axis)


def nan_border(out: np.ndarray, radius: int, start: tuple[int, int], full_shape: tuple[int, int]) -> None:
    """Set to NaN, in place, the pixels of ``out`` whose window leaves the image.

    Parameters
    ----------
    out : ndarray
        Output block; its last two axes are (y, x).
    radius : int
        Window radius.
    start : (int, int)
        Position of ``out[..., 0, 0]`` in the full image.
    full_shape : (int, int)
        (height, width) of the full image.
    """
    h, w = out.shape[-2:]
    for axis, (s, size, n) in enumerate(zip(start, full_shape, (h, w))):
        lo = min(max(radius - s, 0), n)  # rows/cols closer than radius to the top/left edge
        hi = max(min(size - radius - s, n), 0)  # first row/col closer than radius to the far edge
        index = [slice(None)] * out.ndim
        index[out.ndim - 2 + axis] = slice(0, lo)
        out[tuple(index)] = np.nan
        index[out.ndim - 2 + axis] = slice(max(hi, lo), n)
        out[tuple(index)] = np.nan


@numba.njit(nogil=True, cache=True, inline="always")
def _add_column(j, x, y, cx, cy, cxx, cyy, cxy):
    cx[j] += x
    cy[j] += y
    cxx[j] += x * x
    cyy[j] += y * y
    cxy[j] += x * y


@numba.njit(nogil=True, cache=True, inline="always")
def _move_column(j, x, y, xo, yo, cx, cy, cxx, cyy, cxy):
    """Slide column sums down one row: add (x, y), drop (xo, yo)."""
    cx[j] += x - xo
    cy[j] += y - yo
    cxx[j] += x * x - xo * xo
    cyy[j] += y * y - yo * yo
    cxy[j] += x * y - xo * yo


@numba.njit(nogil=True, cache=True, inline="always")
def _row_sums(cx, cy, cxx, cyy, cxy, cc, hx, hy, hxx, hyy, hxy, hc, win, w, restart, counted):
    """Window sums along one row from the column sums, restarted every ``restart`` columns.

    The six running sums are interleaved so their dependency chains overlap;
    valid counts (``cc`` into ``hc``) are only summed when ``counted``.
    """
    for j0 in range(0, w, restart):
        zero = cx[j0] - cx[j0]  # zero of the sums' type (int64 or float64)
        sx = zero
        sy = zero
        sxx = zero
        syy = zero
        sxy = zero
        sc = cc[j0] - cc[j0]
        for q in range(j0, j0 + win - 1):
            sx += cx[q]
            sy += cy[q]
            sxx += cxx[q]
            syy += cyy[q]
            sxy += cxy[q]
            if counted:
                sc += cc[q]
        for j in range(j0, min(j0 + restart, w)):
            jn = j + win - 1
            sx += cx[jn]
            sy += cy[jn]
            sxx += cxx[jn]
            syy += cyy[jn]
            sxy += cxy[jn]
            hx[j] = sx
            hy[j] = sy
            hxx[j] = sxx
            hyy[j] = syy
            hxy[j] = sxy
            sx -= cx[j]
            sy -= cy[j]
            sxx -= cxx[j]
            syy -= cyy[j]
            sxy -= cxy[j]
            if counted:
                sc += cc[jn]
                hc[j] = sc
                sc -= cc[j]


@numba.njit(nogil=True, cache=True, fastmath=False)
def _finish(out, extra, i, j, n, c, min_count, vx, vy, cov, flat, unit_x=1.0, unit_y=1.0):
    """Write one pixel: NaN below ``min_count`` valid pixels, ``flat`` if either variance is 0.

    ``vx``, ``vy``, ``cov`` are the count-scaled moments (c Sxx - Sx^2, ...), in
    units where one image unit is ``1 / unit`` (the float path's normalisation).
    """
    if c < min_count or c == 0:
        out[i, j] = np.nan
    elif vx <= 0.0 or vy <= 0.0:
        out[i, j] = flat
    else:
        v = cov / math.sqrt(vx * vy)
        out[i, j] = min(max(v, -1.0), 1.0)
    if extra is not None:
        extra[0, i, j] = c / n
        if c < min_count or c == 0:
            extra[1, i, j] = np.nan
            extra[2, i, j] = np.nan
        else:
            extra[1, i, j] = math.sqrt(max(vx, 0.0)) / c * unit_x
            extra[2, i, j] = math.sqrt(max(vy, 0.0)) / c * unit_y


@numba.njit(nogil=True, cache=True, fastmath=False)
def _ncc_int(a, b, m, r, flat, min_count, out, extra):
    """Exact int64 running sums. ``a``, ``b`` (and the validity mask ``m``, or None)
    are padded by ``r`` on both axes; ``extra`` (or None) receives valid fraction and stds."""
    h, w = out.shape
    win = 2 * r + 1
    n = np.int64(win * win)
    wp = w + 2 * r
    cx = np.zeros(wp, np.int64)
    cy = np.zeros(wp, np.int64)
    cxx = np.zeros(wp, np.int64)
    cyy = np.zeros(wp, np.int64)
    cxy = np.zeros(wp, np.int64)
    cc = np.zeros(wp, np.int64)
    # Window sums of one output row: filled by a sequential pass, then used by a
    # loop without carried dependencies that the compiler can vectorise.
    hx = np.empty(w, np.int64)
    hy = np.empty(w, np.int64)
    hxx = np.empty(w, np.int64)
    hyy = np.empty(w, np.int64)
    hxy = np.empty(w, np.int64)
    hc = np.empty(w, np.int64)
    for i in range(h):
        first = i == 0
        k0 = i if first else i + 2 * r
        for k in range(k0, i + win):
            for j in range(wp):
                x = np.int64(a[k, j])
                y = np.int64(b[k, j])
                if m is not None:
                    valid = np.int64(m[k, j])
                    x *= valid
                    y *= valid
                    cc[j] += valid
                if not first:
                    xo = np.int64(a[i - 1, j])
                    yo = np.int64(b[i - 1, j])
                    if m is not None:
                        valid_o = np.int64(m[i - 1, j])
                        xo *= valid_o
                        yo *= valid_o
                        cc[j] -= valid_o
                    _move_column(j, x, y, xo, yo, cx, cy, cxx, cyy, cxy)
                else:
                    _add_column(j, x, y, cx, cy, cxx, cyy, cxy)
        _row_sums(cx, cy, cxx, cyy, cxy, cc, hx, hy, hxx, hyy, hxy, hc, win, w, w, m is not None)
        if m is None and extra is None:
            for j in range(w):
                vx = n * hxx[j] - hx[j] * hx[j]
                vy = n * hyy[j] - hy[j] * hy[j]
                c = n * hxy[j] - hx[j] * hy[j]
                d = math.sqrt(np.float64(vx) * np.float64(vy))
                v = np.float64(c) / d if d > 0.0 else flat
                v = min(max(v, -1.0), 1.0) if d > 0.0 else v
                out[i, j] = v
        else:
            for j in range(w):
                c = n if m is None else hc[j]
                vx = c * hxx[j] - hx[j] * hx[j]
                vy = c * hyy[j] - hy[j] * hy[j]
                cov = c * hxy[j] - hx[j] * hy[j]
                _finish(out, extra, i, j, n, c, min_count, np.float64(vx), np.float64(vy), np.float64(cov), flat)


@numba.njit(nogil=True, cache=True, inline="always")
def _delta(v, v0):
    """``v - v0`` of two integers as float64, without wrapping around for any integer width.

    The subtraction is done in the integers (numba widens it to 64 bits), so
    the only rounding is the final conversion; signed 64-bit inputs must not
    reach here (their difference can overflow int64), unsigned ones may.
    """
    return np.float64(v - v0) if v >= v0 else -np.float64(v0 - v)


@numba.njit(nogil=True, cache=True, fastmath=False)
def _two_pass(a, b, m, i0, j0, win, shift_x, shift_y, inv_x, inv_y, rel_x, rel_y):
    """Direct two-pass moments of the window at (i0, j0), over its valid pixels.

    Returns (count, vx, vy, cov) scaled like the running sums (count * centred
    sums); a variance is exactly 0 when all valid values are equal. An image
    with ``rel`` (integer data) enters as exact differences from the window's
    first valid value, in image units; otherwise as ``(x - shift) * inv``.
    """
    count = 0
    flat_x = True
    flat_y = True
    x0 = a[i0, j0]
    y0 = b[i0, j0]
    mx = 0.0
    my = 0.0
    for k in range(i0, i0 + win):
        for q in range(j0, j0 + win):
            if m is not None:
                if m[k, q] == 0:
                    continue
            xr = a[k, q]
            yr = b[k, q]
            if count == 0:
                x0 = xr
                y0 = yr
            else:
                # On the stored values: two wide integers may round to the same float64.
                if xr != x0:
                    flat_x = False
                if yr != y0:
                    flat_y = False
            count += 1
            mx += _delta(xr, x0) if rel_x else (np.float64(xr) - shift_x) * inv_x
            my += _delta(yr, y0) if rel_y else (np.float64(yr) - shift_y) * inv_y
    if count == 0:
        return 0, 0.0, 0.0, 0.0
    mx /= count
    my /= count
    sxx = 0.0
    syy = 0.0
    sxy = 0.0
    for k in range(i0, i0 + win):
        for q in range(j0, j0 + win):
            if m is not None:
                if m[k, q] == 0:
                    continue
            dx = (_delta(a[k, q], x0) if rel_x else (np.float64(a[k, q]) - shift_x) * inv_x) - mx
            dy = (_delta(b[k, q], y0) if rel_y else (np.float64(b[k, q]) - shift_y) * inv_y) - my
            sxx += dx * dx
            syy += dy * dy
            sxy += dx * dy
    c = np.float64(count)
    # Flatness is decided on the values themselves; the sums only give the size.
    return count, 0.0 if flat_x else c * sxx, 0.0 if flat_y else c * syy, c * sxy


@numba.njit(nogil=True, cache=True, fastmath=False)
def _ncc_float(a, b, m, r, flat, min_count, shift_x, shift_y, inv_x, inv_y, rel_x, rel_y, out, extra):
    """Normalised float64 running sums with periodic restarts and a two-pass fallback.

    Values enter the sums as ``(x - shift) * inv`` (within [-1, 1] for the block),
    so neither huge nor tiny magnitudes overflow or underflow the squares.
    Invalid pixels (``m`` == 0; ``m`` may be None) contribute nothing.
    ``rel_x``, ``rel_y``: the image holds integers (unsigned if wider than 32
    bits), which the fallback takes as exact differences (see :func:`_two_pass`).
    """
    h, w = out.shape
    win = 2 * r + 1
    n = np.float64(win * win)
    wp = w + 2 * r
    cx = np.zeros(wp)
    cy = np.zeros(wp)
    cxx = np.zeros(wp)
    cyy = np.zeros(wp)
    cxy = np.zeros(wp)
    cc = np.zeros(wp)
    hx = np.empty(w)
    hy = np.empty(w)
    hxx = np.empty(w)
    hyy = np.empty(w)
    hxy = np.empty(w)
    hc = np.empty(w)
    for i in range(h):
        restart = i % _RESTART == 0
        if restart:
            cx[:] = 0.0
            cy[:] = 0.0
            cxx[:] = 0.0
            cyy[:] = 0.0
            cxy[:] = 0.0
            cc[:] = 0.0
        k0 = i if restart else i + 2 * r
        for k in range(k0, i + win):
            for j in range(wp):
                x = (np.float64(a[k, j]) - shift_x) * inv_x
                y = (np.float64(b[k, j]) - shift_y) * inv_y
                if m is not None:
                    valid = m[k, j] != 0
                    x = x if valid else 0.0
                    y = y if valid else 0.0
                    cc[j] += 1.0 if valid else 0.0
                if not restart:
                    xo = (np.float64(a[i - 1, j]) - shift_x) * inv_x
                    yo = (np.float64(b[i - 1, j]) - shift_y) * inv_y
                    if m is not None:
                        valid_o = m[i - 1, j] != 0
                        xo = xo if valid_o else 0.0
                        yo = yo if valid_o else 0.0
                        cc[j] -= 1.0 if valid_o else 0.0
                    _move_column(j, x, y, xo, yo, cx, cy, cxx, cyy, cxy)
                else:
                    _add_column(j, x, y, cx, cy, cxx, cyy, cxy)
        _row_sums(cx, cy, cxx, cyy, cxy, cc, hx, hy, hxx, hyy, hxy, hc, win, w, _RESTART, m is not None)
        fallback = 0
        for j in range(w):
            c = n if m is None else np.float64(round(hc[j]))
            vx = c * hxx[j] - hx[j] * hx[j]
            vy = c * hyy[j] - hy[j] * hy[j]
            thr = _FALLBACK_TOL * c * c
            ok = vx > thr and vy > thr and c >= min_count and c > 0.0
            fallback += 0 if ok else 1
            d = math.sqrt(vx * vy) if ok else 1.0
            v = (c * hxy[j] - hx[j] * hy[j]) / d
            out[i, j] = min(max(v, -1.0), 1.0)
            if extra is not None:
                extra[0, i, j] = c / n
                extra[1, i, j] = math.sqrt(vx) / c / inv_x if ok else np.nan
                extra[2, i, j] = math.sqrt(vy) / c / inv_y if ok else np.nan
        if fallback:
            for j in range(w):
                c = n if m is None else np.float64(round(hc[j]))
                vx = c * hxx[j] - hx[j] * hx[j]
                vy = c * hyy[j] - hy[j] * hy[j]
                thr = _FALLBACK_TOL * c * c
                if not (vx > thr and vy > thr and c >= min_count and c > 0.0):
                    if c < min_count or c < 0.5:
                        _finish(out, extra, i, j, n, c, min_count, 0.0, 0.0, 0.0, flat)
                    else:
                        count, tx, ty, tc = _two_pass(a, b, m, i, j, win, shift_x, shift_y, inv_x, inv_y,
                                                      rel_x, rel_y)
                        _finish(out, extra, i, j, n, np.float64(count), min_count, tx, ty, tc, flat,
                                1.0 if rel_x else 1.0 / inv_x, 1.0 if rel_y else 1.0 / inv_y)


def _int_sums_exact(dtype: np.dtype, radius: int) -> bool:
    """True when n * Sxx fits in int64 for every value of ``dtype``."""
    if dtype.kind not in "iu" or dtype.itemsize > 4:
        return False
    info = np.iinfo(dtype)
    return _span_sums_exact(max(abs(int(info.min)), abs(int(info.max))), radius)


def _span_sums_exact(biggest: int, radius: int) -> bool:
    """True when n * Sxx (and n * Sxy) fit in int64 for values of magnitude at most ``biggest``."""
    n = (2 * radius + 1) ** 2
    return n * n * biggest * biggest < 2**62


@numba.njit(nogil=True, cache=True)
def _valid_range(a, m):
    """(count, smallest, largest) of the valid values of a 2-D block (``m`` == 0 is invalid; ``m`` may be None)."""
    lo = a[0, 0]
    hi = a[0, 0]
    count = 0
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            if m is not None:
                if m[i, j] == 0:
                    continue
            v = a[i, j]
            if count == 0:
                lo = v
                hi = v
            else:
                lo = min(lo, v)
                hi = max(hi, v)
            count += 1
    return count, lo, hi


@numba.njit(nogil=True, cache=True)
def _offsets_into(a, m, lo, out):
    """``out = a - lo`` computed exactly in uint64 (then stored in ``out``'s dtype), 0 where ``m`` == 0.

    Valid values are >= ``lo``, so the modular uint64 difference is the true one
    whatever the sign and width of ``a``; invalid pixels may lie below ``lo``.
    """
    base = np.uint64(lo)
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            d = np.uint64(a[i, j]) - base
            if m is not None:
                d = d if m[i, j] != 0 else np.uint64(0)
            out[i, j] = d


def _offset_wide_integers(a, b, m, radius):
    """Integer blocks whose dtype does not bound their sums, as exact differences from their smallest valid value.

    NCC does not change when a constant is added to an image, and the
    differences span only the block's range: where that range lets the int64
    sums stay exact they are returned in the narrowest unsigned dtype (for the
    exact path), otherwise as uint64 (for the float path, whose float64 of an
    exact difference is as close as float64 gets). Converting the wide values to
    float64 first instead would round away their low bits (near 2**62 the
    spacing of float64 is 1024). Each image gets its own offset.

    Returns
    -------
    (a, b, exact)
        The blocks to use (8- and 16-bit and float blocks unchanged) and whether
        the exact int64 path applies to them.
    """
    wide = [x.dtype.kind in "iu" and not _int_sums_exact(x.dtype, radius) for x in (a, b)]
    ranges = []
    for x, is_wide in zip((a, b), wide):
        if is_wide:
            count, lo, hi = _valid_range(x, m)
            ranges.append((lo, int(hi) - int(lo) if count else 0))
    exact = all(x.dtype.kind in "iu" for x in (a, b)) and all(_span_sums_exact(span, radius) for _, span in ranges)
    if exact:
        widest = max(span for _, span in ranges)
        dtype = next(t for t in (np.uint8, np.uint16, np.uint32) if widest <= np.iinfo(t).max)
    else:
        dtype = np.uint64
    blocks = []
    lows = iter(ranges)
    for x, is_wide in zip((a, b), wide):
        if is_wide:
            lo, _ = next(lows)
            diff = np.empty(x.shape, dtype=dtype)
            _offsets_into(x, m, x.dtype.type(lo), diff)  # typed: numba reads a Python int as int64
            x = diff
        blocks.append(x)
    return blocks[0], blocks[1], exact


def _as_kernel_input(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.float16:  # numba has no float16 arithmetic
        a = a.astype(np.float32)
    elif a.dtype.byteorder not in ("=", "|"):
        a = a.astype(a.dtype.newbyteorder("="))
    return np.ascontiguousarray(a)


def _frame(a, b, m, radius, flat, min_count, out, extra, threads) -> None:
    """Fill ``out`` (h, w) from padded 2-D ``a``, ``b`` ((h + 2r), (w + 2r)) and mask ``m`` (or None)."""
    h = out.shape[0]
    exact = _int_sums_exact(a.dtype, radius) and _int_sums_exact(b.dtype, radius)
    if not exact and (a.dtype.kind in "iu" or b.dtype.kind in "iu"):
        # Pairs whose dtypes already bound the sums (8- and 16-bit) skip this: no extra pass for them.
        a, b, exact = _offset_wide_integers(a, b, m, radius)
    if exact:
        def strip(lo, hi):
            _ncc_int(a[lo : hi + 2 * radius], b[lo : hi + 2 * radius],
                     None if m is None else m[lo : hi + 2 * radius], radius, flat, min_count, out[lo:hi],
                     None if extra is None else extra[:, lo:hi])
    else:
        # The shift and scale are per block, so results differ between chunkings
        # only within the float64 rounding the fallback threshold allows (< 1e-7).
        shift_x, inv_x = _shift_and_scale(a if m is None else a[m != 0])
        shift_y, inv_y = _shift_and_scale(b if m is None else b[m != 0])
        rel_x, rel_y = a.dtype.kind in "iu", b.dtype.kind in "iu"

        def strip(lo, hi):
            _ncc_float(
                a[lo : hi + 2 * radius], b[lo : hi + 2 * radius], None if m is None else m[lo : hi + 2 * radius],
                radius, flat, min_count, shift_x, shift_y, inv_x, inv_y, rel_x, rel_y, out[lo:hi],
                None if extra is None else extra[:, lo:hi],
            )

    threads = max(1, min(threads, h // 64))
    if threads == 1:
        strip(0, h)
        return
    bounds = np.linspace(0, h, threads + 1).astype(int)
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(strip, bounds[:-1], bounds[1:]))


def _shift_and_scale(a: np.ndarray) -> tuple[float, float]:
    """Centre and inverse half-range of a block: (x - shift) * inv lies in [-1, 1]."""
    if a.size == 0:
        return 0.0, 1.0
    lo = float(a.min())
    hi = float(a.max())
    shift = 0.5 * lo + 0.5 * hi  # no overflow even for lo, hi near the float64 limits
    half = max(hi - shift, shift - lo)
    return shift, (1.0 / half if half > 0.0 and np.isfinite(1.0 / half) else 1.0)


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


def ncc_padded(
    a: np.ndarray,
    b: np.ndarray,
    radius: int,
    flat: float = 0.0,
    threads: int = 1,
    *,
    invalid: np.ndarray | None = None,
    min_valid: float = 0.5,
    extras: bool = False,
    out: np.ndarray | None = None,
    extra_out: np.ndarray | None = None,
):
    """Local NCC of two blocks already padded by ``radius`` on their last two axes.

    Parameters
    ----------
    a, b : ndarray
        Padded blocks of the same shape, 2-D ``(y, x)`` or 3-D ``(t, y, x)``, any
        real integer or float dtype.
    radius : int
        Window radius; the window is ``(2 radius + 1)`` square.
    flat : float
        Value for windows whose valid values are all equal in either block.
    threads : int
        Threads to split each frame into row strips (the kernel releases the GIL).
    invalid : ndarray of bool, optional
        Padded like ``a``: True where a pixel is nodata in either image (see
        :func:`invalid_mask`). Each window then uses only the pixels valid in
        both; with fewer than ``min_valid`` of its pixels valid it is NaN.
    min_valid : float
        Fraction of the window that must be valid, in [0, 1].
    extras : bool
        Also return, stacked in a float32 array of shape ``(3,) + out.shape``,
        the valid fraction and the local (population) std of each image.
    out, extra_out : ndarray of float32, optional
        C-contiguous arrays to write the result (and the extras) into, e.g.
        buffers reused from block to block; new arrays if not given.

    Returns
    -------
    ndarray of float32, or (ndarray, ndarray)
        The NCC, shape of ``a`` minus ``2 radius`` on the last two axes (and the extras).
    """
    if a.shape != b.shape:
        raise ValueError(f"padded blocks must have the same shape, got {a.shape} and {b.shape}")
    a = _as_kernel_input(a)
    b = _as_kernel_input(b)
    valid = None
    if invalid is not None and invalid.any():
        valid = np.ascontiguousarray(~np.asarray(invalid, dtype=bool)).view(np.uint8)
    shape = a.shape[:-2] + (a.shape[-2] - 2 * radius, a.shape[-1] - 2 * radius)
    out = _output(out, shape, "out")
    extra = _output(extra_out, (3,) + shape, "extra_out") if extras else None
    if out.size:
        n = (2 * radius + 1) ** 2
        min_count = float(math.ceil(min_valid * n - 1e-9))
        flat = float(flat)
        for t in np.ndindex(a.shape[:-2]):
            _frame(a[t], b[t], None if valid is None else valid[t], radius, flat, min_count, out[t],
                   None if extra is None else extra[(slice(None),) + t], threads)
    return (out, extra) if extras else out


def warm_up(reference_dtype, moving_dtype, radius: int, *, masked: bool = False, extras: bool = False) -> None:
    """Load (or compile) the compiled kernel for these inputs, on a tiny block.

    numba loads a kernel specialisation on its first call: ~0.3 s here, paid by
    every thread that reaches it meanwhile. A run calls this in the background
    while it prepares its outputs, so the first blocks do not wait.
    """
    side = 2 * radius + 2
    a = np.zeros((side, side), dtype=reference_dtype)
    b = np.zeros((side, side), dtype=moving_dtype)
    invalid = np.zeros((side, side), dtype=bool) if masked else None
    if masked:
        invalid[0, 0] = True  # an all-valid mask is skipped, which would warm the unmasked kernel instead
    ncc_padded(a, b, radius, invalid=invalid, extras=extras)


def _output(given: np.ndarray | None, shape: tuple[int, ...], name: str) -> np.ndarray:
    if given is None:
        return np.empty(shape, dtype=np.float32)
    if given.shape != shape or given.dtype != np.float32 or not given.flags.c_contiguous:
        raise ValueError(f"{name} must be a C-contiguous float32 array of shape {shape}, "
                         f"got {given.dtype} {given.shape}")
    return given


def local_ncc_numpy(
    reference: np.ndarray,
    moving: np.ndarray,
    window: int = 7,
    *,
    boundary: str = "reflect",
    flat: float = 0.0,
    threads: int | None = None,
    invalid: np.ndarray | None = None,
    min_valid: float = 0.5,
    extras: bool = False,
):
    """Local NCC of two in-memory arrays (2-D, or 3-D with frames on axis 0).

    ``invalid`` is an unpadded nodata mask (see :func:`invalid_mask`); it is
    padded like the images, except that ``constant`` padding is valid data.
    See :func:`pipeline.local_ncc` for the other parameters.
    """
    radius = check_window(window)
    if threads is None:
        import os

        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    padded_invalid = None if invalid is None else pad(np.asarray(invalid, dtype=bool), radius, boundary)
    result = ncc_padded(pad(reference, radius, boundary), pad(moving, radius, boundary), radius, flat, threads,
                        invalid=padded_invalid, min_valid=min_valid, extras=extras)
    if boundary == "nan":
        for array in result if extras else (result,):
            nan_border(array, radius, (0, 0), array.shape[-2:])
    return result
