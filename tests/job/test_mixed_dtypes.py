"""Pairs whose two images have different dtypes, run through ``pipeline.job.run`` on zarr stores in this process.

Each task reads both images itself, each into a buffer of its own dtype (an 8-bit reference beside a moving
image shifted into int32 fixed point, a float64 reference beside a float32 one, ...): the result must equal
the textbook two-pass NCC of the two images as stored (unregistered), or the in-memory API with the same shift
(registered), for every chunking, chunks smaller than the window's halo included.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pipeline
from pipeline.config import load_config
from pipeline.io import inspect_input, write_array
from pipeline.job import run
from pipeline.job.plan import reads_pair
from pipeline.testing import reference_ncc, sample_crop, write_config
from support import assert_matches

DTYPES = ("uint8", "uint16", "int16", "float32", "float64")


def _as(values: np.ndarray, dtype: str) -> np.ndarray:
    if np.dtype(dtype).kind == "f":
        return values.astype(dtype)
    scale = {"uint8": 1, "uint16": 200, "int16": 100}[dtype]  # wider types use their range
    out = values.astype(np.float64) * scale - (12000 if dtype == "int16" else 0)
    return out.astype(dtype)


def _run(tmp, ref, mov, chunks, window, blocks=None, **settings):
    """Run the pair stored with ``chunks``, processed in ``blocks`` (y, x) (the planner's choice if None)."""
    paths = [write_array(str(tmp / f"{k}.zarr"), a, chunks=chunks) for k, a in (("r", ref), ("m", mov))]
    out = str(tmp / "out.zarr")
    if blocks is not None:
        settings["chunks"] = {"y": blocks[0], "x": blocks[1]}
    config = load_config(write_config(tmp / "c.yaml", reference=paths[0], moving=paths[1], output=out,
                                      window=window, **settings))
    infos = [inspect_input(p) for p in paths]
    assert reads_pair(*infos, (None, None), (0, 1), "registration" in settings)  # the path under test
    run(config, force=True)
    with xr.open_zarr(out) as ds:
        return ds["ncc"].values


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dtypes=st.tuples(st.sampled_from(DTYPES), st.sampled_from(DTYPES)).filter(lambda d: d[0] != d[1]),
       chunk=st.sampled_from([(2, 3), (7, 5), (16, 40), (64, 64)]), window=st.sampled_from([3, 7]),
       blocks=st.sampled_from([None, (4, 5), (9, 20)]), seed=st.integers(0, 50))
def test_a_mixed_pair_equals_the_textbook_ncc(tmp_path_factory, dtypes, chunk, window, blocks, seed):
    """Stored chunks smaller than the halo included; blocks of the processing grid from 4 x 5 up."""
    ref, mov = sample_crop((37, 45), "uint8", seed=seed)
    ref, mov = _as(ref, dtypes[0]), _as(mov, dtypes[1])
    got = _run(tmp_path_factory.mktemp("mixed"), ref, mov, chunk, window, blocks)
    assert_matches(got, reference_ncc(ref, mov, window))


@pytest.mark.parametrize("dtypes", [("uint8", "uint8"), ("uint16", "uint8"), ("float64", "uint8"),
                                    ("uint8", "float32"), ("int16", "uint16")])
@pytest.mark.parametrize("chunk,blocks", [((3, 4), (5, 7)), ((16, 40), None)])
def test_a_registered_mixed_pair_equals_the_in_memory_api(tmp_path, dtypes, chunk, blocks):
    """The moving image shifted as it is read (int32 fixed point for an 8-bit one, else float32) beside the
    reference in its own dtype: the same map as the API's in-memory registered NCC."""
    ref, mov = sample_crop((41, 38), "uint8", seed=4)
    ref, mov = _as(ref, dtypes[0]), _as(mov, dtypes[1])
    shift = (1.3, -2.6)
    got = _run(tmp_path, ref, mov, chunk, 5, blocks, registration={"method": "translation", "shift": list(shift)})
    expected = pipeline.local_ncc(ref, mov, window=5, shift=shift)
    assert_matches(got, np.asarray(expected))
    assert np.isnan(got[:1]).all() and np.isfinite(got[5:-5, 5:-5]).any()  # rows sourced outside are missing
