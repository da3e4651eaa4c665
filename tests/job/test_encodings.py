"""How an output stores its values: ``output.encoding`` (float32, float16, int16), ``output.compressor`` and
``output.level``, on real runs on real zarr stores.

Every encoded output is checked against a float32 run of the same pair: read back with plain xarray
(``xarray.open_zarr``, which decodes int16 through the CF ``scale_factor`` and ``_FillValue`` itself), each value
within its encoding's precision and NaN exactly where the float32 map is NaN (a region of zeros with
``nodata: 0``); the stored integers and the codecs are read from the store's own metadata (the JSON files),
not through lncc. Runs go through ``pipeline.job.run`` or the command's app in this process (``invoke_cli``):
nothing here starts a subprocess.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import load_config, parse_config
from pipeline.errors import ConfigError
from pipeline.io import write_array
from pipeline.job import run
from pipeline.testing import sample_pair, write_config
from support import MAP_NAMES, invoke_cli

FORMATS = [2, 3]
ENCODINGS = ["float32", "float16", "int16"]

#: The int16 scale: round(ncc x 32767) is stored, -32768 stands for NaN.
SCALE, MISSING = 32767, -32768

#: The largest |read back - computed| each encoding documents: float16 half its spacing at 1; int16 half a step.
PRECISION = {"float32": 0.0, "float16": 2.0 ** -12, "int16": 0.5 / SCALE}

#: The dtype each variable is stored in under each encoding (only the values in [-1, 1] are encoded).
STORED = {enc: {"ncc": dt, "valid_fraction": dt, "std_reference": "float32", "std_moving": "float32"}
          for enc, dt in (("float32", "float32"), ("float16", "float16"), ("int16", "int16"))}

WINDOW = 7
CHUNKS = {"y": 64, "x": 48}


def _tolerance(encoding: str) -> float:
    """The encoding's precision, and the float64 rounding of xarray's decoding (stored x scale_factor)."""
    return PRECISION[encoding] * (1 + 1e-12)


@pytest.fixture(scope="module")
def holey(tmp_path_factory):
    """A 150 x 170 uint8 pair whose reference has a 50 x 60 region of zeros (``nodata: 0``: NaN in the map), the
    settings of its runs (extra outputs on) and its float32 maps, as an uninterrupted default run writes them."""
    tmp = tmp_path_factory.mktemp("encodings")
    ref, mov = sample_pair((150, 170), "uint8", seed=21)
    ref[40:90, 50:110] = 0
    urls = [write_array(str(tmp / "in.zarr"), a, chunks=(50, 50), name=n) for a, n in ((ref, "ref"), (mov, "mov"))]
    base = dict(reference=urls[0], moving=urls[1], window=WINDOW, nodata=0, chunks=CHUNKS, extra_outputs=True)
    out = tmp / "float32.zarr"
    run(parse_config({**base, "output": str(out)}))
    ds = xr.open_zarr(out)
    maps = {name: ds[name].values for name in MAP_NAMES}
    assert all(m.dtype == np.float32 for m in maps.values())
    nan = np.isnan(maps["ncc"])
    assert nan[60:70, 70:90].all() and 0 < nan.mean() < 0.3  # the zeros are NaN, the rest is a real map
    assert np.nanstd(maps["ncc"]) > 0.05
    return tmp, base, maps


def _encoded_run(tmp: Path, base: dict, name: str, zarr_format: int = 3, **output) -> Path:
    """A run of ``base`` to ``tmp/NAME.zarr`` with these ``output`` settings; the output's path."""
    out = tmp / f"{name}.zarr"
    run(parse_config({**base, "output": {"path": str(out), **output}, "zarr_format": zarr_format}))
    return out


