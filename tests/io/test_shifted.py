"""Tests of a stored moving image read through a shift (``pipeline.io.readers.shifted``).

Images are written to zarr stores on disk with ``pipeline.io.write_array`` and read back with lncc's readers;
the oracle is the in-memory ``shift_image`` of the same array (itself checked against the kernel formulas in
``tests/core/test_interpolation.py``), bit for bit: a region read from the store is that region of the shifted
whole image, whatever the chunks the reads cross.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import testing as ptesting
from pipeline.core.interpolation import shift_image, shifted_dtype
from pipeline.io import array_reader, inspect_input, open_shifted_pair, write_array
from pipeline.io.readers.shifted import ShiftedSource, shifted_pair

KINDS = ["linear", "cubic", "lanczos3"]
FRACTIONS = [0.0, 0.125, 0.5, 0.7, 0.9]


def one_shift(limit: int = 12):
    return st.builds(lambda n, f, sign: sign * min(limit, n + f), st.integers(0, limit), st.sampled_from(FRACTIONS),
                     st.sampled_from([-1.0, 1.0]))


@st.composite
def spans(draw, n):
    """[start, stop) of an axis of length n, often touching an edge (or both)."""
    start = draw(st.one_of(st.just(0), st.integers(0, n - 1)))
    stop = draw(st.one_of(st.just(n), st.integers(start + 1, n)))
    return slice(start, stop)


def same(a, b) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


def examples(n: int) -> int:
    """``n`` examples under the default hypothesis profile (40), scaled with the profile (thorough: 10x)."""
    return max(1, n * settings.default.max_examples // 40)


# --------------------------------------------------------------------------- stores on disk

#: name -> (shape, dtype, zarr chunks, nodata)
LAYOUTS = {
    "float32": ((37, 41), "float32", (8, 6), None),
    "uint16": ((30, 33), "uint16", (7, 16), 0),
    "uint8-v2": ((26, 29), "uint8", (5, 9), 3),
    "video": ((3, 23, 29), "float64", (2, 5, 7), -1.0),
}


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Each layout written to disk: (moving array, mask array, moving path, mask path, nodata)."""
    root = tmp_path_factory.mktemp("shifted")
    out = {}
    for name, (shape, dtype, chunks, nodata) in LAYOUTS.items():
        rng = np.random.default_rng(len(name))
        x = ptesting.cast_to(rng.uniform(0, 255, size=shape), dtype)
        if dtype == "uint8":
            x = (x % 6).astype(np.uint8)  # many pixels equal the nodata value
        if np.dtype(dtype).kind == "f":
            x[rng.random(shape) < 0.03] = np.nan
        if nodata is not None:
            x[rng.random(shape) < 0.03] = nodata
        mask = rng.random(shape) > 0.05
        dims = ("t", "y", "x") if len(shape) == 3 else ("y", "x")
        fmt = 2 if name.endswith("v2") else 3
        path = write_array(str(root / f"{name}.zarr"), x, dims=dims, chunks=chunks, zarr_format=fmt)
        mask_path = write_array(str(root / f"{name}-mask.zarr"), mask, dims=dims, chunks=chunks[::-1][-len(shape):],
                                zarr_format=fmt)
        out[name] = (x, mask, path, mask_path, nodata)
    return out


def expected(x, shifts, kind, nodata, mask, dtype=None):
    return shift_image(x, shifts, kind, nodata=nodata, valid=mask, dtype=dtype)


# --------------------------------------------------------------------------- ShiftedSource regions


@pytest.mark.parametrize("name", ["float32", "uint16", "uint8-v2"])
@settings(max_examples=examples(15))
@given(data=st.data(), kind=st.sampled_from(KINDS), shift=st.tuples(one_shift(), one_shift()),
       masked=st.booleans())
def test_any_region_read_through_the_shift_is_that_region_of_shift_image(stores, name, data, kind, shift, masked):
    x, mask, path, mask_path, nodata = stores[name]
    source = ShiftedSource(array_reader(path), shift, kind, nodata=nodata,
                           mask=array_reader(mask_path) if masked else None)
    assert source.shape == x.shape and source.dtype == shifted_dtype(x.dtype)
    whole = expected(x, shift, kind, nodata, mask if masked else None)
    for _ in range(3):
        ys, xs = data.draw(spans(x.shape[0])), data.draw(spans(x.shape[1]))
        assert same(source[ys, xs], whole[ys, xs]), (ys, xs)
        # read_into a strided view of a larger buffer
        buffer = np.zeros((ys.stop - ys.start, 2 * (xs.stop - xs.start)), dtype=source.dtype)
        source.read_into([ys, xs], buffer[:, ::2])
        assert same(buffer[:, ::2], whole[ys, xs])


