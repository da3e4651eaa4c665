"""The output's lock: inside the output folder (so every path to it finds it), held when unreadable, and never
released when another run holds it."""

from __future__ import annotations

import json
import os
import socket

import pytest

from pipeline.errors import InputError
from pipeline.io import LOCK_FILE, OutputLock


def test_unreadable_lock_is_held_and_a_foreign_lock_is_never_released(tmp_path):
    """A lock file that cannot be read counts as held; releasing never deletes another run's lock."""
    from pipeline.io import OutputLock

    out = str(tmp_path / "out.zarr")
    lock = tmp_path / "out.zarr" / LOCK_FILE
    lock.parent.mkdir()
    lock.write_text("")
    with pytest.raises(InputError, match="unreadable lock file"):
        OutputLock(out).acquire()
    lock.unlink()
    mine = OutputLock(out).acquire()
    theirs = {"host": socket.gethostname(), "pid": os.getpid(), "started": "later", "token": "other"}
    lock.write_text(json.dumps(theirs))  # as if another run took over
    mine.release()
    assert json.loads(lock.read_text()) == theirs


def test_the_lock_is_inside_the_output_folder(tmp_path):
    """Two paths to one folder (a symlink) find the same lock (from one process: two pairs of one run); a folder
    the lock made is removed on release."""
    (tmp_path / "real.zarr").mkdir()
    os.symlink(tmp_path / "real.zarr", tmp_path / "link.zarr")

    with OutputLock(str(tmp_path / "real.zarr")):
        assert (tmp_path / "real.zarr" / LOCK_FILE).exists()
        with pytest.raises(InputError, match="two pairs of this run write the same output"):  # same process
            OutputLock(str(tmp_path / "link.zarr")).acquire()
    assert not (tmp_path / "real.zarr" / LOCK_FILE).exists()
    with OutputLock(str(tmp_path / "new.zarr")):
        pass
    assert not (tmp_path / "new.zarr").exists()
