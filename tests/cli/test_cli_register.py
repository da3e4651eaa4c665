"""Registration through the ``lncc`` command (its app, in this process: ``invoke_cli``): ``lncc register`` (text
and ``--json``) prints the shift and its quality and writes nothing, ``lncc run`` reports the applied shift,
``lncc validate`` estimates nothing, and pairs that cannot be registered exit 2 with one line.

The pairs are the cameraman photograph moved by a known subpixel shift (a Fourier shift of a larger image,
centre cropped), with noise and a gain/offset, stored as uint8 zarr arrays.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from scipy import ndimage

from pipeline.io import write_array
from pipeline.testing import camera, stereo_pair, write_config
from support import invoke_cli

pytestmark = pytest.mark.slow

TRUTH = (7.3, -4.6)
SHIFT_TEXT = re.compile(r"shift \(dy, dx\) = \(([-+]\d+\.\d+), ([-+]\d+\.\d+)\) px")


def moved(shift, *, source=None, seed=0, margin=32):
    """(reference, moving) uint8: ``source`` (the cameraman) and its copy that ``shift`` registers onto it."""
    rng = np.random.default_rng(seed)
    base = (camera() if source is None else source).astype(np.float64)
    spectrum = np.fft.fft2(base)
    shifted = np.real(np.fft.ifft2(ndimage.fourier_shift(spectrum, [-s for s in shift])))
    crop = (slice(margin, base.shape[0] - margin), slice(margin, base.shape[1] - margin))
    as_u8 = lambda v: np.clip(np.round(v), 0, 255).astype(np.uint8)  # noqa: E731
    return (as_u8(base[crop] + rng.normal(0, 3, base[crop].shape)),
            as_u8(0.8 * shifted[crop] + 20 + rng.normal(0, 3, base[crop].shape)))


def inputs(tmp_path: Path, ref, mov) -> None:
    write_array(str(tmp_path / "ref.zarr"), ref, chunks=(128, 128))
    write_array(str(tmp_path / "mov.zarr"), mov, chunks=(128, 128))


def config(tmp_path: Path, **extra) -> Path:
    settings = {"reference": "ref.zarr", "moving": "mov.zarr", "output": "out.zarr", "window": 7,
                "registration": {"method": "translation"}, **extra}
    return write_config(tmp_path / "c.yaml", **settings)


@pytest.fixture
def camera_inputs(tmp_path):
    inputs(tmp_path, *moved(TRUTH, seed=1))
    return tmp_path


def one_error_line(result) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("lncc: error: ")
    return lines[0]


def nothing_written(tmp_path: Path) -> bool:
    """The config's output path does not exist (not even the folder a lock would have made)."""
    return not (tmp_path / "out.zarr").exists()


def test_register_prints_the_shift_and_its_quality_and_writes_nothing(camera_inputs):
    """``lncc register`` (here of a config with method none, set to translation by ``--set`` as the method-none
    error suggests) prints the estimated shift, within 0.02 px of the truth, and its quality; nothing is written."""
    tmp = camera_inputs
    cfg = config(tmp, registration={"method": "none"})
    result = invoke_cli("register", str(cfg), "--set", "registration.method=translation", cwd=tmp)
    assert result.returncode == 0, result.stderr
    first, *rest = result.stdout.splitlines()
    assert first.startswith("ref.zarr x mov.zarr: "), first
    dy, dx = (float(v) for v in SHIFT_TEXT.search(first).groups())
    assert abs(dy - TRUTH[0]) <= 0.02 and abs(dx - TRUTH[1]) <= 0.02, first
    assert "estimated" in first and "cubic" in first
    quality = [line for line in rest if "quality:" in line]
    assert len(quality) == 1, result.stdout
    correlation = float(re.search(r"correlation (\d\.\d+)", quality[0]).group(1))
    assert 0.9 < correlation <= 1.0
    assert "gain" in quality[0] and "tile spread" in quality[0]
    assert nothing_written(tmp)


