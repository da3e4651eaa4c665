"""lncc's own chunk reader and its per-process cache of decoded chunks and chunk edges: every read equals
zarr's, and layouts it does not know go through zarr."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.io import inspect_input
from pipeline.io.readers.chunks import ChunkReader

_READ_LAYOUTS = [
    (2, None), (2, "zstd"), (2, "blosc"), (2, "lz4"),
    (3, None), (3, "zstd"), (3, "blosc"), (3, "gzip"),
]


def _stored_array(path, data, chunks, zarr_format, compressor, fill_value, drop=()):
    """A zarr array written by zarr itself, with some chunk files removed (they read as the fill value)."""
    from numcodecs import LZ4, Blosc, Zstd

    if compressor is None:
        kwargs = {"compressors": None}
    elif zarr_format == 2:
        kwargs = {"compressors": {"zstd": Zstd(level=1), "blosc": Blosc(cname="lz4", shuffle=Blosc.BITSHUFFLE),
                                  "lz4": LZ4()}[compressor]}
    else:
        from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

        kwargs = {"compressors": {"zstd": ZstdCodec(level=1), "blosc": BloscCodec(cname="lz4"),
                                  "gzip": GzipCodec(level=1)}[compressor]}
    array = zarr.create_array(store=str(path), shape=data.shape, chunks=chunks, dtype=data.dtype,
                              zarr_format=zarr_format, fill_value=fill_value, **kwargs)
    array[...] = data
    for coords in drop:
        (path / array.metadata.encode_chunk_key(coords)).unlink(missing_ok=True)  # zarr skips fill-only chunks
    return array


@settings(max_examples=40, deadline=None)
@given(data=st.data(), layout=st.sampled_from(_READ_LAYOUTS),
       dtype=st.sampled_from(["uint8", "<u2", ">u2", "int16", "<f4", ">f8", "bool"]))
def test_chunk_reader_equals_zarr(tmp_path_factory, data, layout, dtype):
    """Any region read by lncc's own chunk reader equals zarr's read: edge chunks, missing chunks, byte orders."""

    zarr_format, compressor = layout
    ndim = data.draw(st.integers(2, 3))
    shape = tuple(data.draw(st.integers(1, 23)) for _ in range(ndim))
    chunks = tuple(data.draw(st.integers(1, n + 3)) for n in shape)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    values = (rng.integers(0, 2, shape) if dtype == "bool" else rng.uniform(0, 200, shape)).astype(dtype)
    grid = [-(-n // c) for n, c in zip(shape, chunks)]
    every = list(np.ndindex(*grid))
    drop = data.draw(st.lists(st.sampled_from(every), max_size=3, unique=True))
    fill = None if (zarr_format == 2 and data.draw(st.booleans())) else (True if dtype == "bool" else 7)
    path = tmp_path_factory.mktemp("read") / "a.zarr"
    _stored_array(path, values, chunks, zarr_format, compressor, fill, drop)
    reader = ChunkReader.for_array(zarr.open_array(store=str(path), mode="r"), str(path))
    assert reader is not None
    lo = [data.draw(st.integers(0, n - 1)) for n in shape]
    hi = [data.draw(st.integers(a + 1, n)) for a, n in zip(lo, shape)]
    key = tuple(slice(a, b) for a, b in zip(lo, hi))
    expected = zarr.open_array(store=str(path), mode="r")[key]
    got = reader[key]
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), layout=st.sampled_from(_READ_LAYOUTS), dtype=st.sampled_from(["uint8", ">u2", "<f4"]))
def test_pair_reads_through_the_chunk_cache_equal_zarr(tmp_path_factory, data, layout, dtype):
    """A sequence of overlapping region reads through a pair reader whose process keeps decoded chunks and
    chunk edges (the limit from none to all chunks, any edge width) equals zarr's reads, missing chunks included;
    a new reader of the same paths after the files changed never sees the old run's chunks."""
    from pipeline.io import open_pair

    zarr_format, compressor = layout
    ndim = data.draw(st.integers(2, 3))
    shape = tuple(data.draw(st.integers(1, 23)) for _ in range(ndim))
    chunks = tuple(data.draw(st.integers(1, n + 3)) for n in shape)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    grid = [-(-n // c) for n, c in zip(shape, chunks)]
    root = tmp_path_factory.mktemp("cache")
    infos = []
    for name in ("ref", "mov"):
        drop = data.draw(st.lists(st.sampled_from(list(np.ndindex(*grid))), max_size=2, unique=True))
        _stored_array(root / f"{name}.zarr", rng.uniform(0, 200, shape).astype(dtype), chunks, zarr_format,
                      compressor, 7, drop)
        infos.append(inspect_input(str(root / f"{name}.zarr")))
    itemsize = np.dtype(dtype).itemsize
    limit = data.draw(st.sampled_from([1, itemsize * int(np.prod(chunks)), 2**20]), label="limit")
    halo = data.draw(st.integers(1, 6), label="halo")

    def check(pair):
        expected = np.stack([zarr.open_array(store=i.url, mode="r")[...] for i in infos])
        for _ in range(data.draw(st.integers(1, 6), label="reads")):
            lo = [data.draw(st.integers(0, n - 1)) for n in shape]
            hi = [data.draw(st.integers(a + 1, n)) for a, n in zip(lo, shape)]
            region = [slice(a, b) for a, b in zip(lo, hi)]
            out = np.full((2,) + tuple(b - a for a, b in zip(lo, hi)), 99, dtype=dtype)
            pair.read_into(region, out)
            np.testing.assert_array_equal(out, expected[(slice(None),) + tuple(region)])

    check(open_pair(*infos, halo=halo, cache_bytes=limit))
    for i, info in enumerate(infos):  # new values under the same paths: a new run must read them
        zarr.open_array(store=info.url, mode="r+")[...] = rng.uniform(0, 200, shape).astype(dtype) + i
    check(open_pair(*infos, halo=halo, cache_bytes=limit))


@pytest.mark.parametrize("limit", [1, 2**20])
def test_chunk_cache_serves_each_edge_of_a_chunk(tmp_path, monkeypatch, limit):
    """After one read of a whole chunk, a read inside any of its four 2-wide edges is served from the cache
    (no chunk decoded); a read of its middle decodes it again (edges only) or not (whole chunks kept)."""
    from pipeline import io as lio

    values = np.arange(2 * 30 * 30, dtype=np.uint16).reshape(2, 30, 30)
    infos = []
    for i, name in enumerate(("ref", "mov")):
        _stored_array(tmp_path / f"{name}.zarr", values[i], (10, 10), 3, "zstd", 0, [])
        infos.append(inspect_input(str(tmp_path / f"{name}.zarr")))
    pair = lio.open_pair(*infos, halo=2, cache_bytes=limit)
    decoded = []
    original = ChunkReader._chunk
    monkeypatch.setattr(ChunkReader, "_chunk", lambda self, coords: decoded.append(coords) or original(self, coords))

    def read(ys, xs):
        out = np.zeros((2, ys.stop - ys.start, xs.stop - xs.start), dtype=np.uint16)
        pair.read_into([ys, xs], out)
        np.testing.assert_array_equal(out, values[:, ys, xs])

    read(slice(10, 19), slice(11, 20))  # chunk (1, 1) in part: its edges kept, and the whole chunk if it fits
    assert decoded == [(1, 1), (1, 1)]
    decoded.clear()
    for ys, xs in [(slice(10, 12), slice(13, 17)), (slice(18, 20), slice(10, 20)),  # top, bottom rows
                   (slice(13, 18), slice(10, 12)), (slice(12, 17), slice(18, 20))]:  # left, right columns
        read(ys, xs)
    assert decoded == []
    read(slice(13, 16), slice(13, 16))
    assert decoded == ([(1, 1), (1, 1)] if limit == 1 else [])


def test_chunk_reader_declines_layouts_it_does_not_know(tmp_path):
    """Sharded, filtered or Fortran-ordered arrays go through zarr, and open_input still reads them right."""
    import numcodecs

    from pipeline.io import open_input

    values = np.arange(40 * 30, dtype=np.uint16).reshape(40, 30)
    sharded = zarr.create_array(store=str(tmp_path / "s.zarr"), shape=values.shape, chunks=(10, 10),
                                shards=(20, 30), dtype=values.dtype)
    filtered = zarr.create_array(store=str(tmp_path / "f.zarr"), shape=values.shape, chunks=(10, 10),
                                 dtype=values.dtype, zarr_format=2, filters=[numcodecs.Delta(dtype="u2")])
    fortran = zarr.create_array(store=str(tmp_path / "o.zarr"), shape=values.shape, chunks=(10, 10),
                                dtype=values.dtype, zarr_format=2, order="F")
    for array in (sharded, filtered, fortran):
        array[...] = values
        url = str(array.store_path.store.root)
        assert ChunkReader.for_array(zarr.open_array(store=url, mode="r"), url) is None
        lazy = open_input(inspect_input(url), (16, 16))
        np.testing.assert_array_equal(lazy.values, values)


def test_integer_and_open_ended_keys_read_as_numpy_does(tmp_path):
    """An integer drops its axis, negative integers count from the end, open slices reach the edges (dask's
    getter passes integers when a lazy input is indexed by frame)."""
    from pipeline.io import array_reader, write_array

    values = np.arange(4 * 30 * 20, dtype=np.uint16).reshape(4, 30, 20)
    reader = array_reader(write_array(str(tmp_path / "a.zarr"), values, chunks=(1, 16, 8)))
    for key in ((2,), (-1, slice(3, 29)), (1, slice(None), 5), (slice(1, 3), 0, slice(None, 7)), (slice(None),)):
        np.testing.assert_array_equal(reader[key], values[key], err_msg=str(key))
