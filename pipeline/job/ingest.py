"""``lncc ingest``: any input lncc reads (TIFF, images, frame sequences, video, zarr) converted once into a
chunked zarr group, for users who convert once and run many times.

The same readers as a run read the source (series, level and channel policy included), block by block in
order (a video decodes once, forward), and each block is marked done in the destination's ledger once its
chunks are written: a killed ingest, run again, writes only the blocks not done. An ingest whose source
bytes and settings are unchanged is up to date; other settings need ``force`` to replace it.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import io
from ..core.checks import FRAME_DIMS
from ..core.threads import available_cores
from ..errors import InputError
from .provenance import versions

__all__ = ["IngestSummary", "ingest"]

#: The largest block an ingest reads and writes at once, and the fewest blocks it aims for (resume granularity).
_BLOCK_BYTES, _MIN_BLOCKS = 32 * 2**20, 32

#: How a channel policy reads colour, said in the summary (by policy and whether the source is a video).
_HOW = {("luminance", False): " (Rec. 709 weights)", ("luminance", True): " (the video's luma plane)"}

#: Stored chunk side along an image axis unless ``chunks`` says otherwise.
_CHUNK = 1024


@dataclass(frozen=True)
class IngestSummary:
    """What an ingest did: fresh, resume, replace or up to date, and what it wrote where."""

    source: str
    dest: str
    action: str
    shape: tuple[int, ...]
    dtype: str
    dims: tuple[str, ...]
    chunks: tuple[int, ...]
    blocks: int
    written: int
    seconds: float
    channels: str | None
    mask: bool
    video: bool = False

    def describe(self) -> str:
        """The summary lines ``lncc ingest`` prints."""
        shape = " x ".join(map(str, self.shape))
        lines = [f"{self.source} -> {self.dest}: {self.action}, {shape} {self.dtype} ({', '.join(self.dims)}), "
                 f"chunks {' x '.join(map(str, self.chunks))}, {self.written} of {self.blocks} blocks written in "
                 f"{self.seconds:.1f} s"]
        if self.channels:
            lines.append(f"  colour read as {self.channels}{_HOW.get((self.channels, self.video), '')}")
        if self.mask:
            lines.append(f"  alpha channel written as the validity mask {self.dest.rstrip('/')}/{io.VALID} "
                         f"(give it as reference_mask or moving_mask)")
        lines.append(f"  use it as: reference: {self.dest}")
        return "\n".join(lines)


def _stored_chunks(info: io.InputInfo, chunks: dict[str, int] | None) -> tuple[int, ...]:
    chunks = dict(chunks or {})
    unknown = sorted(set(chunks) - set(info.dims))
    if unknown:
        raise InputError(f"--chunks names {', '.join(unknown)} but {info.url!r} has dims {', '.join(info.dims)}; "
                         f"give sizes for those, e.g. {info.dims[-2]}=1024,{info.dims[-1]}=1024")
    bad = {k: v for k, v in chunks.items() if not isinstance(v, int) or v < 1}
    if bad:
        raise InputError(f"--chunks sizes must be positive integers, got {bad}")
    return tuple(min(int(chunks.get(d, 1 if d in FRAME_DIMS else _CHUNK)), n) for d, n in zip(info.dims, info.shape))


def _block_shape(shape: tuple[int, ...], chunks: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Whole chunks, grown along the last axis first, up to the block byte target (and enough blocks to resume)."""
    total = math.prod(shape) * itemsize
    target = max(min(_BLOCK_BYTES, total // _MIN_BLOCKS), 1)
    block = list(chunks)
    for axis in reversed(range(len(shape))):
        while block[axis] < shape[axis]:
            grown = min(block[axis] + chunks[axis], shape[axis])
            if math.prod(block[:axis] + [grown] + block[axis + 1:]) * itemsize > target:
                return tuple(block)
            block[axis] = grown
    return tuple(block)


def _regions(shape, block) -> list[tuple[slice, ...]]:
    """The blocks in C order (a video's frames first to last)."""
    starts = itertools.product(*(range(0, n, b) for n, b in zip(shape, block)))
    return [tuple(slice(s, min(s + b, n)) for s, b, n in zip(start, block, shape)) for start in starts]


def ingest(source, dest: str, *, chunks: dict[str, int] | None = None, zarr_format: int = 3,
           channels: str | int | None = None, series: int = 0, level: int = 0, compressor: str = "zstd",
           force: bool = False, storage_options: dict[str, Any] | None = None,
           progress: Callable[[int, int], None] | None = None) -> IngestSummary:
    """Convert ``source`` into a chunked zarr group at ``dest`` (resumable; see the module).

    Parameters
    ----------
    source
        Any input a run reads: a path or URL, a glob of frame files, or a list of them.
    dest
        The zarr group to write (local path or URL); its ``image`` array is the converted input, and the
        group itself can be given as an input.
    chunks
        Stored chunk sizes by dim name (default 1024 along image axes, 1 along a frame or channel axis).
    zarr_format, compressor
        The zarr format (2 or 3) and codec (``zstd``, ``lz4`` or ``none``).
    channels, series, level
        As in a run's config: the colour policy, a TIFF's series and pyramid level.
    force
        Replace an earlier ingest at ``dest`` made from another source or with other settings.
    progress
        Called with (blocks done, blocks in all) after each block.

    Raises
    ------
    InputError
        For an unreadable source, bad chunks, or a destination that holds anything else.
    """
    started = time.perf_counter()
    if zarr_format not in (2, 3):
        raise InputError(f"--zarr-format must be 2 or 3, got {zarr_format}")
    if compressor not in ("zstd", "lz4", "none"):
        raise InputError(f"--compressor must be zstd, lz4 or none, got {compressor!r}")
    info = io.inspect_input(source, storage_options=storage_options, series=series, level=level, channels=channels,
                            whole=True)  # a single image too large to run from is what ingest is for
    clash = io.InputIdentities(io.input_files(source)).clash(dest)
    if clash is not None:
        raise InputError(f"ingest destination {dest!r} is, holds or lies inside the source {clash!r}; write it "
                         "to another path")
    stored = _stored_chunks(info, chunks)
    block = _block_shape(info.shape, stored, info.dtype.itemsize)
    regions = _regions(info.shape, block)
    mask = io.alpha_mask(info)
    record = {"source": info.describe(), "fingerprint": io.fingerprint(source, storage_options=storage_options),
              "chunks": list(stored), "block": list(block), "zarr_format": zarr_format, "compressor": compressor,
              "lncc": versions().get("lncc", "unknown")}
    previous = io.ingest_record(dest, storage_options)
    writer = io.IngestWriter(dest, storage_options)
    same = previous is not None and {k: v for k, v in previous.items() if k != "status"} == io.json_safe(record)
    if same and previous.get("status") == "complete":
        return _summary(info, source, dest, "up to date", stored, len(regions), 0, started, mask)
    if previous is not None and not same and not force:
        raise InputError(f"ingest destination {dest!r} holds an ingest of another source or other settings; add "
                         "--force to replace it, or give another path")
    action = "resume" if same else ("replace" if previous is not None else "fresh")
    if not same:
        writer.create(shape=info.shape, dtype=info.dtype, chunks=stored, dims=info.dims, coords=info.coords,
                      blocks=len(regions), record=record, zarr_format=zarr_format, compressor=compressor,
                      mask=mask is not None)
    done = writer.done() if same else np.zeros(len(regions), bool)
    todo = [i for i in range(len(regions)) if not done[i]]
    read, valid = io.source_of(info), None if mask is None else io.source_of(mask)

    def convert(i: int) -> int:
        region = regions[i]
        writer.write(i, region, read[region], None if valid is None else valid[region])
        return i

    finished = int(done.sum())
    with ThreadPoolExecutor(max(1, min(available_cores(), 4))) as pool:
        for _ in pool.map(convert, todo):  # in order: a video's frames decode forward
            finished += 1
            if progress is not None:
                progress(finished, len(regions))
    writer.finish(record)
    return _summary(info, source, dest, action, stored, len(regions), len(todo), started, mask)


def _summary(info, source, dest, action, stored, blocks, written, started, mask) -> IngestSummary:
    return IngestSummary(io.input_label(source), dest, action, tuple(info.shape), str(info.dtype), tuple(info.dims),
                         tuple(stored), blocks, written, time.perf_counter() - started, info.channels,
                         mask is not None, info.file_format == "video")
