"""Wiring of the kernel into dask graphs: `map_overlap` for dask arrays, one self-reading task per block for
stored pairs. No maths, no I/O of its own."""

from __future__ import annotations

import dask.array as da
import numpy as np

from .blocks import block_region, block_starts
from .buffers import thread_buffer
from .kernel import check_window, fill_border, invalid_mask, nan_border, ncc_padded

__all__ = ["local_ncc_dask", "local_ncc_sink", "local_ncc_read_sink", "halo_chunks", "EXTRA_NAMES", "OUTPUT_ATTRS"]

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

#: The attrs (CF ``long_name`` and ``units``) of each output in :data:`EXTRA_NAMES`, for in-memory and stored
#: outputs alike; copy before changing. The stds have the units of their input, which only the caller knows.
OUTPUT_ATTRS = {
    "ncc": {"long_name": "local normalized cross-correlation", "units": "1"},
    "valid_fraction": {"long_name": "fraction of the window valid in both images", "units": "1"},
    "std_reference": {"long_name": "local standard deviation of the reference image"},
    "std_moving": {"long_name": "local standard deviation of the moving image"},
}


def _block(a, b, invalid=None, *, radius, flat, nan_edges, full_shape, min_valid, extras, block_info=None):
    out = _compute(a, b, invalid, radius, flat, min_valid, extras, None)
    if nan_edges:
        nan_border(out, radius, _start(block_info), full_shape)
    return out


def _compute(a, b, invalid, radius, flat, min_valid, extras, buffer):
    if buffer is not None:
        ncc_padded(a, b, radius, flat, invalid=invalid, min_valid=min_valid, extras=extras,
                   out=buffer[0] if extras else buffer, extra_out=buffer[1:] if extras else None)
        return buffer
    result = ncc_padded(a, b, radius, flat, invalid=invalid, min_valid=min_valid, extras=extras)
    return np.concatenate([result[0][None], result[1]]) if extras else result


def _start(block_info) -> tuple[int, int]:
    return tuple(loc[0] for loc in block_info[None]["array-location"][-2:])


def _sink_pair_block(ab, invalid=None, *, block_nodata, constant_pad, block_info=None, **kwargs):
    a, b = ab[0], ab[1]  # contiguous views: the pair axis is the outermost
    if block_nodata is not None:
        # Nodata found in the padded block itself: pointwise, so for reflect/nearest padding the same as padding
        # a mask of the whole image. Constant padding (zeros) is valid data, even where 0 is a nodata value.
        invalid = invalid_mask(a, b, block_nodata)
        if invalid is not None and constant_pad:
            radius, full_shape = kwargs["radius"], kwargs["full_shape"]
            index = block_info[None]["chunk-location"][-2:]
            origin = block_starts(kwargs["block_chunks"][-2:], index)
            for axis, (begin, size) in enumerate(zip(origin, full_shape)):
                start = begin - radius  # image position of the padded block's first row/column
                outside = np.flatnonzero((np.arange(invalid.shape[-2 + axis]) + start < 0)
                                         | (np.arange(invalid.shape[-2 + axis]) + start >= size))
                where = [slice(None)] * invalid.ndim
                where[-2 + axis] = outside
                invalid[tuple(where)] = False
    return _sink_block(a, b, invalid, block_info=block_info, **kwargs)


def _sink_block(a, b, invalid=None, *, sink, block_chunks, radius, flat, nan_edges, full_shape, min_valid, extras,
                block_info=None):
    # block_info[None] describes the one-element marker block, so the NCC block's place comes from `block_chunks`.
    index = tuple(block_info[None]["chunk-location"])
    region = block_region(block_chunks, index)
    starts = [r.start for r in region]
    shape = ((4,) if extras else ()) + tuple(r.stop - r.start for r in region)
    buffer = sink.buffer(shape) if hasattr(sink, "buffer") else thread_buffer("output", shape, np.float32)
    out = _compute(a, b, invalid, radius, flat, min_valid, extras, buffer)
    if nan_edges:
        nan_border(out, radius, tuple(starts[-2:]), full_shape)
    sink(out, region, index)
    return np.ones((1,) * a.ndim, dtype=bool)


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
    out_chunks = (((4,),) if extras else ()) + chunks
    return _wire(_block, reference, moving, radius, chunks, out_chunks, np.float32, boundary=boundary, flat=flat,
                 invalid=invalid, min_valid=min_valid, extras=extras,
                 token="local-ncc", **({"new_axis": [0]} if extras else {}))


