"""``output.multiscale``: the OME-Zarr pyramid of NaN-aware means an output carries beside its map.

Every level is checked against an independent reference computed here in float64 with numpy from level 0 as
xarray reads it back (``xarray.open_zarr(OUT)["ncc"]``): level k's pixel (i, j) is the mean of the finite
level-0 values in rows ``i * 2**k .. (i + 1) * 2**k`` and the same columns, clipped at the edges, NaN where
none is finite; never with lncc's own pyramid code. Shapes are not multiples of ``2**k``, and the chunkings
cover levels every block makes itself and levels made at the end from the deepest block level (its means and
the counts in ``_lncc/counts``). The NGFF metadata is validated with ome-zarr-models (0.5 for zarr 3, 0.4 for
zarr 2). Runs go through ``pipeline.job.run`` or the command's app in this process; the one test that kills a
run with SIGKILL starts ``lncc run`` as a real subprocess (marked slow).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import parse_config
from pipeline.io import read_provenance, write_array
from pipeline.job import run
from pipeline.testing import sample_pair, write_config
from support import MAP_NAMES, chunk_files, invoke_cli, kill_run_after

#: The pyramid stops at the first level whose long side is at most this many pixels.
COARSEST = 256

#: int16: round(value x 32767), -32768 for NaN.
SCALE, MISSING = 32767, -32768

WINDOW = 7


# ----------------------------------------------------------------------------------------------- references


def expected_levels(shape: tuple[int, ...]) -> int:
    """L: halve until the long side is at most 256 pixels (at least one level)."""
    k, longest = 1, max(shape[-2:])
    while -(-longest // 2 ** k) > COARSEST:
        k += 1
    return k


def nan_means(level0: np.ndarray, k: int) -> np.ndarray:
    """Level k of ``level0`` (any leading axes kept) by brute force in float64: NaN-padded to a multiple of
    ``2**k`` on the last two axes, then ``numpy.nanmean`` of each ``2**k`` x ``2**k`` tile."""
    f = 2 ** k
    values = np.asarray(level0, np.float64)
    pad = [(0, 0)] * (values.ndim - 2) + [(0, -n % f) for n in values.shape[-2:]]
    values = np.pad(values, pad, constant_values=np.nan)
    tiles = values.reshape(values.shape[:-2] + (values.shape[-2] // f, f, values.shape[-1] // f, f))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice": NaN, as it should be
        return np.nanmean(tiles, axis=(-3, -1))


def finite_counts(level0: np.ndarray, k: int) -> np.ndarray:
    """How many finite level-0 values each level-k pixel averages."""
    f = 2 ** k
    finite = np.isfinite(np.asarray(level0, np.float64)).astype(np.int64)
    pad = [(0, 0)] * (finite.ndim - 2) + [(0, -n % f) for n in finite.shape[-2:]]
    finite = np.pad(finite, pad)
    return finite.reshape(finite.shape[:-2] + (finite.shape[-2] // f, f, finite.shape[-1] // f, f)).sum(axis=(-3, -1))


def read_stored(out: Path, path: str) -> np.ndarray:
    """An array of the output as float64 values, decoded by its own stored attributes (int16: the fill value
    -32768 as NaN, the rest times ``scale_factor``), read with zarr alone."""
    array = zarr.open_array(str(out / path), mode="r")
    values = np.asarray(array[...])
    if values.dtype.kind == "f":
        return values.astype(np.float64)
    attrs = dict(array.attrs)
    missing = attrs.get("_FillValue", array.fill_value)
    return np.where(values == missing, np.nan, values * float(attrs["scale_factor"]))


def assert_within(got, want, tol: float, what: str, relative: bool = False) -> None:
    """Same shape, NaN exactly where ``want`` is, max |got - want| <= tol (times max(1, |want|) if relative)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    bad = np.argwhere(np.isnan(got) != np.isnan(want))
    assert bad.size == 0, f"{what}: NaN masks differ at {len(bad)} pixels, first {bad[:3].tolist()}"
    finite = ~np.isnan(want)
    err = np.abs(got[finite] - want[finite])
    if relative:
        err = err / np.maximum(1.0, np.abs(want[finite]))
    assert err.max(initial=0.0) <= tol, f"{what}: max error {err.max():.3g} > {tol:.3g}"


