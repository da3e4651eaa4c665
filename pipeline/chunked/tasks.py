"""What runs inside one block's task: read or take the padded block, find its nodata, compute, hand it on."""

from __future__ import annotations

import numpy as np

from ..core.blocks import block_region, block_starts
from ..core.boundary import fill_border, nan_border
from ..core.kernel import ncc_padded
from ..core.masks import invalid_mask
from ..core.threads import thread_buffer

__all__ = ["overlap_block", "sink_block", "read_pair_block"]


def overlap_block(a, b, invalid=None, *, radius, flat, nan_edges, full_shape, min_valid, extras, block_info=None):
    out = compute_block(a, b, invalid, radius, flat, min_valid, extras, None)
    if nan_edges:
        nan_border(out, radius, _start(block_info), full_shape)
    return out


def compute_block(a, b, invalid, radius, flat, min_valid, extras, buffer):
    if buffer is not None:
        ncc_padded(a, b, radius, flat, invalid=invalid, min_valid=min_valid, extras=extras,
                   out=buffer[0] if extras else buffer, extra_out=buffer[1:] if extras else None)
        return buffer
    result = ncc_padded(a, b, radius, flat, invalid=invalid, min_valid=min_valid, extras=extras)
    return np.concatenate([result[0][None], result[1]]) if extras else result


def _start(block_info) -> tuple[int, int]:
    return tuple(loc[0] for loc in block_info[None]["array-location"][-2:])


def _sink_pair_block(ab, invalid=None, *, block_nodata, constant_pad, block_info=None, **kwargs):
    a, b = ab[0], ab[1]  # two arrays, or contiguous views of one: the pair axis is the outermost
    if block_nodata is not None:
        # Nodata found in the padded block itself: pointwise, so for reflect/nearest padding the same as padding
        # a mask of the whole image. Constant padding (zeros) is valid data, even where 0 is a nodata value.
        invalid = invalid_mask(a, b, block_nodata)
        if invalid is not None and not invalid.any():
            invalid = None  # nothing missing in this block: the kernel's faster unmasked path gives the same values
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
    return sink_block(a, b, invalid, block_info=block_info, **kwargs)


def sink_block(a, b, invalid=None, *, sink, block_chunks, radius, flat, nan_edges, full_shape, min_valid, extras,
                block_info=None):
    # block_info[None] describes the one-element marker block, so the NCC block's place comes from `block_chunks`.
    index = tuple(block_info[None]["chunk-location"])
    region = block_region(block_chunks, index)
    starts = [r.start for r in region]
    shape = ((4,) if extras else ()) + tuple(r.stop - r.start for r in region)
    buffer = sink.buffer(shape) if hasattr(sink, "buffer") else thread_buffer("output", shape, np.float32)
    out = compute_block(a, b, invalid, radius, flat, min_valid, extras, buffer)
    if nan_edges:
        nan_border(out, radius, tuple(starts[-2:]), full_shape)
    sink(out, region, index)
    return np.ones((1,) * a.ndim, dtype=bool)


def read_pair_block(*, pair, block_chunks, radius, boundary, block_info=None, **kwargs):
    index = block_info[None]["chunk-location"]
    block = block_region(block_chunks, index)
    starts, stops = [r.start for r in block], [r.stop for r in block]
    size = pair.shape[1:]
    halo = [0] * (len(size) - 2) + [radius, radius]
    # the padded block, and the part of it inside the image (read from the store; the rest is the border)
    padded = tuple(e - s + 2 * d for s, e, d in zip(starts, stops, halo))
    region = [slice(max(s - d, 0), min(e + d, n)) for s, e, d, n in zip(starts, stops, halo, size)]
    inside = tuple(slice(r.start - (s - d), r.stop - (s - d)) for r, s, d in zip(region, starts, halo))
    dtypes = getattr(pair, "dtypes", (pair.dtype, pair.dtype))
    if dtypes[0] == dtypes[1]:  # one buffer for both
        ab = thread_buffer("input", (2,) + padded, dtypes[0])
        if hasattr(pair, "read_into"):
            pair.read_into(region, ab[(slice(None),) + inside])
        else:
            ab[(slice(None),) + inside] = pair[(slice(None),) + tuple(region)]
        planes = (ab,)
    else:  # each image in its own dtype (e.g. an 8-bit reference and a moving image shifted into fixed point)
        ab = tuple(thread_buffer(slot, padded, dtype) for slot, dtype in zip(("input", "input-moving"), dtypes))
        pair.read_into(region, [plane[inside] for plane in ab])
        planes = ab
    for plane in planes:
        fill_border(plane, tuple(starts[-2:]), tuple(size[-2:]), radius, boundary)
    return _sink_pair_block(ab, block_info=block_info, block_chunks=block_chunks, radius=radius, **kwargs)
