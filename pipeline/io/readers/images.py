"""Single-image files (PNG, JPEG, BMP, WebP, ...) read through imageio, for small pairs.

Such a file cannot be read in part: each process decodes it once, on the first block that needs it, and
keeps it for the blocks that follow (:class:`DecodedFiles`, in the process's state). An image above
:data:`MAX_IMAGE_PIXELS` is refused with the way out: ``lncc ingest`` writes it to chunked zarr once.
Colour images give their channels on the last axis, for the channel policy (:mod:`.channels`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError
from ..process import process_state
from ..urls import is_local, local_path, one_line
from .info import ReadsByKey, stat_key

__all__ = ["IMAGE_SUFFIXES", "MAX_IMAGE_PIXELS", "is_image", "ImageSource", "DecodedFiles", "image_header",
           "decode_image", "verify_image"]

#: File names read as single images (case-insensitive), through imageio's pillow plugin.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".ppm", ".pgm", ".pnm", ".jp2")

#: The largest single image read whole (8192 x 8192): larger ones go through ``lncc ingest``.
MAX_IMAGE_PIXELS = 8192 * 8192


def is_image(url: str) -> bool:
    """Whether ``url`` names a local single-image file (by its suffix)."""
    return is_local(url) and str(url).lower().endswith(IMAGE_SUFFIXES)


#: Pillow modes of colour spaces other than RGB, read converted to RGB (a CMYK JPEG's K is no alpha).
_CONVERTED = {"CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB"}


def image_mode(path: Path) -> str | None:
    """The mode a file is decoded in: None (as stored) or the one its colour space is converted to."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return _CONVERTED.get(image.mode)
    except Exception:  # reported by image_header, with the reason
        return None


def image_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of an image file from its header (colour spaces other than RGB as RGB), nothing decoded;
    one-line errors."""
    import imageio.v3 as iio

    try:
        props = iio.improps(path, plugin="pillow")
    except Exception as exc:  # not an image, truncated header, unknown format: pillow raises many types
        raise InputError(f"input {str(path)!r} is not a readable image ({one_line(exc, None)}); give a PNG, "
                         "JPEG or TIFF file, or a zarr array") from None
    if props.is_batch or len(props.shape) not in (2, 3):
        raise InputError(f"input {str(path)!r} holds {props.n_images or 'several'} images (shape {props.shape}); "
                         "give a single image, or its frames as files of a sequence")
    shape = tuple(int(n) for n in props.shape)
    if image_mode(path) == "RGB":  # another colour space, decoded as RGB
        return shape[:2] + (3,), np.dtype(np.uint8)
    return shape, np.dtype(props.dtype)


def verify_image(path: Path) -> None:
    """A quick check of a file's integrity without decoding it (PNG: every chunk's CRC, the end marker), so a
    truncated frame file stops the run before anything is written; one-line errors."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.verify()
    except Exception as exc:  # pillow raises OSError, SyntaxError, ValueError... for a damaged file
        raise InputError(f"image {str(path)!r} is damaged or truncated ({one_line(exc, None)}); check or rewrite "
                         "it") from None


def decode_image(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """The whole image, decoded; one-line errors for a damaged file or one that changed since it was inspected."""
    import imageio.v3 as iio
    from PIL import Image

    if shape[0] * shape[1] > (Image.MAX_IMAGE_PIXELS or 0) > 0:
        Image.MAX_IMAGE_PIXELS = None  # lncc's own limit (or lncc ingest's choice to read it whole) rules
    try:
        values = np.asarray(iio.imread(path, plugin="pillow", mode=image_mode(path)))
    except Exception as exc:  # truncated or corrupt data: pillow raises OSError, SyntaxError, ValueError...
        raise InputError(f"image {str(path)!r} cannot be decoded ({one_line(exc, None)}); the file is damaged or "
                         "truncated: check or rewrite it") from None
    if values.shape != shape:
        raise InputError(f"image {str(path)!r} decodes to shape {values.shape}, not the {shape} its header says "
                         "(or said when the run was planned); check the file and run again")
    return values


class DecodedFiles:
    """Whole decoded files one process keeps for its next tasks: least recently used first out, up to a byte limit.

    Each file is decoded once even when several threads want it at the same time.
    """

    def __init__(self, limit: int = 768 * 2**20):
        self.limit = limit
        self._files: OrderedDict[Any, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[Any, threading.Lock] = {}

    def get(self, key, decode) -> np.ndarray:
        """The decoded file for ``key`` (its path and stat), decoding it with ``decode()`` if not kept."""
        with self._lock:
            if key in self._files:
                self._files.move_to_end(key)
                return self._files[key]
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._lock:
                if key in self._files:
                    return self._files[key]
            values = decode()
            values.setflags(write=False)
            with self._lock:
                self._files[key] = values
                self._loading.pop(key, None)
                total = sum(v.nbytes for v in self._files.values())
                while total > self.limit and len(self._files) > 1:
                    _, dropped = self._files.popitem(last=False)
                    total -= dropped.nbytes
            return values


class ImageSource(ReadsByKey):
    """A read-only array over a single-image file: ``(y, x)``, or ``(y, x, channels)`` for colour.

    ``.chunks`` is the whole image (it cannot be read in part); each process decodes it once. ``whole=True``
    (``lncc ingest``) reads an image above :data:`MAX_IMAGE_PIXELS` too.
    """

    def __init__(self, url: str, whole: bool = False):
        self.url = url
        self.path = Path(local_path(url))
        self.shape, self.dtype = image_header(self.path)
        self.ndim = len(self.shape)
        self.chunks = self.shape
        self.channel_axis = 2 if self.ndim == 3 else None
        pixels = self.shape[0] * self.shape[1]
        if pixels > MAX_IMAGE_PIXELS and not whole:
            raise InputError(f"image {url!r} has {self.shape[0]} x {self.shape[1]} = {pixels:,} pixels, more than "
                             f"the {MAX_IMAGE_PIXELS:,} lncc reads whole; convert it once with `lncc ingest "
                             f"{url} IMAGE.zarr` and give the zarr array as the input")

    def __dask_tokenize__(self):
        return ("lncc-image", stat_key(self.path), self.shape, str(self.dtype))

    def __getitem__(self, key) -> np.ndarray:
        return self.values()[key]

    def values(self) -> np.ndarray:
        """The whole decoded image (this process decodes it once): a damaged file fails here, naming it."""
        return process_state().decoded.get(stat_key(self.path), lambda: decode_image(self.path, self.shape))
