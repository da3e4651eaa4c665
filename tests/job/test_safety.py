"""Nothing lost, nothing silently wrong: what lncc may delete, and what an output may claim about itself.

Every test drives the real CLI, in a subprocess (``lncc``; those are marked slow) where the process matters (it
is killed, stopped, holds a lock, or what it prints up to its exit is checked) or as the command's app in this
process (``invoke_cli``), or the real run in this process, on real zarr stores, and damages, kills or races real
runs; the outputs are compared with the in-memory NCC.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from pipeline import local_ncc
from pipeline.core.stats import STATS_LENGTH, done_blocks
from pipeline.io import output_state, read_ledger, read_provenance, write_array
from pipeline.testing import reference_ncc, sample_pair, write_config
from support import invoke_cli
from support import run_cli as lncc


@pytest.fixture
def pair(tmp_path: Path):
    """A 512 x 512 uint8 pair (64 x 64 zarr chunks) and its window-7 map in memory."""
    ref, mov = sample_pair((512, 512), "uint8", seed=11)
    urls = (write_array(str(tmp_path / "in.zarr"), ref, chunks=(64, 64), name="ref"),
            write_array(str(tmp_path / "in.zarr"), mov, chunks=(64, 64), name="mov"))
    return urls, ref, mov


def _config(tmp_path: Path, pair, name="c.yaml", output="out.zarr", **settings) -> Path:
    (ref_url, mov_url), _, _ = pair
    settings = {"window": 7, "chunks": {"y": 64, "x": 64}, **settings}
    return write_config(tmp_path / name, reference=ref_url, moving=mov_url, output=str(output), **settings)


def _ncc(path) -> np.ndarray:
    return zarr.open_array(str(Path(path) / "ncc"), mode="r")[...]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- 1. lncc deletes only what it wrote ---------------------------------------------------------------------------


@pytest.mark.parametrize("flags", [[], ["--force"]])
def test_a_folder_with_a_users_files_is_never_deleted(tmp_path, pair, flags):
    """A mistyped output naming a folder of the user's: refused (exit 2, one line), with --force too, untouched."""
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    cfg = _config(tmp_path, pair, output=folder)
    result = invoke_cli("run", str(cfg), *flags, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "not written by lncc" in result.stderr and "remove it by hand" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert _tree(folder) == {"notes.txt": b"mine"}


@pytest.mark.parametrize("output", [".", ".."])
def test_the_working_or_parent_directory_is_refused_with_force(tmp_path, pair, output):
    """``output: .`` or ``..`` with --force: exit 2 and nothing deleted (the config itself included)."""
    work = tmp_path / "work"
    work.mkdir()
    cfg = _config(work, pair, output=output)
    before = _tree(tmp_path)
    for command in ("validate", "run"):
        result = invoke_cli(command, str(cfg), "--force", cwd=work)
        assert result.returncode == 2, result.stderr
        assert any(why in result.stderr for why in ("not written by lncc", "lies inside", "nested in one another"))
    assert _tree(tmp_path) == before


def test_root_is_refused(tmp_path, pair):
    """``output: /`` is refused by validate and run alike, with --force."""
    cfg = _config(tmp_path, pair, output="/")
    for command in ("validate", "run"):
        result = invoke_cli(command, str(cfg), "--force", cwd=tmp_path)
        assert result.returncode == 2 and "'/'" in result.stderr, result.stderr


def test_an_lncc_output_holding_a_users_file_is_not_replaced(tmp_path, pair):
    """A user's file put inside an lncc output: --force and a changed config are refused; nothing is deleted."""
    cfg = _config(tmp_path, pair)
    assert invoke_cli("run", str(cfg), "--quiet", cwd=tmp_path).returncode == 0
    (tmp_path / "out.zarr" / "notes.txt").write_text("mine")
    before = _tree(tmp_path / "out.zarr")
    for args in (["--force"], ["--set", "window=9"]):
        result = invoke_cli("run", str(cfg), *args, cwd=tmp_path)
        assert result.returncode == 2 and "notes.txt" in result.stderr, result.stderr
    assert _tree(tmp_path / "out.zarr") == before


@pytest.mark.parametrize("where", ["ncc", "_lncc/blocks", "_lncc"])
def test_a_users_file_deep_inside_an_lncc_output_is_not_deleted(tmp_path, pair, where):
    """A user's file inside one of the output's arrays (not only at its top): a recompute is refused, kept."""
    cfg = _config(tmp_path, pair)
    assert invoke_cli("run", str(cfg), "--quiet", cwd=tmp_path).returncode == 0
    mine = tmp_path / "out.zarr" / where / "my_notes.txt"
    mine.write_text("mine")
    result = invoke_cli("run", str(cfg), "--force", cwd=tmp_path)
    assert result.returncode == 2 and f"{where}/my_notes.txt" in result.stderr, result.stderr
    assert mine.read_text() == "mine"


def test_a_users_partial_file_is_neither_ignored_nor_deleted(tmp_path, pair):
    """Only the temporary files lncc and zarr write count as leftovers: a user's ``draft.partial`` makes a folder
    non-empty (refused), and a resume's clean-up of leftovers keeps it."""
    from pipeline.io import clean_partials

    folder = tmp_path / "out.zarr"
    folder.mkdir()
    (folder / "draft.partial").write_text("mine")
    result = invoke_cli("run", str(_config(tmp_path, pair)), cwd=tmp_path)
    assert result.returncode == 2 and "not written by lncc" in result.stderr
    leftover = folder / "0.0123456789abcdef0123456789abcdef.partial"
    leftover.write_bytes(b"half")
    assert clean_partials(str(folder)) == 1
    assert (folder / "draft.partial").read_text() == "mine" and not leftover.exists()


@pytest.mark.slow
def test_a_replacement_killed_part_way_through_deleting_is_still_lncc_s(tmp_path, pair):
    """The state a kill can leave mid-deletion (the replacing mark, an array without its metadata but with some
    chunks): the output is still lncc's, a rerun rewrites it to the exact map."""
    from pipeline.io import update_provenance

    cfg = _config(tmp_path, pair)
    out = tmp_path / "out.zarr"
    assert invoke_cli("run", str(cfg), "--quiet", cwd=tmp_path).returncode == 0
    update_provenance(str(out), {"status": "replacing", "config_hash": None})
    (out / "ncc" / "zarr.json").unlink()
    for part in list((out / "ncc" / "c").iterdir())[:3]:
        import shutil

        shutil.rmtree(part)
    rerun = invoke_cli("run", str(cfg), cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert "computed: 64 blocks" in rerun.stdout
    np.testing.assert_array_equal(_ncc(out), local_ncc(pair[1], pair[2], 7))


def test_an_empty_folder_is_used_without_force(tmp_path, pair):
    """An empty output folder is written without --force."""
    (tmp_path / "out.zarr").mkdir()
    cfg = _config(tmp_path, pair)
    result = invoke_cli("run", str(cfg), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(_ncc(tmp_path / "out.zarr"), local_ncc(pair[1], pair[2], 7))


def test_an_input_reached_through_a_symlink_is_not_an_output(tmp_path, pair):
    """An output path that is an input folder through a symlink is refused (real paths compared)."""
    os.symlink(tmp_path / "in.zarr", tmp_path / "link.zarr")
    cfg = _config(tmp_path, pair, output=tmp_path / "link.zarr")
    before = _tree(tmp_path / "in.zarr")
    result = invoke_cli("run", str(cfg), "--force", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert _tree(tmp_path / "in.zarr") == before


def _bind(source: Path, target: Path) -> bool:
    target.mkdir()
    return subprocess.run(["mount", "--bind", str(source), str(target)], capture_output=True).returncode == 0


@pytest.mark.slow
def test_an_input_reached_through_a_bind_mount_is_not_an_output(tmp_path, pair):
    """A bind mount of the inputs' folder, used as (or above) the output: refused, by device and inode."""
    mount = tmp_path / "mnt"
    if not _bind(tmp_path, mount):
        pytest.skip("bind mounts need root")
    try:
        before = _tree(tmp_path / "in.zarr")
        for output in (mount / "in.zarr", mount):  # the input itself, and a folder above it
            cfg = _config(tmp_path, pair, name="b.yaml", output=output)
            result = invoke_cli("run", str(cfg), "--force", cwd=tmp_path)
            assert result.returncode == 2, result.stderr
        assert _tree(tmp_path / "in.zarr") == before
    finally:
        subprocess.run(["umount", str(mount)], check=True)


# --- 2, 3. an output never claims what it does not hold ------------------------------------------------------------


def _poll(predicate, proc, timeout=60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if predicate():
            return True
        time.sleep(0.002)
    return False


def _status(out: Path) -> str | None:
    return read_provenance(str(out)).get("status")


@pytest.fixture(scope="module")
def big_pair(tmp_path_factory):
    """A 1024 x 1024 pair stored in 64 x 64 chunks (256 blocks) and its window-7 map."""
    root = tmp_path_factory.mktemp("big")
    ref, mov = sample_pair((1024, 1024), "uint8", seed=4)
    urls = (write_array(str(root / "in.zarr"), ref, chunks=(64, 64), name="ref"),
            write_array(str(root / "in.zarr"), mov, chunks=(64, 64), name="mov"))
    return urls, ref, mov, local_ncc(ref, mov, 7)


@pytest.mark.slow
@pytest.mark.parametrize("first,args", [
    (3, ["--force"]), (3, ["--set", "window=9", "--set", "zarr_format=2"]), (2, ["--set", "zarr_format=3"]),
], ids=["v3-force", "v3-to-v2-window-9", "v2-to-v3"])
def test_a_recompute_killed_while_replacing_never_reads_up_to_date(tmp_path, big_pair, first, args):
    """Kill a recompute (another window, --force, another zarr format) while the old output goes: a rerun of the
    original config then recomputes (never "up to date" over NaN holes), inspect never says complete, and the
    map is exact."""
    urls, ref, mov, expected = big_pair
    cfg = _config(tmp_path, (urls, ref, mov), zarr_format=first)
    out = tmp_path / "out.zarr"
    assert invoke_cli("run", str(cfg), "--quiet", cwd=tmp_path).returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(cfg), "--quiet", *args], cwd=tmp_path)
    try:
        assert _poll(lambda: _status(out) == "replacing", proc), "never saw the output being replaced"
        os.kill(proc.pid, signal.SIGSTOP)  # frozen while the old output is being deleted
        report = invoke_cli("inspect", str(out), cwd=tmp_path)
        assert report.returncode == 0 and "incomplete" in report.stdout.splitlines()[0], report.stdout
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    rerun = lncc("run", str(cfg), cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert "computed: 256 blocks" in rerun.stdout  # recomputed, not "up to date"
    np.testing.assert_array_equal(_ncc(out), expected)
    assert _status(out) == "complete"
    assert xr.open_zarr(out)["ncc"].shape == (1024, 1024)  # xarray reads it too (no stale consolidated metadata)


@pytest.mark.slow
@pytest.mark.parametrize("zarr_format", [2, 3])
def test_an_output_killed_as_it_is_created_is_resumed_not_refused(tmp_path, pair, zarr_format):
    """Kill -9 at the first sight of the group's metadata: the group already says it is lncc's, so the rerun
    writes it (never "not written by lncc")."""
    out = tmp_path / "out.zarr"
    cfg = _config(tmp_path, pair, zarr_format=zarr_format)
    first = out / ("zarr.json" if zarr_format == 3 else ".zattrs")
    for _ in range(1):
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(cfg), "--quiet", "--force"],
                                cwd=tmp_path)
        try:
            _poll(first.exists, proc)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait()
        if first.exists():
            assert output_state(str(out)) == "lncc"
        rerun = lncc("run", str(cfg), cwd=tmp_path)
        assert rerun.returncode == 0, rerun.stderr
        np.testing.assert_array_equal(_ncc(out), local_ncc(pair[1], pair[2], 7))


# --- 4. one run at a time, by any path -----------------------------------------------------------------------------


@pytest.mark.slow
def test_two_paths_to_one_output_share_one_lock(tmp_path):
    """A run through a symlink to the output, paused mid-run, keeps a second run by the real path out; resumed,
    it finishes to its own config's exact map."""
    ref, mov = sample_pair((4096, 4096), "uint8", seed=8)
    urls = (write_array(str(tmp_path / "in.zarr"), ref, chunks=(256, 256), name="ref"),
            write_array(str(tmp_path / "in.zarr"), mov, chunks=(256, 256), name="mov"))
    (tmp_path / "out").mkdir()
    real = tmp_path / "out" / "k.zarr"
    link = tmp_path / "klink.zarr"
    os.symlink(real, link)
    settings = dict(chunks={"y": 256, "x": 256}, compute={"scheduler": "threads", "workers": 1})
    through_link = _config(tmp_path, (urls, ref, mov), name="link.yaml", output=link, **settings)
    through_real = _config(tmp_path, (urls, ref, mov), name="real.yaml", output=real, **settings)
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(through_link), "--quiet"],
                            cwd=tmp_path)
    try:
        def some_done() -> bool:
            try:
                return done_blocks(read_ledger(str(real))).sum() > 2
            except Exception:  # noqa: BLE001 - the ledger is not there yet
                return False

        assert _poll(some_done, proc, 120)
        os.kill(proc.pid, signal.SIGSTOP)
        other = lncc("run", str(through_real), "--set", "window=9", cwd=tmp_path)
        assert other.returncode == 2 and f"pid {proc.pid}" in other.stderr, other.stderr
        os.kill(proc.pid, signal.SIGCONT)
        assert proc.wait(120) == 0
    finally:
        proc.kill()
        proc.wait()
    assert read_provenance(str(real))["config"]["window"] == 7
    np.testing.assert_array_equal(_ncc(real), local_ncc(ref, mov, 7))


