"""An lncc output on its store: whose it is, making or replacing it, locking it, checking what it holds.

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

import json
import os
import re
import shutil
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr

from . import io
from .blocks import block_region
from .errors import InputError
from .stats import STATS_LENGTH, done_blocks, entries_valid

__all__ = [
    "LOCK_FILE",
    "output_state",
    "foreign_entries",
    "check_output_path",
    "InputIdentities",
    "create_output",
    "usable_blocks",
    "clean_partials",
    "OutputLock",
]

#: The lock file, inside the output's folder (so every path to the folder finds the same lock).
LOCK_FILE = ".lncc.lock"
#: A zarr group's own metadata files, by format (consolidated metadata: in format 3's zarr.json, format 2's
#: .zmetadata, which is rewritten after every provenance update).
_FORMAT_FILES = {3: ("zarr.json",), 2: (".zgroup", ".zattrs")}
_GROUP_FILES = (*_FORMAT_FILES[3], *_FORMAT_FILES[2], ".zmetadata")


#: The temporary files lncc and zarr write beside a file before renaming it into place: ``NAME.<32 hex>.partial``
#: (zarr, :func:`pipeline.io.write_group`) and ``NAME.<pid>-<thread>.partial`` (lncc's chunk writes). A user's
#: own ``*.partial`` file is not one of them.
_TEMPORARY = re.compile(r".+\.(?:[0-9a-f]{32}|\d+-\d+)\.partial")
#: What lncc writes inside one of its arrays or groups: zarr metadata and chunk files (``c/0/1`` in format 3,
#: ``0.1`` or ``0/1`` in format 2; no others).
_ARRAY_FILE = re.compile(r"(?:zarr\.json|\.zarray|\.zattrs|\.zgroup|\.zmetadata|(?:c/)?\d+(?:[./]\d+)*)")


def _ignorable(name: str) -> bool:
    """Entries that do not make a folder non-empty: lncc's lock (and its temporary files), and the temporary
    files a killed writer leaves."""
    return name == LOCK_FILE or name.startswith(LOCK_FILE + ".") or _TEMPORARY.fullmatch(name) is not None


def _entries(url: str, storage_options: dict[str, Any] | None) -> list[str] | None:
    """Names directly under an output path; None when the path is a file (or a single object)."""
    if io._is_local(url):
        path = io._local_path(url)
        if not path.exists():
            return []
        if not path.is_dir():
            return None
        return sorted(os.listdir(path))
    fs, root = io._filesystem(url, storage_options)
    root = root.rstrip("/")
    fs.invalidate_cache(root)
    return sorted({p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False) if p.rstrip("/") != root})


def _files_under(url: str, entry: str, storage_options: dict[str, Any] | None) -> list[str]:
    """The files below ``url/entry``, as paths relative to it (an entry that is a file: [""])."""
    if io._is_local(url):
        base = io._local_path(url) / entry
        if not base.is_dir():
            return [""]
        return [str(p.relative_to(base)) for p in base.rglob("*") if not p.is_dir()]
    fs, root = io._filesystem(url, storage_options)
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
    if io._is_local(url):
        entries = _entries(url, storage_options)
        if entries is None:
            return "foreign"
        if not [e for e in entries if not _ignorable(e)]:
            return "absent"
    else:
        try:
            if io._remote_is_empty(url, storage_options):
                return "absent"
        except FileNotFoundError as exc:  # no such bucket: nothing could be written there
            raise InputError(f"output {url!r} cannot be written ({io._one_line(exc, storage_options)}); create "
                             "its bucket, or fix the URL (and storage_options.endpoint_url)") from None
        except Exception as exc:
            raise InputError(f"output {url!r} cannot be listed ({io._one_line(exc, storage_options)}); check the "
                             "URL, the credentials and storage_options (e.g. endpoint_url)") from None
    attrs = io.group_attributes(url, storage_options=storage_options) or {}
    return "lncc" if isinstance(attrs.get(io.PROVENANCE_KEY), dict) else "foreign"


def _owned_names(provenance: dict[str, Any]) -> set[str] | None:
    """The arrays an lncc output's provenance says it holds (data variables and coordinates); None for an
    output of an lncc before 0.2, which did not say."""
    names, coords = provenance.get("variables"), provenance.get("coords")
    if not isinstance(names, list) or not isinstance(coords, list):
        return None
    return {str(n) for n in names + coords}


def foreign_entries(url: str, *, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Files inside an lncc output that lncc did not write there (e.g. a user's notes), as relative paths.

    lncc's own are the group's metadata, its lock and temporary files, and
    inside the arrays its provenance names (and ``_lncc``) only zarr metadata
    and chunk files.
    """
    owned = _owned_names(io.read_provenance(url, storage_options=storage_options))
    out = []
    for entry in _entries(url, storage_options) or []:
        if entry in _GROUP_FILES or _ignorable(entry):
            continue
        mine = entry == io.STATE_GROUP or (entry in owned if owned is not None
                                           else _is_zarr_node(io._join(url, entry), storage_options))
        if not mine:
            out.append(entry)
            continue
        for inner in _files_under(url, entry, storage_options):
            name = inner.rsplit("/", 1)[-1]
            if not inner or (not _ARRAY_FILE.fullmatch(_relative_to_array(inner)) and not _TEMPORARY.fullmatch(name)):
                out.append(f"{entry}/{inner}" if inner else entry)
    return out


