"""How an output's values are stored: the one table of encodings, and encoding a block of values.

Every encoding reads back with plain xarray (``xarray.open_zarr``): float32 and float16 as they are (NaN for
missing), int16 through the CF attributes ``scale_factor`` and ``_FillValue`` that xarray decodes itself.
Only variables whose values lie in [-1, 1] take an encoding (the NCC map and the valid fraction); the extra
outputs' standard deviations, in the units of their input, stay float32.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

__all__ = ["ENCODINGS", "INT16_SCALE", "INT16_MISSING", "encoded_dtype", "array_layout", "encode", "encoding_of",
           "describe_encoding", "output_encoding"]

#: int16 stores round(value x INT16_SCALE): a step of 1 / 32767 (3.1e-5), so within 1.6e-5 of the value.
INT16_SCALE = 32767

#: The int16 value that stands for NaN (never a rounded value in [-1, 1]).
INT16_MISSING = -32768

#: Each ``output.encoding``: its stored dtype and the largest difference between a value read back and the value
#: computed (float16: half its spacing at 1, 2**-12).
ENCODINGS = {
    "float32": {"dtype": np.dtype("<f4"), "precision": 0.0},
    "float16": {"dtype": np.dtype("<f2"), "precision": 2.0 ** -12},
    "int16": {"dtype": np.dtype("<i2"), "precision": 0.5 / INT16_SCALE},
}

#: The variables an encoding applies to (values in [-1, 1]); others are stored as float32.
_BOUNDED = ("ncc", "valid_fraction")


def encoded_dtype(name: str, encoding: str) -> np.dtype:
    """The dtype variable ``name`` is stored in under ``encoding``."""
    return ENCODINGS[encoding]["dtype"] if name in _BOUNDED else ENCODINGS["float32"]["dtype"]


def array_layout(name: str, encoding: str, zarr_format: int) -> tuple[np.dtype, Any, dict[str, Any]]:
    """(dtype, zarr fill value, CF attributes) of variable ``name`` stored under ``encoding``.

    For int16 the fill value is the NaN sentinel, so a chunk never written reads as NaN too; xarray takes a
    format-2 array's ``_FillValue`` from its fill value, a format-3 array's from the attribute.
    """
    dtype = encoded_dtype(name, encoding)
    if dtype.kind == "f":
        return dtype, np.nan, {}
    attrs: dict[str, Any] = {"scale_factor": 1.0 / INT16_SCALE}
    if zarr_format == 3:
        attrs["_FillValue"] = INT16_MISSING
    return dtype, INT16_MISSING, attrs


def encode(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``values`` (float32, NCC-like or not) as stored in ``dtype``: the array itself for float32."""
    dtype = np.dtype(dtype)
    if values.dtype == dtype:  # float32 as computed, or counts
        return values
    if dtype.kind == "f":
        return values.astype(dtype)
    out = np.empty(values.shape, dtype)
    _to_int16(np.ascontiguousarray(values).reshape(-1), out.reshape(-1))
    return out


@numba.njit(nogil=True, cache=True)
def _to_int16(values, out):
    """round(value x 32767) (half to even, as numpy's rint), INT16_MISSING for NaN; |values| <= 1."""
    for i in range(values.size):
        v = values[i]
        # the product in float64: exact, so a value near a half step rounds to its nearest integer
        out[i] = INT16_MISSING if v != v else np.int16(np.rint(np.float64(v) * INT16_SCALE))


def encoding_of(dtype) -> str:
    """The ``output.encoding`` whose stored dtype is ``dtype``."""
    dtype = np.dtype(dtype)
    return next(name for name, spec in ENCODINGS.items() if spec["dtype"] == dtype.newbyteorder("<"))


def describe_encoding(dtype, attrs: dict[str, Any], compressors: list[str]) -> str:
    """One line for ``lncc inspect``: the encoding, its precision and the compressor(s)."""
    name = encoding_of(dtype)
    precision = ENCODINGS[name]["precision"]
    how = {"float32": "float32", "float16": f"float16 (values within {precision:.1e})",
           "int16": f"int16 x {INT16_SCALE} (scale_factor {attrs.get('scale_factor', 1 / INT16_SCALE):.6g}, "
                    f"NaN as {INT16_MISSING}; values within {precision:.1e})"}[name]
    return f"{how}, compressor {', '.join(compressors) or 'none'}"


def _codec_text(codec) -> str:
    """``zstd level 3``, ``blosc lz4 level 5``: a compressor as a user names it."""
    if hasattr(codec, "to_dict"):  # a zarr 3 codec
        spec = codec.to_dict()
        name, config = spec.get("name"), spec.get("configuration") or {}
    else:  # numcodecs (zarr 2)
        config = codec.get_config()
        name = config.get("id")
    level = config.get("level", config.get("clevel"))
    return " ".join(str(p) for p in (name, config.get("cname"), None if level is None else f"level {level}") if p)


def output_encoding(url: str, name: str = "ncc", storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """How an output's variable is stored: ``encoding``, ``dtype``, ``precision``, ``compressors`` and a
    ``line`` for people (see :func:`describe_encoding`)."""
    import zarr

    from .urls import join_url, store_kwargs

    array = zarr.open_array(store=join_url(url, name), mode="r", **store_kwargs(url, storage_options))
    compressors = [_codec_text(c) for c in (array.compressors or ())]
    dtype = np.dtype(array.dtype)
    attrs = dict(array.attrs)
    encoding = encoding_of(dtype)
    return {"encoding": encoding, "dtype": str(dtype), "precision": ENCODINGS[encoding]["precision"],
            "scale_factor": attrs.get("scale_factor"), "compressors": compressors,
            "line": describe_encoding(dtype, attrs, compressors)}
