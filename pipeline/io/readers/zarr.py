"""Zarr inputs: an array's metadata and its reader (lncc's own chunk reader where it knows the layout).

Inputs are zarr arrays (format 2 or 3) given as a path or URL, possibly inside a group
(``store.zarr/path/to/array``); their dimension coordinates are read from the parent group, the xarray way.
A group holding one data variable beside its coordinates (what ``lncc ingest`` writes, or an xarray dataset
of one variable) stands for that variable.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr
import zarr

from ...errors import InputError
from ..urls import is_local, one_line, remote_is_empty, store_kwargs
from ..writers.ingest import IMAGE, INGEST_KEY
from .chunks import ChunkReader
from .info import InputInfo, check_exists, input_dims

__all__ = ["inspect_zarr", "open_array", "array_reader", "ZarrSource"]


def open_array(url: str, storage_options: dict[str, Any] | None = None) -> tuple[zarr.Array, str]:
    """The zarr array an input names, and its own URL (a group of one data variable names that variable)."""
    check_exists(url)
    try:
        node = zarr.open(store=url, mode="r", **store_kwargs(url, storage_options))
    except Exception as exc:  # zarr raises several types (some FileNotFoundError) for "not a zarr node"
        raise _unreadable_input(url, exc, storage_options) from None
    if isinstance(node, zarr.Group):
        arrays = dict(node.arrays())
        data = [name for name, array in arrays.items() if not _is_coordinate(name, array)]
        if INGEST_KEY in node.attrs and IMAGE in arrays:  # written by lncc ingest (beside its mask and ledger)
            data = [IMAGE]
        if len(data) == 1:
            return arrays[data[0]], f"{url.rstrip('/')}/{data[0]}"
        names = sorted(arrays)
        hint = f" (arrays in it: {', '.join(names[:8])})" if names else ""
        raise InputError(f"input {url!r} is a zarr group, not an array; give the array inside it, "
                         f"e.g. {url.rstrip('/')}/{names[0] if names else 'NAME'}{hint}")
    return node, url


def _is_coordinate(name: str, array: zarr.Array) -> bool:
    """A 1-D array named like its one dimension: a dimension coordinate, the xarray way."""
    return len(array.shape) == 1 and (_metadata_dims(array) or (name,)) == (name,)


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


def inspect_zarr(url: str, dims=None, storage_options: dict[str, Any] | None = None) -> InputInfo:
    """A zarr array's metadata: shape, dtype, dims (the config's, else the stored ones), chunks, coordinates."""
    array, url = open_array(url, storage_options)
    shape = tuple(int(s) for s in array.shape)
    names = input_dims(url, dims, shape, _metadata_dims(array))
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


def array_reader(url: str, *, storage_options: dict[str, Any] | None = None) -> ChunkReader | ZarrSource:
    """A read-only array-like over the zarr array at ``url`` (``reader[region]``; ``.shape``, ``.dtype``,
    ``.chunks``): lncc's own chunk reader where it knows the layout, else zarr. Read errors name the chunk
    file or the region."""
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