def _relative_to_array(inner: str) -> str:
    """A path inside ``_lncc`` (a group of arrays) relative to its array, so the same file rules apply."""
    head, sep, rest = inner.partition("/")
    return rest if sep and head in (io.LEDGER, io.CHECKSUMS) else inner


def _is_zarr_node(url: str, storage_options: dict[str, Any] | None) -> bool:
    return any(io._read_json(url, name, storage_options) is not None for name in ("zarr.json", ".zarray", ".zgroup"))


class InputIdentities:
    """Where a run's local inputs really are (device, inode), found once for all its outputs' checks."""

    def __init__(self, inputs: list[str]):
        self.urls: dict[tuple[int, int], str] = {}
        self.above: dict[tuple[int, int], str] = {}  # every folder above an input (and the input itself)
        for source in inputs:
            if not io._is_local(source) or not io._local_path(source).exists():
                continue  # a missing input is reported when it is opened
            chain = _identity_chain(io._local_path(source))
            self.urls.setdefault(chain[0], source)
            for node in chain:
                self.above.setdefault(node, source)

    def clash(self, url: str) -> str | None:
        """The input that ``url`` is, contains or lies inside, if any."""
        if not io._is_local(url):
            return None
        output = io._local_path(url)
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


def _mark(run_id: str, status: str) -> dict[str, Any]:
    """The provenance of an output that is being made: lncc's, with no config a rerun could trust yet."""
    return {"software": "lncc", "status": status, "run_id": run_id, "host": socket.gethostname(),
            "pid": os.getpid(), "started": datetime.now(timezone.utc).isoformat()}


def _remove(url: str, keep: set[str], storage_options: dict[str, Any] | None, only: set[str] | None = None) -> None:
    """Delete everything directly inside an lncc output but ``keep`` and the lock (or just the entries ``only``)."""
    fs, root = io._filesystem(url, storage_options)
    for entry in _entries(url, storage_options) or []:
        if entry in keep or entry == LOCK_FILE or entry.startswith(LOCK_FILE + "."):
            continue
        if only is not None and entry not in only:
            continue
        path = f"{root.rstrip('/')}/{entry}"
        if io._is_local(url):
            local = io._local_path(url) / entry
            shutil.rmtree(local) if local.is_dir() and not local.is_symlink() else local.unlink(missing_ok=True)
        else:
            fs.rm(path, recursive=True)


