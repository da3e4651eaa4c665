"""The Python entry point: local NCC of numpy, dask or xarray inputs."""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from .errors import InputError
from .graph import EXTRA_NAMES, OUTPUT_ATTRS, local_ncc_dask, local_ncc_read_sink, local_ncc_sink
from .kernel import invalid_mask, local_ncc_numpy
from .validate import check_pair

__all__ = ["local_ncc", "local_ncc_into", "local_ncc_pair_into"]


def local_ncc(
    reference: Any,
    moving: Any,
    window: int = 7,
    *,
    boundary: str = "reflect",
    flat: float = 0.0,
    nodata: float | tuple[float | None, float | None] | None = None,
    reference_mask: Any = None,
    moving_mask: Any = None,
    min_valid: float = 0.5,
    extras: bool = False,
) -> Any:
    """Per-pixel local normalized cross-correlation of two images.

    For each pixel, the signed Pearson correlation of the two ``window x window``
    windows centred there: ``mean((p1 - m1) (p2 - m2)) / (std(p1) std(p2))`` with
    population standard deviations, over the pixels valid in both images.

    Parameters
    ----------
    reference, moving : numpy.ndarray, dask.array.Array or xarray.DataArray
        Images of the same shape, 2-D ``(y, x)`` or 3-D ``(t, y, x)``; any real
        integer or float dtype. For 3-D inputs the window spans the last two axes
        and each frame is independent.
    window : int, default 7
        Odd side length of the square window, >= 3 and at most the image size.
    boundary : {"reflect", "nearest", "constant", "nan"}, default "reflect"
        How windows that leave the image are filled: ``reflect`` mirrors about
        the edge (scipy's ``reflect``: d c b a | a b c d), ``nearest`` repeats the
        edge pixel, ``constant`` pads with zeros, ``nan`` returns NaN wherever the
        window leaves the image.
    flat : float, default 0.0
        Value where a window is flat (all its valid values equal) in either
        image, so the correlation is undefined. May be ``numpy.nan``.
    nodata : float or (float, float), optional
        Value marking missing pixels, for both images or per image
        ``(reference, moving)``. NaN and +-Inf in float images are always nodata.
    reference_mask, moving_mask : array of bool, optional
        Same shape as the images, True where a pixel is valid.
    min_valid : float, default 0.5
        Fraction of a window that must be valid in both images; below it the
        output is NaN.
    extras : bool, default False
        Also return the valid fraction and the local (population) std of each
        image, so "flat", "masked" and "dissimilar" can be told apart.

    Returns
    -------
    Same kind as ``reference``
        float32 NCC in [-1, 1]. An xarray input gives a DataArray named ``ncc``
        with the reference's dims and coords and its own attrs (a long name and
        ``units: "1"``; see :data:`pipeline.graph.OUTPUT_ATTRS`), not the
        reference's, which describe the image; a dask input gives a lazy
        dask array with the reference's chunks (y/x chunks shorter than the window
        radius are merged). With ``extras``: a dict of arrays (an
        ``xarray.Dataset`` for xarray inputs) named ``ncc``, ``valid_fraction``,
        ``std_reference`` and ``std_moving``.

    Raises
    ------
    TypeError
        If ``reference`` or ``moving`` is not an array (e.g. a list).
    InputError
        On mismatched shapes or dims, an unsupported dtype, a bad window or option.

    Examples
    --------
    >>> import numpy as np
    >>> from pipeline import local_ncc
    >>> rng = np.random.default_rng(0)
    >>> a = rng.random((64, 64))
    >>> bool(np.allclose(local_ncc(a, 2 * a + 1, 5), 1.0))
    True
    """
    _check_array(reference, "reference")
    _check_array(moving, "moving")
    options = dict(boundary=boundary, flat=flat, nodata=nodata, min_valid=min_valid, extras=extras)
    if isinstance(reference, xr.DataArray):
        moving_dims = moving.dims if isinstance(moving, xr.DataArray) else None
        check_pair(reference.shape, np.shape(moving), reference.dtype, moving.dtype, window, boundary,
                   reference.dims, moving_dims, caller="api")
        plain = lambda v: v.data if isinstance(v, xr.DataArray) else v  # noqa: E731
        result = local_ncc(reference.data, plain(moving), window, reference_mask=plain(reference_mask),
                           moving_mask=plain(moving_mask), **options)
        wrap = lambda data, name: xr.DataArray(data, dims=reference.dims, coords=reference.coords,  # noqa: E731
                                               attrs=_output_attrs(name, reference, moving), name=name)
        if extras:
            return xr.Dataset({name: wrap(data, name) for name, data in result.items()})
        return wrap(result, "ncc")
    if isinstance(moving, xr.DataArray):
        moving = moving.data
    lazy, reference, moving, kwargs = _prepare(reference, moving, window, reference_mask, moving_mask, **options)
    if lazy:
        result = local_ncc_dask(reference, moving, window, **kwargs)
        return {name: result[i] for i, name in enumerate(EXTRA_NAMES)} if extras else result
    result = local_ncc_numpy(reference, moving, window, **kwargs)
    if extras:
        return dict(zip(EXTRA_NAMES, (result[0], *result[1])))
    return result