def assert_pyramid(out: Path, name: str = "ncc", tol: float = 1e-6, relative: bool = False) -> np.ndarray:
    """Every level of variable ``name`` is the NaN-aware block mean of level 0 as xarray reads it; level 0."""
    levels = read_provenance(str(out))["pyramid"]["levels"]
    level0 = xr.open_zarr(out)[name].values
    for k in range(1, levels + 1):
        assert_within(read_stored(out, f"levels/{name}/{k}"), nan_means(level0, k), tol, f"{name} level {k}",
                      relative)
    return level0


def _pair(root: Path, shape, seed: int, hole=None, zarr_format: int = 3, dims=None) -> tuple[str, str]:
    """A uint8 sample pair stored in ``root/in.zarr``, the reference zero (nodata) in the slices ``hole``."""
    ref, mov = sample_pair(shape, "uint8", seed=seed)
    if hole is not None:
        ref[hole] = 0
    kwargs = dict(zarr_format=zarr_format, dims=dims, chunks=tuple(min(n, 128) for n in shape))
    return tuple(write_array(str(root / "in.zarr"), a, name=n, **kwargs) for a, n in ((ref, "ref"), (mov, "mov")))


def _run(urls, out: Path, chunks, zarr_format: int = 3, **output) -> dict:
    """A multiscale run (window 7, ``nodata: 0``) of ``urls`` to ``out``; its provenance's pyramid record."""
    run(parse_config({"reference": urls[0], "moving": urls[1], "window": WINDOW, "nodata": 0, "chunks": chunks,
                      "zarr_format": zarr_format, "output": {"path": str(out), "multiscale": True, **output}}))
    return read_provenance(str(out))["pyramid"]


# ------------------------------------------------------------------------------- 1. levels are block means


@pytest.fixture(scope="module")
def wide_pair(tmp_path_factory):
    """A 333 x 1101 pair (three levels: 1101 / 8 = 138 <= 256; neither side a multiple of 2, 4 or 8) whose
    reference is zero (nodata) over rows 40-160, columns 301-523: whole level-3 pixels NaN, others part NaN."""
    root = tmp_path_factory.mktemp("wide")
    return root, _pair(root, (333, 1101), seed=5, hole=np.s_[40:160, 301:523])


