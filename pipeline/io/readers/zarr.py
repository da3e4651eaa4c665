"""Zarr inputs: an array's metadata, lazy dask arrays, and a stored pair read block by block with halos.

Inputs are zarr arrays (format 2 or 3) given as a path or URL, possibly inside a group
(``store.zarr/path/to/array``); their dimension coordinates are read from the parent group, the xarray way.
Local TIFF files are inputs too (:mod:`pipeline.io.readers.tiff`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import dask.array as da
import dask.base
import numpy as np
import xarray as xr
import zarr

from ...core.checks import default_dims
from ...errors import InputError
from ..urls import is_local, local_path, one_line, remote_is_empty, store_kwargs
from .chunks import ChunkReader
from .tiff import TiffSource, is_tiff

__all__ = ["InputInfo", "inspect_input", "open_input", "open_pair", "array_reader", "ZarrSource", "PairReader"]


@dataclass(frozen=True)
class InputInfo:
    """What the metadata of an input array says (no data read)."""

    url: str
    shape: tuple[int, ...]
    dtype: np.dtype
    dims: tuple[str, ...]
    zarr_chunks: tuple[int, ...]  # the stored chunks (a TIFF's tiles or strips)
    zarr_format: int  # 2 or 3; 0 for a file that is not zarr
    coords: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    # Kept so that open_input opens the array as inspect_input did; out of repr because it may hold secrets.
    storage_options: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    file_format: str = "zarr"  # or "tiff"


def _check_exists(url: str) -> None:
    if is_local(url) and not local_path(url).exists():
        raise InputError(f"input {url!r} does not exist; check the path")


def open_array(url: str, storage_options: dict[str, Any] | None = None) -> zarr.Array:
    _check_exists(url)
    try:
        node = zarr.open(store=url, mode="r", **store_kwargs(url, storage_options))
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
    if is_local(url):
        return InputError(f"input {url!r} is not a readable zarr array ({one_line(exc, None)}); "
                          "give the path of a zarr array (format 2 or 3)")
    try:
        empty = remote_is_empty(url, storage_options)
    except FileNotFoundError:  # no such bucket
        empty = True
    except Exception as listing:  # no access at all: report that, it is what needs fixing first
        return InputError(f"input {url!r} cannot be read ({one_line(listing, storage_options)}); check the URL, "
                          "the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile) and "
                          "storage_options (e.g. endpoint_url)")
    if empty:
        return InputError(f"input {url!r} does not exist (nothing is stored under it); check the bucket and path, "
                          "and storage_options.endpoint_url for a store that is not AWS")
    return InputError(f"input {url!r} is not a readable zarr array ({one_line(exc, storage_options)}); "
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
                          **store_kwargs(parent, storage_options))
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
    _check_exists(url)
    if is_tiff(url):
        source = TiffSource(url)  # the file's first series (pipeline.io.readers.tiff)
        return InputInfo(url=url, shape=source.shape, dtype=source.dtype, dims=_names(url, dims, source.shape),
                         zarr_chunks=source.chunks, zarr_format=0, file_format="tiff")
    array = open_array(url, storage_options)
    shape = tuple(int(s) for s in array.shape)
    names = _names(url, dims, shape, _metadata_dims(array))
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


def _names(url: str, dims, shape: tuple[int, ...], stored: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """An input's dims: the config's (checked against its shape), else the stored ones, else the defaults."""
    if dims is None:
        return stored or default_dims(len(shape))
    if len(dims) != len(shape):
        raise InputError(f"config dims {list(dims)} has {len(dims)} names but input {url!r} is "
                         f"{len(shape)}-D with shape {shape}; give {len(shape)} names")
    return tuple(dims)


def open_input(info: InputInfo, chunks: tuple[int, ...]) -> xr.DataArray:
    """Open an input lazily as a dask-backed DataArray with the given processing chunks.

    The values are the stored values, undecoded (no fill-value masking or
    scaling), so integer images stay integers.
    """
    source = source_of(info)
    name = "lncc-input-" + dask.base.tokenize(info.url, source.shape, str(source.dtype), source.chunks, chunks)
    data = da.from_array(source, chunks=chunks, name=name, inline_array=True, asarray=False,
                         meta=np.empty((0,) * source.ndim, dtype=source.dtype))
    return xr.DataArray(data, dims=info.dims, coords=info.coords)


def source_of(info: InputInfo) -> ChunkReader | ZarrSource | TiffSource:
    """What blocks of an input are read from: lncc's own chunk reader where it knows the layout, else zarr."""
    return array_reader(info.url, storage_options=info.storage_options)


