"""How much memory a run takes for a given processing block, and the largest block a budget allows.

A worker process holds, at its peak:

- its baseline: the interpreter with numpy, numba, dask, zarr and xarray loaded;
- per thread, one task's working set: two float32 output buffers (four
  arrays each with ``extra_outputs``), one being computed while the other's
  block is written to the store; and the inputs. When each task reads its
  own halo from the store (a pair of one dtype without mask arrays): the
  padded input buffer and, per process, the cache of decoded input chunks
  that neighbouring blocks share (:func:`chunk_cache_bytes`, plus a quarter,
  at least 8 MiB, for chunk edges). Otherwise (``map_overlap``): both input
  blocks with their halos (the halo exchange assembles a padded copy) and the
  undecoded block being read;
- with ``map_overlap`` only, the input blocks waiting for their neighbours: it
  keeps a block until the blocks around it have taken their halos, about one
  row of blocks across the image plus two.

The constants were measured on this project's benchmark pairs (see
BENCHMARKS.md); :data:`SAFETY` covers allocator slack and dask reading ahead.
"""

from __future__ import annotations

import math

import numpy as np

from ..io.readers.chunks import edge_cache_bytes

__all__ = ["BASELINE", "SAFETY", "CACHE_BLOCKS", "estimate_peak", "chunk_cache_bytes",
           "largest_block_side", "format_bytes", "bytes_per_pixel"]

#: Resident memory of a process that has loaded lncc and its libraries, before any block.
BASELINE = 260 * 2**20
#: Multiplier on the block-dependent part of the estimate.
SAFETY = 1.5
#: The process's cache of decoded input chunks holds this many blocks' worth of padded input.
CACHE_BLOCKS = 1


def chunk_cache_bytes(block: tuple[int, int], input_bytes: int, frames: int = 1) -> int:
    """Bytes of decoded input chunks a process keeps for neighbouring blocks (see :func:`pipeline.io.open_pair`)."""
    return CACHE_BLOCKS * frames * (block[0] + 2 * _HALO_ALLOWANCE) * (block[1] + 2 * _HALO_ALLOWANCE) * input_bytes


def estimate_peak(block: tuple[int, int], image: tuple[int, int], input_bytes: int, output_bytes: int,
                  threads: int, frames: int = 1, halo_exchange: bool = True) -> int:
    """Estimated peak resident bytes of one process running ``threads`` blocks at a time.

    Parameters
    ----------
    block : (int, int)
        Processing block (y, x) in pixels.
    image : (int, int)
        Image (y, x) in pixels.
    input_bytes : int
        Bytes per pixel of all inputs together (reference + moving + masks).
    output_bytes : int
        Bytes per pixel of the outputs (4 for the NCC, 16 with extra outputs).
    threads : int
        Blocks computed at once in the process.
    frames : int
        Frames per block (video).
    halo_exchange : bool
        True for ``map_overlap``'s halo exchange; False when each task reads
        its block with its halo from the store.
    """
    by, bx = block
    pixels = frames * by * bx
    padded = frames * (by + 2 * _HALO_ALLOWANCE) * (bx + 2 * _HALO_ALLOWANCE)
    if not halo_exchange:
        cache = chunk_cache_bytes(block, input_bytes, frames)
        cache += edge_cache_bytes(cache)
        return int(BASELINE + SAFETY * (threads * (padded * input_bytes + 2 * pixels * output_bytes) + cache))
    task = padded * input_bytes + pixels * input_bytes + 2 * pixels * output_bytes
    across = math.ceil(image[1] / bx) + 2
    waiting = min(across, math.ceil(image[0] / by) * math.ceil(image[1] / bx)) * pixels * input_bytes
    return int(BASELINE + SAFETY * (threads * task + waiting))


# Halo pixels allowed per side in the estimate (windows up to 129 pixels); tiny next to a block.
_HALO_ALLOWANCE = 64


def largest_block_side(budget: int, image: tuple[int, int], input_bytes: int, output_bytes: int, threads: int,
                       step: int, largest: int, frames: int = 1, halo_exchange: bool = True) -> int | None:
    """The largest multiple of ``step`` (at most ``largest``) whose square block fits ``budget``; None if none does."""
    side = max(step, (largest // step) * step)
    while side >= step:
        block = (min(side, image[0]), min(side, image[1]))
        if estimate_peak(block, image, input_bytes, output_bytes, threads, frames, halo_exchange) <= budget:
            return side
        side -= step
    return None


def format_bytes(n: int) -> str:
    """Bytes as a short human size (MB/GB, powers of 10 as dask writes them)."""
    if n >= 1e9:
        return f"{n / 1e9:.1f} GB"
    return f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def bytes_per_pixel(dtypes: list[np.dtype]) -> int:
    """Bytes per pixel of these inputs together."""
    return sum(np.dtype(d).itemsize for d in dtypes)
