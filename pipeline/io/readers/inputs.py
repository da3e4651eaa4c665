"""Every kind of input behind one surface: what its metadata says (:class:`InputInfo`) and what its blocks are
read from (:func:`source_of`), whatever its format.

An input is a zarr array (path or URL), a TIFF file (:mod:`.tiff`), a single image (:mod:`.images`), a
sequence of frame files (a glob or a list, :mod:`.sequence`) or a video file (:mod:`.video`). Colour inputs
are read through the channel policy (:mod:`.channels`). The format is told by the name: a list or a glob
pattern is a sequence, then the file suffix, else zarr.
"""

from __future__ import annotations

from typing import Any

import dask.array as da
import dask.base
import numpy as np
import xarray as xr

from ...errors import InputError
from ..urls import is_local
from .channels import ChannelView, channel_plan
from .images import IMAGE_SUFFIXES, ImageSource, is_image
from .info import InputInfo, check_exists, input_dims
from .sequence import SequenceSource, frame_files, is_pattern
from .tiff import TIFF_SUFFIXES, TiffSource, is_tiff
from .video import VIDEO_SUFFIXES, VideoSource, is_video
from .zarr import array_reader, inspect_zarr

__all__ = ["input_format", "input_label", "input_files", "inspect_input", "source_of", "open_input", "alpha_mask"]


#: File suffixes of the formats read from local files only (TIFF, images, video).
_FILE_SUFFIXES = TIFF_SUFFIXES + IMAGE_SUFFIXES + VIDEO_SUFFIXES


def input_format(url) -> str:
    """The format an input is read as, from its name: sequence, tiff, image, video or zarr.

    Raises
    ------
    InputError
        For a URL naming a TIFF, image or video file: those are read from local files only.
    """
    if is_pattern(url):
        return "sequence"
    for name, test in (("tiff", is_tiff), ("image", is_image), ("video", is_video)):
        if test(url):
            return name
    if not is_local(url) and str(url).lower().rstrip("/").endswith(_FILE_SUFFIXES):
        raise InputError(f"input {url!r} is a TIFF, image or video file at a URL; lncc reads those from local "
                         "files only: copy it to a local path (then lncc ingest it to zarr on the object store "
                         "if it is to stay there)")
    return "zarr"


def input_label(url) -> str:
    """An input as messages name it: its path or URL; a list of frame files by its first file and count."""
    if isinstance(url, (list, tuple)):
        return f"{url[0]} (+{len(url) - 1} more files)" if len(url) > 1 else str(url[0]) if url else "[]"
    return str(url)


def input_files(url) -> list[str]:
    """The paths an input stands for: each frame file of a sequence (a glob matching nothing: none), else itself."""
    if url is None:
        return []
    if is_pattern(url):
        try:
            return list(frame_files(url))
        except InputError:  # reported when the input is opened
            return list(url) if isinstance(url, (list, tuple)) else []
    return [url]


def _base(kind: str, url, read: dict[str, Any]):
    """The format's reader, before any channel policy."""
    if kind == "tiff":
        return TiffSource(url, series=read.get("series", 0), level=read.get("level", 0))
    if kind == "image":
        return ImageSource(url, whole=read.get("whole", False))
    if kind == "sequence":
        return SequenceSource(read["files"], label=input_label(url))
    if kind == "video":
        return VideoSource(url, planes=read.get("planes", "luma"))
    raise ValueError(f"no reader for format {kind!r}")


