"""Exact integer sums: when int64 window sums cannot overflow, and wide integers as exact differences."""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["int_sums_exact", "span_sums_exact", "offset_wide_integers"]


def int_sums_exact(dtype: np.dtype, radius: int) -> bool:
    """True when n * Sxx fits in int64 for every value of ``dtype``."""
    if dtype.kind not in "iu" or dtype.itemsize > 4:
        return False
    info = np.iinfo(dtype)
    return span_sums_exact(max(abs(int(info.min)), abs(int(info.max))), radius)


def span_sums_exact(biggest: int, radius: int) -> bool:
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


def offset_wide_integers(a, b, m, radius):
    """Integer blocks whose dtype does not bound their sums, as exact differences from their smallest valid value.

    A block whose valid values are small enough for exact sums as they are (e.g. an 8-bit image shifted into
    int32 fixed point) is used as it is: one pass to find its range, no copy.

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
    wide = [x.dtype.kind in "iu" and not int_sums_exact(x.dtype, radius) for x in (a, b)]
    ranges = []
    for k, (x, is_wide) in enumerate(zip((a, b), wide)):
        if is_wide:
            count, lo, hi = (x.size, x.min(), x.max()) if m is None and x.size else _valid_range(x, m)
            if span_sums_exact(max(abs(int(lo)), abs(int(hi))) if count else 0, radius):
                wide[k] = False  # its values (not its dtype) bound the sums: exact as it is, no copy
            else:
                ranges.append((lo, int(hi) - int(lo) if count else 0))
    exact = all(x.dtype.kind in "iu" for x in (a, b)) and all(span_sums_exact(span, radius) for _, span in ranges)
    if exact:
        widest = max((span for _, span in ranges), default=0)
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
