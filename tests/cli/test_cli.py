"""The `lncc` command on real zarr stores: exit codes, messages, outputs, the demo.

A run as a real subprocess where the process is what is checked (stderr not a TTY, the demo from a scratch
directory, start-up, a closed stdout); elsewhere the same command's app in this process (``invoke_cli``)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import xarray as xr
import yaml
import zarr

from pipeline import local_ncc
from pipeline.io import read_provenance, write_array
from pipeline.testing import moved_capture, reference_ncc, sample_pair, write_config
from support import REPO, invoke_cli, run_cli

SHAPE = (64, 80)


def make_inputs(tmp_path, zarr_format=3, shape=SHAPE):
    """ref.zarr and mov.zarr (relative to tmp_path) holding a sample pair; returns the numpy images."""
    ref, mov = sample_pair(shape, "uint8", seed=7)
    write_array(str(tmp_path / "ref.zarr"), ref, chunks=(32, 40), zarr_format=zarr_format)
    write_array(str(tmp_path / "mov.zarr"), mov, chunks=(32, 40), zarr_format=zarr_format)
    return ref, mov


def base_config(**extra):
    return {"reference": "ref.zarr", "moving": "mov.zarr", "output": "out.zarr", **extra}


def assert_usage_error(result, *fragments):
    """Exit 2, nothing on stdout, exactly one stderr line 'lncc: error: ...', no traceback."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("lncc: error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.mark.slow
