"""Content fingerprints of inputs: what an up-to-date check compares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .readers.sequence import frame_files, is_pattern
from .urls import filesystem, is_local, local_path

__all__ = ["fingerprint"]


#: Listing fields that change whenever an object's bytes do (S3 and most object stores: ETag; GCS: md5Hash,
#: crc32c; Azure: etag). An object listed without any is read and hashed instead.
_OBJECT_TAGS = ("ETag", "etag", "md5Hash", "crc32c", "checksum")


def fingerprint(url, *, storage_options: dict[str, Any] | None = None) -> str:
    """Content fingerprint of a zarr array (its metadata and every stored chunk), of a file (its bytes: TIFF,
    image, video) or of a sequence of frame files (each file's bytes, in order).

    Local chunk files are hashed (SHA-256) in parallel threads. URL stores
    are listed once (no data read): each object counts with its key, size
    and ETag (or the store's checksum), which the store changes with the
    bytes; objects listed without one are read and hashed like files.
    Everything is combined into one SHA-256: a change of any stored byte
    changes it, modification times never do.
    """
    import hashlib

    if is_pattern(url):  # frame files: their order and each one's bytes
        h = hashlib.sha256()
        for path in frame_files(url):
            h.update(f"{Path(path).name}:{_file_digest(Path(path))};".encode())
        return h.hexdigest()
    if is_local(url) and Path(local_path(url)).is_file():  # a TIFF, image or video file: its bytes, in pieces
        return _file_digest(Path(local_path(url)))
    fs, root = filesystem(url, storage_options)
    if is_local(url):
        parts = _content_digests(fs, root, sorted(fs.find(root)))
    else:
        fs.invalidate_cache(root)  # the listing must be of now, not of an earlier call in this process
        listing = fs.find(root, detail=True)
        tagged = {path: _object_tag(info) for path, info in listing.items()}
        untagged = sorted(path for path, tag in tagged.items() if tag is None)
        parts = [(path[len(root):], int(listing[path].get("size") or 0), tag)
                 for path, tag in tagged.items() if tag is not None]
        parts = sorted(parts + _content_digests(fs, root, untagged))
    h = hashlib.sha256()
    for key, size, tag in parts:
        h.update(f"{key}:{size}:{tag};".encode())
    return h.hexdigest()


def _file_digest(path: Path, piece: int = 2**24) -> str:
    """SHA-256 of a file's bytes, read in pieces of ``piece`` bytes (a gigapixel file is never held whole)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(piece), b""):
            h.update(block)
    return h.hexdigest()


def _object_tag(info: dict[str, Any]) -> str | None:
    for name in _OBJECT_TAGS:
        if info.get(name):
            return f"{name}={str(info[name]).strip(chr(34))}"
    return None


def _content_digests(fs, root: str, paths: list[str]) -> list[tuple[str, int, str]]:
    """(key, size, digest) of each object, read in parallel threads.

    The digest is SHA-256, which no edit of the bytes keeps (CRC-32, used before, kept a same-size
    edit with four compensating bytes); SHA-256 runs on the CPU's SHA instructions (0.31 s for 512 MiB
    on 4 threads here, BLAKE2b 0.53 s, CRC-32 0.12 s), and hashlib releases the GIL.
    """
    import hashlib
    from concurrent.futures import ThreadPoolExecutor

    def digest(path: str) -> tuple[str, int, str]:
        data = fs.cat_file(path)
        return path[len(root):], len(data), hashlib.sha256(data).hexdigest()

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(digest, paths))
