"""An output's multiscale pyramid on its store: where its levels live, their OME-Zarr (NGFF) metadata, and the
levels made after the blocks (from the deepest level the blocks made).

Layout: level 0 of each variable is the variable itself (``OUTPUT/ncc``), level k is ``OUTPUT/levels/ncc/k``;
the root group carries NGFF ``multiscales`` metadata (0.5 in a zarr 3 output, 0.4 in a zarr 2 one), one image
per variable, the NCC map first. Counts of finite pixels of the deepest block level (``_lncc/counts/NAME``)
let the levels below it stay exact NaN-aware means.
"""

from __future__ import annotations

from typing import Any

import dask
import dask.array as da
import numpy as np
import zarr

from ..core.pyramid import level_region, level_shape
from .encodings import INT16_MISSING, INT16_SCALE, encode
from .metadata import STATE_GROUP
from .urls import join_url, store_kwargs

__all__ = ["PYRAMID_GROUP", "COUNTS", "level_path", "counts_path", "ngff_attributes", "create_pyramid",
           "finish_pyramid", "read_levels", "open_level", "TAIL_CHUNK", "block_parts"]

#: The group of an output's reduced levels.
PYRAMID_GROUP = "levels"

#: The group (in ``_lncc``) of the deepest block level's counts of finite pixels.
COUNTS = "counts"

#: Image-axis chunk of the levels made after the blocks (small levels: a few chunks each).
TAIL_CHUNK = 512


def level_path(name: str, k: int) -> str:
    """The path of variable ``name``'s level k inside the output (level 0 is the variable itself)."""
    return name if k == 0 else f"{PYRAMID_GROUP}/{name}/{k}"


def counts_path(name: str) -> str:
    return f"{STATE_GROUP}/{COUNTS}/{name}"


def _axis_type(dim: str, image_dims: tuple[str, ...]) -> str:
    """NGFF's axis type: the image axes are space, ``c``/``channel`` channel, any other frame axis time."""
    if dim in image_dims:
        return "space"
    return "channel" if dim in ("c", "channel") else "time"


def ngff_attributes(names: tuple[str, ...], dims: tuple[str, ...], levels: int, zarr_format: int
                    ) -> dict[str, Any]:
    """The root group's NGFF attributes: a ``multiscales`` entry per variable, validated by ome-zarr-models.

    Level k's pixel is the mean over ``2**k`` x ``2**k`` level-0 pixels: scale ``2**k`` and a translation of
    ``(2**k - 1) / 2`` on the image axes put its centre where theirs is.
    """
    image_dims = tuple(dims[-2:])
    lead = len(dims) - 2
    axes = [{"name": d, "type": _axis_type(d, image_dims)} for d in dims]
    multiscales = []
    for name in names:
        datasets = []
        for k in range(levels + 1):
            f = float(2 ** k)
            transforms = [{"type": "scale", "scale": [1.0] * lead + [f, f]}]
            if k:
                transforms.append({"type": "translation", "translation": [0.0] * lead + [(f - 1) / 2] * 2})
            datasets.append({"path": level_path(name, k), "coordinateTransformations": transforms})
        multiscales.append({"name": name, "axes": axes, "datasets": datasets, "type": "mean",
                            "metadata": {"description": "level k: the mean of the finite values of 2**k x 2**k "
                                                        "pixels of level 0 (NaN where there are none)",
                                         "software": "lncc"}})
    if zarr_format == 3:
        from ome_zarr_models.v05.image import ImageAttrs

        attrs = ImageAttrs.model_validate({"version": "0.5", "multiscales": multiscales})
        return {"ome": attrs.model_dump(mode="json", exclude_none=True)}
    from ome_zarr_models.v04.image import ImageAttrs as ImageAttrs04

    attrs = ImageAttrs04.model_validate({"multiscales": [{**m, "version": "0.4"} for m in multiscales]})
    return attrs.model_dump(mode="json", exclude_none=True)


