"""An lncc output on its store: whose it is, whether a run may write it, and its leftovers.

What lncc promises about an output path (see the README's Operations section):

- It deletes only what it wrote. A path is lncc's when its zarr group's own
  metadata file carries lncc's provenance, which every output carries from its
  first metadata write on (:func:`pipeline.io.write_group`). Anything else at
  the path (a folder with a user's files, a zarr store of someone else, a
  user's file put inside an lncc output) is refused, whatever the flags;
  an empty folder is used as it is.
- A path never holds an output whose provenance does not describe its
  contents: replacing an output first rewrites its provenance to say so
  ("replacing", no config), and only then deletes the old data.
- A block counts as done when its ledger entry is valid and its values match
  the checksum written with them (:func:`usable_blocks`); a rerun recomputes
  any other block.
- One run at a time writes an output, whatever path it is reached by: the lock
  lives inside the output's folder (:class:`OutputLock`), and each block
  write checks that the output's provenance still names its run.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ..errors import InputError
from .lock import LOCK_FILE
from .metadata import CHECKSUMS, GROUP_FILES, LEDGER, PROVENANCE_KEY, STATE_GROUP, group_attributes, read_provenance
from .output_pyramid import COUNTS, PYRAMID_GROUP
from .urls import filesystem, is_local, join_url, local_path, one_line, read_json, remote_is_empty

__all__ = ["output_state", "foreign_entries", "check_output_path", "InputIdentities", "clean_partials", "list_entries",
           "owned_names", "is_zarr_node", "TEMPORARY"]


#: The temporary files lncc and zarr write beside a file before renaming it into place: ``NAME.<32 hex>.partial``
#: (zarr, :func:`pipeline.io.write_group`) and ``NAME.<pid>-<thread>.partial`` (lncc's chunk writes). A user's
#: own ``*.partial`` file is not one of them.
TEMPORARY = re.compile(r".+\.(?:[0-9a-f]{32}|\d+-\d+)\.partial")


#: What lncc writes inside one of its arrays or groups: zarr metadata and chunk files (``c/0/1`` in format 3,
#: ``0.1`` or ``0/1`` in format 2; no others).
_ARRAY_FILE = re.compile(r"(?:zarr\.json|\.zarray|\.zattrs|\.zgroup|\.zmetadata|(?:c/)?\d+(?:[./]\d+)*)")


def _ignorable(name: str) -> bool:
    """Entries that do not make a folder non-empty: lncc's lock (and its temporary files), and the temporary
    files a killed writer leaves."""
    return name == LOCK_FILE or name.startswith(LOCK_FILE + ".") or TEMPORARY.fullmatch(name) is not None


def list_entries(url: str, storage_options: dict[str, Any] | None) -> list[str] | None:
    """Names directly under an output path; None when the path is a file (or a single object)."""
    if is_local(url):
        path = local_path(url)
        if not path.exists():
            return []
        if not path.is_dir():
            return None
        return sorted(os.listdir(path))
    fs, root = filesystem(url, storage_options)
    root = root.rstrip("/")
    fs.invalidate_cache(root)
    return sorted({p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False) if p.rstrip("/") != root})


def _files_under(url: str, entry: str, storage_options: dict[str, Any] | None) -> list[str]:
    """The files below ``url/entry``, as paths relative to it (an entry that is a file: [""])."""
    if is_local(url):
        base = local_path(url) / entry
        if not base.is_dir():
            return [""]
        return [str(p.relative_to(base)) for p in base.rglob("*") if not p.is_dir()]
    fs, root = filesystem(url, storage_options)
    base = f"{root.rstrip('/')}/{entry}"
    found = fs.find(base)
    return [p[len(base) + 1:] for p in found if p != base] if found != [base] else [""]


def output_state(url: str, *, storage_options: dict[str, Any] | None = None) -> str:
    """Say what is at an output path or URL: ``absent``, ``lncc`` (an lncc output) or ``foreign``.

    ``absent`` includes an empty folder (or one holding only lncc's lock and
    temporary files). Ownership is read from the group's metadata file itself.

    Raises
    ------
    InputError
        If a URL cannot be listed (no access, unreachable endpoint).
    """
    if is_local(url):
        entries = list_entries(url, storage_options)
        if entries is None:
            return "foreign"
        if not [e for e in entries if not _ignorable(e)]:
            return "absent"
    else:
        try:
            if remote_is_empty(url, storage_options):
                return "absent"
        except FileNotFoundError as exc:  # no such bucket: nothing could be written there
            raise InputError(f"output {url!r} cannot be written ({one_line(exc, storage_options)}); create "
                             "its bucket, or fix the URL (and storage_options.endpoint_url)") from None
        except Exception as exc:
            raise InputError(f"output {url!r} cannot be listed ({one_line(exc, storage_options)}); check the "
                             "URL, the credentials and storage_options (e.g. endpoint_url)") from None
    attrs = group_attributes(url, storage_options=storage_options) or {}
    return "lncc" if isinstance(attrs.get(PROVENANCE_KEY), dict) else "foreign"


def owned_names(provenance: dict[str, Any]) -> set[str] | None:
    """The arrays an lncc output's provenance says it holds (data variables and coordinates); None for an
    output of an lncc before 0.2, which did not say."""
    names, coords = provenance.get("variables"), provenance.get("coords")
    if not isinstance(names, list) or not isinstance(coords, list):
        return None
    layers = provenance.get("layers") or []
    groups = provenance.get("groups") or []
    return {str(n) for n in names + coords + list(layers) + list(groups)}


def foreign_entries(url: str, *, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Files inside an lncc output that lncc did not write there (e.g. a user's notes), as relative paths.

    lncc's own are the group's metadata, its lock and temporary files, and
    inside the arrays its provenance names (and ``_lncc``) only zarr metadata
    and chunk files.
    """
    owned = owned_names(read_provenance(url, storage_options=storage_options))
    out = []
    for entry in list_entries(url, storage_options) or []:
        if entry in GROUP_FILES or _ignorable(entry):
            continue
        mine = entry == STATE_GROUP or (entry in owned if owned is not None
                                           else is_zarr_node(join_url(url, entry), storage_options))
        if not mine:
            out.append(entry)
            continue
        for inner in _files_under(url, entry, storage_options):
            name = inner.rsplit("/", 1)[-1]
            if not inner or (not _ARRAY_FILE.fullmatch(_relative_to_array(entry, inner))
                             and not TEMPORARY.fullmatch(name)):
                out.append(f"{entry}/{inner}" if inner else entry)
    return out


