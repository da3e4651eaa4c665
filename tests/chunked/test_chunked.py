"""Tests of the chunked (dask) and labelled (xarray) paths of ``pipeline.local_ncc``.

The oracle is the in-memory numpy path, itself checked against the reference in
``tests/core/test_kernel.py``.
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import InputError, local_ncc
from pipeline import testing as ptesting
from pipeline.core.variables import OUTPUT_ATTRS
from support import assert_matches

DTYPES = ["uint8", "uint16", "int16", "float32", "float64"]
BOUNDARIES = ["reflect", "nearest", "constant", "nan"]


# --------------------------------------------------------------------------- helpers


def _forbidden_scheduler(*args, **kwargs):
    raise RuntimeError("a dask graph was computed while only being built")


@st.composite
def partitions(draw, n):
    """An arbitrary partition of an axis of length n (size-1 chunks, uneven last chunk, ...)."""
    style = draw(st.sampled_from(["cuts", "cuts", "uniform", "whole"]))
    if n == 1 or style == "whole":
        return (n,)
    if style == "uniform":  # dask-style regular chunks with a possibly short last one
        size = draw(st.integers(max(1, n // 5), n))
        return (size,) * (n // size) + ((n % size,) if n % size else ())
    cuts = set(draw(st.sets(st.integers(1, n - 1), max_size=4)))
    if cuts and draw(st.booleans()):  # force a chunk of size 1
        c = min(cuts)
        if c + 1 < n:
            cuts.add(c + 1)
    points = [0, *sorted(cuts), n]
    return tuple(b - a for a, b in zip(points[:-1], points[1:]))


@st.composite
def chunked_cases(draw, dtype):
    """(a, b, window, boundary, flat, chunks_a, chunks_b) of ``dtype``, shapes 5..60, optional t axis."""
    h = draw(st.integers(5, 60))
    w = draw(st.integers(5, 60))
    t = draw(st.one_of(st.none(), st.integers(1, 3)))
    shape = (h, w) if t is None else (t, h, w)
    window = draw(st.sampled_from(list(range(3, min(h, w, 15) + 1, 2))))
    boundary = draw(st.sampled_from(BOUNDARIES))
    flat = draw(st.sampled_from([0.0, np.nan]))
    seed = draw(st.integers(0, 2**31 - 1))
    source = draw(st.sampled_from(["textured", "sample", "mixed"]))
    levels = draw(st.integers(2, 6))
    ref, mov = ptesting.sample_crop(shape, dtype, seed)
    if source == "textured":
        a, b = (ptesting.textured(shape, dtype, seed, levels=levels),
                ptesting.textured(shape, dtype, seed + 1, levels=levels))
    elif source == "sample":
        a, b = ref, mov
    else:
        a, b = ptesting.textured(shape, dtype, seed, levels=levels), mov
    chunks_a = tuple(draw(partitions(n)) for n in shape)
    same = draw(st.booleans())
    chunks_b = chunks_a if same else tuple(draw(partitions(n)) for n in shape)
    return a, b, window, boundary, flat, chunks_a, chunks_b


# ----------------------------------------------------------- agreement with numpy


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=max(1, settings.default.max_examples // 2))  # x5 dtypes
@given(data=st.data())
def test_dask_equals_numpy_for_any_chunking(dtype, data):
    """Computed dask result equals the numpy result (<= 1e-6, same NaN mask) for arbitrary chunkings."""
    a, b, window, boundary, flat, chunks_a, chunks_b = data.draw(chunked_cases(dtype))
    ref = da.from_array(a, chunks=chunks_a)
    mov = da.from_array(b, chunks=chunks_b)
    result = local_ncc(ref, mov, window, boundary=boundary, flat=flat)
    assert isinstance(result, da.Array)
    assert result.dtype == np.float32 and result.shape == a.shape
    r = window // 2
    if all(c >= r for axis in ref.chunks[-2:] for c in axis):
        assert result.chunks == ref.chunks
    else:  # short y/x chunks are merged: still a partition, every chunk at least r long
        assert result.chunks[:-2] == ref.chunks[:-2]
        for axis, n in zip(result.chunks[-2:], a.shape[-2:]):
            assert sum(axis) == n and min(axis) >= r
    got = result.compute(scheduler="synchronous")
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    assert_matches(got, local_ncc(a, b, window, boundary=boundary, flat=flat))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_tiny_chunks_smaller_than_radius(dtype, boundary):
    """Chunks of size 1 and 2 next to big ones (window 11, r=5) give the numpy result."""
    a, b = ptesting.sample_crop((2, 33, 41), dtype, seed=12)
    chunks = ((1, 1), (1, 2, 1, 20, 2, 7), (2, 1, 1, 30, 1, 6))
    result = local_ncc(da.from_array(a, chunks=chunks), da.from_array(b, chunks=((2,), (33,), (41,))), 11,
                       boundary=boundary, flat=np.nan)
    assert_matches(result.compute(), local_ncc(a, b, 11, boundary=boundary, flat=np.nan))


def test_numpy_and_dask_inputs_can_be_mixed():
    """A numpy reference with a dask moving image (and vice versa) gives a dask result equal to numpy."""
    a, b = ptesting.sample_crop((30, 40), "uint8", seed=4)
    expected = local_ncc(a, b, 5)
    db = da.from_array(b, chunks=(7, 11))
    for ref, mov in ((a, db), (da.from_array(a, chunks=(10, 8)), b)):
        result = local_ncc(ref, mov, 5)
        assert isinstance(result, da.Array) and result.dtype == np.float32
        assert_matches(result.compute(), expected)
    assert local_ncc(da.from_array(a, chunks=(10, 8)), b, 5).chunks == ((10, 10, 10), (8, 8, 8, 8, 8))


# -------------------------------------------------------------------------- laziness


def test_building_the_graph_computes_nothing():
    """local_ncc on dask inputs builds the graph without running any scheduler."""
    a, b = ptesting.sample_crop((2, 40, 50), "uint16", seed=1)
    ref = da.from_array(a, chunks=(1, (1, 13, 26), (20, 2, 28)))  # needs merging of short chunks
    mov = da.from_array(b, chunks=(2, 7, 9))  # needs rechunking to ref's chunks
    with dask.config.set(scheduler=_forbidden_scheduler):
        result = local_ncc(ref, mov, 7, boundary="nan", flat=np.nan)
        with pytest.raises(RuntimeError, match="only being built"):  # the guard is really active
            result.compute()
    assert_matches(result.compute(), local_ncc(a, b, 7, boundary="nan", flat=np.nan))


def test_inputs_whose_blocks_fail_are_not_touched_while_building():
    """Inputs whose blocks raise when computed still give a graph; computing it then raises."""

    def explode(block):
        raise ZeroDivisionError("input block was read")

    ones = da.ones((3, 24, 30), dtype=np.float32, chunks=(1, 12, 15))
    ref = ones.map_blocks(explode, dtype=np.float32)
    result = local_ncc(ref, ones, 5)
    assert isinstance(result, da.Array) and result.shape == (3, 24, 30)
    with pytest.raises(ZeroDivisionError, match="input block was read"):
        result.compute(scheduler="synchronous")


# ----------------------------------------------------------------------------- chunks


@pytest.mark.parametrize("chunks", [
    ((10, 10, 10, 10), (25, 25)),
    ((16, 16, 8), (7, 7, 7, 7, 7, 7, 8)),
    ((3, 37), (3, 3, 44)),
    ((40,), (50,)),
    ((1, 2), (13, 14, 13), (17, 17, 16)),
])
def test_output_chunks_equal_input_chunks_when_at_least_radius(chunks):
    """With every y/x chunk >= radius (3), the output has exactly the reference's chunks."""
    shape = tuple(sum(c) for c in chunks)
    a, b = ptesting.sample_crop(shape, "float32", seed=3)
    result = local_ncc(da.from_array(a, chunks=chunks), da.from_array(b, chunks=-1), 7)
    assert isinstance(result, da.Array) and result.dtype == np.float32
    assert result.chunks == chunks
    got = result.compute()
    assert got.dtype == np.float32
    assert_matches(got, local_ncc(a, b, 7))


