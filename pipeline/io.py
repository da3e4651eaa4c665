"""Reading inputs from and writing NCC maps to zarr stores: the only module that touches stores.

Inputs are zarr arrays (format 2 or 3) given as a path or URL, possibly inside a
group (``store.zarr/path/to/array``). Outputs are zarr groups written the xarray
way: an ``ncc`` variable plus dimension coordinates, readable with
``xarray.open_zarr(path)["ncc"]``.

Every function that opens a URL store also takes ``storage_options``: the fsspec
options (``endpoint_url``, ``profile``, ``anon``, ``client_kwargs``, ...) used to
open URL stores (``s3://``, ``gs://``, ``memory://`` ...). They are ignored for
local paths, and never put in an error message nor in an output's attributes:
they may hold credentials.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import uuid
import warnings
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import dask.base
import dask.array as da
import numpy as np
import xarray as xr
import zarr

from .budget import edge_cache_bytes
from .buffers import PAGE, thread_buffer
from .errors import InputError
from .validate import default_dims

__all__ = [
    "InputInfo",
    "inspect_input",
    "open_input",
    "open_pair",
    "OutputWriter",
    "finish_writes",
    "read_ledger",
    "update_provenance",
    "read_provenance",
    "write_array",
    "fingerprint",
    "PROVENANCE_KEY",
    "redact",
    "read_checksums",
    "array_reader",
    "output_codec",
    "block_digest",
    "group_attributes",
    "write_group",
    "sync_outputs",
    "STATE_GROUP",
    "LEDGER",
    "CHECKSUMS",
]


def _ignore_zarr_warnings() -> None:
    """zarr 3 warns that consolidated metadata is an extension of its spec (xarray reads it either way)."""
    warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
    warnings.filterwarnings("ignore", message="Object at .* is not recognized", category=UserWarning)


# Filtered for good rather than in a catch_warnings block around the calls: such a block is not thread-safe,
# and another thread's (numba compiles in one while outputs are prepared) may restore filters without ours
# while zarr consolidates.
_ignore_zarr_warnings()

#: Group attribute that holds the run's provenance; its presence marks an lncc output.
PROVENANCE_KEY = "lncc"
#: The group of an output's bookkeeping, and its arrays: the block ledger (a stats vector per block done) and
#: the block checksums (:func:`block_digest`).
STATE_GROUP = "_lncc"
LEDGER = "blocks"
CHECKSUMS = "checksums"


@dataclass(frozen=True)
class InputInfo:
    """What the metadata of an input array says (no data read)."""

    url: str
    shape: tuple[int, ...]
    dtype: np.dtype
    dims: tuple[str, ...]
    zarr_chunks: tuple[int, ...]
    zarr_format: int
    coords: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    # Kept so that open_input opens the array as inspect_input did; out of repr because it may hold secrets.
    storage_options: dict[str, Any] | None = field(default=None, compare=False, repr=False)


def _is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def _local_path(url: str):
    from pathlib import Path

    return Path(url.removeprefix("file://"))


def _store_kwargs(url: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """``storage_options=`` for zarr and xarray, for URLs only: zarr refuses them with a local path."""
    return {"storage_options": dict(storage_options)} if storage_options and not _is_local(url) else {}


def _filesystem(url: str, storage_options: dict[str, Any] | None):
    """The fsspec filesystem of a URL and the path inside it."""
    import fsspec

    return fsspec.core.url_to_fs(url, **(storage_options if not _is_local(url) and storage_options else {}))


def _secrets(storage_options: dict[str, Any] | None) -> set[str]:
    """Every string in ``storage_options`` worth hiding, with the host parts of URL values (an endpoint)."""
    from urllib.parse import urlsplit

    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)
        elif isinstance(value, str) and len(value) >= 4:  # shorter values are no secret and would garble text
            found.add(value)
            parts = urlsplit(value)
            if parts.netloc:
                found.update(p for p in (parts.netloc, parts.hostname) if p and len(p) >= 4)

    walk(storage_options)
    return found


def redact(text: str, storage_options: dict[str, Any] | None) -> str:
    """``text`` with every value of ``storage_options`` (keys, secrets, endpoints) replaced by ``***``."""
    for secret in sorted(_secrets(storage_options), key=len, reverse=True):  # longest first: a URL before its host
        text = text.replace(secret, "***")
    return text


def _one_line(exc: BaseException, storage_options: dict[str, Any] | None) -> str:
    """``Type: message`` of an exception, on one line, without any storage option in it."""
    message = " ".join(str(exc).split())
    return redact(f"{type(exc).__name__}: {message}" if message else type(exc).__name__, storage_options)


def _remote_is_empty(url: str, storage_options: dict[str, Any] | None) -> bool:
    """True when no object is stored under a URL.

    Raises FileNotFoundError when the URL's bucket does not exist (s3fs does: a
    missing prefix lists empty, a missing bucket raises), and whatever the store
    raises when it cannot be listed at all.
    """
    fs, root = _filesystem(url, storage_options)
    fs.invalidate_cache(root)
    # A whole listing, not maxdepth=1: s3fs lists a missing bucket as empty with maxdepth but raises without.
    return not fs.find(root)


def _open_array(url: str, storage_options: dict[str, Any] | None = None) -> zarr.Array:
    if _is_local(url) and not _local_path(url).exists():
        raise InputError(f"input {url!r} does not exist; check the path")
    try:
        node = zarr.open(store=url, mode="r", **_store_kwargs(url, storage_options))
    except Exception as exc:  # zarr raises several types (some FileNotFoundError) for "not a zarr node"
        raise _unreadable_input(url, exc, storage_options) from None
    if isinstance(node, zarr.Group):
        names = sorted(name for name, _ in node.arrays())
        hint = f" (arrays in it: {', '.join(names[:8])})" if names else ""
        raise InputError(f"input {url!r} is a zarr group, not an array; give the array inside it, "
                         f"e.g. {url.rstrip('/')}/{names[0] if names else 'NAME'}{hint}")
    return node


def _unreadable_input(url: str, exc: Exception, storage_options: dict[str, Any] | None) -> InputError:
    """The one-line error for an input zarr cannot open: missing, not zarr, or (URLs) not reachable."""
    if _is_local(url):
        return InputError(f"input {url!r} is not a readable zarr array ({_one_line(exc, None)}); "
                          "give the path of a zarr array (format 2 or 3)")
    try:
        empty = _remote_is_empty(url, storage_options)
    except FileNotFoundError:  # no such bucket
        empty = True
    except Exception as listing:  # no access at all: report that, it is what needs fixing first
        return InputError(f"input {url!r} cannot be read ({_one_line(listing, storage_options)}); check the URL, "
                          "the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile) and "
                          "storage_options (e.g. endpoint_url)")
    if empty:
        return InputError(f"input {url!r} does not exist (nothing is stored under it); check the bucket and path, "
                          "and storage_options.endpoint_url for a store that is not AWS")
    return InputError(f"input {url!r} is not a readable zarr array ({_one_line(exc, storage_options)}); "
                      "give the URL of a zarr array (format 2 or 3)")


def _metadata_dims(array: zarr.Array) -> tuple[str, ...] | None:
    names = getattr(array.metadata, "dimension_names", None)
    if names and all(isinstance(n, str) for n in names):
        return tuple(names)
    names = array.attrs.get("_ARRAY_DIMENSIONS")
    if names and all(isinstance(n, str) for n in names):
        return tuple(names)
    return None


def _dimension_coords(url: str, dims: tuple[str, ...], shape: tuple[int, ...],
                      storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """1-D coordinate variables named like the dims, from the array's parent group (xarray layout)."""
    parent, sep, _ = url.rstrip("/").rpartition("/")
    if not sep or not parent or parent.endswith(":/"):  # "s3://name": the array is a bucket's root
        return {}
    try:
        # mask_and_scale=False: a coordinate equal to the fill value (often 0) is a value, not missing.
        ds = xr.open_zarr(parent, consolidated=False, chunks=None, mask_and_scale=False,
                          **_store_kwargs(parent, storage_options))
    except Exception:  # the parent is not an xarray-readable group: the input simply has no coordinates
        return {}
    coords = {}
    for dim, size in zip(dims, shape):
        if dim in ds.variables and ds[dim].dims == (dim,) and ds[dim].size == size:
            coords[dim] = ds[dim].variable.load()
    return coords


