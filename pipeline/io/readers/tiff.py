"""TIFF inputs (TIFF, BigTIFF, OME-TIFF, pyramidal or not; tiled or in strips), read lazily through tifffile's
zarr store.

One image series at one resolution level is the input (``series:``, ``level:``; default the first series at
full resolution): ``(y, x)``, or ``(t, y, x)`` for a stack of pages, with colour samples (RGB, RGBA, planar
or interleaved) on a channel axis that the channel policy reads (:mod:`.channels`). Only the tiles (or
strips) a read touches are decoded: tifffile's zarr store maps them to zarr chunks, so a block of a
gigapixel TIFF costs its own tiles, never the whole file. The open file cannot be pickled: each process (a
dask worker) opens the file itself on its first read.
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
    """A read-only array over one series and level of a TIFF file (``reader[region]``; ``.shape``, ``.dtype``,
    ``.chunks``: one tile, or one strip, and one page; ``.channel_axis``: the colour samples' axis or None).

    Reading decodes only the tiles or strips under the region. The file is opened on the first read in
    each process, once per thread (tifffile's file handle serialises its reads).
    """

    def __init__(self, url: str, series: int = 0, level: int = 0):
        self.url = url
        self.path = Path(local_path(url))
        self.series, self.level = int(series), int(level)
        shape, dtype, axes, chunks, channel = _describe(self.path, self.series, self.level)
        self.shape, self.dtype, self.axes, self.chunks, self.channel_axis = shape, dtype, axes, chunks, channel
        self.ndim = len(shape)
        self._local = threading.local()

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_local"}  # an open file does not pickle

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def __dask_tokenize__(self):
        return ("lncc-tiff", str(self.path), self.series, self.level, self.shape, str(self.dtype))

    def _array(self):
        array = getattr(self._local, "array", None)
        if array is None:
            import tifffile
            import zarr

            handle = tifffile.TiffFile(self.path)
            array = zarr.open(store=handle.aszarr(series=self.series, level=self.level), mode="r")
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


def _check_extent(path: Path, pages) -> None:
    """Every tile or strip of the pages lies inside the file: a truncated file stops the run before anything is
    written (damage inside the file shows when its tiles are decoded)."""
    size = path.stat().st_size
    for index, page in enumerate(pages):
        if page is None:
            continue
        ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts) if n]
        if ends and max(ends) > size:
            raise InputError(f"TIFF input {str(path)!r} is truncated: page {index}'s image data ends at byte "
                             f"{max(ends):,} but the file has {size:,} bytes; copy or write it again")


def _describe(path: Path, series: int, level: int
              ) -> tuple[tuple[int, ...], np.dtype, str, tuple[int, ...], int | None]:
    """(shape, dtype, axes, chunks, channel axis) of one series and level; one-line errors."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as handle:
            if not 0 <= series < len(handle.series):
                raise InputError(f"TIFF input {str(path)!r} has {len(handle.series)} image series but series is "
                                 f"{series}; set series: to one of 0..{len(handle.series) - 1}")
            levels = handle.series[series].levels
            if not 0 <= level < len(levels):
                sizes = ", ".join(f"{k}: {' x '.join(map(str, lv.shape))}" for k, lv in enumerate(levels))
                raise InputError(f"TIFF input {str(path)!r} series {series} has {len(levels)} resolution level(s) "
                                 f"({sizes}) but level is {level}; set level: to one of 0..{len(levels) - 1}")
            chosen = levels[level]
            shape, axes, dtype = tuple(int(n) for n in chosen.shape), str(chosen.axes), np.dtype(chosen.dtype)
            page = chosen.pages[0] if chosen.pages else None
            if page is None:
                raise ValueError("the file holds no image")
            page = page.aspage() if hasattr(page, "aspage") else page
            tile = ((int(page.tilelength), int(page.tilewidth)) if page.is_tiled else
                    (int(page.rowsperstrip or shape[-2]), None))
            _check_extent(path, chosen.pages)
    except InputError:
        raise
    except Exception as exc:  # not a TIFF, truncated header, unknown tags: tifffile raises many types
        raise InputError(f"input {str(path)!r} is not a readable TIFF file ({one_line(exc, None)}); give a TIFF, "
                         "BigTIFF or OME-TIFF file, or a zarr array") from None
    channel = axes.index("S") if "S" in axes else (len(axes) - 1 if axes[-1:] == "C" and shape[-1] in (2, 3, 4)
                                                   else None)
    image_axes = [i for i in range(len(shape)) if i != channel]
    kept = "".join(axes[i] for i in image_axes)
    if len(kept) == 3 and kept[0] not in _FRAME_AXES:
        raise InputError(f"TIFF input {str(path)!r} has axes {axes!r} (shape {shape}); lncc reads (y, x) images "
                         "or (t, y, x) stacks of pages: write the frames as pages of one series")
    if len(kept) not in (2, 3):
        raise InputError(f"TIFF input {str(path)!r} has {len(shape)} axes {axes!r} (shape {shape}); lncc reads "
                         "(y, x) images or (t, y, x) stacks of pages, optionally with colour samples")
    y, x = image_axes[-2:]
    chunks = [1] * len(shape)
    chunks[y], chunks[x] = min(tile[0], shape[y]), min(tile[1] or shape[x], shape[x])
    if channel is not None:
        chunks[channel] = shape[channel] if channel > x else 1  # interleaved samples sit in every tile
    return shape, dtype, axes, tuple(chunks), channel