@settings(max_examples=examples(12))
@given(data=st.data(), kind=st.sampled_from(KINDS), per_frame=st.booleans())
def test_frames_are_read_through_their_own_shifts(stores, data, kind, per_frame):
    x, mask, path, mask_path, nodata = stores["video"]
    shifts = np.array(data.draw(st.lists(st.tuples(one_shift(8), one_shift(8)), min_size=3, max_size=3)))
    shift = shifts if per_frame else shifts[0]
    source = ShiftedSource(array_reader(path), shift, kind, nodata=nodata, mask=array_reader(mask_path))
    whole = expected(x, shift, kind, nodata, mask)
    for t in range(3):  # the per-frame oracle: each frame by its own shift
        assert same(whole[t], expected(x[t], shifts[t] if per_frame else shifts[0], kind, nodata, mask[t]))
    for _ in range(3):
        ts, ys, xs = data.draw(spans(3)), data.draw(spans(x.shape[1])), data.draw(spans(x.shape[2]))
        assert same(source[ts, ys, xs], whole[ts, ys, xs]), (ts, ys, xs)


def test_a_numpy_source_and_mask_read_like_stored_ones(stores):
    x, mask, path, mask_path, nodata = stores["float32"]
    stored = ShiftedSource(array_reader(path), (2.5, -1.25), "cubic", nodata=nodata, mask=array_reader(mask_path))
    in_memory = ShiftedSource(x, (2.5, -1.25), "cubic", nodata=nodata, mask=mask)
    assert same(stored[5:30, 0:41], in_memory[5:30, 0:41])
    assert same(in_memory[0:37, 0:41], expected(x, (2.5, -1.25), "cubic", nodata, mask))


def test_a_float32_result_may_be_asked_of_an_integer_image(stores):
    x, mask, path, _, nodata = stores["uint16"]
    source = ShiftedSource(array_reader(path), (0.5, 3.0), "lanczos3", nodata=nodata, dtype=np.float32)
    assert source.dtype == np.float32
    assert same(source[3:20, 10:33], expected(x, (0.5, 3.0), "lanczos3", nodata, None, np.float32)[3:20, 10:33])


def test_a_shift_beyond_the_image_reads_all_missing(stores):
    x, _, path, _, _ = stores["uint16"]
    source = ShiftedSource(array_reader(path), (-40.5, 0.0), "cubic")
    got = source[0:30, 0:33]
    assert same(got, expected(x, (-40.5, 0.0), "cubic", None, None))
    assert np.isnan(got).all()  # a 16-bit image is shifted into float32, NaN where missing


@pytest.mark.parametrize("layout", ["big-endian-v2", "big-endian-u2-v2", "float16", "int64", "sharded"])
def test_stored_dtypes_and_layouts_read_by_value(tmp_path, layout):
    """Big-endian and half-precision chunks, wide integers, and a sharded array (read through zarr, not lncc's
    chunk reader) all read as shift_image of the values; so does a pickled copy."""
    import zarr

    x = np.random.default_rng(0).uniform(0, 255, size=(30, 33))
    path = str(tmp_path / "m.zarr")
    if layout == "sharded":
        x = x.astype(np.float32)
        zarr.create_array(store=path, shape=x.shape, chunks=(5, 5), shards=(10, 15), dtype=x.dtype)[...] = x
    else:
        x = {"big-endian-v2": x.astype(">f4"), "big-endian-u2-v2": (x * 200).astype(">u2"),
             "float16": x.astype(np.float16), "int64": (x * 1000).astype(np.int64)}[layout]
        write_array(path, x, chunks=(7, 8), zarr_format=2 if layout.endswith("v2") else 3)
    source = ShiftedSource(array_reader(path), (1.5, -2.25), "cubic")
    whole = expected(x, (1.5, -2.25), "cubic", None, None)
    assert same(source[0:30, 0:33], whole)
    assert same(pickle.loads(pickle.dumps(source))[2:20, 5:33], whole[2:20, 5:33])


@pytest.mark.parametrize("name", ["float32", "video"])
def test_a_pickled_source_reads_the_same_values(stores, name):
    """Workers receive the source pickled: the copy reopens the stores and reads the same values."""
    x, mask, path, mask_path, nodata = stores[name]
    shifts = (1.5, -2.125) if x.ndim == 2 else [[1.5, -2.125], [0.0, 3.0], [-4.0, 0.5]]
    source = ShiftedSource(array_reader(path), shifts, "lanczos3", nodata=nodata, mask=array_reader(mask_path))
    region = tuple(slice(0, n) for n in x.shape)
    before = source[region]
    copy = pickle.loads(pickle.dumps(source))
    assert same(copy[region], before)
    assert same(before, expected(x, shifts, "lanczos3", nodata, mask))


# --------------------------------------------------------------------------- the stored pair