# --- 5, 6. damaged chunks and ledger entries are noticed and recomputed --------------------------------------------


def _damage(path: Path, how: str) -> None:
    if how == "delete":
        path.unlink()
    elif how == "garble":
        data = bytearray(path.read_bytes())
        data[len(data) // 2: len(data) // 2 + 16] = bytes(16)  # same size, other bytes
        path.write_bytes(bytes(data))
    else:
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 3])


def _run(tmp_path, pair, **settings):
    """One run in this process (the CLI's own path, without a subprocess's start-up); its only pair's result."""
    from pipeline.config import load_config
    from pipeline.job import run

    return run(load_config(_config(tmp_path, pair, output=tmp_path / "out.zarr", **settings))).pairs[0]


@pytest.mark.parametrize("compressor", ["none", "zstd"])
@pytest.mark.parametrize("how", ["delete", "garble", "truncate"])
def test_a_damaged_chunk_is_found_and_recomputed(tmp_path, pair, how, compressor):
    """Delete, garble or truncate one chunk of a complete output: a verifying inspect says damaged, the rerun
    recomputes just that block (not "up to date") and the map is exact again."""
    from pipeline.job.describe import describe_output

    out = tmp_path / "out.zarr"
    _run(tmp_path, pair, compressor=compressor)
    _damage(out / "ncc" / "c" / "3" / "3", how)
    report = describe_output(str(out), verify=True)
    assert (report["state"], report["blocks_done"], report["blocks_damaged"]) == ("damaged", 63, 1)
    result = _run(tmp_path, pair, compressor=compressor)
    assert (result.action, result.blocks_computed, result.damaged) == ("resume", 1, 1)
    np.testing.assert_array_equal(_ncc(out), local_ncc(pair[1], pair[2], 7))
    assert describe_output(str(out), verify=True)["state"] == "complete"


