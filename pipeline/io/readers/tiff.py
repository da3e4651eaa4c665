"""TIFF inputs (TIFF, BigTIFF, OME-TIFF, pyramidal or not; tiled or in strips), read lazily, tile by tile.

One image series at one resolution level is the input (``series:``, ``level:``; default the first series at
full resolution): ``(y, x)``, or ``(t, y, x)`` for a stack of pages, with colour samples (RGB, RGBA, planar
or interleaved) on a channel axis that the channel policy reads (:mod:`.channels`). Only the tiles (or
strips) a read touches are decoded, so a block of a
gigapixel TIFF costs its own tiles, never the whole file; tiles are read and decoded in the calling thread
(:class:`TiffSource`). The open file cannot be pickled: each process (a dask worker) opens the file itself on
its first read.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ...errors import InputError
from ..process import process_state
from ..urls import is_local, local_path, one_line
from .chunks import ChunkedSource
from .info import stat_key

__all__ = ["TIFF_SUFFIXES", "is_tiff", "TiffSource"]

#: File names read as TIFF (case-insensitive): TIFF, BigTIFF and OME-TIFF.
TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".tf2")

#: Series axes that become the frames axis ``t`` of a 3-D input (tifffile's names: time, depth, pages, ...).
_FRAME_AXES = "TZIQ"


def is_tiff(url: str) -> bool:
    """Whether ``url`` names a local TIFF file (by its suffix)."""
    return is_local(url) and str(url).lower().endswith(TIFF_SUFFIXES)


class TiffSource(ChunkedSource):
    """A read-only array over one series and level of a TIFF file (``reader[region]``; ``.shape``, ``.dtype``,
    ``.chunks``: one tile, or one strip, and one page; ``.channel_axis``: the colour samples' axis or None).

    Reading decodes only the tiles or strips under the region, in the calling thread: each one's bytes are
    read at its offset (``os.pread``: no shared file position) and decoded by tifffile's own decoder of the
    page (every compression, predictor and byte order tifffile knows). Through tifffile's zarr store the same
    reads went through zarr's event loop, one thread for all: a 16384^2 pair ran at half the speed of zarr.
    The file is opened on the first read in each process.
    """

    def __init__(self, url: str, series: int = 0, level: int = 0):
        self.url = url
        self.path = Path(local_path(url))
        self.series, self.level = int(series), int(level)
        shape, dtype, axes, chunks, channel = _describe(self.path, self.series, self.level)
        self.shape, self.dtype, self.axes, self.chunks, self.channel_axis = shape, dtype, axes, chunks, channel
        self.ndim = len(shape)
        self._fill = 0
        self.cache = None

    def __dask_tokenize__(self):
        return ("lncc-tiff", str(self.path), self.series, self.level, self.shape, str(self.dtype))

    def _pages(self) -> tuple[int, list]:
        """(file descriptor, the level's pages), opened once per process and file version: a dask worker
        unpickles a reader per task, and each would parse the file's pages again."""
        state = process_state()
        key = stat_key(self.path) + (self.series, self.level)
        with state.files_lock:
            opened = state.files.get(key)
            if opened is None:
                import tifffile

                handle = tifffile.TiffFile(self.path)  # kept open: its pages' decoders belong to it
                pages = list(handle.series[self.series].levels[self.level].pages)
                opened = state.files[key] = (os.open(self.path, os.O_RDONLY), pages, handle)
        return opened[0], opened[1]

    def _chunk(self, coords: tuple[int, ...]) -> np.ndarray | None:
        fd, pages = self._pages()
        axes = self.axes
        frame = coords[0] if axes[0] in _FRAME_AXES else 0
        page = pages[frame]
        keyframe = getattr(page, "keyframe", page)
        y, x = (i for i, a in enumerate(axes) if a in "YX")
        planar = self.channel_axis is not None and self.channel_axis < y
        per_plane = len(page.dataoffsets) // (self.shape[self.channel_axis] if planar else 1)
        across = -(-self.shape[x] // self.chunks[x])
        index = (coords[self.channel_axis] * per_plane if planar else 0) + coords[y] * across + coords[x]
        offset, count = int(page.dataoffsets[index]), int(page.databytecounts[index])
        if not count:
            return None  # a sparse file: no tile stored there
        try:
            data = os.pread(fd, count, offset)
            if len(data) != count:
                raise OSError(f"the file ends {count - len(data)} bytes into tile {index}")
            decoded, _, _ = keyframe.decode(data, index)
        except Exception as exc:  # tifffile and imagecodecs raise many types for a damaged or unknown codec
            if "imagecodecs" in str(exc) or "not supported" in str(exc).lower() or "not implemented" in str(exc):
                raise InputError(f"TIFF input {self.url!r} uses a compression lncc cannot decode "
                                 f"({one_line(exc, None)}); rewrite it with deflate, zstd or no compression") from None
            raise InputError(f"TIFF input {self.url!r} cannot be read at tile {index} of page {frame} "
                             f"({one_line(exc, None)}); the file is damaged there: check or rewrite it") from None
        values = np.asarray(decoded)[0]  # (rows, columns, interleaved samples) of one tile or strip
        chunk = np.zeros(self.chunks, self.dtype)
        rows, columns = min(values.shape[0], self.chunks[y]), min(values.shape[1], self.chunks[x])
        # the chunk's other axes are single (a frame, a planar sample) but interleaved samples, which come last
        chunk.reshape(self.chunks[y], self.chunks[x], -1)[:rows, :columns] = values[:rows, :columns]
        return chunk


def _check_generic_pages(path: Path, series: list, chosen: int) -> None:
    """A plain page stack (no metadata: tifffile groups its pages by shape) whose pages differ is an error, not
    silently its first run of pages."""
    if chosen != 0 or len(series) < 2 or any(s.kind != "generic" for s in series):
        return
    first, odd = series[0], series[1]
    count = len(first.pages)
    size = " x ".join(map(str, first.shape[-2:]))
    raise InputError(f"TIFF input {str(path)!r} is a stack of pages that differ: pages 0-{count - 1} are {size} "
                     f"{first.dtype} but page {count} is {' x '.join(map(str, odd.shape[-2:]))} {odd.dtype}; write "
                     "every frame alike, or give series: 1 (or a later run of pages) to read another group")


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
            _check_generic_pages(path, handle.series, series)
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