def inspect_input(url: str, dims: list[str] | tuple[str, ...] | None = None, *,
                  storage_options: dict[str, Any] | None = None) -> InputInfo:
    """Read an input's metadata: shape, dtype, dims, chunks and dimension coordinates.

    ``dims`` (from the config) overrides the metadata; without either, the dims
    are ``(y, x)`` or ``(t, y, x)``. ``storage_options`` (fsspec, for URLs) are
    kept in the returned info for :func:`open_input`.

    Raises
    ------
    InputError
        If the input is missing, unreadable, not a zarr array, or ``dims`` does
        not match its number of dimensions.
    """
    array = _open_array(url, storage_options)
    shape = tuple(int(s) for s in array.shape)
    if dims is not None:
        if len(dims) != len(shape):
            raise InputError(f"config dims {list(dims)} has {len(dims)} names but input {url!r} is "
                             f"{len(shape)}-D with shape {shape}; give {len(shape)} names")
        names = tuple(dims)
    else:
        names = _metadata_dims(array) or default_dims(len(shape))
    return InputInfo(
        url=url,
        shape=shape,
        dtype=np.dtype(array.dtype),
        dims=names,
        zarr_chunks=tuple(int(c) for c in array.chunks),
        zarr_format=int(array.metadata.zarr_format),
        coords=_dimension_coords(url, names, shape, storage_options),
        storage_options=storage_options,
    )


def open_input(info: InputInfo, chunks: tuple[int, ...]) -> xr.DataArray:
    """Open an input lazily as a dask-backed DataArray with the given processing chunks.

    The values are the stored values, undecoded (no fill-value masking or
    scaling), so integer images stay integers.
    """
    source = _source(info)
    name = "lncc-input-" + dask.base.tokenize(info.url, source.shape, str(source.dtype), source.chunks, chunks)
    data = da.from_array(source, chunks=chunks, name=name, inline_array=True, asarray=False,
                         meta=np.empty((0,) * source.ndim, dtype=source.dtype))
    return xr.DataArray(data, dims=info.dims, coords=info.coords)


def _source(info: InputInfo) -> _ChunkReader | _ZarrSource:
    """What blocks of an input are read from: lncc's own chunk reader where it knows the layout, else zarr."""
    return array_reader(info.url, storage_options=info.storage_options)


