"""A stored moving image read through a shift: each block reads its own region at an offset and interpolates it.

The integer part of a shift moves the read window; the fractional part is interpolated with a local kernel
(:mod:`pipeline.core.interpolation`), so a block needs only its taps' few extra rows and columns, and a
chunked run equals the in-memory one bit for bit. Pixels whose taps leave the moving image, or touch its
nodata or masked pixels, are NaN: missing data, which the NCC windows leave out.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

import numpy as np

from ...core.interpolation import SUPPORT, shift_region, shifted_dtype
from ...core.threads import thread_buffer
from .chunks import ChunkedSource
from .inputs import source_of
from .pair import PairReader

__all__ = ["ShiftedSource", "OneFrame", "shifted_pair", "open_shifted_pair"]


class _ReadsInto:
    """``reader[key]`` (step-1 slices) through the reader's own ``read_into(region, out)``."""

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        region = [slice(*k.indices(n)[:2]) for k, n in zip(key, self.shape)]
        out = np.empty(tuple(r.stop - r.start for r in region), dtype=self.dtype)
        self.read_into(region, out)
        return out


class ShiftedSource(_ReadsInto):
    """The moving image on the reference's grid: ``source`` shifted by ``shifts``, missing where a tap is missing.

    ``shifts`` is ``(dy, dx)``, or one row per frame (shape ``(t, 2)``) for a ``(t, y, x)`` source;
    ``nodata`` is the moving image's nodata value (or None) and ``mask`` an optional array-like of bool
    (True = valid) of the source's shape. ``dtype`` is :func:`pipeline.core.interpolation.shifted_dtype`'s
    by default (int32 fixed point for 8- and 16-bit images, else float32).
    """

    def __init__(self, source, shifts, kind: str, nodata: float | None = None, mask=None, dtype=None):
        self.source = source
        self.dtype = shifted_dtype(source.dtype) if dtype is None else np.dtype(dtype)
        self.shape = tuple(int(n) for n in source.shape)
        self.ndim = len(self.shape)
        self.chunks = getattr(source, "chunks", self.shape)
        self.shifts = np.asarray(shifts, dtype=np.float64).reshape(-1, 2)
        if self.ndim == 3 and len(self.shifts) == 1:
            self.shifts = np.repeat(self.shifts, self.shape[0], axis=0)
        self.kind = kind
        self.nodata = nodata
        self.mask = mask

    def __dask_tokenize__(self):
        return ("lncc-shifted", _identity(self.source), self.shifts.tobytes(), self.kind, self.nodata,
                str(self.dtype), _identity(self.mask))

    def read_into(self, region: list[slice], out: np.ndarray) -> None:
        """Fill ``out`` (float) with the shifted image over ``region`` (step-1 slices of the reference's grid)."""
        *lead, ys, xs = region
        frames = range(lead[0].start, lead[0].stop) if lead else [None]
        for k, t in enumerate(frames):
            prefix = () if t is None else (slice(t, t + 1),)
            shift = self.shifts[0 if t is None else t]
            shift_region(lambda where, p=prefix: _read(self.source, p + where, "shifted-source"), (ys, xs),
                         self.shape[-2:], shift, self.kind, out if t is None else out[k], nodata=self.nodata,
                         read_valid=None if self.mask is None else
                         (lambda where, p=prefix: _read(self.mask, p + where, "shifted-mask")),
                         moving_dtype=self.source.dtype)


class OneFrame(_ReadsInto):
    """A ``(t, y, x)`` source seen as frame ``frame`` repeated at every ``t`` (every moving frame against one
    reference frame): the same shape, dtype and chunks, each region read once from that frame."""

    def __init__(self, source, frame: int):
        self.source = source
        self.frame = int(frame)
        self.shape = tuple(int(n) for n in source.shape)
        self.ndim = len(self.shape)
        self.dtype = np.dtype(source.dtype)
        self.chunks = getattr(source, "chunks", self.shape)
        named = _identity(source)
        self.url = f"{named}#frame={self.frame}"

    def read_into(self, region: list[slice], out: np.ndarray) -> None:
        """Fill ``out`` with frame ``frame``'s values over ``region``'s y/x, at each of its frames."""
        where = [slice(self.frame, self.frame + 1)] + list(region[1:])
        if hasattr(self.source, "read_into"):
            self.source.read_into(where, out[:1])
        else:
            out[:1] = self.source[tuple(where)]
        out[1:] = out[:1]