def test_register_json_is_parseable_with_the_shifts(camera_inputs):
    """``--json``: one record per pair with the pair, method, interpolation, origin, shifts and estimates."""
    tmp = camera_inputs
    result = invoke_cli("register", str(config(tmp, registration={"method": "translation",
                                                                   "interpolation": "lanczos3"})), "--json", cwd=tmp)
    assert result.returncode == 0, result.stderr
    (record,) = json.loads(result.stdout)
    assert record["reference"] == "ref.zarr" and record["moving"] == "mov.zarr"
    assert record["method"] == "translation" and record["interpolation"] == "lanczos3"
    assert record["origin"] == "estimated"
    np.testing.assert_allclose(record["shifts"], TRUTH, atol=0.02)
    (estimate,) = record["estimates"]
    assert estimate["shift"] == record["shifts"] and estimate["correlation"] > 0.9
    assert nothing_written(tmp)


def test_register_with_method_none_is_exit_2_naming_the_setting(camera_inputs):
    tmp = camera_inputs
    line = one_error_line(invoke_cli("register", str(config(tmp, registration={"method": "none"})), cwd=tmp))
    assert "registration.method" in line and "--set registration.method=translation" in line
    assert nothing_written(tmp)


def test_run_prints_the_registered_line(camera_inputs):
    """``lncc run``'s summary has one ``registered:`` line with the shift the output records."""
    tmp = camera_inputs
    result = invoke_cli("run", str(config(tmp)), cwd=tmp)
    assert result.returncode == 0, result.stderr
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip().startswith("registered:")]
    assert len(lines) == 1, result.stdout
    dy, dx = (float(v) for v in SHIFT_TEXT.search(lines[0]).groups())
    recorded = xr.open_zarr(tmp / "out.zarr")["shift"].values
    np.testing.assert_allclose((dy, dx), recorded, atol=5e-4)  # printed to 3 decimals
    np.testing.assert_allclose(recorded, TRUTH, atol=0.02)
    assert "(estimated, cubic, correlation after registration" in lines[0]


def test_validate_estimates_nothing(tmp_path):
    """``lncc validate`` checks the config and inputs without estimating: it passes an unrelated pair that
    ``lncc register`` refuses (exit 2, one line naming the pair), and writes nothing."""
    ref, _ = moved(TRUTH)
    inputs(tmp_path, ref, stereo_pair()[0][:448, 100:548])
    cfg = config(tmp_path)
    checked = invoke_cli("validate", str(cfg), cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("ok: ref.zarr x mov.zarr -> out.zarr")
    assert nothing_written(tmp_path)
    line = one_error_line(invoke_cli("register", str(cfg), cwd=tmp_path))
    assert "ref.zarr" in line and "mov.zarr" in line and "cannot register" in line, line
    assert nothing_written(tmp_path)


def test_a_pair_one_translation_cannot_register_is_exit_2_suggesting_local(tmp_path):
    """The two halves of the moving image moved apart (dx +2 and -2 px): ``lncc run`` exits 2 with one line
    suggesting ``method: local`` and writes nothing; ``lncc register`` of the local method prints its field."""
    source = np.tile(camera(), (3, 3))[150:1366, 60:1276]
    ref, left = moved((2.0, 2.0), source=source, seed=3)
    _, right = moved((2.0, -2.0), source=source, seed=3)
    inputs(tmp_path, ref, np.concatenate([left[:, :576], right[:, 576:]], axis=1))
    line = one_error_line(invoke_cli("run", str(config(tmp_path)), cwd=tmp_path))
    assert "method: local" in line and "ref.zarr" in line and "mov.zarr" in line, line
    assert nothing_written(tmp_path)

    local = invoke_cli("register", str(config(tmp_path, registration={"method": "local", "tile": 128})), "--json",
                       cwd=tmp_path)
    assert local.returncode == 0, local.stderr
    (record,) = json.loads(local.stdout)
    assert record["method"] == "local"
    assert record["field"]["tiles"] == [9, 9]
    assert 0 <= record["field"]["unknown_tiles"] < 81
    assert nothing_written(tmp_path)
