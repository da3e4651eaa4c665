"""Files written whole: encoded chunks renamed into place, large writes past the page cache, durability."""

from __future__ import annotations

import os
import threading

import numpy as np
import zarr

from ...core.threads import PAGE, thread_buffer
from ..codecs import NO_COMPRESSION
from ..process import process_state
from ..urls import is_local, local_path

__all__ = ["write_chunks", "write_file", "sync_outputs"]


def write_chunks(array: zarr.Array, codec, root, block: np.ndarray, region: tuple[slice, ...]) -> None:
    """Encode and write the zarr chunks that ``region`` (a union of whole chunks, clipped at the edges) covers."""
    chunk = array.chunks
    first = [r.start // c for r, c in zip(region, chunk)]
    last = [-(-r.stop // c) for r, c in zip(region, chunk)]
    for coords in np.ndindex(*[hi - lo for lo, hi in zip(first, last)]):
        coords = tuple(lo + k for lo, k in zip(first, coords))
        inside = tuple(slice(k * c - r.start, min((k + 1) * c, s) - r.start)
                       for k, c, r, s in zip(coords, chunk, region, array.shape))
        part = block[inside]
        if part.shape != chunk:  # an edge chunk: zarr stores it whole, padded with the fill value
            whole = np.full(chunk, array.fill_value, dtype=block.dtype)
            whole[tuple(slice(0, n) for n in part.shape)] = part
            part = whole
        part = np.ascontiguousarray(part, dtype=block.dtype.newbyteorder("<"))
        data = part if codec is NO_COMPRESSION else np.frombuffer(codec.encode(part), dtype=np.uint8)
        path = root / array.metadata.encode_chunk_key(coords)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.partial")
        try:
            write_file(temp, data)
            os.replace(temp, path)
        except OSError as exc:  # os.write's errors (e.g. a full disk) name no file
            temp.unlink(missing_ok=True)
            raise OSError(exc.errno, f"{exc.strerror} (writing {path})") from None


#: Alignment of address, length and offset that O_DIRECT asks for (the largest logical block size in use).
_ALIGN = PAGE


#: Smaller writes go through the page cache: a direct write waits for the device, which only pays off in bulk.
_DIRECT_MIN = 1 << 20


def write_file(path, data: np.ndarray) -> None:
    """Write the bytes of the contiguous array ``data`` to a new file ``path``.

    Large writes bypass the page cache (O_DIRECT) where the file system allows:
    on this class of (virtual) machine, filling fresh page-cache pages costs
    ~3 s of kernel time per GB written, the direct path ~0.15 s. The map is
    written once and read later by someone else, so caching it buys nothing.
    """
    view = data.reshape(-1).view(np.uint8)
    direct = getattr(os, "O_DIRECT", 0)
    size = view.size
    body = size - size % _ALIGN
    if direct and body >= _DIRECT_MIN and os.stat(path.parent).st_dev not in process_state().no_direct:
        if view.ctypes.data % _ALIGN:
            aligned = thread_buffer("write", body)
            aligned[:] = view[:body]
        else:
            aligned = view[:body]
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | direct, 0o666)
        except OSError:
            process_state().no_direct.add(os.stat(path.parent).st_dev)
        else:
            try:
                written = 0
                while written < body:
                    written += os.write(fd, aligned[written:])
            except OSError:
                process_state().no_direct.add(os.stat(path.parent).st_dev)
                os.close(fd)
            else:
                os.close(fd)
                if body < size:
                    with open(path, "r+b") as f:
                        f.seek(body)
                        f.write(view[body:])
                return
    with open(path, "wb") as f:
        f.write(view)


def sync_outputs(urls: list[str]) -> None:
    """Make everything written to local outputs durable (the files' data and their renames): one ``syncfs`` per
    file system, ``sync`` where there is none. URL outputs: nothing to do (a PUT is durable once answered)."""
    import ctypes

    seen = set()
    for url in urls:
        if not is_local(url):
            continue
        fd = os.open(local_path(url), os.O_RDONLY)
        try:
            device = os.fstat(fd).st_dev
            if device in seen:
                continue
            seen.add(device)
            libc = ctypes.CDLL(None, use_errno=True)
            syncfs = getattr(libc, "syncfs", None)
            if syncfs is None or syncfs(fd) != 0:
                os.sync()
        finally:
            os.close(fd)
