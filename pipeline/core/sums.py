"""The compiled running-sum kernels (numba): one frame of padded blocks in, NCC (and extras) out.

See :mod:`pipeline.core.kernel` for the method; these functions assume checked, contiguous inputs.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["ncc_int", "ncc_float", "RESTART", "FALLBACK_TOL"]

# Running float64 sums are recomputed from scratch this often (rows and columns),
# so rounding drift stays below ~2 * RESTART * 1.1e-16 of the block's magnitude.
RESTART = 128
# A float window whose variance is below this fraction of the block's largest
# squared deviation is recomputed two-pass: there the running sums could not
# guarantee ~1e-7 on the NCC (worst-case drift bound; typical error is ~1e-9).
FALLBACK_TOL = 1e-6


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
def ncc_int(a, b, m, r, flat, min_count, out, extra):
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


@numba.njit(nogil=True, cache=True, inline="always")
def _scaled(v, v0, rel, shift, inv):
    """A value as the two-pass sums take it: exact difference from ``v0`` (integers), else ``(v - shift) * inv``."""
    return _delta(v, v0) if rel else (np.float64(v) - shift) * inv


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
            mx += _scaled(xr, x0, rel_x, shift_x, inv_x)
            my += _scaled(yr, y0, rel_y, shift_y, inv_y)
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
            dx = _scaled(a[k, q], x0, rel_x, shift_x, inv_x) - mx
            dy = _scaled(b[k, q], y0, rel_y, shift_y, inv_y) - my
            sxx += dx * dx
            syy += dy * dy
            sxy += dx * dy
    c = np.float64(count)
    # Flatness is decided on the values themselves; the sums only give the size.
    return count, 0.0 if flat_x else c * sxx, 0.0 if flat_y else c * syy, c * sxy


@numba.njit(nogil=True, cache=True, fastmath=False)
def ncc_float(a, b, m, r, flat, min_count, shift_x, shift_y, inv_x, inv_y, rel_x, rel_y, out, extra):
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
        restart = i % RESTART == 0
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
        _row_sums(cx, cy, cxx, cyy, cxy, cc, hx, hy, hxx, hyy, hxy, hc, win, w, RESTART, m is not None)
        fallback = 0
        for j in range(w):
            c = n if m is None else np.float64(round(hc[j]))
            vx = c * hxx[j] - hx[j] * hx[j]
            vy = c * hyy[j] - hy[j] * hy[j]
            thr = FALLBACK_TOL * c * c
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
                thr = FALLBACK_TOL * c * c
                if not (vx > thr and vy > thr and c >= min_count and c > 0.0):
                    if c < min_count or c < 0.5:
                        _finish(out, extra, i, j, n, c, min_count, 0.0, 0.0, 0.0, flat)
                    else:
                        count, tx, ty, tc = _two_pass(a, b, m, i, j, win, shift_x, shift_y, inv_x, inv_y,
                                                      rel_x, rel_y)
                        _finish(out, extra, i, j, n, np.float64(count), min_count, tx, ty, tc, flat,
                                1.0 if rel_x else 1.0 / inv_x, 1.0 if rel_y else 1.0 / inv_y)