def create_pyramid(group: zarr.Group, specs: dict[str, tuple[tuple[int, ...], tuple[int, ...], dict]],
                   dims: tuple[str, ...], levels: int, block_levels: int, zarr_format: int) -> None:
    """Create every reduced level of each variable (``specs``: name -> (shape, level-0 chunks, create_array
    keywords)), and the counts arrays the levels below the block levels are made from."""
    extra = {"dimension_names": list(dims)} if zarr_format == 3 else {}
    pyramid = group.require_group(PYRAMID_GROUP)
    for name, (shape, chunks, kwargs) in specs.items():
        home = pyramid.require_group(name)
        kwargs = dict(kwargs)  # the caller's stay as they are
        attrs = kwargs.pop("attributes", {})
        for k in range(1, levels + 1):
            chunk = level_shape(chunks, k) if k <= block_levels else _tail_chunks(chunks, level_shape(shape, k))
            level_attrs = {**attrs, **({"_ARRAY_DIMENSIONS": list(dims)} if zarr_format == 2 else {})}
            home.create_array(str(k), shape=level_shape(shape, k), chunks=chunk, attributes=level_attrs,
                              **kwargs, **extra)
        if block_levels < levels and block_levels > 0:
            counts = group.require_group(STATE_GROUP).require_group(COUNTS)
            counts.create_array(name, shape=level_shape(shape, block_levels), chunks=level_shape(chunks, block_levels),
                                dtype="uint32", fill_value=0, compressors=None)


def _task_chunks(array) -> tuple[int, ...]:
    """Dask chunks of whole zarr chunks, about 2048 pixels a side on the image axes."""
    chunks = tuple(array.chunks)
    return chunks[:-2] + tuple(max(c, 2048 // c * c) for c in chunks[-2:])


def _tail_chunks(chunks: tuple[int, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(chunks[:-2]) + tuple(min(n, TAIL_CHUNK) for n in shape[-2:])


def block_parts(name: str, levels: int, block_levels: int, region: tuple[slice, ...]
                ) -> list[tuple[str, tuple[slice, ...]]]:
    """Where a block at ``region`` writes its part of variable ``name``'s pyramid, in the order its checksum
    takes them: (path, region) of levels 1..``block_levels``, then of the counts when levels are made below."""
    parts = [(level_path(name, k), level_region(region, k)) for k in range(1, block_levels + 1)]
    if 0 < block_levels < levels:
        parts.append((counts_path(name), level_region(region, block_levels)))
    return parts


def read_levels(provenance: dict[str, Any]) -> tuple[int, int] | None:
    """(levels, block levels) of an output's pyramid, from its provenance; None without one."""
    pyramid = provenance.get("pyramid")
    if not isinstance(pyramid, dict):
        return None
    return int(pyramid["levels"]), int(pyramid["block_levels"])


def open_level(url: str, name: str, k: int, storage_options: dict[str, Any] | None = None) -> da.Array:
    """Level k of variable ``name`` as a lazy float array of its values (int16 decoded, NaN where missing)."""
    array = zarr.open_array(store=join_url(url, level_path(name, k)), mode="r", **store_kwargs(url, storage_options))
    # tasks of whole groups of chunks: a deep level's chunks may be 32 pixels a side
    data = da.from_zarr(array, chunks=_task_chunks(array))
    if np.dtype(array.dtype) == np.int16:
        data = da.where(data == INT16_MISSING, np.nan, data / INT16_SCALE)
    return data.astype(np.float64)


def finish_pyramid(url: str, names: tuple[str, ...], levels: int, block_levels: int,
                   storage_options: dict[str, Any] | None = None) -> None:
    """Make the levels below the block levels from the deepest one's means and counts, in this process.

    Deterministic: a rerun (a resume) writes the same values. Exact up to the float32 rounding of the deepest
    block level's means: its sums are taken back as mean x count.
    """
    if block_levels >= levels:
        return
    options = store_kwargs(url, storage_options)
    stores = []
    for name in names:
        means = open_level(url, name, block_levels, storage_options)
        if block_levels == 0:
            counts = da.isfinite(means).astype(np.float64)
        else:
            array = zarr.open_array(store=join_url(url, counts_path(name)), mode="r", **options)
            counts = da.from_zarr(array, chunks=_task_chunks(array)).astype(np.float64)
        sums = da.where(counts > 0, da.nan_to_num(means) * counts, 0.0)
        for k in range(block_levels + 1, levels + 1):
            f = 2 ** (k - block_levels)
            target = zarr.open_array(store=join_url(url, level_path(name, k)), mode="r+",
                                     config={"write_empty_chunks": True}, **options)
            pad = [(0, 0)] * (sums.ndim - 2) + [(0, -n % f) for n in sums.shape[-2:]]
            axes = {sums.ndim - 2: f, sums.ndim - 1: f}
            s = da.coarsen(np.sum, da.pad(sums, pad), axes)
            c = da.coarsen(np.sum, da.pad(counts, pad), axes)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = da.where(c > 0, s / da.maximum(c, 1), np.nan).astype(np.float32)
            stored = mean.rechunk(target.chunks).map_blocks(encode, np.dtype(target.dtype), dtype=target.dtype)
            stores.append(da.store(stored, target, lock=False, compute=False))
    dask.compute(*stores, scheduler="threads")