def array_reader(url: str, *, storage_options: dict[str, Any] | None = None) -> _ChunkReader | _ZarrSource:
    """A read-only array-like over the zarr array at ``url`` (``reader[region]``; ``.shape``, ``.dtype``,
    ``.chunks``): lncc's own chunk reader where it knows the layout, else zarr. Read errors name the chunk
    file or the region."""
    array = zarr.open_array(store=url, mode="r", **_store_kwargs(url, storage_options))
    return _ChunkReader.for_array(array, url) or _ZarrSource(array, url, storage_options)


class _ZarrSource:
    """A zarr array read through zarr, whose read errors name the input and the region (zarr's do not)."""

    def __init__(self, array: zarr.Array, url: str, storage_options: dict[str, Any] | None):
        self.array = array
        self.url = url
        self.shape = tuple(int(n) for n in array.shape)
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)
        self.chunks = tuple(int(c) for c in array.chunks)
        self._options = storage_options

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "array": None}  # workers reopen the array (an open store may not pickle)

    def __getitem__(self, key) -> np.ndarray:
        if self.array is None:
            self.array = zarr.open_array(store=self.url, mode="r", **_store_kwargs(self.url, self._options))
        try:
            return self.array[key]
        except Exception as exc:  # zarr's codecs and stores raise many types; none names the chunk
            where = ", ".join(f"{k.start}:{k.stop}" if isinstance(k, slice) else str(k)
                              for k in (key if isinstance(key, tuple) else (key,)))
            raise InputError(f"input {self.url!r} cannot be read at [{where}] ({_one_line(exc, self._options)}); "
                             "the array is damaged or unreachable there: check or rewrite it") from None


def open_pair(reference: InputInfo, moving: InputInfo, *, halo: int = 0, cache_bytes: int = 0
              ) -> _PairReader | None:
    """Both inputs as one array-like of shape ``(2,) + shape`` that reads a region of both at once.

    A task that reads its block of both images (halo included) needs no other
    task's data: nothing moves between workers. Local chunk files are decoded
    straight into the caller's buffer (:meth:`_PairReader.read_into`). Only for
    inputs of the same dtype and shape; None otherwise.

    Neighbouring blocks read the same edge chunks for their halos. With
    ``halo`` (the window radius) and ``cache_bytes``, each process keeps the
    ``halo``-wide edges of the chunks it decodes, and the chunks it decoded
    only in part, up to ``cache_bytes``, for the blocks that need them next.
    """
    if np.dtype(reference.dtype) != np.dtype(moving.dtype) or reference.shape != moving.shape:
        return None
    sources = [_source(info) for info in (reference, moving)]
    if any(np.dtype(src.dtype) != np.dtype(sources[0].dtype) for src in sources):
        return None
    run = uuid.uuid4().hex  # cached chunks belong to this reader's run: a later run never sees them
    for i, src in enumerate(sources):
        if isinstance(src, _ChunkReader):
            src.cache = (run, i, int(halo), int(cache_bytes)) if halo and cache_bytes else None
    return _PairReader(*sources, token=(reference.url, moving.url))


class _PairReader:
    """Two same-shaped arrays read as one with a leading axis of 2 (reference, moving)."""

    def __init__(self, reference, moving, token=None):
        self.sources = (reference, moving)
        self.dtype = np.dtype(reference.dtype)
        self.shape = (2,) + tuple(int(n) for n in reference.shape)
        self.ndim = len(self.shape)
        self._token = token

    def __dask_tokenize__(self):
        return ("lncc-pair", self._token, self.shape, str(self.dtype))

    def read_into(self, region: list[slice], out: np.ndarray) -> None:
        """Fill ``out`` (shape ``(2,) + region's shape``) with both images' values in ``region`` (step-1 slices)."""
        for i, source in enumerate(self.sources):
            if isinstance(source, _ChunkReader):
                source.read_into(region, out[i])  # decoded straight into the pair block
            else:
                out[i] = source[tuple(region)]


class _ChunkReader:
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
        #: :class:`_ChunkCache`; None reads every chunk from its file.
        self.cache = None

    @classmethod
    def for_array(cls, array: zarr.Array, url: str) -> _ChunkReader | None:
        if not _is_local(url):
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
            compressor = _v3_compressor(meta)
            if compressor is None:
                return None
            compressor, endian = compressor
            stored = dtype.newbyteorder("<" if endian == "little" else ">") if dtype.itemsize > 1 else dtype
        fill = array.fill_value if array.fill_value is not None else 0
        return cls(_local_path(url), tuple(int(n) for n in array.shape), dtype, tuple(int(c) for c in array.chunks),
                   np.dtype(stored), compressor, fill, meta.encode_chunk_key)

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        region = [slice(*k.indices(n)[:2]) for k, n in zip(key, self.shape)]
        out = np.empty(tuple(r.stop - r.start for r in region), dtype=self.dtype)
        self.read_into(region, out)
        return out

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
            key = (run, index, coords)  # the run first: see _ChunkCache.put
            whole = all(p.start == 0 and p.stop == c for p, c in zip(part, self.chunks))
            if _CHUNK_CACHE.read(key, part, out[target]):
                continue
            chunk = self._chunk(coords)
            if chunk is None:
                out[target] = self._fill
                continue
            out[target] = chunk[part]
            # Its edges serve the neighbours' halos; a chunk read only in part (for a halo) is
            # some other block's own chunk, which that block will read whole.
            _CHUNK_CACHE.put(key, chunk, edge, keep_whole=not whole, limit=limit)

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
                             f"({_one_line(exc, None)}); the array is damaged there: rewrite or restore it") from None


