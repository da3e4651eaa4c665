"""Video files (mp4, mov, mkv, avi, webm) read through PyAV (FFmpeg) as ``(t, y, x)`` inputs, frame chunk by
frame chunk, in order.

Video decodes forward from a keyframe, so each process keeps one decoder per file that reads frames in
order and keeps the frames it decoded ahead of need (another thread's next block), and seeks (to the
keyframe before a frame, then decodes up to it: frame-exact) only when a block asks for frames behind it
or far ahead. A frame's index comes from its presentation time, so seeking never shifts frames. A long
video pair never sits in memory: only the frames of the blocks in flight.

Planes: ``luma`` reads the video's luma plane Y' as stored (what the video keeps as brightness: the luminance
policy; no conversion, so no rounding; most video stores it in the limited range 16-235, which the NCC,
blind to offset and scale, does not see); ``rgb`` reads R, G, B (FFmpeg's conversion) for the other channel
policies (:mod:`.channels`).
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from fractions import Fraction
from pathlib import Path

import numpy as np

from ...errors import InputError
from ..process import process_state
from ..urls import is_local, local_path, one_line
from .info import ReadsByKey, stat_key

__all__ = ["VIDEO_SUFFIXES", "is_video", "VideoSource", "video_header"]

#: File names read as video (case-insensitive).
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".ts")

#: Frames a decoder reads on, rather than seek, to reach a frame ahead of it (a seek decodes from the keyframe
#: before, up to a GOP of frames: often 250), keeping the frames it passes for the blocks that ask next.
_READ_ON = 128

#: Bytes of decoded frames one decoder keeps: frames passed on the way to a block's (the neighbouring blocks the
#: run computes next, in any order: see ``in_order`` in :mod:`pipeline.job.cluster`), and those read (other blocks
#: of the same frames), these dropped first.
_KEEP_BYTES = 192 * 2**20


def is_video(url: str) -> bool:
    """Whether ``url`` names a local video file (by its suffix)."""
    return is_local(url) and str(url).lower().endswith(VIDEO_SUFFIXES)


def _open(path: Path):
    import av

    try:
        container = av.open(str(path))
        if not container.streams.video:
            container.close()
            raise ValueError("the file holds no video stream")
    except Exception as exc:  # FFmpeg raises many types for a file it cannot demux
        raise InputError(f"input {str(path)!r} is not a readable video ({one_line(exc, None)}); give an mp4, "
                         "mov, mkv or avi file, or its frames as a sequence of images") from None
    return container


def _deep(pix_fmt: str) -> bool:
    return any(depth in pix_fmt for depth in ("10", "12", "14", "16"))


def video_header(path: Path) -> dict:
    """Frame count, rate, size and pixel format of a video's first video stream; one-line errors.

    Kept per file version (:func:`.info.stat_key`): opening a video probes its streams (tens of ms),
    and every process's reader is made from the same header.
    """
    return dict(_header(stat_key(path)))


@functools.lru_cache(maxsize=64)
def _header(key: tuple) -> tuple:
    path = Path(key[0])
    container = _open(path)
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        claimed = int(stream.frames or 0)
        # Counted from the packets (no decoding): containers that do not record it (mkv, some avi), and a file cut
        # inside its frames, which would otherwise fail only when a block reaches the missing frames.
        frames = sum(1 for packet in container.demux(stream) if packet.size)
        if claimed > frames:
            raise InputError(f"video {str(path)!r} is truncated: its index lists {claimed} frames but the file holds "
                             f"{frames}; copy or write it again")
        ctx = stream.codec_context
        pix_fmt = ctx.format.name if ctx.format is not None else "yuv420p"
        return tuple({"frames": frames, "rate": Fraction(rate) if rate else None, "height": int(ctx.height),
                      "width": int(ctx.width), "pix_fmt": pix_fmt, "codec": ctx.name}.items())
    except InputError:
        raise
    except Exception as exc:  # damaged index or stream header
        raise InputError(f"video {str(path)!r} cannot be read ({one_line(exc, None)}); the file is damaged: check "
                         "or rewrite it") from None
    finally:
        container.close()


class _Decoder:
    """One file's frames decoded in order by one process: frames kept ahead of need, seeks where needed."""

    def __init__(self, path: Path, planes: str, rate: Fraction | None, deep: bool):
        self.path, self.planes, self.rate = path, planes, rate
        self.format = ("gray16le" if deep else "gray") if planes == "luma" else ("rgb48le" if deep else "rgb24")
        self.deep = deep
        self.lock = threading.Lock()
        self.kept: OrderedDict[int, np.ndarray] = OrderedDict()
        self.read_already: set[int] = set()  # kept frames some block has read
        self.container = None
        self.frames = None  # the decoding iterator
        self.position = 0  # index of the next frame the iterator gives

    def _restart(self, index: int) -> None:
        """Decode from the keyframe at or before ``index`` (from the start without a usable rate)."""
        if self.container is None:
            self.container = _open(self.path)
            self.stream = self.container.streams.video[0]
            self.stream.thread_type = "AUTO"  # FFmpeg's frame and slice threads
            self.start = self.stream.start_time or 0
        if index > 0 and self.rate:
            target = self.start + int(index / (self.rate * self.stream.time_base))
            self.container.seek(target, stream=self.stream, backward=True, any_frame=False)
        else:
            self.container.seek(self.start, stream=self.stream, backward=True, any_frame=False)
            index = 0
        self.frames = self.container.decode(self.stream)
        self.position = None if index > 0 else 0  # after a seek: known from the first frame's time

    def _index(self, frame) -> int:
        if frame.pts is None or not self.rate:
            return self.position
        return int(round(float((frame.pts - self.start) * self.stream.time_base * self.rate)))

    def read(self, first: int, stop: int) -> list[np.ndarray]:
        """Frames ``first`` .. ``stop - 1`` (each ``(y, x)`` or ``(y, x, 3)``), decoded in order."""
        with self.lock:
            out = []
            for index in range(first, stop):
                if index not in self.kept:
                    self._decode_to(index)
                out.append(self.kept[index])
                self.read_already.add(index)
            self._trim(first)
            return out

    def _decode_to(self, index: int) -> None:
        if self.frames is None and index <= _READ_ON:
            self._restart(0)  # near the start: read on from it (a seek would find the same keyframe, or one after)
        elif self.frames is None or self.position is None or not (self.position <= index <= self.position + _READ_ON):
            self._restart(index)
        while index not in self.kept:
            try:
                frame = next(self.frames)
            except StopIteration:
                raise InputError(f"video {str(self.path)!r} ends before frame {index}; the file is truncated or its "
                                 "frame count is wrong: check or rewrite it") from None
            except Exception as exc:  # FFmpeg's decoding errors
                raise InputError(f"video {str(self.path)!r} cannot be decoded near frame {index} "
                                 f"({one_line(exc, None)}); the file is damaged there: check or rewrite it") from None
            at = self._index(frame)
            if at is None:  # the first frame after a seek has no time: decode from the start instead
                self._restart(0)
                continue
            if self.position is None and at > index:  # the seek overshot: from the start
                self._restart(0)
                continue
            self.position = at + 1
            if at + _READ_ON >= index:  # the frames just before may be another thread's next block
                self.kept[at] = self._pixels(frame)

    def _pixels(self, frame) -> np.ndarray:
        """A decoded frame's values: a planar YUV or grey frame's luma plane as stored (no conversion, no
        rounding: half the cost of converting it), else FFmpeg's conversion to the planes' format."""
        name = frame.format.name
        if self.planes == "luma" and (name.startswith(("yuv", "yuvj", "gray", "nv12", "nv21"))):
            plane = frame.planes[0]
            kind = np.dtype("<u2") if self.deep else np.dtype(np.uint8)
            rows = np.frombuffer(plane, kind).reshape(frame.height, plane.line_size // kind.itemsize)
            return rows[:, :frame.width].copy()
        return frame.to_ndarray(format=self.format)

    def _trim(self, first: int) -> None:
        """Drop kept frames beyond the byte limit: those read already first (oldest first), then those farthest
        from ``first``."""
        total = sum(v.nbytes for v in self.kept.values())
        if total <= _KEEP_BYTES:
            return
        for index in sorted(self.kept, key=lambda i: (i not in self.read_already, -abs(i - first))):
            if total <= _KEEP_BYTES:
                break
            total -= self.kept.pop(index).nbytes
            self.read_already.discard(index)


def _decoder(path: Path, planes: str, rate, deep: bool) -> _Decoder:
    state = process_state()
    key = stat_key(path) + (planes,)
    with state.videos_lock:
        if key not in state.videos:
            state.videos[key] = _Decoder(path, planes, rate, deep)
        return state.videos[key]


class VideoSource(ReadsByKey):
    """A read-only array over a video file's frames: ``(t, y, x)`` (``planes="luma"``) or ``(t, y, x, 3)``
    (``"rgb"``). ``.chunks`` is one frame; ``.rate`` frames per second (None if the file does not say)."""

    def __init__(self, url: str, planes: str = "luma"):
        if planes not in ("luma", "rgb"):
            raise ValueError(f"planes must be luma or rgb, got {planes!r}")
        self.url, self.planes = url, planes
        self.path = Path(local_path(url))
        head = video_header(self.path)
        self.rate, self.pix_fmt, self.codec = head["rate"], head["pix_fmt"], head["codec"]
        deep = _deep(self.pix_fmt)
        self.dtype = np.dtype(np.uint16 if deep else np.uint8)
        frame = (head["height"], head["width"]) + ((3,) if planes == "rgb" else ())
        self.shape = (head["frames"],) + frame
        self.ndim = len(self.shape)
        self.chunks = (1,) + frame
        self.channel_axis = 3 if planes == "rgb" else None
        self._deep = deep

    def __dask_tokenize__(self):
        return ("lncc-video", stat_key(self.path), self.planes, self.shape)

    def __getitem__(self, key) -> np.ndarray:
        key = tuple(key) if isinstance(key, tuple) else (key,)
        frames, rest = key[0], key[1:]
        first, stop, step = frames.indices(self.shape[0]) if isinstance(frames, slice) else (int(frames),
                                                                                              int(frames) + 1, 1)
        if step != 1:
            raise ValueError("video frames are read in steps of one")
        decoded = _decoder(self.path, self.planes, self.rate, self._deep).read(first, stop)
        out = np.stack([f[rest] for f in decoded]) if decoded else np.empty((0,) + self.shape[1:], self.dtype)[
            (slice(None),) + rest]
        return out if isinstance(frames, slice) else out[0]