def array_reader(url: str, *, storage_options: dict[str, Any] | None = None) -> ChunkReader | ZarrSource | TiffSource:
    """A read-only array-like over the zarr array at ``url`` (``reader[region]``; ``.shape``, ``.dtype``,
    ``.chunks``): lncc's own chunk reader where it knows the layout, else zarr. Read errors name the chunk
    file or the region."""
    if is_tiff(url):
        return TiffSource(url)
    array = zarr.open_array(store=url, mode="r", **store_kwargs(url, storage_options))
    return ChunkReader.for_array(array, url) or ZarrSource(array, url, storage_options)


class ZarrSource:
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
            self.array = zarr.open_array(store=self.url, mode="r", **store_kwargs(self.url, self._options))
        try:
            return self.array[key]
        except Exception as exc:  # zarr's codecs and stores raise many types; none names the chunk
            where = ", ".join(f"{k.start}:{k.stop}" if isinstance(k, slice) else str(k)
                              for k in (key if isinstance(key, tuple) else (key,)))
            raise InputError(f"input {self.url!r} cannot be read at [{where}] ({one_line(exc, self._options)}); "
                             "the array is damaged or unreachable there: check or rewrite it") from None


def open_pair(reference: InputInfo, moving: InputInfo, *, halo: int = 0, cache_bytes: int = 0
              ) -> PairReader | None:
    """Both inputs as one array-like of shape ``(2,) + shape`` that reads a region of both at once.

    A task that reads its block of both images (halo included) needs no other
    task's data: nothing moves between workers. Local chunk files are decoded
    straight into the caller's buffer (:meth:`PairReader.read_into`), each
    image in its own dtype. Only for inputs of the same shape; None otherwise.

    Neighbouring blocks read the same edge chunks for their halos. With
    ``halo`` (the window radius) and ``cache_bytes``, each process keeps the
    ``halo``-wide edges of the chunks it decodes, and the chunks it decoded
    only in part, up to ``cache_bytes``, for the blocks that need them next.
    """
    if reference.shape != moving.shape:
        return None
    sources = [source_of(info) for info in (reference, moving)]
    run = uuid.uuid4().hex  # cached chunks belong to this reader's run: a later run never sees them
    for i, src in enumerate(sources):
        if isinstance(src, ChunkReader):
            src.cache = (run, i, int(halo), int(cache_bytes)) if halo and cache_bytes else None
    return PairReader(*sources, token=(reference.url, moving.url))


class PairReader:
    """Two same-shaped arrays read as one with a leading axis of 2 (reference, moving).

    ``dtypes`` are the two images' own dtypes; ``dtype`` is one both can be read into (numpy's result type).
    A block task reads each image into a buffer of its own dtype (:func:`pipeline.chunked.tasks.read_pair_block`).
    """

    def __init__(self, reference, moving, token=None):
        self.sources = (reference, moving)
        self.dtypes = (np.dtype(reference.dtype), np.dtype(moving.dtype))
        self.dtype = np.result_type(*self.dtypes)
        self.shape = (2,) + tuple(int(n) for n in reference.shape)
        self.ndim = len(self.shape)
        self._token = token

    def __dask_tokenize__(self):
        return ("lncc-pair", self._token, self.shape, tuple(str(d) for d in self.dtypes))

    def read_into(self, region: list[slice], out) -> None:
        """Fill ``out`` (shape ``(2,) + region's shape``, or two arrays of the region's shape) with both images'
        values in ``region`` (step-1 slices)."""
        for i, source in enumerate(self.sources):
            if hasattr(source, "read_into"):
                source.read_into(region, out[i])  # decoded (or shifted) straight into the pair block
            else:
                out[i] = source[tuple(region)]
