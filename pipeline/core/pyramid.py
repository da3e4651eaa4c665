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
           "finite_sums", "halve", "means", "block_pyramid"]

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


@numba.njit(nogil=True, cache=True)
def _finite_sums(values, sums, counts):
    ny, nx = values.shape[-2:]
    planes = values.reshape((-1, ny, nx))
    s = sums.reshape((-1,) + sums.shape[-2:])
    c = counts.reshape((-1,) + counts.shape[-2:])
    for p in range(planes.shape[0]):
        for i in range(ny):
            for j in range(nx):
                v = planes[p, i, j]
                if np.isfinite(v):
                    s[p, i // 2, j // 2] += v
                    c[p, i // 2, j // 2] += 1


@numba.njit(nogil=True, cache=True)
def _halve(sums, counts, out_sums, out_counts):
    ny, nx = sums.shape[-2:]
    s = sums.reshape((-1, ny, nx))
    c = counts.reshape((-1, ny, nx))
    os_ = out_sums.reshape((-1,) + out_sums.shape[-2:])
    oc = out_counts.reshape((-1,) + out_counts.shape[-2:])
    for p in range(s.shape[0]):
        for i in range(ny):
            for j in range(nx):
                os_[p, i // 2, j // 2] += s[p, i, j]
                oc[p, i // 2, j // 2] += c[p, i, j]


def finite_sums(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Level 1 of ``values`` (any leading axes) as (float64 sums, uint32 counts) of its finite values."""
    shape = level_shape(values.shape, 1)
    sums, counts = np.zeros(shape, np.float64), np.zeros(shape, np.uint32)
    _finite_sums(np.ascontiguousarray(values), sums, counts)
    return sums, counts


def halve(sums: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The next level's (sums, counts): each of 2 x 2 pixels added up (exact: float64 sums of float32 values
    and integer counts)."""
    shape = level_shape(sums.shape, 1)
    out_sums, out_counts = np.zeros(shape, np.float64), np.zeros(shape, np.uint32)
    _halve(np.ascontiguousarray(sums), np.ascontiguousarray(counts), out_sums, out_counts)
    return out_sums, out_counts


def means(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """float32 means, NaN where a pixel has no finite value."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan).astype(np.float32)


def block_pyramid(values: np.ndarray, levels: int) -> tuple[list[np.ndarray], np.ndarray | None]:
    """A block's levels 1..``levels`` (float32 means) and the counts of its deepest level (None for none)."""
    if levels < 1:
        return [], None
    sums, counts = finite_sums(values)
    out = [means(sums, counts)]
    for _ in range(levels - 1):
        sums, counts = halve(sums, counts)
        out.append(means(sums, counts))
    return out, counts
