"""Whole runs through ``pipeline.job.run`` on real zarr stores, in this process: 2-D and 3-D maps, coordinates,
batches, chunk settings that never change the answer, reruns, and outputs that are not lncc's."""

from __future__ import annotations

from importlib.metadata import version

import numpy as np
import pytest
import xarray as xr
import zarr

from pipeline.config import parse_config
from pipeline.errors import InputError
from pipeline.io import output_state, read_provenance, write_array
from pipeline.job import run
from pipeline.testing import reference_ncc, sample_pair

FORMATS = [2, 3]


def make_pair(tmp_path, shape, zarr_format, *, dtype="uint16", seed=0, chunks=None, coords=None, dims=None):
    """Reference and moving arrays side by side in one group (with coords if given)."""
    ref, mov = sample_pair(shape, dtype, seed)
    group = str(tmp_path / f"inputs-v{zarr_format}.zarr")
    kwargs = dict(dims=dims, chunks=chunks, zarr_format=zarr_format, coords=coords)
    ref_url = write_array(group, ref, name="ref", **kwargs)
    mov_url = write_array(group, mov, name="mov", **kwargs)
    return ref, mov, ref_url, mov_url


@pytest.mark.parametrize("zarr_format", FORMATS)
def test_run_2d_output(tmp_path, zarr_format):
    """A 2-D run writes a complete, xarray-readable float32 map equal to the reference, chunked as processed."""
    shape = (100, 130)
    y = 1000.0 + 0.25 * np.arange(shape[0])
    x = 5.0 + 2.0 * np.arange(shape[1])
    ref, mov, ref_url, mov_url = make_pair(tmp_path, shape, zarr_format, chunks=(50, 50), coords={"y": y, "x": x})
    out_format = 5 - zarr_format  # the output format follows the config, not the inputs
    out = str(tmp_path / "ncc.zarr")
    cfg = parse_config({"reference": ref_url, "moving": mov_url, "output": out, "window": 7,
                        "chunks": {"y": 32, "x": 48}, "zarr_format": out_format, "compressor": "zstd"})
    summary = run(cfg)

    assert [p.output for p in summary.pairs] == [out]
    assert summary.pixels == 100 * 130
    ds = xr.open_zarr(out)
    ncc = ds["ncc"]
    assert ncc.dtype == np.float32
    assert ncc.dims == ("y", "x")
    np.testing.assert_array_equal(ncc["y"].values, y)
    np.testing.assert_array_equal(ncc["x"].values, x)
    expected = reference_ncc(ref, mov, 7)
    np.testing.assert_allclose(ncc.values, expected, rtol=0, atol=1e-6)
    assert np.std(expected) > 0.05  # a real map, not a constant

    group = zarr.open_group(out, mode="r")
    assert group.metadata.zarr_format == out_format
    assert group["ncc"].chunks == (32, 48)
    assert ncc.encoding["chunks"] == (32, 48)

    prov = read_provenance(out)
    assert prov["status"] == "complete"
    assert prov["version"] == version("lncc")
    assert prov["config"]["window"] == 7
    assert prov["config"]["chunks"] == {"y": 32, "x": 48}
    assert prov["config"]["zarr_format"] == out_format
    assert prov["config"]["reference"] == ref_url and prov["config"]["output"]["path"] == out
    assert prov["processing_chunks"] == [32, 48]
    for role, url in (("reference", ref_url), ("moving", mov_url)):
        assert prov["inputs"][role] == {"url": url, "shape": [100, 130], "dtype": "uint16", "dims": ["y", "x"],
                                        "format": "zarr", "zarr_format": zarr_format}
    assert prov["summary"]["mean"] == pytest.approx(float(np.mean(expected)), abs=1e-4)
    assert output_state(out) == "lncc"


