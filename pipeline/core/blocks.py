"""Where each processing block of a grid lies: the one home of a block's start and region (pure Python).

A grid is given as dask gives chunks: per axis, the tuple of block lengths.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["block_starts", "block_region"]


def block_starts(block_chunks: Sequence[Sequence[int]], index: Sequence[int]) -> tuple[int, ...]:
    """The first element of block ``index`` along each axis."""
    return tuple(sum(c[:i]) for c, i in zip(block_chunks, index))


def block_region(block_chunks: Sequence[Sequence[int]], index: Sequence[int]) -> tuple[slice, ...]:
    """Block ``index``'s place in the whole array, as one slice per axis."""
    return tuple(slice(s, s + c[i]) for s, c, i in zip(block_starts(block_chunks, index), block_chunks, index))
