"""Nodata and masks through the ``lncc`` command on zarr stores: per-input nodata, mask arrays, extra outputs,
and masks refused before anything is written. The command's app runs in this process (``invoke_cli``): what
is checked is what it computes and refuses, not its process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from pipeline.core.masks import invalid_mask
from pipeline.io import write_array
from pipeline.testing import reference_ncc, sample_pair
from support import MAP_NAMES as NAMES
from support import assert_same, holey_pair, invoke_cli


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_cli_with_nodata_masks_and_extra_outputs(tmp_path: Path, zarr_format):
    """Through the CLI on zarr stores: per-input nodata and a mask array, with the extra variables written."""
    a, b, mask = holey_pair((90, 110), "float32", seed=9, border=6)
    write_array(str(tmp_path / "a.zarr"), a, chunks=(32, 32), zarr_format=zarr_format)
    write_array(str(tmp_path / "b.zarr"), b, chunks=(32, 32), zarr_format=zarr_format)
    write_array(str(tmp_path / "m.zarr"), mask, chunks=(32, 32), zarr_format=zarr_format)
    config = {"reference": "a.zarr", "moving": "b.zarr", "output": "out.zarr", "moving_mask": "m.zarr",
              "window": 7, "nodata": {"reference": 0}, "min_valid": 0.6, "extra_outputs": True,
              "chunks": {"y": 32, "x": 32}}
    (tmp_path / "c.yaml").write_text(json.dumps(config))
    result = invoke_cli("run", "c.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ds = xr.open_zarr(tmp_path / "out.zarr")
    invalid = invalid_mask(a, b, (0, None), None, mask)
    expected = reference_ncc(a, b, 7, invalid=invalid, min_valid=0.6, extras=True)
    assert_same([ds[n].values for n in NAMES], expected)
    assert np.isnan(ds["ncc"].values[:, :2]).all()  # the nodata border


@pytest.mark.parametrize("bad", ["dtype", "shape"])
def test_cli_refuses_a_bad_mask(tmp_path: Path, bad):
    """A mask that is not bool, or not of the images' shape, exits 2 before anything is written."""
    a, b = sample_pair((40, 50), "uint8")
    write_array(str(tmp_path / "a.zarr"), a)
    write_array(str(tmp_path / "b.zarr"), b)
    mask = np.ones((40, 50), np.uint8) if bad == "dtype" else np.ones((40, 49), bool)
    write_array(str(tmp_path / "m.zarr"), mask)
    (tmp_path / "c.yaml").write_text(json.dumps({"reference": "a.zarr", "moving": "b.zarr", "output": "out.zarr",
                                                 "reference_mask": "m.zarr"}))
    result = invoke_cli("run", "c.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert ("expected a bool array" if bad == "dtype" else "(40, 49)") in result.stderr
    assert not (tmp_path / "out.zarr").exists()
