"""Images written as zarr arrays: for demo, test and benchmark inputs."""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np
import zarr

from ...core.checks import default_dims
from ..urls import store_kwargs

__all__ = ["write_array"]


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
        group = zarr.open_group(store=url, mode="a", zarr_format=zarr_format, **store_kwargs(url, storage_options))
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
                                  **store_kwargs(url, storage_options))
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
