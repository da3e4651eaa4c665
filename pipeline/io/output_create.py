"""Making an lncc output, or replacing one, so that no moment leaves it without lncc's mark."""

from __future__ import annotations

import os
import shutil
import socket
from datetime import UTC, datetime
from typing import Any

import numpy as np
import xarray as xr
import zarr

from ..core.stats import STATS_LENGTH
from .codecs import output_codec
from .encodings import array_layout
from .lock import LOCK_FILE
from .metadata import (
    CHECKSUMS,
    FORMAT_FILES,
    LEDGER,
    PROVENANCE_KEY,
    STATE_GROUP,
    json_safe,
    read_provenance,
    update_provenance,
    write_group,
    zarr_format_of,
)
from .output_pyramid import PYRAMID_GROUP, create_pyramid, ngff_attributes
from .output_state import is_zarr_node, list_entries, output_state, owned_names
from .urls import filesystem, is_local, join_url, local_path, store_kwargs

__all__ = ["create_output"]


def _mark(run_id: str, status: str) -> dict[str, Any]:
    """The provenance of an output that is being made: lncc's, with no config a rerun could trust yet."""
    return {"software": "lncc", "status": status, "run_id": run_id, "host": socket.gethostname(),
            "pid": os.getpid(), "started": datetime.now(UTC).isoformat()}


def _remove(url: str, keep: set[str], storage_options: dict[str, Any] | None, only: set[str] | None = None) -> None:
    """Delete everything directly inside an lncc output but ``keep`` and the lock (or just the entries ``only``)."""
    fs, root = filesystem(url, storage_options)
    for entry in list_entries(url, storage_options) or []:
        if entry in keep or entry == LOCK_FILE or entry.startswith(LOCK_FILE + "."):
            continue
        if only is not None and entry not in only:
            continue
        path = f"{root.rstrip('/')}/{entry}"
        if is_local(url):
            local = local_path(url) / entry
            shutil.rmtree(local) if local.is_dir() and not local.is_symlink() else local.unlink(missing_ok=True)
        else:
            fs.rm(path, recursive=True)


def create_output(url: str, result: xr.Dataset, provenance: dict[str, Any], *, run_id: str, zarr_format: int = 3,
                  compressor: str = "none", level: int | None = None, encoding: str = "float32",
                  storage_options: dict[str, Any] | None = None, layers: xr.Dataset | None = None,
                  pyramid: tuple[int, int] | None = None) -> None:
    """Create (or replace) the output group: metadata, coordinates, provenance, ledger and checksums.

    ``result`` holds ``ncc`` (and optionally extra variables of the same
    shape), lazily. Each variable's zarr chunks equal its dask blocks (whose
    boundaries must fall on multiples of the first chunk), so each block task
    writes whole zarr chunks and no two tasks touch the same chunk. No value is
    written here: :class:`pipeline.io.OutputWriter` does that, block by block.
    The ledger ``_lncc/blocks`` holds one stats vector per block and
    ``_lncc/checksums`` one checksum, both written after the block's values.
    ``layers`` are small in-memory variables (e.g. the registration's ``shift``) written whole, with their
    own coordinates, before any block. ``encoding`` says how the values are stored (see
    :mod:`pipeline.io.encodings`), ``compressor`` and ``level`` how their chunks are compressed.
    ``pyramid`` (levels, block levels) adds each variable's reduced levels and the NGFF metadata that makes the
    output an OME-Zarr image (see :mod:`pipeline.io.output_pyramid`).

    The caller holds the output's lock and has checked the path
    (:func:`check_output_path`). An existing lncc output is first marked as
    being replaced, then emptied; a new one is created with lncc's mark in its
    first metadata write. The full ``provenance`` (with the config hash a rerun
    compares) is written last, once the output's layout is complete.
    """
    ncc = result["ncc"]
    chunks = _zarr_chunks(ncc)
    layers = layers if layers is not None else xr.Dataset()
    mark = _mark_group(url, result, layers, run_id, zarr_format, storage_options, pyramid is not None)
    # xarray writes the coordinates (encoding them as it reads them back); it rewrites the group's attributes
    # in one write, given the mark again. The data variables are created empty with zarr itself, laid out as
    # xarray would: a lazy to_zarr(compute=False) costs a dask graph and, once, ~0.3 s of imports.
    ngff = {} if pyramid is None else ngff_attributes(tuple(result.data_vars), ncc.dims, pyramid[0], zarr_format)
    coords = xr.Dataset(layers.data_vars, coords=result.coords, attrs={**mark, **ngff})
    for name in coords.variables:
        coords[name].encoding = {}
    options = store_kwargs(url, storage_options)
    coords.to_zarr(url, mode="a", consolidated=False, zarr_format=zarr_format, **options)
    group = zarr.open_group(store=url, mode="r+", use_consolidated=False, **options)
    specs = {}
    for name, var in result.data_vars.items():
        dtype, fill, cf = array_layout(name, encoding, zarr_format)
        codec = output_codec(compressor, zarr_format, level, dtype.itemsize)
        attrs = json_safe({**var.attrs, **cf})
        kwargs = dict(dtype=dtype, fill_value=fill, compressors=None if codec is None else [codec])
        specs[name] = (var.shape, chunks, {**kwargs, "attributes": dict(attrs)})
        if zarr_format == 2:
            attrs["_ARRAY_DIMENSIONS"] = list(var.dims)
        group.create_array(name, shape=var.shape, chunks=chunks, attributes=attrs, **kwargs,
                           **({"dimension_names": list(var.dims)} if zarr_format == 3 else {}))
    extra = {}
    if pyramid is not None:
        create_pyramid(group, specs, ncc.dims, *pyramid, zarr_format)
        extra = {"groups": [PYRAMID_GROUP], "pyramid": {"levels": pyramid[0], "block_levels": pyramid[1],
                                                        "ngff": "0.5" if zarr_format == 3 else "0.4"}}
    _create_bookkeeping(group, tuple(len(c) for c in ncc.chunks))
    full = {**provenance, "software": "lncc", "run_id": run_id, "variables": list(result.data_vars),
            "coords": [str(c) for c in coords.coords], "layers": [str(v) for v in layers.data_vars],
            "blocks": [list(c) for c in ncc.chunks], **extra}
    update_provenance(url, full, storage_options=storage_options)