def inspect_input(url, dims=None, *, storage_options: dict[str, Any] | None = None, series: int = 0,
                  level: int = 0, channels: str | int | None = None, whole: bool = False) -> InputInfo:
    """Read an input's metadata: shape, dtype, dims, chunks and dimension coordinates, after the channel policy.

    ``dims`` (from the config) overrides the metadata; without either, the dims
    are ``(y, x)`` or ``(t, y, x)`` (``(c, y, x)`` for ``channels: separate``).
    ``series`` and ``level`` select a TIFF's image series and resolution level;
    ``channels`` is the colour policy (None: luminance for colour inputs).
    ``whole`` reads single images above the size limit too (``lncc ingest``).
    ``storage_options`` (fsspec, for URLs) are kept in the returned info.
    A single image is decoded here (it is read whole anyway, once per process):
    a damaged one fails before anything is written.

    Raises
    ------
    InputError
        If the input is missing, unreadable, of an unknown or unsupported kind,
        or ``dims`` does not match its number of dimensions.
    """
    kind = input_format(url)
    if kind == "zarr":
        return inspect_zarr(url, dims, storage_options)
    label = input_label(url)
    read: dict[str, Any] = {}
    if kind == "sequence":
        read["files"] = frame_files(url)
    else:
        check_exists(url)
    if kind == "tiff":
        read.update(series=int(series), level=int(level))
    elif series or level:
        raise InputError(f"series/level select a TIFF's image series and pyramid level, but {label!r} is "
                         f"{'an' if kind == 'image' else 'a'} {kind} input; remove them")
    if kind == "video":
        read["planes"] = "luma" if channels in (None, "luminance") else "rgb"
    if kind == "image" and whole:
        read["whole"] = True
    base = _base(kind, url, read)
    if kind == "image":
        base.values()
    policy = None
    if kind == "video" and read["planes"] == "luma":
        policy = "luminance" if not base.pix_fmt.startswith("gray") else None  # the video's own luma plane
    view = base
    if base.channel_axis is not None:
        plan = channel_plan(f"input {label!r}", base.shape[base.channel_axis], channels)
        view = ChannelView(base, base.channel_axis, plan)
        if plan.separate and view.ndim == 4:
            raise InputError(f"input {label!r} is a video of colour frames: channels: separate gives one map per "
                             "channel for single images only; set channels: luminance, mean or a channel index")
        read["channels"], policy = channels if channels is not None else "luminance", plan.policy
    elif isinstance(channels, int) and channels > 0:
        raise InputError(f"input {label!r} is a grey-level image (one channel) but channels is {channels}; "
                         "remove channels or set it to 0")
    separate = policy == "separate"
    names = input_dims(label, dims, view.shape, ("c", "y", "x") if separate else None)
    coords: dict[str, Any] = {}
    if separate:
        coords[names[0]] = xr.Variable((names[0],), np.array(view.plan.names, dtype=object),
                                      attrs={"long_name": "channel"})  # object: zarr 3's vlen strings
    if kind == "video":
        coords[names[0]] = _frame_times(names[0], view.shape[0], base.rate)
        read["frame_rate"] = float(base.rate) if base.rate else None
    return InputInfo(url=label, shape=tuple(view.shape), dtype=np.dtype(view.dtype), dims=names,
                     zarr_chunks=tuple(view.chunks), zarr_format=0, coords=coords, file_format=kind,
                     read=tuple(sorted(read.items())), channels=policy,
                     alpha=isinstance(view, ChannelView) and view.plan.alpha is not None)


def _frame_times(dim: str, frames: int, rate) -> xr.Variable:
    """A video's frame axis: seconds from its start at ``rate`` frames per second (frame numbers without one)."""
    if not rate:
        return xr.Variable((dim,), np.arange(frames), attrs={"long_name": "frame"})
    return xr.Variable((dim,), np.arange(frames) / float(rate),
                       attrs={"units": "s", "long_name": "time", "frame_rate": float(rate), "frame_count": frames})


def source_of(info: InputInfo):
    """What blocks of an input are read from: lncc's chunk reader or zarr for zarr arrays, the format's reader
    (through the channel policy) for files. Picklable: each process opens files itself."""
    if info.file_format == "zarr":
        return array_reader(info.url, storage_options=info.storage_options)
    read = dict(info.read)
    base = _base(info.file_format, info.url, read)
    if "channels" not in read:
        return base
    mask = read.get("mask", False)
    return ChannelView(base, base.channel_axis, channel_plan(info.url, base.shape[base.channel_axis],
                                                             read["channels"]), mask=mask)


def alpha_mask(info: InputInfo) -> InputInfo | None:
    """The validity mask an input's alpha channel gives (alpha 0 is invalid), as an input; None without alpha."""
    if not info.alpha:
        return None
    read = tuple(sorted({**dict(info.read), "mask": True}.items()))
    return InputInfo(url=info.url, shape=info.shape, dtype=np.dtype(bool), dims=info.dims,
                     zarr_chunks=info.zarr_chunks, zarr_format=0, coords=info.coords, file_format=info.file_format,
                     read=read, channels=info.channels, alpha=True)


def open_input(info: InputInfo, chunks: tuple[int, ...]) -> xr.DataArray:
    """Open an input lazily as a dask-backed DataArray with the given processing chunks.

    The values are the stored values, undecoded (no fill-value masking or
    scaling), so integer images stay integers.
    """
    source = source_of(info)
    name = "lncc-input-" + dask.base.tokenize(info.url, info.read, source.shape, str(source.dtype), source.chunks,
                                              chunks)
    data = da.from_array(source, chunks=chunks, name=name, inline_array=True, asarray=False,
                         meta=np.empty((0,) * source.ndim, dtype=source.dtype))
    return xr.DataArray(data, dims=info.dims, coords=info.coords)