@pytest.fixture(scope="module")
def pair_stores(tmp_path_factory):
    """Reference and moving images of a few dtypes on disk: name -> (reference, moving, mask, paths)."""
    root = tmp_path_factory.mktemp("pairs")
    out = {}
    for name, dtype_ref, dtype_mov, shape, chunks in [("u8", "uint8", "uint8", (40, 45), (9, 10)),
                                                      ("mixed", "uint8", "float32", (40, 45), (16, 7)),
                                                      ("video", "uint16", "uint16", (2, 30, 28), (1, 8, 8))]:
        ref, mov = ptesting.sample_crop(shape, "uint8", seed=len(name))
        ref, mov = ptesting.cast_to(ref, dtype_ref), ptesting.cast_to(mov, dtype_mov)
        mask = np.random.default_rng(1).random(shape) > 0.1
        dims = ("t", "y", "x") if len(shape) == 3 else ("y", "x")
        paths = [write_array(str(root / f"{name}-{part}.zarr"), array, dims=dims, chunks=chunks)
                 for part, array in (("ref", ref), ("mov", mov), ("mask", mask))]
        out[name] = (ref, mov, mask, paths)
    return out


@pytest.mark.parametrize("name", ["u8", "mixed", "video"])
@settings(max_examples=examples(8))
@given(data=st.data(), kind=st.sampled_from(KINDS), masked=st.booleans())
def test_the_stored_pair_reads_the_reference_and_the_shifted_moving_image(pair_stores, name, data, kind, masked):
    """``read_into`` fills out[0] with the reference in the pair's dtype and out[1] with the shifted moving
    image; reads through the shared chunk cache (halo and cache_bytes) give the same values again."""
    ref, mov, mask, (ref_path, mov_path, mask_path) = pair_stores[name]
    frames = ref.shape[0] if ref.ndim == 3 else None
    shifts = np.array(data.draw(st.lists(st.tuples(one_shift(9), one_shift(9)), min_size=frames or 1,
                                         max_size=frames or 1)))
    shifts = shifts if frames else shifts[0]
    nodata = int(mov.flat[0]) if name != "mixed" else None
    pair = open_shifted_pair(inspect_input(ref_path), inspect_input(mov_path), shifts, kind, nodata=nodata,
                             mask=inspect_input(mask_path) if masked else None, halo=3, cache_bytes=2**20)
    dtype = shifted_dtype(mov.dtype, ref.dtype)
    assert pair.dtypes == (ref.dtype, dtype) and pair.shape == (2,) + ref.shape
    assert dtype == (np.int32 if name == "u8" else np.float32)  # fixed point for 8-bit images only
    moved = expected(mov, shifts, kind, nodata, mask if masked else None, dtype)
    for _ in range(4):
        region = [data.draw(spans(n)) for n in ref.shape]
        out = np.empty((2,) + tuple(r.stop - r.start for r in region), dtype=pair.dtype)
        pair.read_into(region, out)
        assert same(out[0], ref[tuple(region)].astype(dtype)), region
        assert same(out[1], moved[tuple(region)]), region
    copy = pickle.loads(pickle.dumps(pair))
    out = np.empty((2,) + ref.shape, dtype=pair.dtype)
    copy.read_into([slice(0, n) for n in ref.shape], out)
    assert same(out[1], moved)


def test_a_float_pair_keeps_the_reference_in_its_own_dtype(tmp_path):
    """The shifted moving image is float32; the reference is read as it is stored (float64 here, not cast)."""
    ref, mov = ptesting.sample_crop((25, 27), "float64", seed=3)
    paths = [write_array(str(tmp_path / f"{k}.zarr"), a, chunks=(6, 6)) for k, a in (("r", ref), ("m", mov))]
    pair = open_shifted_pair(*(inspect_input(p) for p in paths), (0.5, -0.5), "cubic")
    assert pair.dtypes == (np.float64, np.float32)
    planes = [np.empty((25, 27), dtype=d) for d in pair.dtypes]
    pair.read_into([slice(0, 25), slice(0, 27)], planes)
    assert same(planes[0], ref)
    assert same(planes[1], shift_image(mov, (0.5, -0.5), "cubic"))


def test_shifted_pair_of_readers_tokenizes_by_its_shift(stores):
    """Two pairs differing only in their shift are different dask inputs (else one would be reused)."""
    import dask.base

    _, _, path, _, _ = stores["float32"]
    a = shifted_pair(array_reader(path), array_reader(path), (0.5, 0.0), "cubic", token="x")
    b = shifted_pair(array_reader(path), array_reader(path), (0.5, 0.25), "cubic", token="x")
    c = shifted_pair(array_reader(path), array_reader(path), (0.5, 0.0), "linear", token="x")
    assert len({dask.base.tokenize(p) for p in (a, b, c)}) == 3
    assert dask.base.tokenize(a) == dask.base.tokenize(
        shifted_pair(array_reader(path), array_reader(path), (0.5, 0.0), "cubic", token="x"))


def test_pairs_that_differ_only_in_their_mask_tokenize_apart(stores):
    import dask.base

    _, _, path, mask_path, _ = stores["float32"]
    infos = [inspect_input(p) for p in (path, path, mask_path)]
    masked = open_shifted_pair(infos[0], infos[1], (0.5, 0.0), "cubic", mask=infos[2])
    unmasked = open_shifted_pair(infos[0], infos[1], (0.5, 0.0), "cubic")
    assert dask.base.tokenize(masked.sources[1]) != dask.base.tokenize(unmasked.sources[1])  # the sources differ
    assert dask.base.tokenize(masked) != dask.base.tokenize(unmasked)