def _assert_within(got, want, tol: float, what: str) -> None:
    """Same shape, NaN exactly where ``want`` is NaN, max |got - want| <= tol (float64) elsewhere."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, what
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{what}: NaN masks differ")
    finite = ~np.isnan(want)
    err = np.abs(got[finite] - want[finite])
    assert err.max(initial=0.0) <= tol, f"{what}: max |got - want| = {err.max():.6g} > {tol:.6g}"


def _array_meta(root: Path, name: str, zarr_format: int) -> dict:
    """The stored array metadata of ``name``, straight from its JSON file(s)."""
    if zarr_format == 3:
        return json.loads((root / name / "zarr.json").read_text())
    meta = json.loads((root / name / ".zarray").read_text())
    attrs = root / name / ".zattrs"
    meta["attributes"] = json.loads(attrs.read_text()) if attrs.exists() else {}
    return meta


def _int16_of(values: np.ndarray) -> np.ndarray:
    """What int16 stores, computed independently: round(ncc x 32767) in float64 (exact for float32 values),
    -32768 for NaN."""
    v = np.asarray(values, np.float64)
    return np.where(np.isnan(v), MISSING, np.rint(np.nan_to_num(v) * SCALE)).astype(np.int16)


# ------------------------------------------------------------------------------------- 1. reading back


@pytest.mark.parametrize("zarr_format", FORMATS)
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_each_encoding_reads_back_within_its_precision(holey, encoding, zarr_format):
    """Each encoding in zarr 2 and 3: ``ncc`` and ``valid_fraction`` stored in the encoding's dtype and read back by
    xarray within its precision of the float32 run (float32 exactly), NaN exactly where it is NaN; the standard
    deviations stay float32, equal to the float32 run's; int16 carries the CF attributes xarray decodes."""
    tmp, base, maps = holey
    out = _encoded_run(tmp, base, f"{encoding}-v{zarr_format}", encoding=encoding, zarr_format=zarr_format)
    group = zarr.open_group(str(out), mode="r")
    assert group.metadata.zarr_format == zarr_format
    for name in MAP_NAMES:
        assert np.dtype(group[name].dtype) == np.dtype(STORED[encoding][name]), name
    ds = xr.open_zarr(out)
    for name in ("ncc", "valid_fraction"):
        _assert_within(ds[name].values, maps[name], _tolerance(encoding), f"{encoding} {name}")
        assert ds[name].dtype.kind == "f"  # decoded by xarray, not the stored integers
    for name in ("std_reference", "std_moving"):
        assert ds[name].dtype == np.float32
        np.testing.assert_array_equal(ds[name].values, maps[name], err_msg=name)
    if encoding == "float32":
        np.testing.assert_array_equal(ds["ncc"].values, maps["ncc"])
    if encoding == "int16":
        for name in ("ncc", "valid_fraction"):
            meta = _array_meta(out, name, zarr_format)
            assert meta["attributes"]["scale_factor"] == pytest.approx(1 / SCALE, rel=1e-15)
            if zarr_format == 3:
                assert meta["attributes"]["_FillValue"] == MISSING and meta["fill_value"] == MISSING
            else:
                assert meta["fill_value"] == MISSING
            raw = group[name][...]
            assert raw.dtype == np.int16
            np.testing.assert_array_equal(raw == MISSING, np.isnan(maps[name]), err_msg=name)
            # every stored integer is round(value x 32767)
            np.testing.assert_array_equal(raw, _int16_of(maps[name]), err_msg=name)
        vf = np.asarray(group["valid_fraction"][...])
        assert vf.max() == SCALE  # valid fraction 1 stored as exactly 32767: no overflow at the top


def test_int16_stores_exactly_round_ncc_times_32767(holey, tmp_path):
    """The int16 map holds round(ncc x 32767) exactly, so it reads back within half a step (0.5/32767)."""
    _, base, _ = holey
    ref, mov = sample_pair((400, 500), "uint8", seed=1)  # 200,000 values: near-ties enough to meet some
    urls = [write_array(str(tmp_path / "in.zarr"), a, name=n) for a, n in ((ref, "ref"), (mov, "mov"))]
    settings_ = dict(reference=urls[0], moving=urls[1], window=WINDOW, chunks={"y": 128, "x": 128})
    run(parse_config({**settings_, "output": str(tmp_path / "f.zarr")}))
    run(parse_config({**settings_, "output": {"path": str(tmp_path / "i.zarr"), "encoding": "int16"}}))
    computed = xr.open_zarr(tmp_path / "f.zarr")["ncc"].values
    stored = zarr.open_array(str(tmp_path / "i.zarr" / "ncc"), mode="r")[...]
    decoded = xr.open_zarr(tmp_path / "i.zarr")["ncc"].values
    mismatched = int((stored != _int16_of(computed)).sum())
    _assert_within(decoded, computed, PRECISION["int16"], "int16 ncc")
    assert mismatched == 0, f"{mismatched} stored values differ from round(ncc x 32767)"