class _ChunkCache:
    """Decoded chunks shared by the tasks of one process: edge strips, and whole chunks read in part.

    Two least-recently-used stores under one lock: the ``edge``-wide edges of
    every chunk decoded (a few KB each, up to :func:`~pipeline.budget.edge_cache_bytes`), and
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
                spare = next((a for a in self._spare if a.shape == chunk.shape and a.dtype == chunk.dtype), None)
                if spare is not None:
                    self._spare.remove(spare)
                whole = spare if spare is not None else np.empty_like(chunk)
                whole[...] = chunk
                self._whole[key] = whole
                self._bytes += whole.nbytes
                while self._bytes > limit:
                    evicted = self._whole.popitem(last=False)[1]
                    self._bytes -= evicted.nbytes
                    if len(self._spare) < 4:
                        self._spare.append(evicted)


_CHUNK_CACHE = _ChunkCache()


def _v3_layout(meta):
    """(the bytes-to-bytes codec or None, endian) of a v3 array stored as regular chunks of plain bytes with at
    most one compressor; None for any other layout (sharding, transposes, codec chains)."""
    from zarr.codecs import BytesCodec

    if type(meta.chunk_grid).__name__ != "RegularChunkGrid":
        return None
    codecs = list(meta.codecs)
    if not codecs or not isinstance(codecs[0], BytesCodec) or len(codecs) > 2:
        return None
    return (codecs[1] if len(codecs) == 2 else None), getattr(codecs[0].endian, "value", "little")


def _v3_compressor(meta):
    """(numcodecs decompressor or None, endian) for a v3 array of bytes + at most one known compressor, else None."""
    from numcodecs import GZip, Zstd, Blosc
    from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

    layout = _v3_layout(meta)
    if layout is None:
        return None
    codec, endian = layout
    if codec is None:
        return None, endian
    # Decoding needs no parameters: these formats describe themselves.
    known = {BloscCodec: Blosc, ZstdCodec: Zstd, GzipCodec: GZip}
    for kind, decoder in known.items():
        if isinstance(codec, kind):
            return decoder(), endian
    return None


def output_codec(name: str, zarr_format: int):
    """The zarr codec of an output's ``compressor`` setting (``lz4``, ``zstd`` or ``none``: None)."""
    if name == "none":
        return None
    if zarr_format == 3:
        from zarr.codecs import BloscCodec, ZstdCodec

        if name == "lz4":
            return BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle", typesize=4)
        return ZstdCodec(level=1)
    from numcodecs import Blosc, Zstd

    if name == "lz4":
        return Blosc(cname="lz4", clevel=5, shuffle=Blosc.BITSHUFFLE)
    return Zstd(level=1)


