"""Paths and URLs of stores: local or not, their filesystem, joining, whole-or-nothing writes, and secrets.

``storage_options`` are the fsspec options (``endpoint_url``, ``profile``, ``anon``, ...) for URL stores
(``s3://``, ``gs://``, ``memory://`` ...); ignored for local paths, and never put in an error message nor in
an output's attributes: they may hold credentials (:func:`redact`).
"""

from __future__ import annotations

import os
import uuid
from typing import Any

__all__ = ["is_local", "local_path", "store_kwargs", "filesystem", "redact", "one_line", "remote_is_empty",
           "join_url", "read_json", "put_atomic"]


def is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def local_path(url: str):
    from pathlib import Path

    return Path(url.removeprefix("file://"))


def store_kwargs(url: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """``storage_options=`` for zarr and xarray, for URLs only: zarr refuses them with a local path."""
    return {"storage_options": dict(storage_options)} if storage_options and not is_local(url) else {}


def filesystem(url: str, storage_options: dict[str, Any] | None):
    """The fsspec filesystem of a URL and the path inside it."""
    import fsspec

    return fsspec.core.url_to_fs(url, **(storage_options if not is_local(url) and storage_options else {}))


def _secrets(storage_options: dict[str, Any] | None) -> set[str]:
    """Every string in ``storage_options`` worth hiding, with the host parts of URL values (an endpoint)."""
    from urllib.parse import urlsplit

    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)
        elif isinstance(value, str) and len(value) >= 4:  # shorter values are no secret and would garble text
            found.add(value)
            parts = urlsplit(value)
            if parts.netloc:
                found.update(p for p in (parts.netloc, parts.hostname) if p and len(p) >= 4)

    walk(storage_options)
    return found


def redact(text: str, storage_options: dict[str, Any] | None) -> str:
    """``text`` with every value of ``storage_options`` (keys, secrets, endpoints) replaced by ``***``."""
    for secret in sorted(_secrets(storage_options), key=len, reverse=True):  # longest first: a URL before its host
        text = text.replace(secret, "***")
    return text


def one_line(exc: BaseException, storage_options: dict[str, Any] | None) -> str:
    """``Type: message`` of an exception, on one line, without any storage option in it."""
    message = " ".join(str(exc).split())
    return redact(f"{type(exc).__name__}: {message}" if message else type(exc).__name__, storage_options)


def remote_is_empty(url: str, storage_options: dict[str, Any] | None) -> bool:
    """True when no object is stored under a URL.

    Raises FileNotFoundError when the URL's bucket does not exist (s3fs does: a
    missing prefix lists empty, a missing bucket raises), and whatever the store
    raises when it cannot be listed at all.
    """
    fs, root = filesystem(url, storage_options)
    fs.invalidate_cache(root)
    # A whole listing, not maxdepth=1: s3fs lists a missing bucket as empty with maxdepth but raises without.
    return not fs.find(root)


def join_url(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *parts])


def read_json(url: str, key: str, storage_options: dict[str, Any] | None) -> Any:
    """The JSON document stored at ``url/key``; None when there is none (or it is not JSON)."""
    import json

    try:
        if is_local(url):
            raw = (local_path(url) / key).read_bytes()
        else:
            fs, root = filesystem(url, storage_options)
            raw = fs.cat_file(f"{root.rstrip('/')}/{key}")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def put_atomic(url: str, key: str, data: bytes, storage_options: dict[str, Any] | None) -> None:
    """Store ``data`` at ``url/key`` whole or not at all: a local file is written aside and renamed into place
    (and synced, so the rename never outlives its bytes); an object store's PUT is atomic."""
    if is_local(url):
        path = local_path(url) / key
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")
        with open(temp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    else:
        fs, root = filesystem(url, storage_options)
        fs.pipe_file(f"{root.rstrip('/')}/{key}", data)
