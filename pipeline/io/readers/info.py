"""What an input's metadata says, whatever its format: the one record every reader is opened from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...core.checks import default_dims
from ...errors import InputError
from ..urls import is_local, local_path

__all__ = ["InputInfo", "input_dims", "check_exists", "stat_key", "ReadsByKey"]


@dataclass(frozen=True)
class InputInfo:
    """What the metadata of an input says (no pixel data read).

    ``shape``, ``dtype`` and ``dims`` are those of the image lncc correlates: after the channel policy
    (a colour image read as its luminance is ``(y, x)`` float32; ``channels: separate`` gives a ``c`` axis).
    ``read`` holds what the format's reader needs to open the same image again (series, level, files,
    channel policy), so every process opens it as the plan saw it.
    """

    url: str  # the input as the config gives it (for a list of frame files: the first, with their count)
    shape: tuple[int, ...]
    dtype: np.dtype
    dims: tuple[str, ...]
    zarr_chunks: tuple[int, ...]  # the stored chunks (a TIFF's tiles or strips, a file per frame)
    zarr_format: int  # 2 or 3; 0 for a file that is not zarr
    coords: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    # Kept so that open_input opens the array as inspect_input did; out of repr because it may hold secrets.
    storage_options: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    file_format: str = "zarr"  # zarr, tiff, image, sequence or video
    read: tuple[tuple[str, Any], ...] = ()  # the reader's arguments, as sorted (name, value) pairs
    channels: str | None = None  # the channel policy applied (None: a grey-level input)
    alpha: bool = False  # the input has an alpha channel: its validity mask (see :func:`alpha_mask`)

    def describe(self) -> dict[str, Any]:
        """The input as provenance records it: where, what, which format, series/level and channel policy."""
        record = {"url": self.url, "shape": list(self.shape), "dtype": str(self.dtype), "dims": list(self.dims),
                  "format": self.file_format, "zarr_format": self.zarr_format}
        options = dict(self.read)
        record.update({k: options[k] for k in ("series", "level", "frames", "frame_rate") if k in options})
        if "files" in options:
            record["files"] = len(options["files"])
        if self.channels is not None:
            record.update(channels=self.channels, alpha_mask=self.alpha)
        return record


def check_exists(url: str) -> None:
    """A missing local input, reported before any reader tries it."""
    if is_local(url) and not local_path(url).exists():
        raise InputError(f"input {url!r} does not exist; check the path")


def input_dims(url: str, dims, shape: tuple[int, ...], stored: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """An input's dims: the config's (checked against its shape), else the stored ones, else the defaults."""
    if dims is None:
        return stored or default_dims(len(shape))
    if len(dims) != len(shape):
        raise InputError(f"config dims {list(dims)} has {len(dims)} names but input {url!r} is "
                         f"{len(shape)}-D with shape {shape}; give {len(shape)} names")
    return tuple(dims)


def stat_key(path) -> tuple:
    """A file's key among decoded files: its path, inode, size, modification and change times.

    The change time (ctime) moves with every write and cannot be set back (``cp -p``, ``rsync -a`` and ``tar``
    restore the modification time only): a file rewritten in place or replaced is decoded anew.
    """
    stat = Path(path).stat()
    return str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns


class ReadsByKey:
    """``read_into`` for readers that make a region's values in one go (``self[key]``): whole files, decoded frames,
    a channel view. The pair reader and the shifted reader fill their blocks through it."""

    def read_into(self, region: list[slice], out: np.ndarray) -> None:
        """Fill ``out`` with the values in ``region`` (step-1 slices)."""
        out[...] = self[tuple(region)]
