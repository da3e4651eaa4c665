"""A map's multiscale pyramid: NaN-aware means of 2**k x 2**k pixels, its levels' shapes, and which levels each
block can make from its own pixels.

Level k's pixel (i, j) is the mean of the finite level-0 pixels in rows ``i * 2**k .. (i + 1) * 2**k`` and the
same columns (clipped at the image's edge), NaN where there are none: missing pixels do not eat their
neighbours. A block whose start is a multiple of ``2**k`` on both image axes makes its part of level k from its
own pixels, exactly: sums (float64) and counts of finite values, halved level by level. Levels below those a
block can make (see :func:`block_levels`) are made afterwards from the deepest block level's means and counts.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["COARSEST", "MIN_LEVEL_CHUNK", "level_count", "block_levels", "level_shape", "level_region",
           "finite_sums", "halve", "block_pyramid"]

#: The pyramid stops at the first level whose long side is at most this many pixels.
COARSEST = 256

#: A block makes level k only while its part of it is at least this many pixels a side: smaller chunks would
#: make a viewer read many tiny files; the levels below are made from the deepest block level.
MIN_LEVEL_CHUNK = 32


def level_count(shape: tuple[int, int]) -> int:
    """How many levels below level 0: until the long side is at most :data:`COARSEST` (at least one level for
    an image of more than one pixel)."""
    longest = max(shape)
    if longest <= 1:
        return 0
    return max(1, math.ceil(math.log2(longest / COARSEST))) if longest > COARSEST else 1


def block_levels(shape: tuple[int, int], block: tuple[int, int], levels: int) -> int:
    """The deepest level (<= ``levels``) every block of ``block`` pixels makes from its own pixels.

    Along an axis with more than one block, block starts must be multiples of ``2**k`` and a block's part of
    level k at least :data:`MIN_LEVEL_CHUNK`; an axis of one block constrains nothing.
    """
    k = 0
    while k < levels:
        f = 2 ** (k + 1)
        if not all(b >= n or (b % f == 0 and b // f >= MIN_LEVEL_CHUNK) for n, b in zip(shape, block)):
            break
        k += 1
    return k


def level_shape(shape: tuple[int, ...], k: int) -> tuple[int, ...]:
    """Level k's shape: the last two axes (the image's) divided by ``2**k``, rounded up; others as they are."""
    f = 2 ** k
    return tuple(shape[:-2]) + tuple(-(-n // f) for n in shape[-2:])


def level_region(region: tuple[slice, ...], k: int) -> tuple[slice, ...]:
    """Where a block at ``region`` (starting on multiples of ``2**k`` on the image axes) lies in level k."""
    f = 2 ** k
    return tuple(region[:-2]) + tuple(slice(r.start // f, -(-r.stop // f)) for r in region[-2:])


@numba.njit(nogil=True, cache=True, inline="always")
def _take(values, weights, weighted, p, r, c):
    """(value, count) of one pixel: (0, 0) unless finite; a weighted pixel counts its weight."""
    v = np.float64(values[p, r, c])
    finite = v - v == 0.0  # NaN and +-inf fail
    w = weights[p, r, c] if weighted else np.uint32(1)
    return (v if finite else 0.0), (w if finite else np.uint32(0))


@numba.njit(nogil=True, cache=True)
def _reduce(values, weights, sums, counts, out):
    """One level down: per 2 x 2 pixels of ``values`` (planes, ny, nx), the float64 sum and the count of the
    finite ones (each counting its ``weights`` entry, the pixels behind it, when given), and their float32
    mean (NaN for none). Branch-free inside the image; the last row and column of an odd side alone."""
    planes, ny, nx = values.shape
    my, mx = sums.shape[1], sums.shape[2]
    weighted = weights.shape[0] > 0
    if not weighted:  # level 1, most of the work: whole 2 x 2 squares without a branch, so it vectorises
        for p in range(planes):
            for i in range(ny // 2):
                top, bottom = values[p, 2 * i], values[p, 2 * i + 1]
                for j in range(nx // 2):
                    a, b = np.float64(top[2 * j]), np.float64(top[2 * j + 1])
                    c, d = np.float64(bottom[2 * j]), np.float64(bottom[2 * j + 1])
                    fa, fb, fc, fd = a - a == 0.0, b - b == 0.0, c - c == 0.0, d - d == 0.0
                    total = ((a if fa else 0.0) + (b if fb else 0.0)) + ((c if fc else 0.0) + (d if fd else 0.0))
                    n = np.uint32(fa) + np.uint32(fb) + np.uint32(fc) + np.uint32(fd)
                    sums[p, i, j] = total
                    counts[p, i, j] = n
                    out[p, i, j] = np.float32(total / n) if n > 0 else np.float32(np.nan)
    for p in range(planes):
        for i in range(my):
            r0, r1 = 2 * i, min(2 * i + 1, ny - 1)
            rows = 2 if 2 * i + 1 < ny else 1
            for j in range(mx):
                if not weighted and rows == 2 and 2 * j + 1 < nx:
                    continue  # done above
                c0, c1 = 2 * j, min(2 * j + 1, nx - 1)
                cols = 2 if 2 * j + 1 < nx else 1
                v0, n0 = _take(values, weights, weighted, p, r0, c0)
                v1, n1 = _take(values, weights, weighted, p, r0, c1)
                v2, n2 = _take(values, weights, weighted, p, r1, c0)
                v3, n3 = _take(values, weights, weighted, p, r1, c1)
                # an odd side's last row/column reads its own pixel twice: counted once
                if cols == 1:
                    v1, n1 = 0.0, np.uint32(0)
                    v3, n3 = 0.0, np.uint32(0)
                if rows == 1:
                    v2, n2 = 0.0, np.uint32(0)
                    v3, n3 = 0.0, np.uint32(0)
                total = (v0 + v1) + (v2 + v3)
                n = n0 + n1 + n2 + n3
                sums[p, i, j] = total
                counts[p, i, j] = n
                out[p, i, j] = np.float32(total / n) if n > 0 else np.float32(np.nan)


def _planes(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array).reshape((-1,) + array.shape[-2:])


def finite_sums(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Level 1 of ``values`` (any leading axes): (float64 sums and uint32 counts of its finite values per 2 x 2
    pixels, float32 means, NaN where none is finite)."""
    return _level(values, None)


def halve(sums: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The next level's (sums, counts, means) from a level's (sums, counts): exact (float64 sums of float32
    values, integer counts)."""
    return _level(sums, counts)


def _level(values: np.ndarray, counts_in: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    shape = level_shape(values.shape, 1)
    sums, counts, out = np.empty(shape, np.float64), np.empty(shape, np.uint32), np.empty(shape, np.float32)
    weights = np.zeros((0, 0, 0), np.uint32) if counts_in is None else _planes(counts_in)
    _reduce(_planes(values), weights, _planes(sums), _planes(counts), _planes(out))
    return sums, counts, out


def block_pyramid(values: np.ndarray, levels: int) -> tuple[list[np.ndarray], np.ndarray | None]:
    """A block's levels 1..``levels`` (float32 means) and the counts of its deepest level (None for none)."""
    if levels < 1:
        return [], None
    sums, counts, mean = finite_sums(values)
    out = [mean]
    for _ in range(levels - 1):
        sums, counts, mean = halve(sums, counts)
        out.append(mean)
    return out, counts
