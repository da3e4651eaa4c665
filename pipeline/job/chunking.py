"""How a pair is cut into processing blocks: sizes aligned with the stored chunks, the memory budget, limits."""

from __future__ import annotations

import math
import shutil

import numpy as np

from .. import io
from ..config import RunConfig
from ..core.variables import EXTRA_NAMES
from ..errors import ConfigError, InputError
from . import budget as budget_

__all__ = ["BLOCK_BYTES", "MAX_BLOCK_PIXELS", "MAX_BLOCKS", "block_pixels", "processing_chunks", "fit_budget",
           "check_block_count", "check_space"]


#: Default processing block: the two input blocks plus the float32 output block
#: take about this many bytes (4096 x 4096 for a uint8 pair, ~2800^2 for float32).
#: Larger blocks amortise zarr's per-call overhead; this size keeps a task near
#: 200 MB with halos and copies, so two threads stay well under 1.5 GB.
BLOCK_BYTES = 96 * 2**20


#: No block is larger than this many pixels, whatever the dtypes.
MAX_BLOCK_PIXELS = 4096 * 4096


def _spatial_chunk(size: int, zarr_chunk: int, target: int, radius: int) -> int:
    """A multiple of the zarr chunk near ``target``, at least the radius, at most ``size``."""
    multiple = max(1, round(target / zarr_chunk))
    chunk = min(size, multiple * zarr_chunk)
    while chunk < radius and chunk < size:
        chunk += zarr_chunk
    return min(chunk, size)


