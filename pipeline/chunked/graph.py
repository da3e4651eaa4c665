"""Wiring of the kernel into dask graphs: ``map_overlap`` for dask arrays, one self-reading task per block
for stored pairs. No maths, no I/O of its own.

The functions here take a window radius already checked (:func:`pipeline.core.checks.check_window`): the
callers, :mod:`pipeline.chunked.entry` and :func:`pipeline.local_ncc`, check a pair once.
"""

from __future__ import annotations

import dask.array as da
import numpy as np

from ..core.boundary import DASK_BOUNDARY
from .tasks import overlap_block, read_pair_block, sink_block

__all__ = ["local_ncc_dask", "local_ncc_sink", "local_ncc_read_sink", "halo_chunks"]


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


def local_ncc_dask(
    reference: da.Array,
    moving: da.Array,
    radius: int,
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
    chunks = halo_chunks(reference.chunks, radius)
    out_chunks = (((4,),) if extras else ()) + chunks
    return _wire(overlap_block, reference, moving, radius, chunks, out_chunks, np.float32, boundary=boundary, flat=flat,
                 invalid=invalid, min_valid=min_valid, extras=extras,
                 token="local-ncc", **({"new_axis": [0]} if extras else {}))


def local_ncc_sink(sink, reference: da.Array, moving: da.Array, radius: int, **options) -> da.Array:
    """Like :func:`local_ncc_dask` (same options), but each block goes to ``sink`` inside its own task.

    ``sink(values, region, index)`` receives the block's float32 values (with
    ``extras``, stacked on a leading axis of 4 as in :func:`local_ncc_dask`),
    its position in the full array as a tuple of slices and its block index.
    ``values`` is a buffer reused by the thread's next block: the sink must
    consume it (e.g. write it) before returning, unless the sink has a
    ``buffer(shape)`` method, which then provides the float32 array each block
    is computed into (and the sink decides when it is free again). No NCC
    block leaves its task, so nothing large is held between tasks or moved
    between workers.

    Returns
    -------
    dask.array.Array of bool
        One element per block (True once the sink returned); its blocks match
        the NCC's, so ``.to_delayed()[index]`` runs just that block.
    """
    chunks = halo_chunks(reference.chunks, radius)
    marks = tuple((1,) * len(c) for c in chunks)
    options = {"boundary": "reflect", "flat": 0.0, "invalid": None, "min_valid": 0.5, "extras": False, **options}
    return _wire(sink_block, reference, moving, radius, chunks, marks, bool, sink=sink, block_chunks=chunks,
                 token="local-ncc-sink", **options)


def local_ncc_read_sink(sink, pair, radius: int, *, chunks, nodata=None, **options) -> da.Array:
    """:func:`local_ncc_sink` for a pair that each task reads itself, halo included: no ``map_overlap``.

    ``pair`` is array-like with shape ``(2,) + shape`` (reference first): a
    numpy or zarr array, or a reader whose ``read_into(region, out)`` decodes
    straight into ``out``. ``chunks`` are the processing chunks of the image
    axes. Each task reads the padded region of its block (the neighbouring
    blocks' edges included) into a buffer its thread reuses, fills the border
    past the image's edges as ``boundary`` says, and computes. The graph has
    one task per block: no halo slices, no concatenated copies, and nothing
    moves between tasks or workers. The price is reading the neighbours' edge
    chunks too (a reader may cache them: :func:`pipeline.io.open_pair`).
    Nodata (``nodata``, a pair of values, and non-finite values) is found
    inside each padded block: no mask arrays. The result has
    one done-marker per block, as :func:`local_ncc_sink`'s, and the blocks
    its sink receives equal :func:`local_ncc_sink`'s.
    """
    chunks = halo_chunks(da.core.normalize_chunks(chunks, tuple(pair.shape[1:]), dtype=pair.dtype), radius)
    options = {"boundary": "reflect", "flat": 0.0, "min_valid": 0.5, "extras": False, **options}
    floats = any(np.dtype(d).kind in "fc" for d in getattr(pair, "dtypes", (pair.dtype,)))
    nodata = tuple(nodata) if nodata is not None else (None, None)
    block_nodata = nodata if floats or any(v is not None for v in nodata) else None
    marks = tuple((1,) * len(c) for c in chunks)
    return da.map_blocks(
        read_pair_block,
        chunks=marks,
        dtype=bool,
        meta=np.empty((0,) * len(chunks), dtype=bool),
        token="local-ncc-read-sink",
        pair=pair,
        sink=sink,
        block_chunks=chunks,
        block_nodata=block_nodata,
        constant_pad=options["boundary"] in ("constant", "nan"),
        radius=radius,
        flat=float(options["flat"]),
        boundary=options["boundary"],
        nan_edges=options["boundary"] == "nan",
        full_shape=tuple(pair.shape[-2:]),
        min_valid=float(options["min_valid"]),
        extras=options["extras"],
    )


def _wire(func, reference, moving, radius, chunks, out_chunks, dtype, *, boundary, flat, invalid, min_valid,
          extras, **kwargs):
    arrays = [reference] + ([moving] if moving is not None else []) + ([invalid] if invalid is not None else [])
    arrays = [a if a.chunks == chunks else a.rechunk(chunks) for a in arrays]
    ndim = reference.ndim
    depth = {ax: (radius if ax >= ndim - 2 else 0) for ax in range(ndim)}
    data_bound = {ax: (DASK_BOUNDARY[boundary] if ax >= ndim - 2 else "none") for ax in range(ndim)}
    # The mask is padded like the data, except that constant padding is valid data (False = valid).
    mask_bound = {ax: (data_bound[ax] if isinstance(data_bound[ax], str) else False) for ax in range(ndim)}
    return da.map_overlap(
        func,
        *arrays,
        depth=depth,
        boundary=[data_bound, data_bound] + ([mask_bound] if invalid is not None else []),
        trim=False,
        align_arrays=False,
        allow_rechunk=False,
        chunks=out_chunks,
        dtype=dtype,
        meta=np.empty((0,) * len(out_chunks), dtype=dtype),
        radius=radius,
        flat=float(flat),
        nan_edges=boundary == "nan",
        full_shape=reference.shape[-2:],
        min_valid=float(min_valid),
        extras=extras,
        **kwargs,
    )