@settings(max_examples=4)
@given(shape=st.tuples(st.integers(9, 90), st.integers(9, 90)), chunk_y=st.integers(5, 60),
       chunk_x=st.integers(5, 60), zarr_format=st.sampled_from(FORMATS), seed=st.integers(0, 1000),
       hole=st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 0.6), st.floats(0, 0.6)))
def test_int16_round_trips_for_any_shape_and_chunking(tmp_path_factory, shape, chunk_y, chunk_x, zarr_format, seed,
                                                      hole):
    """Property: for any small shape, chunking and nodata hole, an int16 run reads back through xarray within
    the documented step of the float32 run, NaN exactly where it is NaN, and verifies complete."""
    from pipeline.job.describe import describe_output

    tmp = tmp_path_factory.mktemp("int16-property")
    ref, mov = sample_pair(shape, "uint8", seed=seed)
    y0, x0 = int(hole[0] * shape[0]), int(hole[1] * shape[1])
    ref[y0:y0 + int(hole[2] * shape[0]), x0:x0 + int(hole[3] * shape[1])] = 0
    urls = [write_array(str(tmp / "in.zarr"), a, name=n) for a, n in ((ref, "ref"), (mov, "mov"))]
    base = dict(reference=urls[0], moving=urls[1], window=5, nodata=0, chunks={"y": chunk_y, "x": chunk_x},
                zarr_format=zarr_format)
    run(parse_config({**base, "output": str(tmp / "f.zarr")}))
    run(parse_config({**base, "output": {"path": str(tmp / "i.zarr"), "encoding": "int16"}}))
    computed = xr.open_zarr(tmp / "f.zarr")["ncc"].values
    _assert_within(xr.open_zarr(tmp / "i.zarr")["ncc"].values, computed, _tolerance("int16"), "int16 ncc")
    stored = zarr.open_array(str(tmp / "i.zarr" / "ncc"), mode="r")[...]
    np.testing.assert_array_equal(stored, _int16_of(computed))
    assert describe_output(str(tmp / "i.zarr"), verify=True)["state"] == "complete"


# ------------------------------------------------------------------------ 2. reruns, inspect --verify


