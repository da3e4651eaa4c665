"""Frame sequences: a glob of PNG frame files or a list of them, read as one ``(t, y, x)`` input.

Each run from frame files is compared with the same frames stacked and stored as zarr (the same values reach
the same kernel) and with the textbook two-pass NCC; the order is the files' natural order (a glob) or the
list's, and the fingerprint follows each frame's bytes and the order.
"""

from __future__ import annotations

import uuid

import imageio.v3 as iio
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import parse_config
from pipeline.errors import InputError
from pipeline.io import fingerprint, inspect_input, read_provenance, source_of, write_array
from pipeline.io.readers.sequence import frame_files
from pipeline.job import run
from pipeline.testing import reference_ncc, sample_pair, write_config
from support import assert_matches, invoke_cli

WINDOW = 7
FRAMES, SHAPE = 20, (96, 128)
BLOCKS = {"chunks": {"t": 3, "y": 40, "x": 50}}


def _write_frames(folder, prefix, stack, suffix="png"):
    """Each frame of ``stack`` as its own file ``prefix_<i>.<suffix>``; their paths in frame order."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{prefix}_{i}.{suffix}" for i in range(len(stack))]
    for path, frame in zip(paths, stack):
        iio.imwrite(path, frame)
    return paths


def _run(out, reference, moving, **settings):
    summary = run(parse_config({"reference": reference, "moving": moving, "output": str(out), "window": WINDOW,
                                **settings}))
    with xr.open_zarr(out) as ds:
        return summary, ds["ncc"].load()


def _zarr_run(folder, name, a, b, **settings):
    """The stacked frames stored as zarr ``(t, y, x)``, run alike: the map the sequence run must equal."""
    stores = [write_array(str(folder / f"{name}-{k}.zarr"), x, chunks=(1, 64, 64)) for k, x in zip("ab", (a, b))]
    return _run(folder / f"{name}.zarr", *stores, **settings)[1]


@pytest.fixture(scope="module")
def sequence(tmp_path_factory):
    """20 frame files per side (so that natural order matters: 2 before 10), the stacks and their zarr map."""
    root = tmp_path_factory.mktemp("sequence")
    a, b = (np.ascontiguousarray(x) for x in sample_pair((FRAMES,) + SHAPE, "uint8", seed=3))
    left, right = _write_frames(root / "frames", "left", a), _write_frames(root / "frames", "right", b)
    return {"root": root, "a": a, "b": b, "left": left, "right": right,
            "glob": (str(root / "frames" / "left_*.png"), str(root / "frames" / "right_*.png")),
            "zarr": _zarr_run(root, "zarr", a, b).values}


def test_a_glob_gives_its_files_in_natural_order(tmp_path):
    frames = {n: np.full((8, 10), n, dtype=np.uint8) for n in (2, 10, 1)}
    for n, frame in frames.items():  # made in this order: neither creation nor plain sorting is natural order
        iio.imwrite(tmp_path / f"f_{n}.png", frame)
    pattern = str(tmp_path / "f_*.png")
    assert [p.rsplit("/", 1)[-1] for p in frame_files(pattern)] == ["f_1.png", "f_2.png", "f_10.png"]
    info = inspect_input(pattern)
    assert (info.shape, info.dims, info.file_format) == ((3, 8, 10), ("t", "y", "x"), "sequence")
    values = source_of(info)[:, :, :]
    assert [int(v) for v in values[:, 0, 0]] == [1, 2, 10]
    assert int(source_of(info)[2, 3, 4]) == 10 and source_of(info)[1:3, :2, :2].shape == (2, 2, 2)


@pytest.mark.parametrize("form", ["glob", "list"])
def test_a_sequence_pair_equals_the_stacked_frames_from_zarr_and_the_textbook(sequence, tmp_path, form):
    s = sequence
    inputs = s["glob"] if form == "glob" else ([str(p) for p in s["left"]], [str(p) for p in s["right"]])
    _, from_files = _run(tmp_path / "seq.zarr", *inputs, **BLOCKS)
    assert from_files.dims == ("t", "y", "x") and from_files.shape == (FRAMES,) + SHAPE
    assert_matches(from_files.values, _zarr_run(tmp_path, "zarr", s["a"], s["b"], **BLOCKS).values, 1e-6)
    some = slice(1, FRAMES, 6)  # the textbook on a few frames (it holds every window in memory)
    assert_matches(from_files.values[some], reference_ncc(s["a"][some], s["b"][some], WINDOW))
    record = read_provenance(str(tmp_path / "seq.zarr"))["inputs"]["reference"]
    assert (record["format"], record["files"], record["shape"]) == ("sequence", FRAMES, [FRAMES, *SHAPE])
    assert record["url"] == (s["glob"][0] if form == "glob" else f"{s['left'][0]} (+{FRAMES - 1} more files)")


@settings(max_examples=5, deadline=None)
@given(t=st.integers(1, FRAMES), y=st.integers(16, SHAPE[0]), x=st.integers(16, SHAPE[1]))
def test_any_processing_chunks_give_the_same_map(sequence, t, y, x):
    out = sequence["root"] / f"chunks-{uuid.uuid4().hex}.zarr"
    _, got = _run(out, *sequence["glob"], chunks={"t": t, "y": y, "x": x})
    assert_matches(got.values, sequence["zarr"], 1e-6)


def test_a_frame_of_another_shape_or_dtype_is_named_first(tmp_path):
    a, b = sample_pair((10,) + SHAPE, "uint8", seed=5)
    left = _write_frames(tmp_path / "l", "f", a)
    right = _write_frames(tmp_path / "r", "f", b)
    iio.imwrite(left[4], a[4][:, :120])  # the first odd frame...
    iio.imwrite(left[7], a[7][:90])  # ... and a later one
    iio.imwrite(right[3], np.stack([b[3]] * 3, axis=-1))  # a colour frame among grey ones
    iio.imwrite(right[6], b[6].astype(np.uint16) * 200)  # 16-bit among 8-bit
    good = [str(p) for p in right[:3] + right[4:6] + right[7:]] * 2
    for reference, moving, odd, words in (
            (str(tmp_path / "l" / "f_*.png"), [str(p) for p in right[:3]] * 4, left[4], "96 x 120 uint8"),
            ([str(p) for p in left[:3]] + [str(right[3]), str(right[6])], good[:5], right[3], "96 x 128 x 3"),
            (good[:2] + [str(right[6])], good[:3], right[6], "uint16")):
        out = tmp_path / f"out-{odd.parent.name}-{odd.stem}.zarr"
        with pytest.raises(InputError, match=words) as caught:
            run(parse_config({"reference": reference, "moving": moving, "output": str(out)}))
        message = str(caught.value)
        assert "\n" not in message and repr(str(odd)) in message, message
        assert "f_7.png" not in message  # the first odd file, not every one
        assert not out.exists()


def test_a_glob_matching_nothing_and_a_missing_listed_file_are_one_line_errors(sequence, tmp_path):
    left = [str(p) for p in sequence["left"]]
    missing = str(tmp_path / "gone_3.png")
    for reference, named, words in ((str(tmp_path / "nothing_*.png"), str(tmp_path / "nothing_*.png"), "no files"),
                                    (left[:3] + [missing] + left[4:], missing, "does not exist")):
        out = tmp_path / "out.zarr"
        with pytest.raises(InputError, match=words) as caught:
            run(parse_config({"reference": reference, "moving": sequence["glob"][1], "output": str(out)}))
        assert "\n" not in str(caught.value) and named in str(caught.value), str(caught.value)
        assert not out.exists()


def _luminance(rgb):
    x = rgb.astype(np.float64)
    return (0.2126 * x[..., 0] + 0.7152 * x[..., 1] + 0.0722 * x[..., 2]).astype(np.float32)


def test_colour_frames_are_read_as_their_luminance(tmp_path):
    frames = 6
    (a, b), (a2, b2) = (sample_pair((frames,) + SHAPE, "uint8", seed=s) for s in (7, 8))
    ra = np.ascontiguousarray(np.stack([a, np.flip(a2, axis=-1), 255 - a], axis=-1))
    rb = np.ascontiguousarray(np.stack([b, np.flip(b2, axis=-1), 255 - b], axis=-1))
    _write_frames(tmp_path / "frames", "ref", ra)
    _write_frames(tmp_path / "frames", "mov", rb)
    pattern = str(tmp_path / "frames" / "ref_*.png")
    info = inspect_input(pattern)
    assert (info.shape, info.dtype, info.channels) == ((frames,) + SHAPE, np.dtype(np.float32), "luminance")
    la, lb = _luminance(ra), _luminance(rb)
    np.testing.assert_array_equal(source_of(info)[1:4, 10:50, :], la[1:4, 10:50, :])
    _, got = _run(tmp_path / "out.zarr", pattern, str(tmp_path / "frames" / "mov_*.png"), chunks={"t": 4})
    assert_matches(got.values, _zarr_run(tmp_path, "zarr", la, lb, chunks={"t": 4}).values, 1e-6)
    assert_matches(got.values[::2], reference_ncc(la[::2], lb[::2], WINDOW))
    assert read_provenance(str(tmp_path / "out.zarr"))["inputs"]["moving"]["channels"] == "luminance"


def test_the_fingerprint_follows_each_frame_and_the_order(tmp_path):
    a, b = sample_pair((8,) + SHAPE, "uint8", seed=9)
    left = _write_frames(tmp_path / "frames", "left", a)
    _write_frames(tmp_path / "frames", "right", b)
    pattern, listed = str(tmp_path / "frames" / "left_*.png"), [str(p) for p in left]
    before = fingerprint(pattern)
    assert fingerprint(listed) == before  # the same files in the same order
    assert fingerprint(listed[::-1]) != before  # another order
    assert fingerprint(listed[:-1]) != before  # one frame fewer
    assert fingerprint(listed[:3] + [listed[4], listed[3]] + listed[5:]) != before  # two frames swapped
    out = tmp_path / "out.zarr"
    moving = str(tmp_path / "frames" / "right_*.png")
    summary, first = _run(out, pattern, moving)
    assert summary.pairs[0].action == "fresh"
    assert _run(out, pattern, moving)[0].pairs[0].action == "up to date"
    changed = a[5].copy()
    changed[20:60, 30:90] = 255 - changed[20:60, 30:90]
    iio.imwrite(left[5], changed)
    assert fingerprint(pattern) != before and fingerprint(listed) != before
    summary, second = _run(out, pattern, moving)
    assert summary.pairs[0].action != "up to date"
    np.testing.assert_array_equal(second.values[:5], first.values[:5])
    assert_matches(second.values[5], reference_ncc(changed, b[5], WINDOW))
    iio.imwrite(left[5], a[5])  # the same bytes again: the same fingerprint
    assert fingerprint(pattern) == before
    extra = tmp_path / "frames" / "left_8.png"  # a new file the glob matches
    iio.imwrite(extra, a[0])
    assert fingerprint(pattern) != before


def test_the_cli_runs_a_yaml_list_of_frame_paths(sequence, tmp_path):
    s = sequence
    frames = tmp_path / "shots"
    frames.mkdir()
    names = [f"shot-{chr(ord('a') + i)}.png" for i in range(6)]  # in no natural order: the list's order holds
    order = [3, 0, 5, 1, 4, 2]
    for name, i in zip(names, order):
        iio.imwrite(frames / name, s["a"][i])
        iio.imwrite(frames / f"m-{name}", s["b"][i])
    listed = sorted(names, key=lambda n: order[names.index(n)])  # frames 0, 1, ..., 5 of the stacks
    cfg = write_config(tmp_path / "run.yaml", reference=[f"shots/{n}" for n in listed],
                       moving=[f"shots/m-{n}" for n in listed], output="out.zarr", window=WINDOW, chunks={"t": 2})
    result = invoke_cli("run", str(cfg), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with xr.open_zarr(tmp_path / "out.zarr") as ds:
        got = ds["ncc"].values
    assert_matches(got, s["zarr"][:6], 1e-6)
    record = read_provenance(str(tmp_path / "out.zarr"))["inputs"]["reference"]
    assert (record["format"], record["files"]) == ("sequence", 6)