def _relative_to_array(entry: str, inner: str) -> str:
    """A path inside ``_lncc`` or the pyramid's group (groups of arrays) relative to its array, so the same file
    rules apply: ``_lncc/blocks/c/0/0``, ``_lncc/counts/ncc/c/0/0``, ``levels/ncc/2/c/0/0`` -> ``c/0/0``."""
    parts = inner.split("/")
    if entry == STATE_GROUP:
        if parts[0] in (LEDGER, CHECKSUMS) and len(parts) > 1:
            return "/".join(parts[1:])
        if parts[0] == COUNTS and len(parts) > 1:  # counts/zarr.json, counts/NAME/...
            return "/".join(parts[2:]) if len(parts) > 2 else parts[1]
        return inner
    if entry == PYRAMID_GROUP and len(parts) > 1:  # levels/zarr.json, levels/NAME/zarr.json, levels/NAME/K/...
        if len(parts) == 2:
            return parts[1]
        return "/".join(parts[2:]) if parts[1].isdigit() else inner
    return inner


def is_zarr_node(url: str, storage_options: dict[str, Any] | None) -> bool:
    return any(read_json(url, name, storage_options) is not None for name in ("zarr.json", ".zarray", ".zgroup"))


class InputIdentities:
    """Where a run's local inputs really are (device, inode), found once for all its outputs' checks."""

    def __init__(self, inputs: list[str]):
        self.urls: dict[tuple[int, int], str] = {}
        self.above: dict[tuple[int, int], str] = {}  # every folder above an input (and the input itself)
        for source in inputs:
            if not is_local(source) or not local_path(source).exists():
                continue  # a missing input is reported when it is opened
            chain = _identity_chain(local_path(source))
            self.urls.setdefault(chain[0], source)
            for node in chain:
                self.above.setdefault(node, source)

    def clash(self, url: str) -> str | None:
        """The input that ``url`` is, contains or lies inside, if any."""
        if not is_local(url):
            return None
        output = local_path(url)
        chain = _identity_chain(output)
        if not chain:
            return None
        # An output that does not exist yet can only lie inside an input (its chain starts at its parent).
        if output.exists() and chain[0] in self.above:
            return self.above[chain[0]]
        return next((self.urls[node] for node in chain if node in self.urls), None)


def check_output_path(url: str, inputs: InputIdentities | list[str], *,
                      storage_options: dict[str, Any] | None = None) -> str:
    """Check that lncc may write ``url``; return its state (``absent`` or ``lncc``).

    Raises
    ------
    InputError
        If the path holds anything lncc did not write (a file, a folder with
        files, someone else's zarr store, or a user's files inside an lncc
        output), or if it is, contains or lies inside one of ``inputs``
        (compared as real paths: symlinks resolved, and bind mounts by device
        and inode).
    """
    identities = inputs if isinstance(inputs, InputIdentities) else InputIdentities(inputs)
    source = identities.clash(url)
    if source is not None:
        raise InputError(f"output {url!r} and input {source!r} are the same folder or one lies inside the other "
                         "(after following links and mounts); writing the output would destroy the input: write "
                         "the map to another path")
    state = output_state(url, storage_options=storage_options)
    if state == "foreign":
        raise InputError(f"output {url!r} exists and was not written by lncc; lncc never deletes what it did not "
                         "write (even with --force): remove it by hand or choose another output path")
    if state == "lncc":
        extra = foreign_entries(url, storage_options=storage_options)
        if extra:
            shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
            raise InputError(f"output {url!r} is an lncc output but also holds {shown}, which lncc did not write; "
                             "move them out by hand (lncc never deletes them) or choose another output path")
    return state


def _identity_chain(path: Path) -> list[tuple[int, int]]:
    """(device, inode) of the path's nearest existing folder and of each folder above it, nearest first."""
    path = Path(os.path.realpath(path))  # symlinks resolved; bind mounts are told apart by (device, inode)
    while not path.exists() and path != path.parent:
        path = path.parent
    chain = []
    for p in [path, *path.parents]:
        try:
            st = p.stat()
        except OSError:
            continue
        chain.append((st.st_dev, st.st_ino))
    return chain


def clean_partials(url: str) -> int:
    """Delete temporary ``*.partial`` files a killed writer left in a local output; return how many.

    URL outputs have none (0): each chunk is written by one whole-object PUT, so
    a kill leaves either the old object or the new one, never part of it.
    """
    if not is_local(url):
        return 0
    removed = 0
    for path in local_path(url).rglob("*.partial"):
        if TEMPORARY.fullmatch(path.name):  # never a user's own *.partial file
            path.unlink(missing_ok=True)
            removed += 1
    return removed
