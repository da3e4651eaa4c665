"""One run at a time per output: the lock file inside the output's folder."""

from __future__ import annotations

import json
import os
import socket
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import InputError
from .urls import is_local, local_path

__all__ = ["LOCK_FILE", "OutputLock"]


#: The lock file, inside the output's folder (so every path to the folder finds the same lock).
LOCK_FILE = ".lncc.lock"


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
        self.folder = Path(os.path.realpath(local_path(url))) if is_local(url) else None
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
                   "started": datetime.now(UTC).isoformat(), "token": uuid.uuid4().hex}
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