@pytest.mark.parametrize("zarr_format", FORMATS)
@pytest.mark.parametrize("encoding", ["float16", "int16"])
def test_an_encoded_output_verifies_complete_and_reruns_up_to_date(holey, tmp_path, encoding, zarr_format):
    """The CLI: an encoded, compressed run verifies complete (its checksums are of the stored values); a rerun
    is up to date and touches nothing; another encoding recomputes every block and stores that one."""
    _, base, maps = holey
    out = tmp_path / "out.zarr"
    cfg = write_config(tmp_path / "c.yaml", **{**base, "zarr_format": zarr_format},
                       output={"path": str(out), "encoding": encoding, "compressor": "zstd", "level": 5})
    first = invoke_cli("run", str(cfg), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    verify = invoke_cli("inspect", "--verify", str(out), cwd=tmp_path)
    assert verify.returncode == 0, verify.stderr
    assert verify.stdout.splitlines()[0] == f"{out}: complete (12 of 12 blocks)"
    assert f"stored: {encoding}" in verify.stdout
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = invoke_cli("run", str(cfg), cwd=tmp_path)
    assert again.returncode == 0 and "up to date" in again.stdout, again.stdout + again.stderr
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    other = "int16" if encoding == "float16" else "float16"
    changed = invoke_cli("run", str(cfg), "--set", f"output.encoding={other}", cwd=tmp_path)
    assert changed.returncode == 0, changed.stderr
    assert "up to date" not in changed.stdout and "12 blocks" in changed.stdout, changed.stdout
    assert np.dtype(zarr.open_array(str(out / "ncc"), mode="r").dtype) == np.dtype(other)
    _assert_within(xr.open_zarr(out)["ncc"].values, maps["ncc"], _tolerance(other), f"{other} after {encoding}")
    assert "complete (12 of 12 blocks)" in invoke_cli("inspect", "--verify", str(out), cwd=tmp_path).stdout


def test_a_damaged_int16_chunk_is_found_and_recomputed(holey, tmp_path):
    """A garbled chunk of a compressed int16 map: inspect --verify says damaged, the rerun recomputes that block
    only and the map reads back as before."""
    _, base, maps = holey
    out = tmp_path / "out.zarr"
    cfg = write_config(tmp_path / "c.yaml", **base,
                       output={"path": str(out), "encoding": "int16", "compressor": "lz4"})
    assert invoke_cli("run", str(cfg), "--quiet", cwd=tmp_path).returncode == 0
    chunk = out / "ncc" / "c" / "1" / "1"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2: len(data) // 2 + 8] = bytes(b ^ 0xFF for b in data[len(data) // 2: len(data) // 2 + 8])
    chunk.write_bytes(bytes(data))
    verify = invoke_cli("inspect", "--verify", str(out), cwd=tmp_path)
    assert verify.returncode == 1 and "damaged (11 of 12 blocks, 1 damaged or missing)" in verify.stdout
    rerun = invoke_cli("run", str(cfg), cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert "resumed: 1 of 12 blocks computed" in rerun.stdout, rerun.stdout
    _assert_within(xr.open_zarr(out)["ncc"].values, maps["ncc"], _tolerance("int16"), "repaired int16 ncc")


# ------------------------------------------------------------------------------- 3. compression levels


def _codec(meta: dict, zarr_format: int) -> dict:
    """The compressor of an array's stored metadata, as {"name", and its settings}."""
    if zarr_format == 2:
        compressor = dict(meta["compressor"] or {})
        return {"name": compressor.pop("id", None), **compressor}
    found = [c for c in meta["codecs"] if c["name"] not in ("bytes", "transpose")]
    assert len(found) == 1, meta["codecs"]
    return {"name": found[0]["name"], **found[0].get("configuration", {})}


@pytest.mark.parametrize("zarr_format", FORMATS)
@pytest.mark.parametrize("settings_,expected", [
    ({"output": {"compressor": "zstd", "level": 9}}, {"name": "zstd", "level": 9}),
    ({"output": {"compressor": "lz4", "level": 2}}, {"name": "blosc", "cname": "lz4", "clevel": 2}),
    ({"output": {"compressor": "zstd"}}, {"name": "zstd", "level": 1}),  # the documented default level
    ({"compressor": "lz4", "output": {}}, {"name": "blosc", "cname": "lz4", "clevel": 5}),  # the top-level key
    ({"compressor": "lz4", "output": {"compressor": "zstd", "level": 3}}, {"name": "zstd", "level": 3}),
], ids=["zstd-9", "lz4-2", "zstd-default", "top-level-lz4", "output-over-top-level"])
def test_the_compressor_and_its_level_land_in_the_metadata(holey, tmp_path, settings_, expected, zarr_format):
    """The compressor and level of ``output`` (or the top-level ``compressor``) are in every variable's zarr
    metadata (blosc's typesize is the stored item size: 2 for int16, 4 for the float32 stds); the map reads back
    as without compression and verifies complete."""
    from pipeline.job.describe import describe_output

    _, base, maps = holey
    out = tmp_path / "out.zarr"
    output = {"path": str(out), "encoding": "int16", **settings_["output"]}
    run(parse_config({**base, **{k: v for k, v in settings_.items() if k != "output"}, "output": output,
                      "zarr_format": zarr_format}))
    for name in MAP_NAMES:
        codec = _codec(_array_meta(out, name, zarr_format), zarr_format)
        assert {k: codec.get(k) for k in expected} == expected, (name, codec)
        if codec["name"] == "blosc" and zarr_format == 3:
            assert codec["typesize"] == (2 if name in ("ncc", "valid_fraction") else 4), (name, codec)
    _assert_within(xr.open_zarr(out)["ncc"].values, maps["ncc"], _tolerance("int16"), "compressed int16 ncc")
    assert describe_output(str(out), verify=True)["state"] == "complete"


def test_a_level_for_the_top_level_compressor_is_used(holey, tmp_path):
    """``compressor: zstd`` at the top and ``output.level: 7``: the output's compressor is zstd (the top-level
    key is its default), so the level applies."""
    _, base, _ = holey
    out = tmp_path / "out.zarr"
    run(parse_config({**base, "compressor": "zstd", "output": {"path": str(out), "level": 7}}))
    assert _codec(_array_meta(out, "ncc", 3), 3) == {"name": "zstd", "level": 7, "checksum": False}


# ------------------------------------------------------------------------------------ 4. config errors


def _config_error(tmp_path: Path, text: str) -> str:
    """The message of the ConfigError a config loads with; it must be one line, and the CLI say it the same."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith("config error: "), message
    result = invoke_cli("validate", str(path), cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [f"lncc: error: {message}"], result.stderr
    return message


SINGLE = "reference: ref.zarr\nmoving: mov.zarr\n"


@pytest.mark.parametrize("text,fragments", [
    (SINGLE + "output: {path: o.zarr, level: 5}\n", ["output", "level 5", "needs a compressor", "zstd", "lz4"]),
    (SINGLE + "output: {path: o.zarr, compressor: none, level: 3}\n", ["output", "level 3", "needs a compressor"]),
    (SINGLE + "output: {path: o.zarr, compressor: zstd, level: 30}\n", ["output", "zstd", "1-22", "30"]),
    (SINGLE + "output: {path: o.zarr, compressor: lz4, level: 10}\n", ["output", "lz4", "1-9", "10"]),
    (SINGLE + "output: {path: o.zarr, compressor: zstd, level: 0}\n", ["output.level:", "0"]),
    (SINGLE + "compressor: zstd\noutput: {path: o.zarr, level: 30}\n", ["output.level:", "zstd", "1-22", "30"]),
    ("compressor: lz4\npairs:\n  - {reference: a.zarr, moving: b.zarr, output: {path: o.zarr, level: 12}}\n",
     ["pairs.0.output.level:", "lz4", "1-9", "12"]),
    (SINGLE + "output: {path: o.zarr, encoding: int8}\n", ["output.encoding:", "'int8'", "float16", "int16"]),
    (SINGLE + "output: {path: o.zarr, compressor: gzip}\n", ["output.compressor:", "'gzip'"]),
    (SINGLE + "output: {encoding: int16}\n", ["output.path:", "missing"]),
    ("pairs:\n  - {reference: a.zarr, moving: b.zarr, output: {path: o.zarr, encoding: int8}}\n",
     ["pairs.0.output.encoding:", "'int8'"]),
], ids=["level-without-compressor", "level-with-none", "zstd-30", "lz4-10", "level-0", "top-level-zstd-30",
        "top-level-lz4-12-in-pairs", "int8", "gzip", "no-path", "int8-in-pairs"])
def test_bad_output_settings_are_one_line_config_errors(tmp_path, text, fragments):
    """A level without a compressor or out of its range, an unknown encoding or compressor: one line on stderr,
    exit 2, naming the key and the value (and the levels that would do)."""
    message = _config_error(tmp_path, text)
    for fragment in fragments:
        assert fragment in message, (fragment, message)


@pytest.mark.parametrize("text", [SINGLE + "output: {path: o.zarr, level: 5}\n",
                                  SINGLE + "output: {path: o.zarr, compressor: zstd, level: 30}\n"],
                         ids=["level-without-compressor", "zstd-30"])
def test_level_errors_name_the_key_path_output_level(tmp_path, text):
    """A bad ``output.level`` is reported under its own key path, as ``output.level: ...``."""
    assert "output.level:" in _config_error(tmp_path, text)


def test_the_short_and_long_output_forms_write_the_same_map(holey, tmp_path):
    """``output: PATH`` and ``output: {path: PATH}`` (every default spelled out) are one config: the same map and
    the same config hash (the second run over the first's output is up to date)."""
    from pipeline.io import read_provenance

    _, base, maps = holey
    out = tmp_path / "out.zarr"
    first = run(parse_config({**base, "output": str(out)})).pairs[0]
    again = run(parse_config({**base, "output": {"path": str(out), "encoding": "float32",
                                                 "multiscale": False}})).pairs[0]
    assert (first.action, again.action) == ("fresh", "up to date")
    np.testing.assert_array_equal(xr.open_zarr(out)["ncc"].values, maps["ncc"])
    assert read_provenance(str(out))["config"]["output"]["path"] == str(out)