def block_pixels(*dtypes: np.dtype) -> int:
    """Pixels per processing block for inputs of these dtypes (see :data:`BLOCK_BYTES`)."""
    per_pixel = sum(np.dtype(d).itemsize for d in dtypes) + 4  # + the float32 output
    return min(MAX_BLOCK_PIXELS, BLOCK_BYTES // per_pixel)


def processing_chunks(info: io.InputInfo, config_chunks: dict[str, int] | None, radius: int,
                      target_pixels: int = MAX_BLOCK_PIXELS) -> tuple[int, ...]:
    """Processing chunk sizes for one input: the config's, else aligned with its zarr chunks.

    Raises
    ------
    ConfigError
        If the config names a dim the input does not have, or a y/x chunk
        shorter than the window radius.
    """
    config_chunks = dict(config_chunks or {})
    unknown = sorted(set(config_chunks) - set(info.dims))
    if unknown:
        raise ConfigError(f"config error: chunks.{unknown[0]}: no such dim; the input's dims are {list(info.dims)}")
    side = int(math.isqrt(target_pixels))
    chunks = []
    for axis, (dim, size, zc) in enumerate(zip(info.dims, info.shape, info.zarr_chunks)):
        spatial = axis >= len(info.shape) - 2
        if dim in config_chunks:
            chunk = min(config_chunks[dim], size)
            if spatial and chunk < radius and chunk < size:
                raise ConfigError(f"config error: chunks.{dim}: {config_chunks[dim]} is shorter than the window "
                                  f"radius {radius}; use at least {radius}")
        elif spatial:
            chunk = _spatial_chunk(size, zc, side, radius)
        else:
            chunk = None  # frames: decided once y and x are known
        chunks.append(chunk)
    if chunks[0] is None:
        frame = chunks[-1] * chunks[-2]
        chunks[0] = max(1, min(info.shape[0], target_pixels // frame))
    return tuple(chunks)


def fit_budget(config: RunConfig, info: io.InputInfo, chunks: tuple[int, ...], radius: int, dtypes, threads: int,
               reads_pair: bool) -> tuple[int, ...]:
    """Processing chunks within ``compute.memory`` per worker process: the default shrunk to fit, or the
    config's own checked. ``reads_pair``: each task reads its own halo (no ``map_overlap`` exchange)."""
    budget = config.compute.memory
    image = info.shape[-2:]
    in_bytes = budget_.bytes_per_pixel(dtypes) + (1 if config.nodata is not None or "f" in {np.dtype(d).kind
                                                                                               for d in dtypes} else 0)
    out_bytes = 4 * (len(EXTRA_NAMES) if config.extra_outputs else 1)
    frames = chunks[0] if len(chunks) == 3 else 1
    exchange = not reads_pair
    need = budget_.estimate_peak(chunks[-2:], image, in_bytes, out_bytes, threads, frames, exchange)
    if need <= budget:
        return chunks
    where = f"compute.memory {budget_.format_bytes(budget)}"
    if config.chunks and set(config.chunks) & set(info.dims[-2:]):
        raise ConfigError(f"config error: chunks {dict(config.chunks)} need about {budget_.format_bytes(need)} per "
                          f"worker with {threads} thread(s), over {where}; use smaller chunks or raise "
                          "compute.memory")
    step = min(info.zarr_chunks[-1], info.zarr_chunks[-2])
    step = step if step <= 1024 else 256  # huge zarr chunks: give up alignment rather than the budget
    side = budget_.largest_block_side(budget, image, in_bytes, out_bytes, threads, step, max(chunks[-2:]),
                                      halo_exchange=exchange)
    if side is None or side < radius:
        smallest = budget_.estimate_peak((min(step, image[0]), min(step, image[1])), image, in_bytes, out_bytes,
                                         threads, halo_exchange=exchange)
        raise ConfigError(f"config error: {where} is too small: one worker with {threads} thread(s) needs about "
                          f"{budget_.format_bytes(smallest)} even with {step} x {step} blocks; raise compute.memory "
                          "or use fewer threads per worker")
    spatial = (min(side, image[0]), min(side, image[1]))
    if len(chunks) == 3:
        frames = max(1, min(frames, MAX_BLOCK_PIXELS // (spatial[0] * spatial[1])))
        while frames > 1 and budget_.estimate_peak(spatial, image, in_bytes, out_bytes, threads, frames,
                                                   exchange) > budget:
            frames -= 1
        return (frames,) + spatial
    return spatial


#: Blocks per pair at most: each is a task, a ledger entry (16 KB) and its own chunk files, so a run of tiny
#: blocks crawls (``chunks: 1`` on a 2 Mpx pair planned for minutes and took 1.7 GB before it computed).
MAX_BLOCKS = 50_000


def check_block_count(info: io.InputInfo, chunks: tuple[int, ...], radius: int) -> None:
    blocks = math.prod(-(-n // min(c, n)) for n, c in zip(info.shape, chunks))
    if blocks <= MAX_BLOCKS:
        return
    frames = info.shape[0] // min(chunks[0], info.shape[0]) if len(chunks) == 3 else 1
    side = math.isqrt(info.shape[-2] * info.shape[-1] * max(frames, 1) // MAX_BLOCKS) + 1
    raise ConfigError(f"config error: chunks {dict(zip(info.dims, chunks))} cut {info.url!r} into {blocks:,} blocks, "
                      f"over the {MAX_BLOCKS:,} a pair may have (each block is a task, a ledger entry and its own "
                      f"files, so tiny blocks make a run crawl); use chunks of at least {max(side, radius)} pixels "
                      "along y and x, or leave chunks out to let lncc choose")


def check_space(url: str, shape: tuple[int, ...], names: tuple[str, ...], compressor: str, done, *,
                encoding: str = "float32", multiscale: bool = False) -> None:
    """Refuse, before anything is deleted, a local uncompressed output that cannot fit on its disk."""

    if compressor != "none" or not io.is_local(url):
        return  # compressed sizes are unknown in advance; object stores do not fill up
    need = int(np.prod(shape)) * sum(io.encoded_dtype(name, encoding).itemsize for name in names)
    if multiscale:  # each level a quarter of the one above it
        need = need * 4 // 3
    if done is not None and done.size:
        need = int(need * (1 - done.mean()))
    path = io.local_path(url)
    existing = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() and done is None else 0
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free + existing  # a replaced output's space is freed first
    if need > free:
        raise InputError(f"output {url!r} needs about {budget_.format_bytes(need)} but its disk has "
                         f"{budget_.format_bytes(free)} free; free space, choose another output path, or set "
                         "compressor: zstd")