def create_output(url: str, result: xr.Dataset, provenance: dict[str, Any], *, run_id: str, zarr_format: int = 3,
                  compressor: str = "none", storage_options: dict[str, Any] | None = None) -> None:
    """Create (or replace) the output group: metadata, coordinates, provenance, ledger and checksums.

    ``result`` holds ``ncc`` (and optionally extra variables of the same
    shape), lazily. Each variable's zarr chunks equal its dask blocks (whose
    boundaries must fall on multiples of the first chunk), so each block task
    writes whole zarr chunks and no two tasks touch the same chunk. No value is
    written here: :class:`pipeline.io.OutputWriter` does that, block by block.
    The ledger ``_lncc/blocks`` holds one stats vector per block and
    ``_lncc/checksums`` one checksum, both written after the block's values.

    The caller holds the output's lock and has checked the path
    (:func:`check_output_path`). An existing lncc output is first marked as
    being replaced, then emptied; a new one is created with lncc's mark in its
    first metadata write. The full ``provenance`` (with the config hash a rerun
    compares) is written last, once the output's layout is complete.
    """
    ncc = result["ncc"]
    chunks = tuple(c[0] for c in ncc.chunks)
    for dim, c, size in zip(ncc.dims, ncc.chunks, chunks):
        starts = np.cumsum((0,) + c[:-1])
        if np.any(starts % size):
            raise ValueError(f"output chunks along {dim} {c} do not start on multiples of the zarr chunk {size}; "
                             "two tasks would write the same zarr chunk")
    replacing = output_state(url, storage_options=storage_options) == "lncc"
    names = {"variables": list(result.data_vars), "coords": [str(c) for c in result.coords]}
    if replacing:  # the mark names the old output's arrays too, so that a replacement killed part way is still ours
        old_names = _owned_names(io.read_provenance(url, storage_options=storage_options))
        if old_names is None:  # an output of an lncc before 0.2
            old_names = {e for e in _entries(url, storage_options) or []
                         if e != io.STATE_GROUP and _is_zarr_node(io._join(url, e), storage_options)}
        names["coords"] = sorted(set(names["coords"]) | (old_names - set(names["variables"])))
    mark = {io.PROVENANCE_KEY: {**_mark(run_id, "replacing" if replacing else "creating"), **names}}
    if replacing:
        # The old output's own metadata says "replacing" before any of its data goes; format 2's consolidated
        # copy (.zmetadata, which xarray reads first) goes before that.
        old = 3 if io._read_json(url, "zarr.json", storage_options) is not None else 2
        if old == 2:
            _remove(url, set(), storage_options, only={".zmetadata"})
        io.write_group(url, mark, zarr_format=old, storage_options=storage_options)
        _remove(url, set(_FORMAT_FILES[old]), storage_options)
        if old != zarr_format:  # the new format's metadata first, then the old one's goes
            io.write_group(url, mark, zarr_format=zarr_format, storage_options=storage_options)
            _remove(url, set(_FORMAT_FILES[zarr_format]), storage_options)
    else:
        io.write_group(url, mark, zarr_format=zarr_format, storage_options=storage_options)
    # xarray writes the coordinates (encoding them as it reads them back); it rewrites the group's attributes
    # in one write, given the mark again. The data variables are created empty with zarr itself, laid out as
    # xarray would: a lazy to_zarr(compute=False) costs a dask graph and, once, ~0.3 s of imports.
    coords = xr.Dataset(coords=result.coords, attrs=mark)
    for name in coords.variables:
        coords[name].encoding = {}
    options = io._store_kwargs(url, storage_options)
    coords.to_zarr(url, mode="a", consolidated=False, zarr_format=zarr_format, **options)
    group = zarr.open_group(store=url, mode="r+", use_consolidated=False, **options)
    codec = io.output_codec(compressor, zarr_format)
    for name, var in result.data_vars.items():
        attrs = io._json_safe(dict(var.attrs))
        if zarr_format == 2:
            attrs["_ARRAY_DIMENSIONS"] = list(var.dims)
        group.create_array(name, shape=var.shape, chunks=chunks, dtype="float32", fill_value=np.nan,
                           compressors=None if codec is None else [codec], attributes=attrs,
                           **({"dimension_names": list(var.dims)} if zarr_format == 3 else {}))
    state = group.create_group(io.STATE_GROUP)
    grid = tuple(len(c) for c in ncc.chunks)
    ones = (1,) * len(grid)
    state.create_array(io.CHECKSUMS, shape=grid + (2,), chunks=ones + (2,), dtype="uint64", fill_value=0,
                       compressors=None)
    # The ledger last: an output whose ledger exists has all its arrays.
    state.create_array(io.LEDGER, shape=grid + (STATS_LENGTH,), chunks=ones + (STATS_LENGTH,), dtype="float64",
                       fill_value=np.nan, compressors=None)
    full = {**provenance, "software": "lncc", "run_id": run_id, "variables": list(result.data_vars),
            "coords": [str(c) for c in result.coords], "blocks": [list(c) for c in ncc.chunks]}
    io.update_provenance(url, full, storage_options=storage_options)


