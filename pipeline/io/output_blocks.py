"""Which blocks of an lncc output hold what its ledger says: entries valid, chunks present and intact."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import zarr

from ..core.blocks import block_region
from ..core.stats import STATS_LENGTH, done_blocks, entries_valid
from .ledger import block_digest, read_checksums, read_ledger
from .metadata import read_provenance
from .output_pyramid import block_parts, read_levels
from .readers.zarr import array_reader
from .urls import filesystem, join_url, store_kwargs

__all__ = ["usable_blocks"]


def usable_blocks(url: str, *, deep: bool = True, storage_options: dict[str, Any] | None = None
                  ) -> tuple[np.ndarray, int]:
    """The blocks of an lncc output that hold what its ledger says, and how many others the ledger claims.

    A block is usable when its ledger entry is present and valid (a damaged
    entry is not) and its chunks are intact: with ``deep``, every variable's
    values in the block are read and match the block's checksum; without, the
    chunks only have to exist (one listing: for object stores, where reading
    everything back would cost a download).

    Returns
    -------
    (numpy.ndarray of bool, int)
        Per block of the output's grid, True if usable; and the number of
        blocks whose ledger entry is present but whose chunks are damaged or
        missing (they are to be recomputed).
    """
    provenance = read_provenance(url, storage_options=storage_options)
    block_chunks = [tuple(c) for c in provenance.get("blocks", [])]
    names = provenance.get("variables") or []
    grid = tuple(len(c) for c in block_chunks)
    try:
        ledger = read_ledger(url, storage_options=storage_options)
        checksums = read_checksums(url, storage_options=storage_options)
    except Exception:  # noqa: BLE001 - no ledger (a run killed while creating the output): nothing is done
        return np.zeros(grid, dtype=bool), 0
    if not grid or not names or ledger.shape != grid + (STATS_LENGTH,) or checksums.shape != grid + (2,):
        return np.zeros(grid, dtype=bool), 0  # another grid or ledger layout (an older lncc): start afresh
    pixels = np.ones(grid, dtype=np.int64)
    for axis, c in enumerate(block_chunks):
        pixels *= np.asarray(c, dtype=np.int64).reshape((-1,) + (1,) * (len(grid) - axis - 1))
    claimed = int(done_blocks(ledger).sum())
    done = entries_valid(ledger, pixels)  # a garbled entry is not done
    check = _block_contents if deep else _block_files
    done &= check(url, _parts_of(names, read_levels(provenance)), block_chunks, done, checksums, storage_options)
    return done, claimed - int(done.sum())


def _parts_of(names: list[str], pyramid: tuple[int, int] | None):
    """A function of a block's region: the (array path, region) pairs its checksum covers, in order (each
    variable, then its pyramid's parts: see :func:`pipeline.io.output_pyramid.block_parts`)."""

    def parts(region):
        out = [(name, region) for name in names]
        if pyramid is not None:
            out += [part for name in names for part in block_parts(name, *pyramid, region)]
        return out

    return parts


def _block_contents(url, parts, block_chunks, done, checksums, storage_options) -> np.ndarray:
    """Per block: True when every array's values there read back and match the block's checksum."""
    readers = {}
    todo = [tuple(int(i) for i in index) for index in zip(*np.nonzero(done))]

    def reader(path):
        if path not in readers:
            readers[path] = array_reader(join_url(url, path), storage_options=storage_options)
        return readers[path]

    for path, _ in parts(block_region(block_chunks, (0,) * len(block_chunks))):
        reader(path)  # opened here, not by the threads below

    def intact(index) -> bool:
        region = block_region(block_chunks, index)
        try:
            values = [reader(path)[where] for path, where in parts(region)]
        except Exception:  # noqa: BLE001 - an unreadable chunk is a damaged block
            return False
        return bool(np.array_equal(block_digest(values), checksums[index]))

    ok = np.zeros(done.shape, dtype=bool)
    with ThreadPoolExecutor(4) as pool:  # file reads and hashing release the GIL
        for index, good in zip(todo, pool.map(intact, todo)):
            ok[index] = good
    return ok


def _block_files(url, parts, block_chunks, done, checksums, storage_options) -> np.ndarray:
    """Per block: True when every chunk of every array there exists (and its checksum was recorded)."""
    fs, root = filesystem(url, storage_options)
    ok = done & checksums.any(axis=-1)
    paths = [path for path, _ in parts(block_region(block_chunks, (0,) * len(block_chunks)))]
    for number, name in enumerate(paths):
        array = zarr.open_array(store=join_url(url, name), mode="r", **store_kwargs(url, storage_options))
        base = f"{root.rstrip('/')}/{name}"
        fs.invalidate_cache(base)
        present = {p[len(base) + 1:] for p in fs.find(base)}
        for index in zip(*np.nonzero(ok)):
            region = parts(block_region(block_chunks, index))[number][1]
            first = [r.start // c for r, c in zip(region, array.chunks)]
            last = [-(-r.stop // c) for r, c in zip(region, array.chunks)]
            for offsets in np.ndindex(*[b - a for a, b in zip(first, last)]):
                if array.metadata.encode_chunk_key(tuple(a + k for a, k in zip(first, offsets))) not in present:
                    ok[index] = False
                    break
    return ok
