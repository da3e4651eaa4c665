"""Wiring of the kernel into a dask graph with ``map_overlap``: no maths, no I/O."""

from __future__ import annotations

import dask.array as da
import numpy as np

from .kernel import check_window, nan_border, ncc_padded

__all__ = ["local_ncc_dask", "halo_chunks"]

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


def _block(a, b, *, radius, flat, nan_edges, full_shape, block_info=None):
    out = ncc_padded(a, b, radius, flat)
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
) -> da.Array:
    """Lazy local NCC of two dask arrays; building it computes nothing.

    The halo is the window radius on y and x (the last two axes) and 0 on t.
    ``moving`` is rechunked to ``reference``'s chunks; y/x chunks shorter than
    the radius are merged with a neighbour. The result has those chunks.
    """
    radius = check_window(window)
    chunks = halo_chunks(reference.chunks, radius)
    if chunks != reference.chunks:
        reference = reference.rechunk(chunks)
    if moving.chunks != chunks:
        moving = moving.rechunk(chunks)
    ndim = reference.ndim
    depth = {ax: (radius if ax >= ndim - 2 else 0) for ax in range(ndim)}
    bound = {ax: (_DASK_BOUNDARY[boundary] if ax >= ndim - 2 else "none") for ax in range(ndim)}
    return da.map_overlap(
        _block,
        reference,
        moving,
        depth=depth,
        boundary=bound,
        trim=False,
        align_arrays=False,
        allow_rechunk=False,
        chunks=chunks,
        dtype=np.float32,
        meta=np.empty((0,) * ndim, dtype=np.float32),
        radius=radius,
        flat=float(flat),
        nan_edges=boundary == "nan",
        full_shape=reference.shape[-2:],
        token="local-ncc",
    )