@pytest.mark.parametrize("chunks,block_levels", [
    ({"y": 64, "x": 64}, 1),       # levels 2 and 3 made at the end
    ({"y": 128, "x": 128}, 2),     # level 3 made at the end
    ({"y": 256, "x": 256}, 3),     # every level a block level
    ({"y": 96, "x": 96}, 1),       # 96 / 4 = 24 < 32 pixels: level 2 is not a block level
    ({"y": 100, "x": 100}, 1),
    ({"y": 99, "x": 99}, 0),       # odd blocks: every level made at the end from level 0
    ({"y": 333, "x": 128}, 2),     # one block along y constrains nothing
    ({"y": 64, "x": 1101}, 1),
], ids=lambda v: "x".join(map(str, v.values())) if isinstance(v, dict) else f"K{v}")
def test_every_level_is_the_nan_aware_block_mean_of_level_0(wide_pair, tmp_path, chunks, block_levels):
    """Each level of a float32 map equals the float64 NaN-aware means of level 0 within 1e-6, NaN exactly where a
    tile has no finite value, whether the blocks made it or the end of the run did; the counts the end of the run
    uses are the finite pixels of the deepest block level, exactly."""
    root, urls = wide_pair
    out = tmp_path / "out.zarr"
    pyramid = _run(urls, out, chunks)
    assert pyramid == {"levels": expected_levels((333, 1101)), "block_levels": block_levels, "ngff": "0.5"}
    level0 = assert_pyramid(out)
    group = zarr.open_group(str(out), mode="r")
    for k in range(1, 4):
        assert group[f"levels/ncc/{k}"].shape == (-(-333 // 2 ** k), -(-1101 // 2 ** k))
        assert np.dtype(group[f"levels/ncc/{k}"].dtype) == np.float32
    counts = out / "_lncc" / "counts" / "ncc"
    if 0 < block_levels < 3:
        stored = zarr.open_array(str(counts), mode="r")[...]
        np.testing.assert_array_equal(stored, finite_counts(level0, block_levels))
    else:
        assert not counts.exists()
    # the case is the one it claims: level 3 has empty tiles, part-empty tiles and full ones
    n3 = finite_counts(level0, 3)
    assert (n3 == 0).any() and ((n3 > 0) & (n3 < 64)).any() and (n3 == 64).any()


@settings(max_examples=5)
@given(shape=st.tuples(st.integers(40, 700), st.integers(40, 700)),
       chunk_y=st.sampled_from([33, 48, 64, 66, 96, 100, 128, 130, 200, 256, 700]),
       chunk_x=st.sampled_from([33, 48, 64, 66, 96, 100, 128, 130, 200, 256, 700]),
       hole=st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 0.7), st.floats(0, 0.7)),
       zarr_format=st.sampled_from([2, 3]), seed=st.integers(0, 1000))