def _check_array(value: Any, name: str) -> None:
    """Refuse what is not an array (anything with a shape and a dtype, e.g. numpy scalars, passes)."""
    if not (hasattr(value, "shape") and hasattr(value, "dtype")):
        raise TypeError(f"{name} must be a numpy.ndarray, dask.array.Array or xarray.DataArray, got "
                        f"{type(value).__name__}; convert it first, e.g. numpy.asarray({name})")


def _output_attrs(name: str, reference: xr.DataArray, moving: Any) -> dict[str, Any]:
    """The attrs of output ``name``: its own, plus the units of the image a std was taken of."""
    attrs = dict(OUTPUT_ATTRS[name])
    source = {"std_reference": reference, "std_moving": moving}.get(name)
    units = getattr(source, "attrs", {}).get("units")
    if units is not None:
        attrs["units"] = units
    return attrs


def local_ncc_into(sink, reference: da.Array, moving: da.Array, window: int = 7, *, boundary: str = "reflect",
                   flat: float = 0.0, nodata=None, reference_mask=None, moving_mask=None, min_valid: float = 0.5,
                   extras: bool = False) -> da.Array:
    """Lazy local NCC of dask inputs whose blocks go to ``sink`` inside their own tasks.

    Same options as :func:`local_ncc`; see :func:`pipeline.graph.local_ncc_sink`
    for ``sink`` and the result (one done-marker per block). Used by
    :func:`pipeline.run.run` to write each block where it is computed.
    """
    _, reference, moving, kwargs = _prepare(reference, moving, window, reference_mask, moving_mask,
                                            boundary=boundary, flat=flat, nodata=nodata, min_valid=min_valid,
                                            extras=extras, lazy=True)
    return local_ncc_sink(sink, reference, moving, window, **kwargs)


def local_ncc_pair_into(sink, pair, window: int = 7, *, chunks, boundary: str = "reflect", flat: float = 0.0,
                        nodata=None, min_valid: float = 0.5, extras: bool = False) -> da.Array:
    """:func:`local_ncc_into` for both images in one array-like of shape ``(2,) + shape``, read block by block.

    ``pair[0]`` is the reference and ``pair[1]`` the moving image (one dtype),
    e.g. a stacked numpy array or :func:`pipeline.io.open_pair`'s reader;
    ``chunks`` are the processing chunks of the image axes. Each block's task
    reads its own halo (see :func:`pipeline.graph.local_ncc_read_sink`);
    nodata comes from NaN/Inf and ``nodata`` values only (no mask arrays).
    Used by :func:`pipeline.run.run`; same results as :func:`local_ncc_into`.
    """
    shape, dtype = tuple(pair.shape[1:]), np.dtype(pair.dtype)
    if len(pair.shape) < 3 or pair.shape[0] != 2:
        raise InputError(f"pair must have shape (2, ...) (reference, moving), got {tuple(pair.shape)}")
    _check_options(shape, shape, dtype, dtype, window, boundary, flat, min_valid)
    pair_nodata = nodata if isinstance(nodata, tuple) else (nodata, nodata)
    return local_ncc_read_sink(sink, pair, window, chunks=chunks, boundary=boundary, flat=flat, nodata=pair_nodata,
                               min_valid=min_valid, extras=extras)


def _check_options(reference_shape, moving_shape, reference_dtype, moving_dtype, window, boundary, flat,
                   min_valid) -> None:
    check_pair(reference_shape, moving_shape, reference_dtype, moving_dtype, window, boundary)
    if not (np.isnan(flat) or -1.0 <= flat <= 1.0):
        raise InputError(f"flat must be in [-1, 1] or NaN (NCC values lie in [-1, 1]), got {flat}")
    if not 0.0 <= min_valid <= 1.0:
        raise InputError(f"min_valid must be a fraction in [0, 1], got {min_valid}")


def _prepare(reference, moving, window, reference_mask, moving_mask, *, boundary, flat, nodata, min_valid, extras,
             lazy=None):
    """Check the options, make both inputs numpy or both dask, and build the nodata mask."""
    _check_options(np.shape(reference), np.shape(moving), reference.dtype, moving.dtype, window, boundary, flat,
                   min_valid)
    for name, mask in (("reference_mask", reference_mask), ("moving_mask", moving_mask)):
        if mask is not None and np.shape(mask) != np.shape(reference):
            raise InputError(f"{name} must have the images' shape {np.shape(reference)}, got {np.shape(mask)}")
    pair_nodata = nodata if isinstance(nodata, tuple) else (nodata, nodata)
    if lazy is None:
        lazy = any(isinstance(v, da.Array) for v in (reference, moving, reference_mask, moving_mask))
    if lazy:
        reference, moving = da.asarray(reference), da.asarray(moving)
        masks = [None if m is None else da.asarray(m) for m in (reference_mask, moving_mask)]
    else:
        reference, moving = np.asarray(reference), np.asarray(moving)
        masks = [None if m is None else np.asarray(m) for m in (reference_mask, moving_mask)]
    invalid = invalid_mask(reference, moving, pair_nodata, *masks)
    kwargs = dict(boundary=boundary, flat=flat, invalid=invalid, min_valid=min_valid, extras=extras)
    return lazy, reference, moving, kwargs