@pytest.mark.parametrize("zarr_format", [2, 3])
def test_run_succeeds(tmp_path, zarr_format):
    """`lncc run` exits 0, prints a summary with Mpx/s and the output path, no progress bar, a complete output."""
    ref, mov = make_inputs(tmp_path, zarr_format)
    config = write_config(tmp_path / "config.yaml", **base_config(window=7, zarr_format=zarr_format))
    result = run_cli("run", config, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Mpx/s" in result.stdout
    assert "out.zarr" in result.stdout and "(64, 80)" in result.stdout
    assert result.stderr == ""  # stderr is not a TTY: no progress bar, and no warnings either
    out = tmp_path / "out.zarr"
    prov = read_provenance(str(out))
    assert prov["status"] == "complete"
    assert prov["config"]["window"] == 7
    assert prov["inputs"]["reference"]["zarr_format"] == zarr_format
    assert zarr.open_group(str(out), mode="r").metadata.zarr_format == zarr_format
    ncc = xr.open_zarr(out)["ncc"]
    np.testing.assert_allclose(ncc.values, reference_ncc(ref, mov, 7), rtol=0, atol=1e-6)


def test_run_quiet_with_set(tmp_path):
    """`--quiet` prints nothing at all and `--set window=5` reaches the provenance and the values."""
    ref, mov = make_inputs(tmp_path)
    config = write_config(tmp_path / "config.yaml", **base_config(window=7))
    result = invoke_cli("run", config, "--quiet", "--set", "window=5", "--set", "compute.workers=1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr == ""
    prov = read_provenance(str(tmp_path / "out.zarr"))
    assert prov["status"] == "complete"
    assert prov["config"]["window"] == 5
    assert prov["config"]["compute"]["workers"] == 1
    np.testing.assert_allclose(xr.open_zarr(tmp_path / "out.zarr")["ncc"].values, reference_ncc(ref, mov, 5),
                               rtol=0, atol=1e-6)


def test_validate_writes_nothing(tmp_path):
    """`lncc validate` exits 0, reports the pair and creates no output."""
    make_inputs(tmp_path, 2)
    config = write_config(tmp_path / "config.yaml", **base_config(window=9))
    before = sorted(p.name for p in tmp_path.iterdir())
    result = invoke_cli("validate", config, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: ref.zarr x mov.zarr -> out.zarr")
    assert "(64, 80)" in result.stdout
    assert result.stderr == ""
    assert not (tmp_path / "out.zarr").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def _setup_unknown_key(tmp_path):
    make_inputs(tmp_path)
    return base_config(windwo=7), ["windwo", "unknown key"]


def _setup_even_window(tmp_path):
    make_inputs(tmp_path)
    return base_config(window=8), ["window", "odd", "7 or 9"]


def _setup_missing_input(tmp_path):
    make_inputs(tmp_path)
    return base_config(moving="nowhere.zarr"), ["nowhere.zarr", "does not exist"]


def _setup_shape_mismatch(tmp_path):
    make_inputs(tmp_path)
    write_array(str(tmp_path / "small.zarr"), np.zeros((32, 40), np.uint8))
    return base_config(moving="small.zarr"), ["same shape", "(64, 80)", "(32, 40)"]


def _setup_bool_dtype(tmp_path):
    make_inputs(tmp_path, 2)
    write_array(str(tmp_path / "mask.zarr"), np.zeros(SHAPE, bool), zarr_format=2)
    return base_config(moving="mask.zarr"), ["bool", "moving"]


def _setup_window_too_large(tmp_path):
    make_inputs(tmp_path)
    return base_config(window=65), ["window 65", "larger than the image", "63"]


def _setup_yaml_syntax(tmp_path):
    make_inputs(tmp_path)
    text = "reference: ref.zarr\nmoving: mov.zarr\noutput: out.zarr\nwindow: [7\n"
    return text, ["not valid YAML", "line 5"]


def _setup_dims_mismatch(tmp_path):
    ref, mov = sample_pair(SHAPE, "uint8", seed=7)
    write_array(str(tmp_path / "ref.zarr"), ref, dims=("y", "x"))
    write_array(str(tmp_path / "mov.zarr"), mov, dims=("row", "col"))
    return base_config(), ["same dims", "('y', 'x')", "('row', 'col')", "dims"]


def _setup_complex_dtype(tmp_path):
    make_inputs(tmp_path)
    write_array(str(tmp_path / "c.zarr"), np.zeros(SHAPE, np.complex64))
    return base_config(reference="c.zarr"), ["complex64", "reference", "real integer or float"]


def _setup_string_dtype(tmp_path):
    make_inputs(tmp_path)
    write_array(str(tmp_path / "s.zarr"), np.full(SHAPE, "ab", dtype="U2"), zarr_format=2)
    return base_config(moving="s.zarr"), ["moving", "cannot correlate"]


def _setup_empty(tmp_path):
    write_array(str(tmp_path / "ref.zarr"), np.zeros((0, 80), np.uint8), chunks=(1, 80))
    write_array(str(tmp_path / "mov.zarr"), np.zeros((0, 80), np.uint8), chunks=(1, 80))
    return base_config(), ["empty", "(0, 80)"]


def _setup_one_d(tmp_path):
    write_array(str(tmp_path / "ref.zarr"), np.zeros(100, np.uint8), dims=("x",), chunks=(50,))
    write_array(str(tmp_path / "mov.zarr"), np.zeros(100, np.uint8), dims=("x",), chunks=(50,))
    return base_config(), ["2-D", "1-D"]


def _setup_window_too_small(tmp_path):
    make_inputs(tmp_path)
    return base_config(window=1), ["window", ">= 3"]


def _setup_wrong_type(tmp_path):
    make_inputs(tmp_path)
    return base_config(compute={"workers": "two"}), ["compute.workers", "'two'"]


def _setup_yaml_exponent(tmp_path):
    make_inputs(tmp_path)
    return "reference: ref.zarr\nmoving: mov.zarr\noutput: out.zarr\nflat: 1e-5\n", ["flat", "1.0e-5"]


def _setup_yaml_no(tmp_path):
    make_inputs(tmp_path)
    return "reference: ref.zarr\nmoving: mov.zarr\noutput: out.zarr\nboundary: no\n", ["boundary", "quote"]


def _setup_output_is_input(tmp_path):
    make_inputs(tmp_path)
    return base_config(output="./mov.zarr"), ["is also an input"]


def _setup_not_zarr(tmp_path):
    make_inputs(tmp_path)
    (tmp_path / "photo.png").write_bytes(b"\x89PNG not really")
    return base_config(moving="photo.png"), ["photo.png", "not a readable image"]


@pytest.mark.parametrize("setup", [
    _setup_unknown_key, _setup_even_window, _setup_missing_input, _setup_shape_mismatch, _setup_bool_dtype,
    _setup_window_too_large, _setup_yaml_syntax, _setup_dims_mismatch, _setup_complex_dtype, _setup_string_dtype,
    _setup_empty, _setup_one_d, _setup_window_too_small, _setup_wrong_type, _setup_yaml_exponent, _setup_yaml_no,
    _setup_output_is_input, _setup_not_zarr,
], ids=["unknown-key", "even-window", "missing-input", "shape-mismatch", "bool-dtype", "window-too-large",
        "yaml-syntax", "dims-mismatch", "complex-dtype", "string-dtype", "empty", "one-d", "window-too-small",
        "wrong-type", "yaml-exponent", "yaml-no", "output-is-input", "not-zarr"])
def test_run_usage_errors(tmp_path, setup):
    """Bad config or input: exit 2, one 'lncc: error:' line naming the problem, no traceback, nothing written."""
    config, fragments = setup(tmp_path)
    if isinstance(config, str):
        (tmp_path / "config.yaml").write_text(config, encoding="utf-8")
    else:
        write_config(tmp_path / "config.yaml", **config)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = invoke_cli("run", "config.yaml", cwd=tmp_path)
    assert_usage_error(result, *fragments)
    assert not (tmp_path / "out.zarr").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_foreign_output_refused_even_with_force(tmp_path):
    """An output not written by lncc: exit 2 and left untouched, with --force too."""
    make_inputs(tmp_path, 2)
    theirs = np.arange(12, dtype=np.int32).reshape(3, 4)
    write_array(str(tmp_path / "out.zarr"), theirs, zarr_format=2)
    before = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "out.zarr").rglob("*") if p.is_file()}
    config = write_config(tmp_path / "config.yaml", **base_config(window=5))

    for flags in ([], ["--force"]):
        result = invoke_cli("run", config, *flags, cwd=tmp_path)
        assert_usage_error(result, "out.zarr", "not written by lncc", "remove it by hand or choose another output")
        after = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "out.zarr").rglob("*") if p.is_file()}
        assert after == before
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "out.zarr"), mode="r")[...], theirs)


