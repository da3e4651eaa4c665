"""An output's bookkeeping arrays: the block ledger and the block checksums, read entry by entry."""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr

from .metadata import CHECKSUMS, LEDGER, STATE_GROUP
from .readers.chunks import ChunkReader
from .urls import join_url, store_kwargs

__all__ = ["read_ledger", "read_checksums", "block_digest"]


def read_ledger(url: str, *, storage_options: dict[str, Any] | None = None) -> np.ndarray:
    """The block ledger of an output: one stats vector per block, NaN where the block is not done.

    An entry that cannot be read (a damaged or truncated file) reads as not done.
    """
    return read_entries(join_url(url, STATE_GROUP, LEDGER), np.nan, storage_options)


def read_checksums(url: str, *, storage_options: dict[str, Any] | None = None) -> np.ndarray:
    """The block checksums of an output (:func:`block_digest` per block; 0 where none could be read)."""
    return read_entries(join_url(url, STATE_GROUP, CHECKSUMS), 0, storage_options)


def read_entries(url: str, missing, storage_options: dict[str, Any] | None) -> np.ndarray:
    """All of a small-chunked bookkeeping array, each chunk on its own: one unreadable chunk reads as ``missing``."""
    array = zarr.open_array(store=url, mode="r", **store_kwargs(url, storage_options))
    reader = ChunkReader.for_array(array, url)
    if reader is None:
        try:
            return array[...]
        except Exception:  # noqa: BLE001 - a damaged entry: read them one by one below
            pass
    out = np.full(array.shape, missing, dtype=array.dtype)
    chunks = array.chunks
    for coords in np.ndindex(*array.cdata_shape):
        region = tuple(slice(k * c, min((k + 1) * c, n)) for k, c, n in zip(coords, chunks, array.shape))
        try:
            if reader is not None:
                reader.read_into(list(region), out[region])
            else:
                out[region] = array[region]
        except Exception:  # noqa: BLE001 - damaged or truncated: the entry is not there
            out[region] = missing
    return out


def block_digest(values: dict[str, np.ndarray] | list[np.ndarray]) -> np.ndarray:
    """The checksum of a block: XXH3-128 of its float32 values, variable after variable, as two uint64.

    Written beside each block's values and compared by :func:`pipeline.io.usable_blocks`; it is
    taken of the values, not the encoded bytes, so it checks a chunk whatever its codec and store.
    """
    import xxhash

    h = xxhash.xxh3_128()
    for block in (values.values() if isinstance(values, dict) else values):
        h.update(np.ascontiguousarray(block, dtype="<f4").reshape(-1).view(np.uint8))
    digest = h.intdigest()
    return np.array([digest >> 64, digest & (2**64 - 1)], dtype=np.uint64)
