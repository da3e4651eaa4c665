"""Wiring of the kernel into a dask graph with ``map_overlap``: no maths, no I/O."""

from __future__ import annotations

import dask.array as da
import numpy as np

from .kernel import check_window, nan_border, ncc_padded

__all__ = ["local_ncc_dask", "halo_chunks", "EXTRA_NAMES"]

# dask's own names for the boundary modes; 'nan' pads with zeros and blanks the
# border afterwards, because integer blocks cannot hold NaN.
_DASK_BOUNDARY = {"reflect": "reflect", "nearest": "nearest", "constant": 0, "nan": 0}


def _merge_short(chunks: tuple[int, ...], radius: int) -> tuple[int, ...]:
    """Merge chunks shorter than ``radius`` into a neighbour, keeping the other boundaries."""
    merged: list[int] = []
    carry = 0
    for c in chunks:
        c += carry
        carry = 0
        if c >= radius:
            merged.append(c)
        elif merged:
            merged[-1] += c
        else:
            carry = c  # a short first chunk joins the next one
    if carry:
        merged.append(carry)
    return tuple(merged)


def halo_chunks(chunks: tuple[tuple[int, ...], ...], radius: int) -> tuple[tuple[int, ...], ...]:
    """Chunks with every y/x chunk at least ``radius`` long.

    Short chunks are merged into a neighbour, so every remaining boundary is an
    original one: a regular chunking stays aligned with the zarr chunks it came
    from. (dask would otherwise rechunk silently inside ``overlap``, moving
    boundaries.)
    """
    return tuple(chunks[:-2]) + tuple(_merge_short(c, radius) for c in chunks[-2:])


#: Names of the stacked outputs when extras are requested, in order.
EXTRA_NAMES = ("ncc", "valid_fraction", "std_reference", "std_moving")


def _block(a, b, invalid=None, *, radius, flat, nan_edges, full_shape, min_valid, extras, block_info=None):
    result = ncc_padded(a, b, radius, flat, invalid=invalid, min_valid=min_valid, extras=extras)
    out = np.concatenate([result[0][None], result[1]]) if extras else result
    if nan_edges:
        start = tuple(loc[0] for loc in block_info[None]["array-location"][-2:])
        nan_border(out, radius, start, full_shape)
    return out


def local_ncc_dask(
    reference: da.Array,
    moving: da.Array,
    window: int = 7,
    *,
    boundary: str = "reflect",
    flat: float = 0.0,
    invalid: da.Array | None = None,
    min_valid: float = 0.5,
    extras: bool = False,
) -> da.Array:
    """Lazy local NCC of two dask arrays; building it computes nothing.

    The halo is the window radius on y and x (the last two axes) and 0 on t.
    ``moving`` (and the nodata mask ``invalid``) are rechunked to
    ``reference``'s chunks; y/x chunks shorter than the radius are merged with
    a neighbour. The result has those chunks; with ``extras`` it gains a leading
    axis of length 4 holding :data:`EXTRA_NAMES` in order.
    """
    radius = check_window(window)
    chunks = halo_chunks(reference.chunks, radius)
    arrays = [reference, moving] + ([invalid] if invalid is not None else [])
    arrays = [a if a.chunks == chunks else a.rechunk(chunks) for a in arrays]
    ndim = reference.ndim
    depth = {ax: (radius if ax >= ndim - 2 else 0) for ax in range(ndim)}
    data_bound = {ax: (_DASK_BOUNDARY[boundary] if ax >= ndim - 2 else "none") for ax in range(ndim)}
    # The mask is padded like the data, except that constant padding is valid data (False = valid).
    mask_bound = {ax: (data_bound[ax] if isinstance(data_bound[ax], str) else False) for ax in range(ndim)}
    out_chunks = (((4,),) if extras else ()) + chunks
    return da.map_overlap(
        _block,
        *arrays,
        depth=depth,
        boundary=[data_bound, data_bound] + ([mask_bound] if invalid is not None else []),
        trim=False,
        align_arrays=False,
        allow_rechunk=False,
        chunks=out_chunks,
        dtype=np.float32,
        meta=np.empty((0,) * (ndim + extras), dtype=np.float32),
        radius=radius,
        flat=float(flat),
        nan_edges=boundary == "nan",
        full_shape=reference.shape[-2:],
        min_valid=float(min_valid),
        extras=extras,
        token="local-ncc",
        **({"new_axis": [0]} if extras else {}),
    )