class OutputWriter:
    """Writes blocks of an output prepared by :func:`pipeline.outputs.create_output`, then their ledger entries.

    For a local output whose encoding it knows (the ones :func:`pipeline.outputs.create_output`
    makes), each zarr chunk is encoded here and written to a temporary file
    renamed into place, by the thread that writes the block (the caller's,
    or with :meth:`write_later` one of this process's writer threads). This is
    what zarr itself would write, but it skips zarr's shared event loop, which
    otherwise serialises the writes of all dask threads and copies each chunk.
    Anything else goes through zarr. Every write replaces whole chunks, so a
    retried block writes the same bytes: for URL outputs each chunk is one
    whole-object PUT. It is pickled to dask workers with its URL, names,
    ``storage_options`` and run id, never with open arrays.

    ``run`` identifies the run whose background writes :func:`finish_writes`
    waits for (and then refuses); None for a writer used only by :meth:`write`.
    With ``owner``, a block is written only while the output's provenance
    names that run id (``run_id``): a run whose output another run has taken
    over (through another path to it) writes nothing more.
    """

    def __init__(self, url: str, names: tuple[str, ...], storage_options: dict[str, Any] | None = None,
                 run: str | None = None, owner: str | None = None):
        self.url = url
        self.names = tuple(names)
        self.storage_options = storage_options
        self.run = run
        self.owner = owner
        self._arrays: dict[str, Any] = {}
        self._ledger = None
        self._checksums = None
        self._format = None

    def __getstate__(self) -> dict[str, Any]:
        # workers open their own arrays
        return {**self.__dict__, "_arrays": {}, "_ledger": None, "_checksums": None}

    def __repr__(self) -> str:  # never the storage options
        return f"OutputWriter({self.url!r}, {self.names!r})"

    def _array(self, name: str):
        if name not in self._arrays:
            array = zarr.open_array(store=_join(self.url, name), mode="r+", config={"write_empty_chunks": True},
                                    **_store_kwargs(self.url, self.storage_options))
            self._arrays[name] = (array, _direct_codec(array) if _is_local(self.url) else None)
        return self._arrays[name]

    def write(self, values: dict[str, np.ndarray], region: tuple[slice, ...], block_index: tuple[int, ...],
              stats: np.ndarray) -> None:
        """Write one block of every output variable, its checksum, then its ledger entry (which proves the
        values are there).

        Raises
        ------
        RuntimeError
            If the output now belongs to another run (see ``owner``), or a
            write fails (the message names the output and the block).
        """
        digest = block_digest(values)
        for name, block in values.items():
            array, codec = self._array(name)
            with self._where(block_index, name):
                if codec is None:
                    array[region] = block
                else:
                    _write_chunks(array, codec, _local_path(_join(self.url, name)), block, region)
        if self._ledger is None:
            options = _store_kwargs(self.url, self.storage_options)
            self._checksums = zarr.open_array(store=_join(self.url, STATE_GROUP, CHECKSUMS), mode="r+", **options)
            self._ledger = zarr.open_array(store=_join(self.url, STATE_GROUP, LEDGER), mode="r+", **options)
        with self._where(block_index, f"{STATE_GROUP}/{CHECKSUMS}"):
            self._checksums[block_index] = digest
        self._check_owner(block_index)  # the ledger entry is what makes the block count
        with self._where(block_index, f"{STATE_GROUP}/{LEDGER}"):
            self._ledger[block_index] = stats

    @contextlib.contextmanager
    def _where(self, block_index, array: str):
        """Reword a failed write with the output, the array and the block (a full disk's OSError names none)."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - reworded with where it happened
            message = (f"cannot write block {tuple(block_index)} to {_join(self.url, array)!r} "
                       f"({_one_line(exc, self.storage_options)}); fix the cause (e.g. free disk space) and rerun "
                       "to resume")
            raise (OSError(exc.errno, message) if isinstance(exc, OSError) else RuntimeError(message)) from None

    def _check_owner(self, block_index) -> None:
        if self.owner is None:
            return
        if self._format is None:
            self._format = 3 if _read_json(self.url, _ATTRS_FILE[3], self.storage_options) is not None else 2
        attrs = group_attributes(self.url, storage_options=self.storage_options, zarr_format=self._format) or {}
        holder = (attrs.get(PROVENANCE_KEY) or {}).get("run_id")
        if holder != self.owner:
            raise RuntimeError(f"output {self.url!r} was taken over by another run (run id {holder}) while run "
                               f"{self.owner} was writing it; block {tuple(block_index)} is left out. Run one lncc "
                               "at a time per output, by one path; rerun to repair it")

    def buffer(self, shape: tuple[int, ...]) -> np.ndarray:
        """A float32 array for the calling thread's next block, to be handed to :meth:`write_later`.

        Each thread alternates between two buffers, so a block computes while
        the one before it is still being written; a buffer is handed out only
        once its last write has finished. If that write, of this writer's run,
        failed, its error is raised here (and not again by :func:`finish_writes`).
        """
        with _flight_lock:
            ring = _rings.setdefault(threading.get_ident(), [0, None, None])
            slot = ring[0]
            previous = ring[1 + slot]
        if previous is not None:
            future, run = previous
            wait([future])
            with _flight_lock:
                if ring[1 + slot] is previous:
                    ring[1 + slot] = None
                failed = run == self.run and future.exception() is not None
                if failed:
                    _in_flight.get(run, set()).discard(future)
            if failed:
                raise future.exception()
        return thread_buffer(f"output-{slot}", shape, np.float32)

    def write_later(self, values: dict[str, np.ndarray], region: tuple[slice, ...], block_index: tuple[int, ...],
                    stats: np.ndarray) -> Future:
        """:meth:`write` in a background thread of this process; ``values`` views the latest :meth:`buffer`.

        The ledger entry still follows the block's values, so a block whose write
        did not finish is not done, and a rerun computes it. Call
        :func:`finish_writes` with this writer's run before relying on the output.

        Raises
        ------
        RuntimeError
            If :func:`finish_writes` already closed the run (a task still running
            after its run failed): nothing is written.
        """
        with _flight_lock:
            if self.run in _closed:
                raise RuntimeError(f"run {self.run} is over; block {block_index} of {self.url!r} was not written")
            future = _writer_pool().submit(self.write, values, region, block_index, stats)
            ring = _rings.setdefault(threading.get_ident(), [0, None, None])
            ring[1 + ring[0]] = (future, self.run)
            ring[0] ^= 1
            _in_flight.setdefault(self.run, set()).add(future)
        future.add_done_callback(functools.partial(_landed, self.run))
        return future


_flight_lock = threading.Lock()
#: Per thread: the buffer slot its next block uses, and the (write, run) in flight from each of its two slots.
_rings: dict[int, list] = {}
#: Per run: writes started by write_later that have not finished, or that failed and were not yet reported.
_in_flight: dict[str | None, set[Future]] = {}
#: Runs that finish_writes closed: their late tasks write nothing.
_closed: set[str | None] = set()


def _landed(run, future: Future) -> None:
    if future.exception() is None:
        with _flight_lock:
            _in_flight.get(run, set()).discard(future)


def finish_writes(run: str | None) -> None:
    """Close ``run`` to new background writes in this process, and wait for those it started.

    Called once a run's tasks are over (or have failed): a task of the run still
    running here writes nothing after this, so the run can release its output.
    Raises the first error among the writes (each is reported once); afterwards
    the block buffers they used are free.
    """
    with _flight_lock:
        _closed.add(run)
        pending = list(_in_flight.pop(run, ()))
    error = None
    for future in pending:
        try:
            future.result()
        except BaseException as exc:  # noqa: BLE001 - the first is re-raised below
            error = error or exc
    with _flight_lock:
        for ring in _rings.values():
            for k in (1, 2):
                if ring[k] is not None and ring[k][0] in pending:
                    ring[k] = None
    if error is not None:
        raise error


_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def _writer_pool() -> ThreadPoolExecutor:
    """This process's block-writing threads: they mostly wait on the disk, so they do not compete for cores."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="lncc-write")
        return _pool


_NO_COMPRESSION = object()