def test_output_chunks_merge_chunks_shorter_than_radius():
    """Chunks shorter than the radius are merged: a partition of the axis with every chunk >= r."""
    a, b = ptesting.sample_crop((40, 50), "uint8", seed=8)
    chunks = ((1, 1, 1, 30, 2, 5), (20, 1, 29))
    result = local_ncc(da.from_array(a, chunks=chunks), da.from_array(b, chunks=chunks), 9)
    for axis, n in zip(result.chunks, a.shape):
        assert sum(axis) == n and min(axis) >= 4
    assert len(result.chunks[0]) < len(chunks[0])
    assert_matches(result.compute(), local_ncc(a, b, 9))


# ------------------------------------------------------------------------- schedulers


def test_threads_and_synchronous_schedulers_agree():
    """The same graph computed with the threads and the synchronous schedulers gives identical arrays."""
    a, b = ptesting.sample_crop((3, 50, 60), "float32", seed=2)
    result = local_ncc(da.from_array(a, chunks=(1, 17, 23)), da.from_array(b, chunks=(2, 25, 9)), 9,
                       boundary="nan", flat=np.nan)
    threaded = result.compute(scheduler="threads")
    synchronous = result.compute(scheduler="synchronous")
    np.testing.assert_array_equal(threaded, synchronous)
    assert_matches(threaded, local_ncc(a, b, 9, boundary="nan", flat=np.nan))


