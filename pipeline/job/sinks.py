"""The sinks a run hands its blocks to: block statistics, then the output writer; axis order restored."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import io
from ..core.pyramid import block_pyramid
from ..core.stats import block_stats

__all__ = ["BlockWriter", "Reordered"]


class BlockWriter:
    """The sink of a run: writes one block's values and stats where the block was computed.

    With ``defer``, a block's write finishes in the background while its
    thread computes the next block (into the other of its two buffers); the run
    then waits for the writes of its ``run`` id with
    :func:`pipeline.io.finish_writes` in every process that computed. Without
    it, each task waits for its own write: for dask's process pool, whose
    processes cannot be reached after the run. A block is written only while
    the output's provenance names this run (see :class:`pipeline.io.OutputWriter`).
    """

    def __init__(self, url: str, names: tuple[str, ...], storage_options: dict[str, Any] | None = None,
                 defer: bool = True, run: str | None = None, flat: float = 0.0,
                 pyramid: tuple[int, int] | None = None):
        self.names = names
        self.defer = defer
        self.flat = flat
        self.pyramid = pyramid
        self.output = io.OutputWriter(url, names, storage_options, run=run, owner=run)

    def buffer(self, shape: tuple[int, ...]) -> np.ndarray:
        return self.output.buffer(shape)

    def __call__(self, values: np.ndarray, region: tuple[slice, ...], index: tuple[int, ...]) -> None:
        blocks = dict(zip(self.names, values)) if len(self.names) > 1 else {self.names[0]: values}
        stats = block_stats(blocks["ncc"], self.flat)
        written = self.output.write_later(blocks, region, index, stats, self._levels(blocks, region))
        if not self.defer:
            written.result()


    def _levels(self, blocks: dict[str, np.ndarray], region: tuple[slice, ...]) -> list:
        """The block's part of each variable's pyramid: the levels it makes, and the counts below them."""
        if self.pyramid is None:
            return []
        levels, deepest = self.pyramid
        out = []
        for name, values in blocks.items():
            means, counts = block_pyramid(values, deepest)
            parts = io.block_parts(name, levels, deepest, region)
            out += [(path, data, where) for (path, where), data in zip(parts, [*means, counts])]
        return out


class Reordered:
    """A sink that takes blocks in processing order and hands them to ``sink`` in the inputs' axis order."""

    def __init__(self, sink: BlockWriter, inverse: tuple[int, ...]):
        self.sink = sink
        self.inverse = inverse

    def __call__(self, values: np.ndarray, region: tuple[slice, ...], index: tuple[int, ...]) -> None:
        lead = values.ndim - len(self.inverse)  # the stacked extra outputs' axis comes first
        axes = tuple(range(lead)) + tuple(lead + i for i in self.inverse)
        block = values.transpose(axes)
        buffer = self.sink.buffer(block.shape)
        buffer[...] = block
        self.sink(buffer, tuple(region[i] for i in self.inverse), tuple(index[i] for i in self.inverse))