def _zarr_chunks(ncc: xr.DataArray) -> tuple[int, ...]:
    """The zarr chunks of an output variable: its first dask block, which every block must start on a multiple of."""
    chunks = tuple(c[0] for c in ncc.chunks)
    for dim, c, size in zip(ncc.dims, ncc.chunks, chunks):
        starts = np.cumsum((0,) + c[:-1])
        if np.any(starts % size):
            raise ValueError(f"output chunks along {dim} {c} do not start on multiples of the zarr chunk {size}; "
                             "two tasks would write the same zarr chunk")
    return chunks


def _mark_group(url: str, result: xr.Dataset, layers: xr.Dataset, run_id: str, zarr_format: int,
                storage_options: dict[str, Any] | None, pyramid: bool = False) -> dict[str, Any]:
    """Write lncc's mark as the group's first metadata (an old output's first, then empty it); return the mark."""
    replacing = output_state(url, storage_options=storage_options) == "lncc"
    names = {"variables": list(result.data_vars), "layers": [str(v) for v in layers.data_vars],
             "coords": sorted({str(c) for c in result.coords} | {str(c) for c in layers.coords}),
             "groups": [PYRAMID_GROUP] if pyramid else []}
    if replacing:  # the mark names the old output's arrays too, so that a replacement killed part way is still ours
        old_names = owned_names(read_provenance(url, storage_options=storage_options))
        if old_names is None:  # an output of an lncc before 0.2
            old_names = {e for e in list_entries(url, storage_options) or []
                         if e != STATE_GROUP and is_zarr_node(join_url(url, e), storage_options)}
        names["coords"] = sorted(set(names["coords"]) | (old_names - set(names["variables"]) - set(names["layers"])
                                                          - set(names["groups"])))
    mark = {PROVENANCE_KEY: {**_mark(run_id, "replacing" if replacing else "creating"), **names}}
    if not replacing:
        write_group(url, mark, zarr_format=zarr_format, storage_options=storage_options)
        return mark
    # The old output's own metadata says "replacing" before any of its data goes; format 2's consolidated
    # copy (.zmetadata, which xarray reads first) goes before that.
    old = zarr_format_of(url, storage_options)
    if old == 2:
        _remove(url, set(), storage_options, only={".zmetadata"})
    write_group(url, mark, zarr_format=old, storage_options=storage_options)
    _remove(url, set(FORMAT_FILES[old]), storage_options)
    if old != zarr_format:  # the new format's metadata first, then the old one's goes
        write_group(url, mark, zarr_format=zarr_format, storage_options=storage_options)
        _remove(url, set(FORMAT_FILES[zarr_format]), storage_options)
    return mark


def _create_bookkeeping(group: zarr.Group, grid: tuple[int, ...]) -> None:
    """The ``_lncc`` group: block checksums, then the ledger (an output whose ledger exists has all its arrays)."""
    state = group.require_group(STATE_GROUP)  # the pyramid may have made it (its counts)
    ones = (1,) * len(grid)
    state.create_array(CHECKSUMS, shape=grid + (2,), chunks=ones + (2,), dtype="uint64", fill_value=0,
                       compressors=None)
    state.create_array(LEDGER, shape=grid + (STATS_LENGTH,), chunks=ones + (STATS_LENGTH,), dtype="float64",
                       fill_value=np.nan, compressors=None)