def _direct_codec(array: zarr.Array):
    """The numcodecs codec that encodes ``array``'s chunks (or _NO_COMPRESSION), or None if not a known layout."""
    from numcodecs import Blosc, Zstd
    from zarr.codecs import BloscCodec, ZstdCodec

    meta = array.metadata
    if array.dtype != np.float32:
        return None
    if meta.zarr_format == 2:
        if meta.order != "C" or meta.filters or meta.dtype.to_native_dtype().byteorder == ">":
            return None
        if meta.compressor is None:
            return _NO_COMPRESSION
        return meta.compressor if isinstance(meta.compressor, (Blosc, Zstd)) else None
    layout = _v3_layout(meta)
    if layout is None or layout[1] != "little":
        return None
    codec = layout[0]
    if codec is None:
        return _NO_COMPRESSION
    if isinstance(codec, BloscCodec):
        shuffle = {"noshuffle": Blosc.NOSHUFFLE, "shuffle": Blosc.SHUFFLE, "bitshuffle": Blosc.BITSHUFFLE}
        return Blosc(cname=codec.cname.value, clevel=codec.clevel, shuffle=shuffle[codec.shuffle.value],
                     blocksize=codec.blocksize)
    if isinstance(codec, ZstdCodec):
        return Zstd(level=codec.level, checksum=codec.checksum)
    return None