def test_inspect_reports_damage_with_exit_1(tmp_path, pair):
    """The CLI: a missing chunk shows in a plain inspect (a listing), a garbled one with --verify; exit 1 for
    damaged, and the rerun's summary says what it repaired."""
    cfg = _config(tmp_path, pair)
    out = tmp_path / "out.zarr"
    assert invoke_cli("run", str(cfg), "--quiet", cwd=tmp_path).returncode == 0
    (out / "ncc" / "c" / "0" / "5").unlink()
    _damage(out / "ncc" / "c" / "3" / "3", "garble")
    plain = invoke_cli("inspect", str(out), cwd=tmp_path)
    assert plain.returncode == 1 and plain.stdout.splitlines()[0].endswith("damaged (63 of 64 blocks, 1 damaged "
                                                                          "or missing)")
    deep = invoke_cli("inspect", "--verify", str(out), cwd=tmp_path)
    assert deep.returncode == 1 and "damaged (62 of 64 blocks, 2 damaged or missing)" in deep.stdout
    rerun = invoke_cli("run", str(cfg), cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert "resumed: 2 of 64 blocks computed (2 damaged or missing blocks among them)" in rerun.stdout


@pytest.mark.parametrize("how", ["delete", "garble", "truncate"])
def test_a_damaged_ledger_entry_is_recomputed(tmp_path, pair, how):
    """A missing, garbled or truncated ledger entry: the rerun recomputes that block instead of failing with
    "missing blocks" for ever."""
    from pipeline.job.describe import describe_output

    out = tmp_path / "out.zarr"
    _run(tmp_path, pair)
    entry = out / "_lncc" / "blocks" / "c" / "3" / "3" / "0"
    if how == "garble":
        data = bytearray(entry.read_bytes())
        data[100:140] = os.urandom(40)
        entry.write_bytes(bytes(data))
    else:
        _damage(entry, how)
    result = _run(tmp_path, pair)
    assert (result.action, result.blocks_computed) == ("resume", 1)
    np.testing.assert_array_equal(_ncc(out), local_ncc(pair[1], pair[2], 7))
    assert describe_output(str(out), verify=True)["state"] == "complete"


@pytest.mark.slow
def test_a_garbled_ledger_entry_costs_no_traceback(tmp_path, pair):
    """The CLI on a ledger entry overwritten with random bytes: exit 0, nothing on stderr (no asyncio
    tracebacks), the block recomputed."""
    cfg = _config(tmp_path, pair)
    out = tmp_path / "out.zarr"
    assert invoke_cli("run", str(cfg), "--quiet", cwd=tmp_path).returncode == 0
    entry = out / "_lncc" / "blocks" / "c" / "2" / "2" / "0"
    entry.write_bytes(os.urandom(len(entry.read_bytes())))
    rerun = lncc("run", str(cfg), cwd=tmp_path)
    assert rerun.returncode == 0 and rerun.stderr == "", rerun.stderr
    assert "resumed: 1 of 64 blocks computed" in rerun.stdout


@pytest.mark.slow
def test_an_older_ledger_layout_is_recomputed_not_trusted(tmp_path, pair):
    """A ledger of another entry length (an older lncc) is not read as done: the output is written afresh."""
    cfg = _config(tmp_path, pair)
    out = tmp_path / "out.zarr"
    assert invoke_cli("run", str(cfg), "--quiet", cwd=tmp_path).returncode == 0
    group = zarr.open_group(str(out / "_lncc"), mode="r+")
    del group["blocks"]
    group.create_array("blocks", shape=(8, 8, STATS_LENGTH - 4), chunks=(1, 1, STATS_LENGTH - 4), dtype="float64",
                       fill_value=1.0)
    rerun = invoke_cli("run", str(cfg), cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert "computed: 64 blocks" in rerun.stdout


# --- 12, 14, 15, 16. limits, dims, degenerate maps, what the summary says ------------------------------------------


def test_tiny_chunks_are_refused_at_once(tmp_path, pair):
    """``chunks: 1`` is refused in well under a second of planning, naming the block count and a size to use."""
    cfg = _config(tmp_path, pair, chunks={"y": 1, "x": 1}, window=3)
    started = time.monotonic()
    result = invoke_cli("validate", str(cfg), cwd=tmp_path)
    assert result.returncode == 2 and "262,144 blocks" in result.stderr and "at least" in result.stderr
    assert time.monotonic() - started < 30
    assert not (tmp_path / "out.zarr").exists()


def test_frames_last_are_found_by_name_and_kept_in_place(tmp_path):
    """A (y, x, t) pair: the window spans y and x, frames stay apart, the output keeps (y, x, t), and chunking
    (frames split, blocks shorter than the radius merged) changes nothing."""
    from pipeline.config import load_config
    from pipeline.job import run

    ref, mov = sample_pair((4, 90, 70), "uint16", seed=2)
    stored = [np.moveaxis(a, 0, -1) for a in (ref, mov)]
    urls = [write_array(str(tmp_path / "in.zarr"), a, dims=("y", "x", "t"), chunks=(32, 32, 3), name=n)
            for a, n in zip(stored, ("ref", "mov"))]
    expected = np.moveaxis(local_ncc(ref, mov, 9), 0, -1)
    for i, chunks in enumerate([None, {"y": 32, "x": 5, "t": 1}]):
        cfg = write_config(tmp_path / f"c{i}.yaml", reference=urls[0], moving=urls[1],
                           output=str(tmp_path / f"o{i}.zarr"), window=9, **({"chunks": chunks} if chunks else {}))
        assert run(load_config(cfg)).pairs[0].action == "fresh"
        ncc = xr.open_zarr(tmp_path / f"o{i}.zarr")["ncc"]
        assert ncc.dims == ("y", "x", "t")
        np.testing.assert_allclose(ncc.values, expected, rtol=0, atol=1e-6)
        assert run(load_config(cfg)).pairs[0].action == "up to date"


def test_a_colour_zarr_is_refused_with_a_hint_or_run_per_channel(tmp_path):
    """An RGB (512, 512, 3) zarr pair with no dims: refused naming colour and the two ways on (never run as 512
    frames of 512 x 3); with dims [y, x, c] each channel is correlated on its own (the textbook, per channel)."""
    rgb = np.random.default_rng(0).integers(0, 255, (2, 128, 96, 3), dtype=np.uint8)
    urls = [write_array(str(tmp_path / "rgb.zarr"), image, name=n) for n, image in zip("ab", rgb)]
    cfg = write_config(tmp_path / "w.yaml", reference=urls[0], moving=urls[1], output="o.zarr", window=7)
    result = invoke_cli("run", str(cfg), cwd=tmp_path)
    assert result.returncode == 2 and "colour" in result.stderr and "[y, x, c]" in result.stderr, result.stderr
    assert "lncc ingest" in result.stderr and not (tmp_path / "o.zarr").exists()
    cfg = write_config(tmp_path / "c.yaml", reference=urls[0], moving=urls[1], output="o.zarr", window=7,
                       dims=["y", "x", "c"], chunks={"y": 40, "x": 50})
    assert invoke_cli("run", str(cfg), cwd=tmp_path).returncode == 0
    ncc = xr.open_zarr(tmp_path / "o.zarr")["ncc"]
    assert ncc.dims == ("y", "x", "c")
    for c in range(3):
        want = reference_ncc(rgb[0][..., c].astype(float), rgb[1][..., c].astype(float), 7)
        np.testing.assert_allclose(ncc.values[..., c], want, rtol=0, atol=1e-6)


def test_a_flat_map_warns_and_reports_exact_quantiles(tmp_path):
    """An entirely flat input: exit 0, quantiles printed as exactly +0.000 (not the bin's +0.001), and a warning
    on stderr saying most of the map is flat."""
    flat = np.full((256, 256), 7, np.uint8)
    urls = [write_array(str(tmp_path / "in.zarr"), a, name=n) for a, n in ((flat, "ref"), (flat, "mov"))]
    cfg = write_config(tmp_path / "c.yaml", reference=urls[0], moving=urls[1], output="o.zarr")
    result = invoke_cli("run", str(cfg), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "median +0.000" in result.stdout and "+0.001" not in result.stdout
    assert "warning" in result.stderr and "100% of the map is flat" in result.stderr


def test_the_summary_reports_start_up_apart_from_the_compute_rate(tmp_path, pair):
    """The summary line gives the compute rate and, apart, the start-up time (checks, compilation)."""
    cfg = _config(tmp_path, pair)
    result = invoke_cli("run", str(cfg), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert "Mpx/s) after" in first and "s of start-up" in first


def test_the_stored_map_has_its_own_attrs(tmp_path):
    """The stored NCC map carries its own attrs (what it is, unitless), not the reference's (units: DN)."""
    from pipeline.core.variables import OUTPUT_ATTRS

    ref, mov = sample_pair((64, 64), "uint8", seed=1)
    urls = [write_array(str(tmp_path / "in.zarr"), a, name=n) for a, n in ((ref, "ref"), (mov, "mov"))]
    zarr.open_array(urls[0], mode="r+").attrs["units"] = "DN"
    cfg = write_config(tmp_path / "c.yaml", reference=urls[0], moving=urls[1], output="o.zarr")
    assert invoke_cli("run", str(cfg), "--quiet", cwd=tmp_path).returncode == 0
    attrs = xr.open_zarr(tmp_path / "o.zarr")["ncc"].attrs
    assert attrs == OUTPUT_ATTRS["ncc"] and attrs and attrs.get("units") != "DN"