def test_levels_are_block_means_for_any_shape_and_chunking(tmp_path_factory, shape, chunk_y, chunk_x, hole,
                                                           zarr_format, seed):
    """Property: for any shape, chunking and nodata hole, the levels are the NaN-aware means of level 0 (1e-6),
    there are as many as the 256-pixel rule says, and each has the halved (rounded up) shape."""
    root = tmp_path_factory.mktemp("any-shape")
    y0, x0 = int(hole[0] * shape[0]), int(hole[1] * shape[1])
    region = np.s_[y0:y0 + int(hole[2] * shape[0]), x0:x0 + int(hole[3] * shape[1])]
    urls = _pair(root, shape, seed, region, zarr_format)
    out = root / "out.zarr"
    pyramid = _run(urls, out, {"y": chunk_y, "x": chunk_x}, zarr_format)
    assert pyramid["levels"] == expected_levels(shape)
    assert 0 <= pyramid["block_levels"] <= pyramid["levels"]
    assert_pyramid(out)
    for k in range(1, pyramid["levels"] + 1):
        assert zarr.open_array(str(out / f"levels/ncc/{k}"), mode="r").shape == tuple(-(-n // 2 ** k) for n in shape)


def test_level_0_of_a_multiscale_output_is_the_plain_map(wide_pair, tmp_path):
    """A multiscale output's ``ncc`` is a plain run's, value for value and chunk file for chunk file."""
    _, urls = wide_pair
    settings_ = {"reference": urls[0], "moving": urls[1], "window": WINDOW, "nodata": 0,
                 "chunks": {"y": 128, "x": 128}}
    run(parse_config({**settings_, "output": str(tmp_path / "plain.zarr")}))
    run(parse_config({**settings_, "output": {"path": str(tmp_path / "multi.zarr"), "multiscale": True}}))
    plain, multi = (xr.open_zarr(tmp_path / f"{n}.zarr")["ncc"].values for n in ("plain", "multi"))
    np.testing.assert_array_equal(multi, plain)
    assert chunk_files(tmp_path / "multi.zarr") == chunk_files(tmp_path / "plain.zarr")


# -------------------------------------------------------------------------------------- 2. NGFF metadata


def _ngff_image(out: Path, zarr_format: int):
    """The output validated as an OME-Zarr image by ome-zarr-models (0.5 or 0.4); its multiscales."""
    group = zarr.open_group(str(out), mode="r")
    if zarr_format == 3:
        from ome_zarr_models.v05.image import Image

        return Image.from_zarr(group).ome_attributes.multiscales
    from ome_zarr_models.v04.image import Image as Image04

    return Image04.from_zarr(group).attributes.multiscales


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_ngff_metadata_validates_and_its_paths_resolve(tmp_path, zarr_format):
    """With extra outputs: the root group's NGFF metadata (0.5 under ``ome`` in zarr 3, 0.4 ``multiscales`` in
    zarr 2) validates, one multiscale per variable with ``ncc`` first; every dataset path is an array whose shape
    halves level by level, with scale 2**k and translation (2**k - 1) / 2 on y and x; every variable's levels
    are the block means of its level 0."""
    shape = (300, 600)  # two levels
    urls = _pair(tmp_path, shape, seed=9, hole=np.s_[50:120, 100:260], zarr_format=zarr_format)
    out = tmp_path / "out.zarr"
    run(parse_config({"reference": urls[0], "moving": urls[1], "window": WINDOW, "nodata": 0, "extra_outputs": True,
                      "chunks": {"y": 128, "x": 64}, "zarr_format": zarr_format,
                      "output": {"path": str(out), "multiscale": True}}))
    multiscales = _ngff_image(out, zarr_format)
    names = [m.name for m in multiscales]
    assert names[0] == "ncc" and sorted(names) == sorted(MAP_NAMES)
    group = zarr.open_group(str(out), mode="r")
    for m in multiscales:
        assert [(a.name, a.type) for a in m.axes] == [("y", "space"), ("x", "space")]
        assert [d.path for d in m.datasets] == [m.name, f"levels/{m.name}/1", f"levels/{m.name}/2"]
        for k, dataset in enumerate(m.datasets):
            assert group[dataset.path].shape == (-(-shape[0] // 2 ** k), -(-shape[1] // 2 ** k))
            transforms = {t.type: t for t in dataset.coordinateTransformations}
            assert list(transforms["scale"].scale) == [2.0 ** k] * 2
            shift = list(transforms["translation"].translation) if "translation" in transforms else [0.0, 0.0]
            assert shift == [(2.0 ** k - 1) / 2] * 2
        assert_pyramid(out, m.name, tol=1e-6, relative=True)  # the stds are in grey levels
    root = json.loads((out / ("zarr.json" if zarr_format == 3 else ".zattrs")).read_text())
    attrs = root["attributes"] if zarr_format == 3 else root
    if zarr_format == 3:
        assert attrs["ome"]["version"] == "0.5" and "multiscales" not in attrs
    else:
        assert "ome" not in attrs and [m["version"] for m in attrs["multiscales"]] == ["0.4"] * 4
    assert read_provenance(str(out))["pyramid"]["ngff"] == ("0.5" if zarr_format == 3 else "0.4")


def test_a_rerun_is_up_to_date_and_verifies_complete(tmp_path):
    """The CLI: a multiscale run verifies complete and names its pyramid; the same config again is up to date
    and touches no file; switched off, the pyramid and its NGFF metadata go."""
    urls = _pair(tmp_path, (200, 300), seed=3)
    out = tmp_path / "out.zarr"
    cfg = write_config(tmp_path / "c.yaml", reference=urls[0], moving=urls[1], window=WINDOW,
                       chunks={"y": 64, "x": 64}, output={"path": str(out), "multiscale": True})
    assert invoke_cli("run", str(cfg), "--quiet", cwd=tmp_path).returncode == 0
    verify = invoke_cli("inspect", "--verify", str(out), cwd=tmp_path)
    assert verify.returncode == 0 and verify.stdout.splitlines()[0] == f"{out}: complete (20 of 20 blocks)"
    assert "multiscale" in verify.stdout
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = invoke_cli("run", str(cfg), cwd=tmp_path)
    assert again.returncode == 0 and "up to date" in again.stdout, again.stdout
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    off = invoke_cli("run", str(cfg), "--set", "output.multiscale=false", cwd=tmp_path)
    assert off.returncode == 0, off.stderr
    assert not (out / "levels").exists() and not (out / "_lncc" / "counts").exists()
    assert "ome" not in dict(zarr.open_group(str(out), mode="r").attrs)


def test_a_lost_level_chunk_is_noticed_and_recomputed(tmp_path):
    """A chunk file of level 1 deleted from a complete multiscale output: inspect says damaged (the chunk
    listing and the checksum, which covers the block's pyramid), the rerun recomputes that block alone and the
    level is whole again; a level chunk rewritten with other values fails the checksum."""
    from pipeline.job.describe import describe_output

    urls = _pair(tmp_path, (200, 300), seed=3)
    out = tmp_path / "out.zarr"
    settings_ = {"reference": urls[0], "moving": urls[1], "window": WINDOW, "chunks": {"y": 64, "x": 64},
                 "output": {"path": str(out), "multiscale": True}}
    run(parse_config(settings_))
    whole = read_stored(out, "levels/ncc/1")
    assert not np.isnan(whole).any()
    (out / "levels" / "ncc" / "1" / "c" / "1" / "1").unlink()
    assert describe_output(str(out))["state"] == "damaged"  # the chunk listing sees it
    assert describe_output(str(out), verify=True)["state"] == "damaged"
    summary = run(parse_config(settings_)).pairs[0]
    assert (summary.action, summary.blocks_computed) == ("resume", 1)  # that block alone
    np.testing.assert_array_equal(read_stored(out, "levels/ncc/1"), whole)
    # a level chunk whose values changed (same file, other bytes) fails the block's checksum
    target = zarr.open_array(str(out / "levels" / "ncc" / "1"), mode="r+")
    target[0, 0] = 0.25
    assert describe_output(str(out))["state"] == "complete"  # the files are all there
    assert describe_output(str(out), verify=True)["state"] == "damaged"


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_ome_zarr_py_reads_the_pyramid(tmp_path, zarr_format):
    """ome-zarr-py's reader (what napari's OME-Zarr plugin uses) finds the image, its axes and every level,
    each level's data equal to the stored array."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    urls = _pair(tmp_path, (300, 700), seed=21, hole=(slice(50, 120), slice(100, 300)), zarr_format=zarr_format)
    out = tmp_path / "out.zarr"
    pyramid = _run(urls, out, {"y": 128, "x": 128}, zarr_format=zarr_format)
    image = next(iter(Reader(parse_url(str(out)))()))
    assert image.metadata["name"] == "ncc"
    assert [a["name"] for a in image.metadata["axes"]] == ["y", "x"]
    assert len(image.data) == pyramid["levels"] + 1 == 3
    for k, data in enumerate(image.data):
        np.testing.assert_array_equal(np.asarray(data), read_stored(out, "ncc" if k == 0 else f"levels/ncc/{k}"))


# ------------------------------------------------------------------------------------------------ 3. video


def test_video_levels_keep_the_frames(tmp_path):
    """A (t, y, x) map: levels keep t and reduce y and x only, frame by frame (a hole in one frame stays in it);
    the NGFF axes are time, space, space with scale 1 and no translation on t."""
    shape = (3, 300, 520)  # two levels: 520 / 4 = 130
    ref, mov = sample_pair(shape, "uint8", seed=12)
    ref[1, 40:140, 100:300] = 0  # nodata in the middle frame only
    urls = [write_array(str(tmp_path / "in.zarr"), a, name=n, dims=("t", "y", "x"), chunks=(1, 128, 128))
            for a, n in ((ref, "ref"), (mov, "mov"))]
    out = tmp_path / "out.zarr"
    pyramid = _run(urls, out, {"t": 2, "y": 64, "x": 64})
    assert (pyramid["levels"], pyramid["block_levels"]) == (2, 1)
    level0 = assert_pyramid(out)
    assert level0.shape == shape and np.isnan(level0[1]).any() and not np.isnan(level0[[0, 2]]).any()
    for k in (1, 2):
        assert zarr.open_array(str(out / f"levels/ncc/{k}"), mode="r").shape == (3, -(-300 // 2 ** k),
                                                                                  -(-520 // 2 ** k))
    (m,) = _ngff_image(out, 3)
    assert [(a.name, a.type) for a in m.axes] == [("t", "time"), ("y", "space"), ("x", "space")]
    for k, dataset in enumerate(m.datasets):
        transforms = {t.type: t for t in dataset.coordinateTransformations}
        assert list(transforms["scale"].scale) == [1.0, 2.0 ** k, 2.0 ** k]
        if k:
            assert list(transforms["translation"].translation) == [0.0, (2.0 ** k - 1) / 2, (2.0 ** k - 1) / 2]


def test_frames_stored_last_are_refused_naming_output_multiscale(tmp_path):
    """Inputs stored (y, x, t) with ``multiscale: true``: validate and run refuse in one line naming
    ``output.multiscale`` (exit 2) and write nothing."""
    ref, mov = sample_pair((3, 90, 70), "uint8", seed=2)
    urls = [write_array(str(tmp_path / "in.zarr"), np.moveaxis(a, 0, -1), dims=("y", "x", "t"), name=n)
            for a, n in ((ref, "ref"), (mov, "mov"))]
    out = tmp_path / "out.zarr"
    cfg = write_config(tmp_path / "c.yaml", reference=urls[0], moving=urls[1], window=5,
                       output={"path": str(out), "multiscale": True})
    for command in ("validate", "run"):
        result = invoke_cli(command, str(cfg), cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "output.multiscale" in lines[0], result.stderr
        assert not out.exists()


# ------------------------------------------------------------------------------------------------ 4. int16


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_int16_levels_decode_within_two_steps_of_the_means(tmp_path, zarr_format):
    """An int16 pyramid (with extra outputs): each level of ``ncc`` and ``valid_fraction`` is int16 with the CF
    attributes of level 0 and decodes within two int16 steps of the float64 NaN-aware means of the decoded level
    0, NaN exactly where they are; the stds' levels stay float32."""
    shape = (421, 1029)  # three levels (1029 / 8 = 129); 421 and 1029 are odd
    urls = _pair(tmp_path, shape, seed=4, hole=np.s_[61:290, 203:611], zarr_format=zarr_format)
    out = tmp_path / "out.zarr"
    run(parse_config({"reference": urls[0], "moving": urls[1], "window": WINDOW, "nodata": 0, "extra_outputs": True,
                      "chunks": {"y": 128, "x": 128}, "zarr_format": zarr_format, "compressor": "zstd",
                      "output": {"path": str(out), "multiscale": True, "encoding": "int16"}}))
    assert read_provenance(str(out))["pyramid"]["block_levels"] == 2  # level 3 made at the end
    for name in ("ncc", "valid_fraction"):
        level0 = read_stored(out, name)
        assert_within(level0, xr.open_zarr(out)[name].values, 0.0, f"{name} decoded by hand and by xarray")
        for k in (1, 2, 3):
            array = zarr.open_array(str(out / f"levels/{name}/{k}"), mode="r")
            assert np.dtype(array.dtype) == np.int16 and array.fill_value == MISSING
            assert dict(array.attrs)["scale_factor"] == pytest.approx(1 / SCALE, rel=1e-15)
            assert_within(read_stored(out, f"levels/{name}/{k}"), nan_means(level0, k), 2 / SCALE, f"{name} {k}")
    for name in ("std_reference", "std_moving"):
        assert all(np.dtype(zarr.open_array(str(out / f"levels/{name}/{k}"), mode="r").dtype) == np.float32
                   for k in (1, 2, 3))
        assert_pyramid(out, name, tol=1e-6, relative=True)


# ------------------------------------------------------------------------------------ 5. kill -9 and resume


def _arrays(out: Path) -> dict[str, np.ndarray]:
    """Every array of the output, by path (the map, each level, the counts, the ledger and checksums)."""
    group = zarr.open_group(str(out), mode="r")
    return {path: np.asarray(node[...]) for path, node in group.members(max_depth=None)
            if isinstance(node, zarr.Array)}


def _stored_files(out: Path) -> dict[str, bytes]:
    """The chunk files of the map, of every level and of the counts."""
    files = {}
    for part in ("ncc", "levels", "_lncc/counts"):
        files.update({str(p.relative_to(out)): p.read_bytes() for p in sorted((out / part).rglob("*"))
                      if p.is_file()})
    return files


@pytest.mark.slow
def test_a_multiscale_run_killed_part_way_resumes_to_the_uninterrupted_bytes(tmp_path):
    """``lncc run`` of a compressed multiscale output killed with SIGKILL part way: the output is incomplete; the
    rerun computes only the missing blocks and makes the end levels, to a store whose every array (map, levels,
    counts) and chunk file is bit-identical to an uninterrupted run's, with the same NGFF attributes."""
    shape = (1536, 1536)  # 144 blocks of 128 x 128; three levels, two of them block levels
    ref, mov = sample_pair(shape, "uint8", seed=6)
    ref[300:700, 900:1300] = 0
    urls = [write_array(str(tmp_path / "in.zarr"), a, chunks=(256, 256), name=n)
            for a, n in ((ref, "ref"), (mov, "mov"))]
    settings_ = dict(reference=urls[0], moving=urls[1], window=WINDOW, nodata=0, chunks={"y": 128, "x": 128},
                     compressor="zstd", compute={"scheduler": "threads", "workers": 1})
    killed, clean = tmp_path / "killed.zarr", tmp_path / "clean.zarr"
    killed_cfg = write_config(tmp_path / "killed.yaml", **settings_,
                              output={"path": str(killed), "multiscale": True})
    clean_cfg = write_config(tmp_path / "clean.yaml", **settings_, output={"path": str(clean), "multiscale": True})

    done = kill_run_after(killed_cfg, killed, 20, cwd=tmp_path)
    assert 20 <= done < 144
    report = invoke_cli("inspect", str(killed), cwd=tmp_path)
    assert "incomplete" in report.stdout.splitlines()[0], report.stdout

    rerun = invoke_cli("run", str(killed_cfg), cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resumed: {144 - done} of 144 blocks computed" in rerun.stdout, rerun.stdout
    assert invoke_cli("run", str(clean_cfg), "--quiet", cwd=tmp_path).returncode == 0

    assert read_provenance(str(killed))["pyramid"] == {"levels": 3, "block_levels": 2, "ngff": "0.5"}
    resumed, fresh = _arrays(killed), _arrays(clean)
    assert {"ncc", "levels/ncc/1", "levels/ncc/2", "levels/ncc/3", "_lncc/counts/ncc"} <= set(resumed)
    assert set(resumed) == set(fresh)
    for path in resumed:
        np.testing.assert_array_equal(resumed[path], fresh[path], err_msg=path)
    assert _stored_files(killed) == _stored_files(clean)
    ome = [dict(zarr.open_group(str(o), mode="r").attrs)["ome"] for o in (killed, clean)]
    assert ome[0] == ome[1]
    assert_pyramid(killed)
    verify = invoke_cli("inspect", "--verify", str(killed), cwd=tmp_path)
    assert verify.returncode == 0 and "complete (144 of 144 blocks)" in verify.stdout.splitlines()[0]
