"""Checked entry points for sinks: a pair of dask arrays, or one stored pair read block by block.

Used by the job layer to write each block where it is computed, and by :func:`pipeline.local_ncc`
(:func:`prepare`). Every option is checked here once (:mod:`pipeline.core.checks`).
"""

from __future__ import annotations

import dask.array as da
import numpy as np

from ..core.checks import check_options, check_pair
from ..core.masks import invalid_mask, nodata_pair
from ..errors import InputError
from .graph import local_ncc_read_sink, local_ncc_sink

__all__ = ["local_ncc_into", "local_ncc_pair_into", "prepare", "check"]


def local_ncc_into(sink, reference: da.Array, moving: da.Array, window: int = 7, *, boundary: str = "reflect",
                   flat: float = 0.0, nodata=None, reference_mask=None, moving_mask=None, min_valid: float = 0.5,
                   extras: bool = False, radius: int | None = None) -> da.Array:
    """Lazy local NCC of dask inputs whose blocks go to ``sink`` inside their own tasks.

    Same options as :func:`pipeline.local_ncc`; see :func:`pipeline.chunked.graph.local_ncc_sink`
    for ``sink`` and the result (one done-marker per block). Used by
    :func:`pipeline.job.run` to write each block where it is computed. A
    caller that has checked the pair and the options already (a run's plan)
    passes the window's ``radius``, and nothing is checked again.
    """
    _, reference, moving, radius, kwargs = prepare(reference, moving, window, reference_mask, moving_mask,
                                                   boundary=boundary, flat=flat, nodata=nodata, min_valid=min_valid,
                                                   extras=extras, lazy=True, radius=radius)
    return local_ncc_sink(sink, reference, moving, radius, **kwargs)


def local_ncc_pair_into(sink, pair, window: int = 7, *, chunks, boundary: str = "reflect", flat: float = 0.0,
                        nodata=None, min_valid: float = 0.5, extras: bool = False,
                        radius: int | None = None) -> da.Array:
    """:func:`local_ncc_into` for both images in one array-like of shape ``(2,) + shape``, read block by block.

    ``pair[0]`` is the reference and ``pair[1]`` the moving image (one dtype),
    e.g. a stacked numpy array or :func:`pipeline.io.open_pair`'s reader;
    ``chunks`` are the processing chunks of the image axes. Each block's task
    reads its own halo (see :func:`pipeline.chunked.graph.local_ncc_read_sink`);
    nodata comes from NaN/Inf and ``nodata`` values only (no mask arrays).
    Used by :func:`pipeline.job.run`; same results as :func:`local_ncc_into`.
    ``radius``: as for :func:`local_ncc_into`, given by a caller that checked everything.
    """
    if radius is None:
        shape, dtype = tuple(pair.shape[1:]), np.dtype(pair.dtype)
        if len(pair.shape) < 3 or pair.shape[0] != 2:
            raise InputError(f"pair must have shape (2, ...) (reference, moving), got {tuple(pair.shape)}")
        radius = check(shape, shape, dtype, dtype, window, boundary, flat, min_valid)
    return local_ncc_read_sink(sink, pair, radius, chunks=chunks, boundary=boundary, flat=flat,
                               nodata=nodata_pair(nodata), min_valid=min_valid, extras=extras)


def check(reference_shape, moving_shape, reference_dtype, moving_dtype, window, boundary, flat, min_valid) -> int:
    """Check a pair and every option (see :mod:`pipeline.core.checks`); return the window radius."""
    radius = check_pair(reference_shape, moving_shape, reference_dtype, moving_dtype, window, boundary)
    check_options(flat, min_valid)
    return radius


def prepare(reference, moving, window, reference_mask, moving_mask, *, boundary, flat, nodata, min_valid, extras,
             lazy=None, radius=None):
    """Check the options (unless the caller gives the ``radius`` it checked), make both inputs numpy or both dask,
    and build the nodata mask.

    Returns
    -------
    (lazy, reference, moving, radius, kwargs)
        Whether the inputs are dask arrays, the inputs, the window radius, and the keyword arguments of
        :func:`pipeline.chunked.graph.local_ncc_dask` (and :func:`pipeline.core.kernel.local_ncc_numpy`).
    """
    if radius is None:
        radius = check(np.shape(reference), np.shape(moving), reference.dtype, moving.dtype, window, boundary,
                       flat, min_valid)
    for name, mask in (("reference_mask", reference_mask), ("moving_mask", moving_mask)):
        if mask is not None and np.shape(mask) != np.shape(reference):
            raise InputError(f"{name} must have the images' shape {np.shape(reference)}, got {np.shape(mask)}")
    if lazy is None:
        lazy = any(isinstance(v, da.Array) for v in (reference, moving, reference_mask, moving_mask))
    if lazy:
        reference, moving = da.asarray(reference), da.asarray(moving)
        masks = [None if m is None else da.asarray(m) for m in (reference_mask, moving_mask)]
    else:
        reference, moving = np.asarray(reference), np.asarray(moving)
        masks = [None if m is None else np.asarray(m) for m in (reference_mask, moving_mask)]
    invalid = invalid_mask(reference, moving, nodata_pair(nodata), *masks)
    kwargs = dict(boundary=boundary, flat=flat, invalid=invalid, min_valid=min_valid, extras=extras)
    return lazy, reference, moving, radius, kwargs