# ---------------------------------------------------------------------------- xarray


def _video_pair():
    a, b = ptesting.sample_crop((3, 32, 40), "uint16", seed=5)
    coords = {
        "t": np.array(["2024-01-01", "2024-01-02", "2024-01-03"], dtype="datetime64[ns]"),
        "y": np.arange(32) * 0.5,
        "x": 100.0 + np.arange(40) * 2.0,
        "frame_label": ("t", ["a", "b", "c"]),
        "sensor": "cam-1",
    }
    attrs = {"units": "DN", "source": "unit-test", "scale": 2.5}
    ref = xr.DataArray(a, dims=("t", "y", "x"), coords=coords, attrs=attrs, name="reference")
    mov = xr.DataArray(b, dims=("t", "y", "x"), coords=coords, attrs={"units": "other"}, name="moving")
    return ref, mov


def _assert_same_labels(result, ref):
    assert isinstance(result, xr.DataArray)
    assert result.name == "ncc"
    assert result.dims == ref.dims
    assert set(result.coords) == set(ref.coords)
    for name in ref.coords:
        xr.testing.assert_identical(result.coords[name].variable, ref.coords[name].variable)
    assert result.attrs == OUTPUT_ATTRS["ncc"]  # its own attrs: the reference's (units: DN) describe the image


def test_xarray_video_keeps_dims_coords_and_attrs():
    """A (t, y, x) DataArray gives a DataArray 'ncc' with the same dims and coords, its own attrs, numpy values."""
    ref, mov = _video_pair()
    result = local_ncc(ref, mov, 7, boundary="nan", flat=np.nan)
    _assert_same_labels(result, ref)
    assert isinstance(result.data, np.ndarray) and result.dtype == np.float32
    assert_matches(result.values, local_ncc(ref.values, mov.values, 7, boundary="nan", flat=np.nan))
    result.attrs["units"] = "changed"
    assert ref.attrs["units"] == "DN"  # attrs are copied, not shared


def test_xarray_lat_lon_with_plain_numpy_moving():
    """A 2-D (lat, lon) DataArray with a numpy moving image keeps its labels."""
    rng = np.random.default_rng(0)
    a = rng.normal(280.0, 5.0, (25, 36)).astype(np.float32)
    b = (0.5 * a + rng.normal(0.0, 2.0, a.shape)).astype(np.float32)
    ref = xr.DataArray(a, dims=("lat", "lon"),
                       coords={"lat": np.linspace(-60, 60, 25), "lon": np.linspace(0, 350, 36)},
                       attrs={"long_name": "temperature"})
    result = local_ncc(ref, b, 5, boundary="reflect")
    _assert_same_labels(result, ref)
    assert_matches(result.values, local_ncc(a, b, 5))


def test_dask_backed_xarray_stays_lazy():
    """A dask-backed DataArray gives a lazy dask-backed 'ncc' DataArray with the reference's chunks."""
    ref, mov = _video_pair()
    ref_lazy = ref.chunk({"t": 1, "y": 16, "x": 15})
    mov_lazy = mov.chunk({"x": 10})
    with dask.config.set(scheduler=_forbidden_scheduler):
        result = local_ncc(ref_lazy, mov_lazy, 7)
        assert isinstance(result.data, da.Array)
        assert result.chunks == ref_lazy.chunks
        with pytest.raises(RuntimeError, match="only being built"):
            result.compute()
    _assert_same_labels(result, ref)  # outside: chunked non-index coords are dask-backed too
    assert_matches(result.compute().values, local_ncc(ref.values, mov.values, 7))


def test_xarray_dims_mismatch_raises_input_error():
    """DataArrays with different dims are refused with InputError."""
    ref, mov = _video_pair()
    with pytest.raises(InputError, match="same dims"):
        local_ncc(ref, mov.rename({"t": "time"}), 7)


# ------------------------------------------------------------------------ bad inputs