def _write_chunks(array: zarr.Array, codec, root, block: np.ndarray, region: tuple[slice, ...]) -> None:
    """Encode and write the zarr chunks that ``region`` (a union of whole chunks, clipped at the edges) covers."""
    chunk = array.chunks
    first = [r.start // c for r, c in zip(region, chunk)]
    last = [-(-r.stop // c) for r, c in zip(region, chunk)]
    for coords in np.ndindex(*[hi - lo for lo, hi in zip(first, last)]):
        coords = tuple(lo + k for lo, k in zip(first, coords))
        inside = tuple(slice(k * c - r.start, min((k + 1) * c, s) - r.start)
                       for k, c, r, s in zip(coords, chunk, region, array.shape))
        part = block[inside]
        if part.shape != chunk:  # an edge chunk: zarr stores it whole, padded with the fill value
            whole = np.full(chunk, array.fill_value, dtype=np.float32)
            whole[tuple(slice(0, n) for n in part.shape)] = part
            part = whole
        part = np.ascontiguousarray(part, dtype="<f4")
        data = part if codec is _NO_COMPRESSION else np.frombuffer(codec.encode(part), dtype=np.uint8)
        path = root / array.metadata.encode_chunk_key(coords)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.partial")
        try:
            _write_file(temp, data)
            os.replace(temp, path)
        except OSError as exc:  # os.write's errors (e.g. a full disk) name no file
            temp.unlink(missing_ok=True)
            raise OSError(exc.errno, f"{exc.strerror} (writing {path})") from None


#: Alignment of address, length and offset that O_DIRECT asks for (the largest logical block size in use).
_ALIGN = PAGE
#: Smaller writes go through the page cache: a direct write waits for the device, which only pays off in bulk.
_DIRECT_MIN = 1 << 20
_no_direct: set[int] = set()  # devices (st_dev) that refused O_DIRECT


def _write_file(path, data: np.ndarray) -> None:
    """Write the bytes of the contiguous array ``data`` to a new file ``path``.

    Large writes bypass the page cache (O_DIRECT) where the file system allows:
    on this class of (virtual) machine, filling fresh page-cache pages costs
    ~3 s of kernel time per GB written, the direct path ~0.15 s. The map is
    written once and read later by someone else, so caching it buys nothing.
    """
    view = data.reshape(-1).view(np.uint8)
    direct = getattr(os, "O_DIRECT", 0)
    size = view.size
    body = size - size % _ALIGN
    if direct and body >= _DIRECT_MIN and os.stat(path.parent).st_dev not in _no_direct:
        if view.ctypes.data % _ALIGN:
            aligned = thread_buffer("write", body)
            aligned[:] = view[:body]
        else:
            aligned = view[:body]
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | direct, 0o666)
        except OSError:
            _no_direct.add(os.stat(path.parent).st_dev)
        else:
            try:
                written = 0
                while written < body:
                    written += os.write(fd, aligned[written:])
            except OSError:
                _no_direct.add(os.stat(path.parent).st_dev)
                os.close(fd)
            else:
                os.close(fd)
                if body < size:
                    with open(path, "r+b") as f:
                        f.seek(body)
                        f.write(view[body:])
                return
    with open(path, "wb") as f:
        f.write(view)


def read_ledger(url: str, *, storage_options: dict[str, Any] | None = None) -> np.ndarray:
    """The block ledger of an output: one stats vector per block, NaN where the block is not done.

    An entry that cannot be read (a damaged or truncated file) reads as not done.
    """
    return _read_entries(_join(url, STATE_GROUP, LEDGER), np.nan, storage_options)


def read_checksums(url: str, *, storage_options: dict[str, Any] | None = None) -> np.ndarray:
    """The block checksums of an output (:func:`block_digest` per block; 0 where none could be read)."""
    return _read_entries(_join(url, STATE_GROUP, CHECKSUMS), 0, storage_options)


def _read_entries(url: str, missing, storage_options: dict[str, Any] | None) -> np.ndarray:
    """All of a small-chunked bookkeeping array, each chunk on its own: one unreadable chunk reads as ``missing``."""
    array = zarr.open_array(store=url, mode="r", **_store_kwargs(url, storage_options))
    reader = _ChunkReader.for_array(array, url)
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


def _join(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *parts])


def block_digest(values: dict[str, np.ndarray] | list[np.ndarray]) -> np.ndarray:
    """The checksum of a block: XXH3-128 of its float32 values, variable after variable, as two uint64.

    Written beside each block's values and compared by :func:`pipeline.outputs.usable_blocks`; it is
    taken of the values, not the encoded bytes, so it checks a chunk whatever its codec and store.
    """
    import xxhash

    h = xxhash.xxh3_128()
    for block in (values.values() if isinstance(values, dict) else values):
        h.update(np.ascontiguousarray(block, dtype="<f4").reshape(-1).view(np.uint8))
    digest = h.intdigest()
    return np.array([digest >> 64, digest & (2**64 - 1)], dtype=np.uint64)


#: The metadata file that holds a zarr group's attributes, by zarr format.
_ATTRS_FILE = {3: "zarr.json", 2: ".zattrs"}


def _read_json(url: str, key: str, storage_options: dict[str, Any] | None) -> Any:
    """The JSON document stored at ``url/key``; None when there is none (or it is not JSON)."""
    import json

    try:
        if _is_local(url):
            raw = (_local_path(url) / key).read_bytes()
        else:
            fs, root = _filesystem(url, storage_options)
            raw = fs.cat_file(f"{root.rstrip('/')}/{key}")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def group_attributes(url: str, *, storage_options: dict[str, Any] | None = None,
                     zarr_format: int | None = None) -> dict[str, Any] | None:
    """The attributes of the zarr group at ``url``, read from its metadata file; None if it is no group.

    Read from the file itself, never from consolidated metadata, which may lag behind. A format-2
    group's ``.zattrs`` counts even before its ``.zgroup`` exists: :func:`write_group` writes it first.
    ``zarr_format``, when known, reads just that format's file.
    """
    if zarr_format == 2:  # known: one read (a block writer asks for every block)
        attrs = _read_json(url, _ATTRS_FILE[2], storage_options)
        return attrs if isinstance(attrs, dict) else None
    meta = _read_json(url, _ATTRS_FILE[3], storage_options)
    if meta is not None or zarr_format == 3:
        meta = meta or {}
        ok = isinstance(meta, dict) and meta.get("node_type") == "group"
        return dict(meta.get("attributes") or {}) if ok else None
    attrs = _read_json(url, _ATTRS_FILE[2], storage_options)
    if not isinstance(attrs, dict) or _read_json(url, ".zarray", storage_options) is not None:
        return None
    return attrs


def _put(url: str, key: str, data: bytes, storage_options: dict[str, Any] | None) -> None:
    """Store ``data`` at ``url/key`` whole or not at all: a local file is written aside and renamed into place
    (and synced, so the rename never outlives its bytes); an object store's PUT is atomic."""
    if _is_local(url):
        path = _local_path(url) / key
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")
        with open(temp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    else:
        fs, root = _filesystem(url, storage_options)
        fs.pipe_file(f"{root.rstrip('/')}/{key}", data)


def write_group(url: str, attributes: dict[str, Any], *, zarr_format: int = 3,
                storage_options: dict[str, Any] | None = None) -> None:
    """Create the zarr group at ``url`` with its ``attributes`` in its first metadata write.

    No moment leaves a group without them (a killed run's output must still say whose it is): format 3
    writes one ``zarr.json``; format 2 writes ``.zattrs`` before ``.zgroup``.
    """
    import json

    attributes = _json_safe(attributes)
    if zarr_format == 3:
        meta = {"zarr_format": 3, "node_type": "group", "attributes": attributes}
        _put(url, _ATTRS_FILE[3], json.dumps(meta, indent=2).encode(), storage_options)
    else:
        _put(url, _ATTRS_FILE[2], json.dumps(attributes, indent=2).encode(), storage_options)
        _put(url, ".zgroup", json.dumps({"zarr_format": 2}).encode(), storage_options)


def update_provenance(url: str, updates: dict[str, Any], *,
                      storage_options: dict[str, Any] | None = None) -> None:
    """Merge ``updates`` into the output group's provenance attribute (read from the group's own file)."""
    current = read_provenance(url, storage_options=storage_options)
    current.update(_json_safe(updates))
    group = zarr.open_group(store=url, mode="r+", use_consolidated=False, **_store_kwargs(url, storage_options))
    group.attrs[PROVENANCE_KEY] = current
    # Refreshed on every update so that xarray.open_zarr(path) opens quickly and never sees stale metadata.
    _ignore_zarr_warnings()  # again: a catch_warnings block left since import (pytest's) may have dropped them
    zarr.consolidate_metadata(group.store_path)  # the open store: it carries the storage options


def _json_safe(value: Any) -> Any:
    """Strict-JSON form of attrs: non-finite floats become strings, tuples lists."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else str(float(value))
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def read_provenance(url: str, *, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The provenance attribute of an lncc output (empty if there is none or no group)."""
    provenance = (group_attributes(url, storage_options=storage_options) or {}).get(PROVENANCE_KEY)
    return dict(provenance) if isinstance(provenance, dict) else {}


def sync_outputs(urls: list[str]) -> None:
    """Make everything written to local outputs durable (the files' data and their renames): one ``syncfs`` per
    file system, ``sync`` where there is none. URL outputs: nothing to do (a PUT is durable once answered)."""
    import ctypes

    seen = set()
    for url in urls:
        if not _is_local(url):
            continue
        fd = os.open(_local_path(url), os.O_RDONLY)
        try:
            device = os.fstat(fd).st_dev
            if device in seen:
                continue
            seen.add(device)
            libc = ctypes.CDLL(None, use_errno=True)
            syncfs = getattr(libc, "syncfs", None)
            if syncfs is None or syncfs(fd) != 0:
                os.sync()
        finally:
            os.close(fd)


def write_array(
    url: str,
    data,
    *,
    dims: tuple[str, ...] | None = None,
    chunks: tuple[int, ...] | None = None,
    zarr_format: int = 3,
    name: str | None = None,
    coords: dict[str, np.ndarray] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> str:
    """Write an image (numpy or dask) as a zarr array, for demo, test and benchmark inputs.

    With ``name`` the array is written inside a group at ``url`` (with optional
    1-D coordinate arrays, the xarray way) and its path ``url/name`` is returned.
    Dims are stored as zarr 3 ``dimension_names`` or zarr 2 ``_ARRAY_DIMENSIONS``.
    Dask data is written block by block, never held whole in memory.
    """
    dims = tuple(dims) if dims is not None else default_dims(np.ndim(data))
    chunks = tuple(chunks) if chunks is not None else tuple(min(s, 1024) for s in np.shape(data))
    if name is None:
        store_url, array_path, group = url, None, None
    else:
        group = zarr.open_group(store=url, mode="a", zarr_format=zarr_format, **_store_kwargs(url, storage_options))
        store_url, array_path = url, name
    kwargs: dict[str, Any] = {}
    if zarr_format == 3:
        kwargs["dimension_names"] = dims
    if group is not None:
        array = group.create_array(name=array_path, shape=np.shape(data), chunks=chunks, dtype=data.dtype,
                                   overwrite=True, **kwargs)
    else:
        array = zarr.create_array(store=store_url, shape=np.shape(data), chunks=chunks, dtype=data.dtype,
                                  zarr_format=zarr_format, overwrite=True, **kwargs,
                                  **_store_kwargs(url, storage_options))
    if zarr_format == 2:
        array.attrs["_ARRAY_DIMENSIONS"] = list(dims)
    if isinstance(data, da.Array):
        da.store(data.rechunk(chunks), array, lock=False)
    else:
        array[...] = np.asarray(data)
    for dim, values in (coords or {}).items():
        if group is None:
            raise ValueError("coords need a group: pass name= to write the array inside a group")
        values = np.asarray(values)
        coord = group.create_array(name=dim, shape=values.shape, dtype=values.dtype, overwrite=True,
                                   fill_value=None if zarr_format == 2 else 0,
                                   **({"dimension_names": (dim,)} if zarr_format == 3 else {}))
        if zarr_format == 2:
            coord.attrs["_ARRAY_DIMENSIONS"] = [dim]
        coord[...] = values
    return url if name is None else f"{url.rstrip('/')}/{name}"


#: Listing fields that change whenever an object's bytes do (S3 and most object stores: ETag; GCS: md5Hash,
#: crc32c; Azure: etag). An object listed without any is read and hashed instead.
_OBJECT_TAGS = ("ETag", "etag", "md5Hash", "crc32c", "checksum")


def fingerprint(url: str, *, storage_options: dict[str, Any] | None = None) -> str:
    """Content fingerprint of a zarr array: its metadata and every stored chunk.

    Local chunk files are hashed (SHA-256) in parallel threads. URL stores are listed once (no data read): each object counts with
    its key, size and ETag (or the store's checksum), which the store changes
    with the bytes; objects listed without one are read and hashed like files.
    Everything is combined into one SHA-256: a change of any stored byte changes
    it, modification times never do.
    """
    import hashlib

    fs, root = _filesystem(url, storage_options)
    if _is_local(url):
        parts = _content_digests(fs, root, sorted(fs.find(root)))
    else:
        fs.invalidate_cache(root)  # the listing must be of now, not of an earlier call in this process
        listing = fs.find(root, detail=True)
        tagged = {path: _object_tag(info) for path, info in listing.items()}
        untagged = sorted(path for path, tag in tagged.items() if tag is None)
        parts = [(path[len(root):], int(listing[path].get("size") or 0), tag)
                 for path, tag in tagged.items() if tag is not None]
        parts = sorted(parts + _content_digests(fs, root, untagged))
    h = hashlib.sha256()
    for key, size, tag in parts:
        h.update(f"{key}:{size}:{tag};".encode())
    return h.hexdigest()


def _object_tag(info: dict[str, Any]) -> str | None:
    for name in _OBJECT_TAGS:
        if info.get(name):
            return f"{name}={str(info[name]).strip(chr(34))}"
    return None


def _content_digests(fs, root: str, paths: list[str]) -> list[tuple[str, int, str]]:
    """(key, size, digest) of each object, read in parallel threads.

    The digest is SHA-256, which no edit of the bytes keeps (CRC-32, used before, kept a same-size
    edit with four compensating bytes); SHA-256 runs on the CPU's SHA instructions (0.31 s for 512 MiB
    on 4 threads here, BLAKE2b 0.53 s, CRC-32 0.12 s), and hashlib releases the GIL.
    """
    import hashlib
    from concurrent.futures import ThreadPoolExecutor

    def digest(path: str) -> tuple[str, int, str]:
        data = fs.cat_file(path)
        return path[len(root):], len(data), hashlib.sha256(data).hexdigest()

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(digest, paths))


