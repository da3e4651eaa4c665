"""Boundary modes: how windows that leave the image are filled, for whole images and for padded blocks."""

from __future__ import annotations

import numpy as np

__all__ = ["BOUNDARIES", "NUMPY_PAD_MODE", "DASK_BOUNDARY", "pad", "pad_sources", "fill_border", "nan_border"]


#: Boundary modes, with scipy.ndimage's meaning for ``reflect`` and ``nearest``.
BOUNDARIES = ("reflect", "nearest", "constant", "nan")


NUMPY_PAD_MODE = {"reflect": "symmetric", "nearest": "edge", "constant": "constant", "nan": "constant"}


# dask's own names for the boundary modes; 'nan' pads with zeros and blanks the
# border afterwards, because integer blocks cannot hold NaN.
DASK_BOUNDARY = {"reflect": "reflect", "nearest": "nearest", "constant": 0, "nan": 0}


def pad(a: np.ndarray, radius: int, boundary: str) -> np.ndarray:
    """Pad the last two axes of ``a`` by ``radius`` according to ``boundary``.

    ``reflect`` is scipy's ``reflect`` (numpy's ``symmetric``: d c b a | a b c d),
    ``nearest`` repeats the edge value, ``constant`` and ``nan`` pad with zeros
    (``nan`` later blanks the border with :func:`nan_border`).
    """
    if boundary not in NUMPY_PAD_MODE:
        raise ValueError(f"boundary must be one of {', '.join(BOUNDARIES)}, got {boundary!r}")
    widths = [(0, 0)] * (a.ndim - 2) + [(radius, radius)] * 2
    return np.pad(a, widths, mode=NUMPY_PAD_MODE[boundary])


def pad_sources(start: int, stop: int, size: int, radius: int, boundary: str) -> np.ndarray:
    """The image index each padded position of an axis takes its value from, as :func:`pad` pads.

    Positions ``start - radius`` to ``stop + radius - 1`` of an axis of length
    ``size``; positions inside the image map to themselves, those outside to
    the position ``boundary`` copies (-1: the constant zero).
    """
    if boundary not in NUMPY_PAD_MODE:
        raise ValueError(f"boundary must be one of {', '.join(BOUNDARIES)}, got {boundary!r}")
    i = np.arange(start - radius, stop + radius)
    if boundary == "reflect":  # numpy's symmetric, repeated for pads wider than the image: period 2 * size
        j = np.mod(i, 2 * size)
        return np.where(j >= size, 2 * size - 1 - j, j)
    if boundary == "nearest":
        return np.clip(i, 0, size - 1)
    return np.where((i >= 0) & (i < size), i, -1)


def fill_border(block: np.ndarray, start: tuple[int, int], full_shape: tuple[int, int], radius: int,
                boundary: str) -> None:
    """Fill, in place, the positions of a padded block that lie outside the image, as :func:`pad` would.

    ``block[..., i, j]`` stands for image pixel ``(start[0] - radius + i,
    start[1] - radius + j)``; wherever that pixel is inside the image, the block
    must already hold it. Each of the last two axes spans its block plus
    ``radius`` on both sides, so the positions to fill are the ones past the
    image's edges, and the values they copy (under ``reflect`` and ``nearest``)
    lie within the block.
    """
    ndim = block.ndim
    for axis in (ndim - 1, ndim - 2):  # x first on every row, then whole rows (corners as np.pad makes them)
        s, size, n = start[axis - ndim + 2], full_shape[axis - ndim + 2], block.shape[axis]
        sources = pad_sources(s, s + n - 2 * radius, size, radius, boundary)
        position = np.arange(s - radius, s - radius + n)
        outside = np.flatnonzero((position < 0) | (position >= size))
        if not outside.size:
            continue
        where = [slice(None)] * ndim
        where[axis] = outside
        if boundary in ("constant", "nan"):
            block[tuple(where)] = 0
        else:
            block[tuple(where)] = np.take(block, sources[outside] - (s - radius), axis=axis)


def nan_border(out: np.ndarray, radius: int, start: tuple[int, int], full_shape: tuple[int, int]) -> None:
    """Set to NaN, in place, the pixels of ``out`` whose window leaves the image.

    Parameters
    ----------
    out : ndarray
        Output block; its last two axes are (y, x).
    radius : int
        Window radius.
    start : (int, int)
        Position of ``out[..., 0, 0]`` in the full image.
    full_shape : (int, int)
        (height, width) of the full image.
    """
    h, w = out.shape[-2:]
    for axis, (s, size, n) in enumerate(zip(start, full_shape, (h, w))):
        lo = min(max(radius - s, 0), n)  # rows/cols closer than radius to the top/left edge
        hi = max(min(size - radius - s, n), 0)  # first row/col closer than radius to the far edge
        index = [slice(None)] * out.ndim
        index[out.ndim - 2 + axis] = slice(0, lo)
        out[tuple(index)] = np.nan
        index[out.ndim - 2 + axis] = slice(max(hi, lo), n)
        out[tuple(index)] = np.nan