def usable_blocks(url: str, *, deep: bool = True, storage_options: dict[str, Any] | None = None
                  ) -> tuple[np.ndarray, int]:
    """The blocks of an lncc output that hold what its ledger says, and how many others the ledger claims.

    A block is usable when its ledger entry is present and valid (a damaged
    entry is not) and its chunks are intact: with ``deep``, every variable's
    values in the block are read and match the block's checksum; without, the
    chunks only have to exist (one listing: for object stores, where reading
    everything back would cost a download).

    Returns
    -------
    (numpy.ndarray of bool, int)
        Per block of the output's grid, True if usable; and the number of
        blocks whose ledger entry is present but whose chunks are damaged or
        missing (they are to be recomputed).
    """
    provenance = io.read_provenance(url, storage_options=storage_options)
    block_chunks = [tuple(c) for c in provenance.get("blocks", [])]
    names = provenance.get("variables") or []
    grid = tuple(len(c) for c in block_chunks)
    try:
        ledger = io.read_ledger(url, storage_options=storage_options)
        checksums = io.read_checksums(url, storage_options=storage_options)
    except Exception:  # noqa: BLE001 - no ledger (a run killed while creating the output): nothing is done
        return np.zeros(grid, dtype=bool), 0
    if not grid or not names or ledger.shape != grid + (STATS_LENGTH,) or checksums.shape != grid + (2,):
        return np.zeros(grid, dtype=bool), 0  # another grid or ledger layout (an older lncc): start afresh
    pixels = np.ones(grid, dtype=np.int64)
    for axis, c in enumerate(block_chunks):
        pixels *= np.asarray(c, dtype=np.int64).reshape((-1,) + (1,) * (len(grid) - axis - 1))
    claimed = int(done_blocks(ledger).sum())
    done = entries_valid(ledger, pixels)  # a garbled entry is not done
    check = _block_contents if deep else _block_files
    done &= check(url, names, block_chunks, done, checksums, storage_options)
    return done, claimed - int(done.sum())


def _block_contents(url, names, block_chunks, done, checksums, storage_options) -> np.ndarray:
    """Per block: True when every variable's values there read back and match the block's checksum."""
    readers = [io.array_reader(io._join(url, name), storage_options=storage_options) for name in names]
    todo = [tuple(int(i) for i in index) for index in zip(*np.nonzero(done))]

    def intact(index) -> bool:
        region = block_region(block_chunks, index)
        try:
            values = [reader[region] for reader in readers]
        except Exception:  # noqa: BLE001 - an unreadable chunk is a damaged block
            return False
        return bool(np.array_equal(io.block_digest(values), checksums[index]))

    ok = np.zeros(done.shape, dtype=bool)
    with ThreadPoolExecutor(4) as pool:  # file reads and hashing release the GIL
        for index, good in zip(todo, pool.map(intact, todo)):
            ok[index] = good
    return ok


