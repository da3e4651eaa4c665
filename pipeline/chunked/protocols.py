"""The small protocols the block tasks call: what a stored pair offers, and what a block sink takes.

:mod:`pipeline.io` implements them (:func:`pipeline.io.open_pair`, :class:`pipeline.io.OutputWriter` behind
the job's sink); tests and users may pass anything that follows them, e.g. a stacked numpy array as a pair.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["PairSource", "BlockSink", "BufferedSink"]


@runtime_checkable
class PairSource(Protocol):
    """Both images of a pair as one array-like of shape ``(2,) + shape`` (reference first), one dtype.

    ``pair[(slice(None),) + region]`` returns both images' values in ``region``; a source may also offer
    ``read_into(region, out)`` to decode straight into a task's buffer.
    """

    shape: tuple[int, ...]
    dtype: np.dtype

    def __getitem__(self, key): ...


@runtime_checkable
class BlockSink(Protocol):
    """Takes each block inside its own task: its float32 values, its place in the whole array, its index.

    ``values`` is a buffer the thread reuses for its next block: consume it before returning (a
    :class:`BufferedSink` decides instead when its buffer is free again).
    """

    def __call__(self, values: np.ndarray, region: tuple[slice, ...], index: tuple[int, ...]) -> None: ...


@runtime_checkable
class BufferedSink(BlockSink, Protocol):
    """A sink that provides the float32 array each block is computed into."""

    def buffer(self, shape: tuple[int, ...]) -> np.ndarray: ...