def _identity(source) -> str | None:
    """What names a source in a dask token: its URL or chunk root where it has one (readers of one array
    tokenize alike), else the object itself."""
    if source is None:
        return None
    named = getattr(source, "url", None) or getattr(source, "root", None)
    return str(named) if named is not None else f"object-{id(source)}"


def _read(source, where: tuple[slice, ...], slot: str) -> np.ndarray:
    """``source``'s values over ``where`` as a 2-D array (decoded into a thread buffer where it can)."""
    shape = tuple(w.stop - w.start for w in where[-2:])
    if hasattr(source, "read_into"):
        buffer = thread_buffer(slot, shape, np.dtype(source.dtype))
        source.read_into(list(where), buffer.reshape(tuple(w.stop - w.start for w in where)))
        return buffer
    return np.asarray(source[where]).reshape(shape)


def shifted_pair(reference, moving, shifts, kind: str, *, nodata: float | None = None, mask=None,
                 token: Any = None, fixed: bool = True) -> PairReader:
    """A stored pair whose moving image is read through ``shifts``, on the reference's grid.

    ``reference`` and ``moving`` are readers (:func:`pipeline.io.array_reader`) of the same shape. The moving
    image is read as :func:`pipeline.core.interpolation.shifted_dtype` of both: int32 fixed point when both
    are 8- or 16-bit integers (so the kernel's exact integer sums apply), else float32; its missing pixels
    are :func:`pipeline.core.interpolation.missing_value` of that dtype (or NaN). ``fixed=False``: float32.
    The reference keeps its own dtype (``pair.dtypes``); ``pair.dtype`` is one both can be read into.
    """
    dtype = shifted_dtype(moving.dtype, reference.dtype, fixed=fixed)
    shifted = ShiftedSource(moving, shifts, kind, nodata, mask, dtype)
    return PairReader(reference, shifted, token=(token, shifted.__dask_tokenize__()))


def open_shifted_pair(reference, moving, shifts, kind: str, *, nodata: float | None = None, mask=None,
                      halo: int = 0, cache_bytes: int = 0, fixed: bool = True,
                      reference_frame: int | None = None) -> PairReader:
    """:func:`pipeline.io.open_pair` for a registered pair: the moving image read through ``shifts``.

    ``reference``, ``moving`` and ``mask`` (the moving image's, or None) are :class:`pipeline.io.InputInfo`;
    ``nodata`` is the moving image's nodata value; ``fixed`` as for :func:`shifted_pair`. The readers share
    each process's chunk cache as :func:`pipeline.io.open_pair`'s do (the shifted reads cross chunk edges:
    chunks read in part are kept). With ``reference_frame`` (video), every moving frame is paired with that
    one reference frame (:class:`OneFrame`).
    """
    sources = [source_of(info) for info in (reference, moving) + ((mask,) if mask is not None else ())]
    run = uuid.uuid4().hex
    # How far a block's read reaches into its neighbours' chunks: the halo, and for the moving image (and its
    # mask) also the shift and the kernel's taps. Edges that wide are kept for the neighbours, so each chunk
    # is decoded about once even though the shifted reads straddle chunk edges.
    reach = int(halo) + max(SUPPORT.values()) + int(math.ceil(float(np.abs(np.asarray(shifts, dtype=float)).max())))
    for i, src in enumerate(sources):
        if isinstance(src, ChunkedSource) and halo and cache_bytes:
            src.cache = (run, i, int(halo) if i == 0 else reach, int(cache_bytes))
    reference_source = sources[0] if reference_frame is None else OneFrame(sources[0], reference_frame)
    return shifted_pair(reference_source, sources[1], shifts, kind, nodata=nodata, fixed=fixed,
                        mask=sources[2] if mask is not None else None,
                        token=(reference.url, moving.url, reference_frame))