def local_ncc_sink(sink, reference: da.Array, moving: da.Array, window: int = 7, **options) -> da.Array:
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
    radius = check_window(window)
    chunks = halo_chunks(reference.chunks, radius)
    marks = tuple((1,) * len(c) for c in chunks)
    options = {"boundary": "reflect", "flat": 0.0, "invalid": None, "min_valid": 0.5, "extras": False, **options}
    return _wire(_sink_block, reference, moving, radius, chunks, marks, bool, sink=sink, block_chunks=chunks,
                 token="local-ncc-sink", **options)


def local_ncc_read_sink(sink, pair, window: int = 7, *, chunks, nodata=None, **options) -> da.Array:
    """:func:`local_ncc_sink` for a pair that each task reads itself, halo included: no ``map_overlap``.

    ``pair`` is array-like with shape ``(2,) + shape`` (reference first): a
    numpy or zarr array, or a reader whose ``read_into(region, out)`` decodes
    straight into ``out``. ``chunks`` are the processing chunks of the image
    axes. Each task reads the padded region of its block (the neighbouring
    blocks' edges included) into a buffer its thread reuses, fills the border
    past the image's edges as ``boundary`` says, and computes. The graph has
    one task per block: no halo slices, no concatenated copies, and nothing
    moves between tasks or workers. The price is reading the neighbours' edge
    chunks too (a reader may cache them: :func:`pipeline.io.open_pair`). Nodata (``nodata``, a pair of values, and non-finite
    values) is found inside each padded block: no mask arrays. The result has
    one done-marker per block, as :func:`local_ncc_sink`'s, and the blocks
    its sink receives equal :func:`local_ncc_sink`'s.
    """
    radius = check_window(window)
    chunks = halo_chunks(da.core.normalize_chunks(chunks, tuple(pair.shape[1:]), dtype=pair.dtype), radius)
    options = {"boundary": "reflect", "flat": 0.0, "min_valid": 0.5, "extras": False, **options}
    floats = np.dtype(pair.dtype).kind in "fc"
    nodata = tuple(nodata) if nodata is not None else (None, None)
    block_nodata = nodata if floats or any(v is not None for v in nodata) else None
    marks = tuple((1,) * len(c) for c in chunks)
    return da.map_blocks(
        _read_pair_block,
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


def _read_pair_block(*, pair, block_chunks, radius, boundary, block_info=None, **kwargs):
    index = block_info[None]["chunk-location"]
    block = block_region(block_chunks, index)
    starts, stops = [r.start for r in block], [r.stop for r in block]
    size = pair.shape[1:]
    halo = [0] * (len(size) - 2) + [radius, radius]
    # the padded block, and the part of it inside the image (read from the store; the rest is the border)
    ab = thread_buffer("input", (2,) + tuple(e - s + 2 * d for s, e, d in zip(starts, stops, halo)), pair.dtype)
    region = [slice(max(s - d, 0), min(e + d, n)) for s, e, d, n in zip(starts, stops, halo, size)]
    inside = (slice(None),) + tuple(slice(r.start - (s - d), r.stop - (s - d)) for r, s, d in zip(region, starts, halo))
    if hasattr(pair, "read_into"):
        pair.read_into(region, ab[inside])
    else:
        ab[inside] = pair[(slice(None),) + tuple(region)]
    fill_border(ab, tuple(starts[-2:]), tuple(size[-2:]), radius, boundary)
    return _sink_pair_block(ab, block_info=block_info, block_chunks=block_chunks, radius=radius, **kwargs)


def _wire(func, reference, moving, radius, chunks, out_chunks, dtype, *, boundary, flat, invalid, min_valid,
          extras, **kwargs):
    arrays = [reference] + ([moving] if moving is not None else []) + ([invalid] if invalid is not None else [])
    arrays = [a if a.chunks == chunks else a.rechunk(chunks) for a in arrays]
    ndim = reference.ndim
    depth = {ax: (radius if ax >= ndim - 2 else 0) for ax in range(ndim)}
    data_bound = {ax: (_DASK_BOUNDARY[boundary] if ax >= ndim - 2 else "none") for ax in range(ndim)}
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
