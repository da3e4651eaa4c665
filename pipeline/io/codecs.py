"""The one codec table: zarr 3 codecs, their numcodecs twins, and the output ``compressor`` settings.

lncc encodes and decodes chunks itself for the layouts it knows (plain bytes, at most one compressor,
regular chunks, no sharding), so it needs, for each zarr 3 codec, the numcodecs codec that does the same
work; format 2 arrays carry numcodecs codecs already. Everything else goes through zarr.
"""

from __future__ import annotations

import numpy as np
import zarr
from numcodecs import Blosc, GZip, Zstd
from zarr.codecs import BloscCodec, BytesCodec, GzipCodec, ZstdCodec

__all__ = ["NO_COMPRESSION", "output_codec", "v3_layout", "v3_decoder", "direct_codec", "numcodecs_twin"]

#: The output ``compressor`` settings (``none``: no codec), per zarr format, given (level, item size).
_OUTPUT_CODECS = {
    "lz4": {3: lambda level, size: BloscCodec(cname="lz4", clevel=level or 5, shuffle="bitshuffle", typesize=size),
            2: lambda level, size: Blosc(cname="lz4", clevel=level or 5, shuffle=Blosc.BITSHUFFLE)},
    "zstd": {3: lambda level, size: ZstdCodec(level=level or 1), 2: lambda level, size: Zstd(level=level or 1)},
}

_BLOSC_SHUFFLE = {"noshuffle": Blosc.NOSHUFFLE, "shuffle": Blosc.SHUFFLE, "bitshuffle": Blosc.BITSHUFFLE}

#: Each zarr 3 bytes-to-bytes codec lncc reads (and, but gzip, writes) itself, and its numcodecs twin.
_TWINS = {
    BloscCodec: lambda c: Blosc(cname=c.cname.value, clevel=c.clevel, shuffle=_BLOSC_SHUFFLE[c.shuffle.value],
                                blocksize=c.blocksize),
    ZstdCodec: lambda c: Zstd(level=c.level, checksum=c.checksum),
    GzipCodec: lambda c: GZip(level=c.level),
}

#: The numcodecs codecs whose chunks lncc writes itself (format 2 arrays, and the twins of format 3 ones).
_WRITTEN = (Blosc, Zstd)

#: The dtypes whose chunks lncc writes itself (the output encodings').
_DIRECT_DTYPES = (np.dtype("float32"), np.dtype("float16"), np.dtype("int16"))

#: Marks an array stored without compression (raw little-endian bytes), where None means "not a known layout".
NO_COMPRESSION = object()


def output_codec(name: str, zarr_format: int, level: int | None = None, itemsize: int = 4):
    """The zarr codec of an output's ``compressor`` setting (``lz4``, ``zstd`` or ``none``: None) at ``level``
    (None: lz4 5, zstd 1), for values of ``itemsize`` bytes."""
    return None if name == "none" else _OUTPUT_CODECS[name][zarr_format](level, itemsize)


def numcodecs_twin(codec):
    """The numcodecs codec that encodes and decodes like the zarr 3 ``codec``; None if lncc knows none."""
    make = next((make for kind, make in _TWINS.items() if isinstance(codec, kind)), None)
    return None if make is None else make(codec)


def v3_layout(meta):
    """(the bytes-to-bytes codec or None, endian) of a v3 array stored as regular chunks of plain bytes with at
    most one compressor; None for any other layout (sharding, transposes, codec chains)."""
    if type(meta.chunk_grid).__name__ != "RegularChunkGrid":
        return None
    codecs = list(meta.codecs)
    if not codecs or not isinstance(codecs[0], BytesCodec) or len(codecs) > 2:
        return None
    return (codecs[1] if len(codecs) == 2 else None), getattr(codecs[0].endian, "value", "little")


def v3_decoder(meta):
    """(numcodecs decompressor or None, endian) for a v3 array of bytes + at most one known compressor, else None."""
    layout = v3_layout(meta)
    if layout is None:
        return None
    codec, endian = layout
    if codec is None:
        return None, endian
    twin = numcodecs_twin(codec)
    return None if twin is None else (twin, endian)


def direct_codec(array: zarr.Array):
    """The numcodecs codec that encodes ``array``'s chunks (or NO_COMPRESSION), or None if not a known layout."""
    meta = array.metadata
    if np.dtype(array.dtype) not in _DIRECT_DTYPES:
        return None
    if meta.zarr_format == 2:
        if meta.order != "C" or meta.filters or meta.dtype.to_native_dtype().byteorder == ">":
            return None
        if meta.compressor is None:
            return NO_COMPRESSION
        return meta.compressor if isinstance(meta.compressor, _WRITTEN) else None
    layout = v3_layout(meta)
    if layout is None or layout[1] != "little":
        return None
    if layout[0] is None:
        return NO_COMPRESSION
    twin = numcodecs_twin(layout[0])
    return twin if isinstance(twin, _WRITTEN) else None