@pytest.mark.parametrize("zarr_format", FORMATS)
def test_run_3d_output(tmp_path, zarr_format):
    """A (t, y, x) run keeps the stored dims and writes zarr chunks equal to the processing chunks."""
    ref, mov, ref_url, mov_url = make_pair(tmp_path, (5, 40, 50), zarr_format, dtype="float32", seed=2,
                                           dims=("time", "row", "col"), chunks=(1, 40, 50))
    out = str(tmp_path / "ncc3.zarr")
    cfg = parse_config({"reference": ref_url, "moving": mov_url, "output": out, "window": 5, "boundary": "nearest",
                        "chunks": {"time": 2, "row": 16, "col": 20}, "zarr_format": zarr_format})
    run(cfg)
    ncc = xr.open_zarr(out)["ncc"]
    assert ncc.dims == ("time", "row", "col")
    assert ncc.dtype == np.float32
    np.testing.assert_allclose(ncc.values, reference_ncc(ref, mov, 5, "nearest"), rtol=0, atol=1e-6)
    group = zarr.open_group(out, mode="r")
    assert group["ncc"].chunks == (2, 16, 20)
    assert group.metadata.zarr_format == zarr_format
    prov = read_provenance(out)
    assert prov["status"] == "complete"
    assert prov["inputs"]["moving"]["dims"] == ["time", "row", "col"]
    assert prov["processing_chunks"] == [2, 16, 20]


@pytest.mark.parametrize("zarr_format", [
    2,
    3,
])
def test_run_output_coords_starting_at_zero(tmp_path, zarr_format):
    """An input with coordinates 0, 1, 2, ... gives an output with exactly those coordinates."""
    shape = (20, 24)
    coords = {"y": np.arange(shape[0], dtype=np.float64), "x": np.arange(shape[1], dtype=np.float64)}
    _, _, ref_url, mov_url = make_pair(tmp_path, shape, zarr_format, coords=coords)
    out = str(tmp_path / "ncc.zarr")
    run(parse_config({"reference": ref_url, "moving": mov_url, "output": out, "window": 3,
                      "zarr_format": zarr_format}))
    ncc = xr.open_zarr(out)["ncc"]
    np.testing.assert_array_equal(ncc["y"].values, coords["y"])
    np.testing.assert_array_equal(ncc["x"].values, coords["x"])


def test_run_batch_writes_every_output(tmp_path):
    """A batch of two pairs writes both outputs, each complete and equal to its reference."""
    a1, b1, ref1, mov1 = make_pair(tmp_path, (40, 50), 3, seed=1)
    a2, b2, ref2, mov2 = make_pair(tmp_path, (30, 36), 2, seed=2)
    out1, out2 = str(tmp_path / "one.zarr"), str(tmp_path / "two.zarr")
    cfg = parse_config({"pairs": [{"reference": ref1, "moving": mov1, "output": out1},
                                  {"reference": ref2, "moving": mov2, "output": out2}], "window": 5})
    summary = run(cfg)
    assert [p.output for p in summary.pairs] == [out1, out2]
    for out, (a, b), url in ((out1, (a1, b1), ref1), (out2, (a2, b2), ref2)):
        np.testing.assert_allclose(xr.open_zarr(out)["ncc"].values, reference_ncc(a, b, 5), rtol=0, atol=1e-6)
        prov = read_provenance(out)
        assert prov["status"] == "complete"
        assert prov["inputs"]["reference"]["url"] == url


@pytest.fixture(scope="module")
def chunk_pair(tmp_path_factory):
    """One 100 x 130 pair stored with 25 x 26 zarr chunks, and its reference map (window 9)."""
    tmp = tmp_path_factory.mktemp("chunking")
    ref, mov, ref_url, mov_url = make_pair(tmp, (100, 130), 3, dtype="float32", seed=3, chunks=(25, 26))
    return tmp, ref_url, mov_url, reference_ncc(ref, mov, 9)


def _run_chunks(tmp, ref_url, mov_url, chunks, name):
    out = str(tmp / f"{name}.zarr")
    run(parse_config({"reference": ref_url, "moving": mov_url, "output": out, "window": 9, "chunks": chunks}))
    return xr.open_zarr(out)["ncc"].values