@pytest.mark.parametrize("ref,mov,window", [
    pytest.param(da.zeros((20, 20), chunks=5), da.zeros((20, 21), chunks=5), 3, id="shape-mismatch"),
    pytest.param(da.zeros((20, 20), chunks=5), da.zeros((20, 20), chunks=5), 6, id="even-window"),
    pytest.param(da.zeros((20, 20), chunks=5), da.zeros((20, 20), chunks=5), 21, id="window-too-large"),
    pytest.param(da.zeros((20, 20), dtype=bool, chunks=5), da.zeros((20, 20), chunks=5), 3, id="bool"),
    pytest.param(da.zeros((20, 20), dtype=complex, chunks=5), da.zeros((20, 20), chunks=5), 3, id="complex"),
    pytest.param(da.zeros((2, 2, 20, 20), chunks=5), da.zeros((2, 2, 20, 20), chunks=5), 3, id="4-d"),
    pytest.param(da.zeros((0, 20), chunks=5), da.zeros((0, 20), chunks=5), 3, id="empty"),
])
def test_bad_dask_input_raises_input_error_without_computing(ref, mov, window):
    """Invalid dask inputs raise InputError while building, before anything is computed."""
    with dask.config.set(scheduler=_forbidden_scheduler):
        with pytest.raises(InputError):
            local_ncc(ref, mov, window)


# --------------------------------------------------------------------------- blocks written by a sink


class _Collect:
    """A sink that copies each block into one in-memory array (the values buffer is reused)."""

    def __init__(self, shape):
        self.out = np.full(shape, -7.0, dtype=np.float32)
        self.indices = []

    def __call__(self, values, region, index):
        self.out[(slice(None),) * (self.out.ndim - len(region)) + region] = values
        self.indices.append(index)


@settings(max_examples=30)
@given(data=st.data(), boundary=st.sampled_from(BOUNDARIES), extras=st.booleans(), video=st.booleans(),
       nodata=st.sampled_from([None, 0]), stacked=st.booleans(), dtype=st.sampled_from(["uint8", "float32"]))
def test_sink_blocks_equal_in_memory(data, boundary, extras, video, nodata, stacked, dtype):
    """Every block a run's sink receives, put in its region, rebuilds the in-memory result exactly, whether the
    images come as two arrays or stacked in one (nodata and NaN then found inside each padded block)."""
    from pipeline.chunked.entry import local_ncc_into, local_ncc_pair_into

    h = data.draw(st.integers(3, 40), label="h")
    w = data.draw(st.integers(3, 40), label="w")
    window = data.draw(st.sampled_from([k for k in (3, 5, 7, 9) if k <= min(h, w)]), label="window")
    shape = ((2,) if video else ()) + (h, w)
    ref, mov = ptesting.sample_pair(shape, dtype, seed=h * 41 + w)
    if dtype == "float32":  # NaN holes, found per block in the stacked form
        ref[..., h // 2, : w // 3] = np.nan
        mov[..., : h // 3, w // 2] = np.inf
    chunks = ((1,) if video else ()) + (data.draw(partitions(h), label="ychunks"),
                                        data.draw(partitions(w), label="xchunks"))
    options = dict(boundary=boundary, nodata=nodata, extras=extras)
    expected = local_ncc(ref, mov, window, **options)
    expected = np.stack([expected[k] for k in expected]) if extras else expected
    sink = _Collect(expected.shape)
    if stacked:
        marks = local_ncc_pair_into(sink, np.stack([ref, mov]), window, chunks=chunks, **options)
    else:
        marks = local_ncc_into(sink, da.from_array(ref, chunks=chunks), da.from_array(mov, chunks=chunks), window,
                               **options)
    assert marks.compute(scheduler="threads").all()
    assert len(sink.indices) == len(set(sink.indices)) == np.prod(marks.numblocks)
    assert_matches(sink.out, expected)


class _RecordingReader:
    """A pair reader (as io.open_pair's) over an in-memory (2, ...) array that records the regions it reads."""

    def __init__(self, pair):
        self.pair, self.shape, self.dtype, self.reads = pair, pair.shape, pair.dtype, []

    def read_into(self, region, out):
        self.reads.append(tuple((r.start, r.stop) for r in region))
        out[...] = self.pair[(slice(None),) + tuple(region)]


def test_stored_pair_graph_has_one_task_per_block_and_reads_each_block_once():
    """A pair read by its own tasks: one task per block (no halo or concatenation tasks), each reading one
    padded region of both images; its blocks equal the in-memory result."""
    from pipeline.chunked.entry import local_ncc_pair_into

    ref, mov = ptesting.sample_pair((50, 70), "uint8", seed=5)
    reader = _RecordingReader(np.stack([ref, mov]))
    sink = _Collect((50, 70))
    marks = local_ncc_pair_into(sink, reader, 7, chunks=(20, 30))
    assert marks.numblocks == (3, 3)
    assert len(dict(marks.__dask_graph__())) == 9
    assert marks.compute(scheduler="threads").all()
    reads = reader.reads
    assert len(reads) == 9
    assert ((0, 23), (0, 33)) in reads and ((37, 50), (57, 70)) in reads  # halos clipped at the image edges
    assert_matches(sink.out, local_ncc(ref, mov, 7))