def test_non_zarr_output_directory_is_not_deleted(tmp_path):
    """An existing ordinary directory at the output path is refused (exit 2) and its files survive."""
    make_inputs(tmp_path)
    (tmp_path / "out.zarr").mkdir()
    notes = tmp_path / "out.zarr" / "notes.txt"
    notes.write_text("my thesis")
    config = write_config(tmp_path / "config.yaml", **base_config())
    result = invoke_cli("run", config, cwd=tmp_path)
    assert notes.exists() and notes.read_text() == "my thesis"
    assert_usage_error(result, "not written by lncc")


@pytest.mark.slow
def test_demo(tmp_path):
    """The README's demo: scripts/make_demo.py then `lncc run configs/demo.yaml` (from a scratch directory)
    registers both pairs and correlates the registered images: the moved capture's map is high where the
    captures agree and low where the scene changed; the stereo pair gets a shift field showing its parallax."""
    made = subprocess.run([sys.executable, str(REPO / "scripts" / "make_demo.py")], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert made.returncode == 0, made.stderr
    result = run_cli("run", str(REPO / "configs" / "demo.yaml"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Mpx/s" in result.stdout and result.stdout.count("registered:") == 2

    scene = xr.open_zarr(tmp_path / "out" / "scene-ncc.zarr")
    assert read_provenance(str(tmp_path / "out" / "scene-ncc.zarr"))["status"] == "complete"
    np.testing.assert_allclose(scene["shift"].values, (5.4, -3.7), atol=0.05)
    _, _, changed = moved_capture()
    ncc = scene["ncc"].values
    assert ncc.shape == (460, 701) and np.nanmin(ncc) >= -1.0 - 1e-6 and np.nanmax(ncc) <= 1.0 + 1e-6
    agree = np.ones(ncc.shape, dtype=bool)
    agree[changed[0].start - 10:changed[0].stop + 10, changed[1].start - 10:changed[1].stop + 10] = False
    assert np.nanmedian(ncc[agree]) > 0.9 and np.nanmedian(ncc[changed]) < 0.3
    unregistered = local_ncc(*moved_capture()[:2], 9)
    assert np.nanmedian(unregistered[agree]) < 0.3  # the control: without registration the map says nothing
    # the scene's output is an OME-Zarr image too: its NGFF metadata validates, level 1 is 2 x 2 means
    from ome_zarr_models.v05.image import Image

    image = Image.from_zarr(zarr.open_group(str(tmp_path / "out" / "scene-ncc.zarr"), mode="r"))
    assert [d.path for d in image.ome_attributes.multiscales[0].datasets] == ["ncc", "levels/ncc/1", "levels/ncc/2"]
    level = zarr.open_group(str(tmp_path / "out" / "scene-ncc.zarr"), mode="r")["levels/ncc/1"][...]
    with warnings.catch_warnings():  # the border's NaN-only squares: NaN, as in the level
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np.nanmean(np.pad(ncc, ((0, 0), (0, 1)), constant_values=np.nan).reshape(230, 2, 351, 2), (1, 3))
    np.testing.assert_allclose(level, expected, atol=1e-6)

    stereo = xr.open_zarr(tmp_path / "out" / "motorcycle-ncc.zarr")
    field = stereo["shift_field"]
    assert field.dims == ("tile_y", "tile_x", "axis") and list(field["axis"].values) == ["y", "x"]
    assert field.shape[:2] == (8, 12) and float(field["tile_x"][0]) == 31.5
    dx = field.sel(axis="x").values
    assert np.isfinite(dx).mean() > 0.5 and np.nanpercentile(dx, 95) - np.nanpercentile(dx, 5) > 3  # parallax


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self/task") or len(os.sched_getaffinity(0)) < 2,
                    reason="Linux, 2+ usable cores")
def test_the_command_starts_no_blas_thread_pools():
    """The command sets one BLAS thread before numpy loads: numpy's and scipy's OpenBLAS would otherwise each
    start a thread per core (spinning after start-up); a user's own setting is kept."""
    count = "import os; print(len(os.listdir('/proc/self/task')), os.environ['OPENBLAS_NUM_THREADS'])"
    probe = f"import pipeline.cli, numpy, scipy.ndimage; {count}"
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                                            "OMP_NUM_THREADS")}
    ours = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert ours.stdout.split() == ["1", "1"]
    plain = subprocess.run([sys.executable, "-c", f"import numpy, scipy.ndimage; {count.split('; ')[0]}; "
                            "print(len(os.listdir('/proc/self/task')))"], env=env, capture_output=True, text=True,
                           check=True)
    assert int(plain.stdout) > 1  # the control: without the command's setting, the pools are there
    kept = subprocess.run([sys.executable, "-c", probe], env={**env, "OPENBLAS_NUM_THREADS": "2"},
                          capture_output=True, text=True, check=True)
    assert kept.stdout.split()[1] == "2"
    lazy = subprocess.run([sys.executable, "-c", "import sys, pipeline; print('numpy' in sys.modules)"], env=env,
                          capture_output=True, text=True, check=True)
    assert lazy.stdout.strip() == "False"