def test_chunking_never_changes_the_answer(chunk_pair):
    """The same pair with several chunk settings gives the same map (within 1e-6) as one whole-image chunk."""
    tmp, ref_url, mov_url, expected = chunk_pair
    settings = [
        {"y": 100, "x": 130},  # one chunk
        None,  # default: aligned with the zarr chunks
        {"y": 32, "x": 48},  # last chunks 4 and 34 rows/cols
        {"y": 10, "x": 13},  # many exact chunks
        {"y": 5, "x": 65},  # chunks barely longer than the radius
        {"y": 64},  # only one dim given
    ]
    whole = _run_chunks(tmp, ref_url, mov_url, settings[0], "whole")
    np.testing.assert_allclose(whole, expected, rtol=0, atol=1e-6)
    for i, chunks in enumerate(settings[1:]):
        got = _run_chunks(tmp, ref_url, mov_url, chunks, f"setting{i}")
        np.testing.assert_allclose(got, whole, rtol=0, atol=1e-6, err_msg=f"chunks {chunks}")


@pytest.mark.parametrize("chunks", [{"y": 7, "x": 130}, {"y": 100, "x": 16}], ids=["y7", "x16"])
def test_chunking_with_short_last_chunk(chunk_pair, chunks):
    """Chunks whose last block is shorter than the radius 4 (100 % 7 = 2, 130 % 16 = 2) give the same map."""
    tmp, ref_url, mov_url, expected = chunk_pair
    got = _run_chunks(tmp, ref_url, mov_url, chunks, "short-" + "-".join(map(str, chunks.values())))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_rerun_over_lncc_output(tmp_path):
    """A second run to the same output (an lncc output) needs no --force and replaces the map."""
    ref, mov, ref_url, mov_url = make_pair(tmp_path, (30, 40), 3)
    out = str(tmp_path / "ncc.zarr")
    run(parse_config({"reference": ref_url, "moving": mov_url, "output": out, "window": 3}))
    run(parse_config({"reference": ref_url, "moving": mov_url, "output": out, "window": 5}))
    assert read_provenance(out)["config"]["window"] == 5
    np.testing.assert_allclose(xr.open_zarr(out)["ncc"].values, reference_ncc(ref, mov, 5), rtol=0, atol=1e-6)


def test_run_refuses_foreign_zarr_output(tmp_path):
    """A zarr array not written by lncc at the output path is refused, with force too, and kept intact."""
    _, _, ref_url, mov_url = make_pair(tmp_path, (30, 40), 3)
    out = write_array(str(tmp_path / "theirs.zarr"), np.full((3, 3), 7, np.uint8))
    cfg = parse_config({"reference": ref_url, "moving": mov_url, "output": out})
    for force in (False, True):
        with pytest.raises(InputError, match="not written by lncc.*even with --force"):
            run(cfg, force=force)
        np.testing.assert_array_equal(zarr.open_array(out, mode="r")[...], np.full((3, 3), 7, np.uint8))


def test_run_on_a_pair_zarr_must_read_equals_the_in_memory_map(tmp_path):
    """A sharded reference and a delta-filtered moving image (layouts only zarr reads) run, each block task
    reading its own halo through zarr, to the in-memory map, with processing blocks across shard edges."""
    import numcodecs

    ref, mov = sample_pair((60, 50), "uint16", seed=17)
    sharded = zarr.create_array(store=str(tmp_path / "s.zarr"), shape=ref.shape, chunks=(10, 10),
                                shards=(20, 50), dtype=ref.dtype)
    filtered = zarr.create_array(store=str(tmp_path / "f.zarr"), shape=mov.shape, chunks=(10, 10),
                                 dtype=mov.dtype, zarr_format=2, filters=[numcodecs.Delta(dtype="u2")])
    sharded[...], filtered[...] = ref, mov
    out = str(tmp_path / "o.zarr")
    run(parse_config({"reference": str(tmp_path / "s.zarr"), "moving": str(tmp_path / "f.zarr"), "output": out,
                      "window": 7, "chunks": {"y": 30, "x": 30}}))
    got = xr.open_zarr(out)["ncc"].values
    np.testing.assert_allclose(got, reference_ncc(ref, mov, 7), atol=1e-6)