def _block_files(url, names, block_chunks, done, checksums, storage_options) -> np.ndarray:
    """Per block: True when every chunk of every variable there exists (and its checksum was recorded)."""
    fs, root = io._filesystem(url, storage_options)
    ok = done & checksums.any(axis=-1)
    for name in names:
        array = zarr.open_array(store=io._join(url, name), mode="r", **io._store_kwargs(url, storage_options))
        base = f"{root.rstrip('/')}/{name}"
        fs.invalidate_cache(base)
        present = {p[len(base) + 1:] for p in fs.find(base)}
        for index in zip(*np.nonzero(ok)):
            region = block_region(block_chunks, index)
            first = [r.start // c for r, c in zip(region, array.chunks)]
            last = [-(-r.stop // c) for r, c in zip(region, array.chunks)]
            for offsets in np.ndindex(*[b - a for a, b in zip(first, last)]):
                if array.metadata.encode_chunk_key(tuple(a + k for a, k in zip(first, offsets))) not in present:
                    ok[index] = False
                    break
    return ok


def clean_partials(url: str) -> int:
    """Delete temporary ``*.partial`` files a killed writer left in a local output; return how many.

    URL outputs have none (0): each chunk is written by one whole-object PUT, so
    a kill leaves either the old object or the new one, never part of it.
    """
    if not io._is_local(url):
        return 0
    removed = 0
    for path in io._local_path(url).rglob("*.partial"):
        if _TEMPORARY.fullmatch(path.name):  # never a user's own *.partial file
            path.unlink(missing_ok=True)
            removed += 1
    return removed


class OutputLock:
    """An exclusive lock on an output, held in the file :data:`LOCK_FILE` inside the output's folder.

    Inside the folder, every path that reaches it (a symlink, a bind mount)
    finds the same lock. The file records host, pid and start time. A lock
    whose process is gone (same host, pid not alive) is stale and is taken
    over; any other existing lock makes :meth:`acquire` raise
    :class:`~pipeline.errors.InputError` naming its holder. A folder the lock
    created is removed again on release if nothing else was put in it.

    Only local outputs are locked: object stores offer no atomic
    create-if-absent through fsspec, so a URL output is not locked (documented
    in the README); the per-block run-id check still stops a second run's
    writes from mixing in.
    """

    def __init__(self, url: str):
        self.url = url
        # The real path: a symlink to a folder not made yet is followed, not replaced by a folder of its own.
        self.folder = Path(os.path.realpath(io._local_path(url))) if io._is_local(url) else None
        self.path = self.folder / LOCK_FILE if self.folder is not None else None
        self.held = False
        self._made_folder = False

    def _holder(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def acquire(self) -> OutputLock:
        if self.path is None:
            return self  # remote outputs: no atomic create-if-absent in fsspec; see the README
        self.me = {"host": socket.gethostname(), "pid": os.getpid(),
                   "started": datetime.now(timezone.utc).isoformat(), "token": uuid.uuid4().hex}
        if not self.folder.exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            self._made_folder = True
        # Write the holder first, then link it into place: the lock file never exists without its content.
        temp = self.path.with_name(f"{self.path.name}.{self.me['token']}.tmp")
        temp.write_text(json.dumps(self.me))
        try:
            for _ in range(3):
                try:
                    os.link(temp, self.path)
                except FileExistsError:
                    holder = self._holder()
                    if holder is not None and holder.get("pid") == os.getpid() and \
                            holder.get("host") == socket.gethostname():
                        raise InputError(f"two pairs of this run write the same output {self.url!r} (by different "
                                         "paths to one folder); give each pair its own output") from None
                    if holder is None or not _is_stale(holder):
                        who = (f"host {holder.get('host')}, pid {holder.get('pid')}, started {holder.get('started')}"
                               if holder else "unreadable lock file")
                        raise InputError(
                            f"output {self.url!r} is being written by another lncc run ({who}); wait for it to "
                            f"finish, or delete {str(self.path)!r} if that run is gone") from None
                    self._take_over(holder)
                    continue
                self.held = True
                return self
        finally:
            temp.unlink(missing_ok=True)
        raise InputError(f"could not lock output {self.url!r}: another run took {str(self.path)!r} first; retry")

    def _take_over(self, stale: dict[str, Any]) -> None:
        """Move a stale lock aside; if what was moved is not the stale lock read, put it back."""
        aside = self.path.with_name(f"{self.path.name}.{self.me['token']}.stale")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # another contender moved it first
        try:
            moved = json.loads(aside.read_text())
        except (OSError, ValueError):
            moved = None
        if moved != stale:  # a live lock slipped in between: restore it
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
        aside.unlink(missing_ok=True)

    def release(self) -> None:
        if self.held and self.path is not None:
            if self._holder() == self.me:  # never delete a lock another run holds now
                self.path.unlink(missing_ok=True)
            self.held = False
            if self._made_folder:
                try:
                    self.folder.rmdir()  # only if the run left it empty (it failed before writing anything)
                except OSError:
                    pass

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _is_stale(holder: dict[str, Any]) -> bool:
    if holder.get("host") != socket.gethostname():
        return False  # cannot see another host's processes: assume it is alive
    try:
        os.kill(int(holder.get("pid", -1)), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, TypeError):
        return False
    return False
