"""Image sequences: a folder of frame files (a glob such as ``frames/left_*.png``, or a list of paths) read
as one ``(t, y, x)`` input, one frame per file, each file decoded only when a block needs its frame.

Files are ordered naturally (``f2.png`` before ``f10.png``); every file must hold one image of the first
one's shape and dtype (PNG, JPEG, TIFF, ... as single images are). Colour frames give their channels on
the last axis, for the channel policy (:mod:`.channels`).
"""

from __future__ import annotations

import glob
import re
from pathlib import Path

import numpy as np

from ...errors import InputError
from ..process import process_state
from ..urls import is_local, local_path, one_line
from .images import decode_image, image_header, is_image, verify_image
from .info import ReadsByKey, stat_key
from .tiff import is_tiff

__all__ = ["is_pattern", "frame_files", "SequenceSource"]


def is_pattern(url) -> bool:
    """Whether ``url`` is a list of files or a local glob pattern (``*``, ``?`` or ``[...]`` in it)."""
    return isinstance(url, (list, tuple)) or (is_local(url) and any(ch in str(url) for ch in "*?["))


def _natural(path: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path)]


def frame_files(spec) -> tuple[str, ...]:
    """The frame files of a sequence: a glob's matches in natural order, or the list as given."""
    if isinstance(spec, (list, tuple)):
        files = tuple(str(local_path(f)) for f in spec)
        if not files:
            raise InputError("an input's list of frame files is empty; list at least one file")
        missing = next((f for f in files if not Path(f).is_file()), None)
        if missing is not None:
            raise InputError(f"frame file {missing!r} (in the input's list) does not exist; check the path")
        return files
    pattern = str(local_path(spec))
    files = tuple(sorted((f for f in glob.glob(pattern) if Path(f).is_file()), key=_natural))
    if not files:
        raise InputError(f"no files match the input pattern {spec!r}; check the folder and the pattern "
                         "(e.g. frames/left_*.png)")
    return files


def _header(path: str) -> tuple[tuple[int, ...], np.dtype]:
    if is_tiff(path):
        import tifffile

        try:
            with tifffile.TiffFile(path) as handle:
                series = handle.series[0]
                return tuple(int(n) for n in series.shape), np.dtype(series.dtype)
        except Exception as exc:  # not a TIFF, truncated header: tifffile raises many types
            raise InputError(f"frame file {path!r} is not a readable TIFF file ({one_line(exc, None)}); check or "
                             "rewrite it") from None
    if not is_image(path):
        raise InputError(f"frame file {path!r} is not an image lncc reads (by its suffix); give PNG, JPEG or "
                         "TIFF frames")
    head = image_header(Path(path))
    verify_image(Path(path))
    return head


def _decode(path: str, shape: tuple[int, ...]) -> np.ndarray:
    if is_tiff(path):
        import tifffile

        try:
            values = tifffile.imread(path, series=0)
        except Exception as exc:  # damaged data: tifffile and its codecs raise many types
            raise InputError(f"frame file {path!r} cannot be decoded ({one_line(exc, None)}); the file is "
                             "damaged or truncated: check or rewrite it") from None
        if values.shape != shape:
            raise InputError(f"frame file {path!r} decodes to shape {values.shape}, not {shape}; check the file")
        return values
    return decode_image(Path(path), shape)


class SequenceSource(ReadsByKey):
    """A read-only array over frame files: ``(t, y, x)``, or ``(t, y, x, channels)`` for colour frames.

    ``.chunks`` is one frame. A read decodes the files of the frames it covers (each process keeps the
    last ones it decoded, for the neighbouring blocks of the same frames).
    """

    def __init__(self, files: tuple[str, ...], label: str | None = None):
        self.files = tuple(files)
        self.url = label or self.files[0]
        first, dtype = _header(self.files[0])
        for path in self.files[1:]:
            shape, kind = _header(path)
            if shape != first or kind != dtype:
                raise InputError(f"frame file {path!r} holds a {' x '.join(map(str, shape))} {kind} image but the "
                                 f"first frame {self.files[0]!r} is {' x '.join(map(str, first))} {dtype}; every "
                                 "frame of a sequence must have the same shape and dtype: fix or remove that file")
        if len(first) not in (2, 3):
            raise InputError(f"frame file {self.files[0]!r} has shape {first}; frames must be (y, x) images, "
                             "optionally with colour channels")
        self.frame_shape, self.dtype = first, dtype
        self.shape = (len(self.files),) + first
        self.ndim = len(self.shape)
        self.chunks = (1,) + first
        self.channel_axis = 3 if len(first) == 3 else None

    def __dask_tokenize__(self):
        return ("lncc-sequence", self.files, self.shape, str(self.dtype))

    def __getitem__(self, key) -> np.ndarray:
        key = tuple(key) if isinstance(key, tuple) else (key,)
        frames, rest = key[0], key[1:]
        indices = range(*frames.indices(self.shape[0])) if isinstance(frames, slice) else [int(frames)]
        decoded = process_state().decoded
        out = [decoded.get(stat_key(self.files[i]), lambda i=i: _decode(self.files[i], self.frame_shape))[rest]
               for i in indices]
        if not isinstance(frames, slice):
            return out[0]
        return np.stack(out) if out else np.empty((0,) + self.frame_shape, self.dtype)[(slice(None),) + rest]