# --- hostile configs, secrets, closed stdout ------------------------------------------------------

KEY, SECRET = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.mark.parametrize("text,overrides", [
    (f"storage_options: 'key={KEY} secret={SECRET}'\n", []),
    ("", [f"storage_options={SECRET}"]),
    ("", [f"storage_options={SECRET}", f"storage_options.key={KEY}"]),
], ids=["string-in-file", "set-scalar", "set-below-a-scalar"])
def test_storage_options_values_never_reach_stderr(tmp_path, text, overrides):
    """storage_options that are not a mapping, in the file or from --set: exit 2, no part of the value shown."""
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(base_config()) + text, encoding="utf-8")
    result = invoke_cli("validate", "config.yaml", *[a for o in overrides for a in ("--set", o)], cwd=tmp_path,
                        timeout=120)
    assert_usage_error(result, "storage_options", "(value not shown: it may hold credentials)")
    assert KEY not in result.stderr and SECRET[:6] not in result.stderr


def test_alias_bomb_is_refused_at_once(tmp_path):
    """Nine levels of nine-fold YAML aliases under window: exit 2 in seconds with one short line."""
    anchors = "a0: &l0 [a, a, a, a, a, a, a, a, a]\n" + "".join(
        f"a{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 10))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(base_config()) + anchors + "window: *l9\n")
    result = invoke_cli("validate", "config.yaml", cwd=tmp_path, timeout=60)
    assert_usage_error(result, "YAML anchors/aliases expand to more than 100,000 values")
    assert len(result.stderr) < 400


def _closed_pipe_run(tmp_path, *args):
    """``lncc ARGS`` with stdout a pipe whose reader has already gone, as in ``lncc ... | head`` once head exits."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return run_cli(*args, cwd=tmp_path, timeout=120, stdout=write_end)
    finally:
        os.close(write_end)


@pytest.mark.slow
def test_closed_stdout_exits_quietly(tmp_path):
    """`lncc inspect OUT | head` and `lncc job-script CONFIG | head`: exit 0, nothing on stderr."""
    from pipeline.config import parse_config
    from pipeline.job import run as run_config

    make_inputs(tmp_path)
    run_config(parse_config({"reference": str(tmp_path / "ref.zarr"), "moving": str(tmp_path / "mov.zarr"),
                             "output": str(tmp_path / "out.zarr")}))
    jobqueue = {"scheduler": "jobqueue", "jobqueue": {"system": "slurm", "cores": 2, "memory": "4GB"}}
    config = write_config(tmp_path / "cluster.yaml", **base_config(compute=jobqueue))
    for args in (("inspect", "out.zarr"), ("job-script", config)):
        result = _closed_pipe_run(tmp_path, *args)
        assert (result.returncode, result.stderr) == (0, ""), args
