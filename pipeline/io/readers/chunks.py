"""lncc's own reader of local zarr chunk files, and the per-process cache of decoded chunks it shares."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

import numpy as np
import zarr

from ...core.threads import thread_buffer
from ...errors import InputError
from ..codecs import v3_decoder
from ..process import process_state
from ..urls import is_local, local_path, one_line

__all__ = ["ChunkedSource", "ChunkReader", "ChunkCache", "edge_cache_bytes"]


def edge_cache_bytes(chunk_cache: int) -> int:
    """Bytes of chunk edges a process keeps beside ``chunk_cache`` bytes of whole chunks."""
    return max(chunk_cache // 2, 32 * 2**20)


class ChunkedSource:
    """A read-only array stored in regular chunks that a subclass decodes one by one (:meth:`_chunk`), in the
    calling thread; a region is assembled from its chunks, sharing decoded edges through the process's
    :class:`ChunkCache` when :attr:`cache` is set (by :func:`pipeline.io.open_pair`).

    Subclasses set ``shape``, ``dtype``, ``ndim``, ``chunks``, ``_fill`` and ``cache`` (None).
    """

    cache = None

    def _chunk(self, coords: tuple[int, ...]) -> np.ndarray | None:
        """The decoded chunk at ``coords`` (None where nothing is stored: the fill value)."""
        raise NotImplementedError

    def __getitem__(self, key) -> np.ndarray:
        """Values at ``key``: slices of step 1 and integers (an integer drops its axis, as in numpy)."""
        key = tuple(key) if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (self.ndim - len(key))
        region, dropped = [], []
        for axis, (k, n) in enumerate(zip(key, self.shape)):
            if isinstance(k, (int, np.integer)):
                k = int(k) + n if k < 0 else int(k)
                region.append(slice(k, k + 1))
                dropped.append(axis)
            else:
                start, stop, step = k.indices(n)
                if step != 1:
                    raise IndexError(f"reads take steps of 1, got {step}")
                region.append(slice(start, max(start, stop)))
        out = np.empty(tuple(r.stop - r.start for r in region), dtype=self.dtype)
        self.read_into(region, out)
        return out.squeeze(axis=tuple(dropped)) if dropped else out

    def read_into(self, region: list[slice], out: np.ndarray) -> None:
        """Fill ``out`` with the values in ``region`` (a list of non-negative, step-1 slices)."""
        first = [r.start // c for r, c in zip(region, self.chunks)]
        last = [-(-r.stop // c) for r, c in zip(region, self.chunks)]
        for offsets in np.ndindex(*[hi - lo for lo, hi in zip(first, last)]):
            coords = tuple(lo + k for lo, k in zip(first, offsets))
            # the part of this chunk inside the region, in chunk and in output coordinates
            lo = [max(r.start, k * c) for r, k, c in zip(region, coords, self.chunks)]
            hi = [min(r.stop, (k + 1) * c) for r, k, c in zip(region, coords, self.chunks)]
            target = tuple(slice(a - r.start, b - r.start) for a, b, r in zip(lo, hi, region))
            part = tuple(slice(a - k * c, b - k * c) for a, b, k, c in zip(lo, hi, coords, self.chunks))
            if self.cache is None:
                chunk = self._chunk(coords)
                out[target] = self._fill if chunk is None else chunk[part]
                continue
            run, index, edge, limit = self.cache
            key = (run, index, coords)  # the run first: see ChunkCache.put
            whole = all(p.start == 0 and p.stop == c for p, c in zip(part, self.chunks))
            if process_state().chunk_cache.read(key, part, out[target]):
                continue
            chunk = self._chunk(coords)
            if chunk is None:
                out[target] = self._fill
                continue
            out[target] = chunk[part]
            # Its edges serve the neighbours' halos; a chunk read only in part (for a halo) is
            # some other block's own chunk, which that block will read whole.
            process_state().chunk_cache.put(key, chunk, edge, keep_whole=not whole, limit=limit)


class ChunkReader(ChunkedSource):
    """A read-only array over a local zarr array's chunk files, decoded in the calling thread.

    zarr's own reads go through its shared event loop and a pool of decode
    threads: with dask's threads on top, more threads compete for the cores
    and each block costs 2-3x the decoding itself. For the layouts this class
    knows (C order, no filters or array-to-array codecs, one optional
    numcodecs-style compressor, regular chunks, no sharding) it reads the chunk
    files itself; :meth:`for_array` returns None for anything else, which then
    goes through zarr. Missing chunks read as the fill value, as in zarr.
    """

    def __init__(self, root, shape, dtype, chunks, stored_dtype, compressor, fill_value, key):
        self.root = root
        self.shape = shape
        self.dtype = dtype
        self.ndim = len(shape)
        self.chunks = chunks
        self._stored = stored_dtype
        self._compressor = compressor
        self._fill = fill_value
        self._key = key  # chunk coords -> relative file name
        #: (run id, source index, edge width, byte limit) to share decoded chunks through the process's
        #: :class:`ChunkCache`; None reads every chunk from its file.
        self.cache = None

    @classmethod
    def for_array(cls, array: zarr.Array, url: str) -> ChunkReader | None:
        if not is_local(url):
            return None
        meta = array.metadata
        dtype = np.dtype(array.dtype)
        if dtype.kind not in "biuf":
            return None
        if meta.zarr_format == 2:
            if meta.order != "C" or meta.filters:
                return None
            compressor = meta.compressor
            stored = meta.dtype.to_native_dtype()
        else:
            compressor = v3_decoder(meta)
            if compressor is None:
                return None
            compressor, endian = compressor
            stored = dtype.newbyteorder("<" if endian == "little" else ">") if dtype.itemsize > 1 else dtype
        fill = array.fill_value if array.fill_value is not None else 0
        return cls(local_path(url), tuple(int(n) for n in array.shape), dtype, tuple(int(c) for c in array.chunks),
                   np.dtype(stored), compressor, fill, meta.encode_chunk_key)

    def _chunk(self, coords: tuple[int, ...]) -> np.ndarray | None:
        """The decoded chunk at ``coords`` (None if missing), in a buffer this thread reuses for its next chunk."""
        try:
            with open(self.root / self._key(coords), "rb", buffering=0) as f:
                size = os.fstat(f.fileno()).st_size
                raw = thread_buffer("chunk-file", size)
                raw = raw[:f.readinto(raw)]
        except FileNotFoundError:
            return None
        nbytes = int(np.prod(self.chunks)) * self._stored.itemsize
        try:
            if self._compressor is None:
                data = raw
            else:
                data = self._compressor.decode(raw, out=thread_buffer("chunk-decoded", nbytes))
            return np.frombuffer(data, dtype=self._stored, count=int(np.prod(self.chunks))).reshape(self.chunks)
        except Exception as exc:  # numcodecs and numpy raise several types for a damaged chunk
            raise InputError(f"chunk file {str(self.root / self._key(coords))!r} cannot be decoded "
                             f"({one_line(exc, None)}); the array is damaged there: rewrite or restore it") from None


class ChunkCache:
    """Decoded chunks shared by the tasks of one process: edge strips, and whole chunks read in part.

    Two least-recently-used stores under one lock: the ``edge``-wide edges of
    every chunk decoded (a few KB each, up to :func:`edge_cache_bytes`), and
    the chunks that a read used only in part, up to the byte limit. Entries
    belong to one run (the reader's run id): a new run starts empty. Hits are
    copied out under the lock, so an evicted chunk's memory can be reused for
    the next one without page faults.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._run = None
        self._whole: OrderedDict = OrderedDict()
        self._edges: OrderedDict = OrderedDict()
        self._bytes = 0
        self._edge_bytes = 0
        self._spare: list[np.ndarray] = []

    def read(self, key, part: tuple[slice, ...], out: np.ndarray) -> bool:
        """Copy chunk ``key``'s ``part`` into ``out`` if the cache holds it; False if not."""
        with self._lock:
            whole = self._whole.get(key)
            if whole is not None:
                self._whole.move_to_end(key)
                out[...] = whole[part]
                return True
            strips = self._edges.get(key)
            if strips is None:
                return False
            *lead, ys, xs = part
            top, bottom, left, right = strips
            edge = top.shape[-2]  # the edge width, clipped to the chunk
            cy, cx = left.shape[-2], top.shape[-1]
            lead = tuple(lead)
            if ys.stop <= edge:
                out[...] = top[lead + (ys, xs)]
            elif ys.start >= cy - edge:
                out[...] = bottom[lead + (slice(ys.start - (cy - edge), ys.stop - (cy - edge)), xs)]
            elif xs.stop <= edge:
                out[...] = left[lead + (ys, xs)]
            elif xs.start >= cx - edge:
                out[...] = right[lead + (ys, slice(xs.start - (cx - edge), xs.stop - (cx - edge)))]
            else:
                return False
            return True

    def put(self, key, chunk: np.ndarray, edge: int, *, keep_whole: bool, limit: int) -> None:
        """Keep ``chunk``'s edges (and the whole chunk if ``keep_whole``), evicting the least recently used.

        ``key`` starts with the run id: a key of another run empties the cache first.
        """
        run = key[0]
        edge = min(edge, *chunk.shape[-2:])
        strips = (chunk[..., :edge, :].copy(), chunk[..., -edge:, :].copy(),
                  chunk[..., :, :edge].copy(), chunk[..., :, -edge:].copy())
        with self._lock:
            if run != self._run:
                self._run = run
                self._whole.clear()
                self._edges.clear()
                self._spare.clear()
                self._bytes = self._edge_bytes = 0
            if key not in self._edges:
                self._edges[key] = strips
                self._edge_bytes += sum(s.nbytes for s in strips)
                while self._edge_bytes > edge_cache_bytes(limit) and len(self._edges) > 1:
                    self._edge_bytes -= sum(s.nbytes for s in self._edges.popitem(last=False)[1])
            if keep_whole and chunk.nbytes <= limit and key not in self._whole:
                at = next((i for i, a in enumerate(self._spare) if a.shape == chunk.shape and a.dtype == chunk.dtype),
                          None)
                spare = None if at is None else self._spare.pop(at)  # by position: == on arrays is elementwise
                whole = spare if spare is not None else np.empty_like(chunk)
                whole[...] = chunk
                self._whole[key] = whole
                self._bytes += whole.nbytes
                while self._bytes > limit:
                    evicted = self._whole.popitem(last=False)[1]
                    self._bytes -= evicted.nbytes
                    if len(self._spare) < 4:
                        self._spare.append(evicted)
