"""TIFF inputs (TIFF, BigTIFF, OME-TIFF; tiled or in strips), read lazily through tifffile's zarr store.

A TIFF's first image series at full resolution is the input: ``(y, x)``, or ``(t, y, x)`` for a stack of
pages. Only the tiles (or strips) a read touches are decoded: tifffile's zarr store maps them to zarr
chunks, so a block of a gigapixel TIFF costs its own tiles, never the whole file. The open file cannot be
pickled: each process (a dask worker) opens the file itself on its first read.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError
from ..urls import is_local, local_path, one_line

__all__ = ["TIFF_SUFFIXES", "is_tiff", "TiffSource"]

#: File names read as TIFF (case-insensitive): TIFF, BigTIFF and OME-TIFF.
TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".tf2")

#: Series axes that become the frames axis ``t`` of a 3-D input (tifffile's names: time, depth, pages, ...).
_FRAME_AXES = "TZIQ"


def is_tiff(url: str) -> bool:
    """Whether ``url`` names a local TIFF file (by its suffix)."""
    return is_local(url) and str(url).lower().endswith(TIFF_SUFFIXES)


class TiffSource:
    """A read-only array over a TIFF file's first series at full resolution (``reader[region]``; ``.shape``,
    ``.dtype``, ``.chunks``: one tile, or one strip, and one page).

    Reading decodes only the tiles or strips under the region. The file is opened on the first read in
    each process, once per thread (tifffile's file handle serialises its reads).
    """

    def __init__(self, url: str):
        self.url = url
        self.path = Path(local_path(url))
        shape, dtype, axes, chunks = _describe(self.path)
        self.shape, self.dtype, self.axes, self.chunks = shape, dtype, axes, chunks
        self.ndim = len(shape)
        self._local = threading.local()

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_local"}  # an open file does not pickle

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def _array(self):
        array = getattr(self._local, "array", None)
        if array is None:
            import tifffile
            import zarr

            handle = tifffile.TiffFile(self.path)
            array = zarr.open(store=handle.aszarr(series=0, level=0), mode="r")
            self._local.handle, self._local.array = handle, array
        return array

    def __getitem__(self, key) -> np.ndarray:
        try:
            values = self._array()[key]
        except Exception as exc:  # tifffile and its codecs raise many types for a damaged or truncated file
            where = ", ".join(f"{k.start}:{k.stop}" if isinstance(k, slice) else str(k)
                              for k in (key if isinstance(key, tuple) else (key,)))
            if "imagecodecs" in str(exc) or "not supported" in str(exc).lower():
                raise InputError(f"TIFF input {self.url!r} uses a compression lncc cannot decode "
                                 f"({one_line(exc, None)}); rewrite it with deflate, zstd or no compression") from None
            raise InputError(f"TIFF input {self.url!r} cannot be read at [{where}] ({one_line(exc, None)}); the "
                             "file is damaged or truncated there: check or rewrite it") from None
        return np.asarray(values)

    def read_into(self, region: list[slice], out: np.ndarray) -> None:
        """Fill ``out`` with the values in ``region`` (step-1 slices)."""
        out[...] = self[tuple(region)]


def _describe(path: Path) -> tuple[tuple[int, ...], np.dtype, str, tuple[int, ...]]:
    """(shape, dtype, axes, chunks) of the file's first series at full resolution; one-line errors."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as handle:
            series = handle.series[0]
            shape, axes, dtype = tuple(int(n) for n in series.shape), str(series.axes), np.dtype(series.dtype)
            page = series.pages[0] if series.pages else None
            if page is None:
                raise ValueError("the file holds no image")
            page = page.aspage() if hasattr(page, "aspage") else page
            tile = ((int(page.tilelength), int(page.tilewidth)) if page.is_tiled else
                    (int(page.rowsperstrip or shape[-2]), shape[-1]))
    except Exception as exc:  # not a TIFF, truncated header, unknown tags: tifffile raises many types
        raise InputError(f"input {str(path)!r} is not a readable TIFF file ({one_line(exc, None)}); give a TIFF, "
                         "BigTIFF or OME-TIFF file, or a zarr array") from None
    if "S" in axes or (len(axes) and axes[-1] == "C" and shape[-1] in (3, 4)):
        raise InputError(f"TIFF input {str(path)!r} has colour samples (axes {axes!r}, shape {shape}); lncc reads "
                         "one channel per image: write one channel per file (or a grey-level image)")
    if len(shape) == 3 and axes[0] not in _FRAME_AXES:
        raise InputError(f"TIFF input {str(path)!r} has axes {axes!r} (shape {shape}); lncc reads (y, x) images "
                         "or (t, y, x) stacks of pages: write the frames as pages of one series")
    if len(shape) not in (2, 3):
        raise InputError(f"TIFF input {str(path)!r} has {len(shape)} axes {axes!r} (shape {shape}); lncc reads "
                         "(y, x) images or (t, y, x) stacks of pages")
    chunks = tuple(min(c, n) for c, n in zip(tile, shape[-2:]))
    return shape, dtype, axes, ((1,) if len(shape) == 3 else ()) + chunks
