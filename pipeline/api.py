"""The Python entry points: local NCC of numpy, dask or xarray inputs, their registration, and any input a run
reads (zarr, TIFF, images, frame files, video) opened lazily."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from threadpoolctl import threadpool_limits

from .chunked.entry import prepare
from .chunked.graph import local_ncc_dask
from .chunked.shift import apply_shift
from .core.checks import check_pair
from .core.interpolation import as_missing
from .core.kernel import local_ncc_numpy
from .core.masks import nodata_pair
from .core.registration import register_images
from .core.threads import available_cores
from .core.variables import EXTRA_NAMES, OUTPUT_ATTRS
from .errors import InputError

__all__ = ["local_ncc", "register", "Registered", "open_image"]


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
    shift: Any = None,
    interpolation: str = "cubic",
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
    shift : (dy, dx) or array of shape (t, 2), optional
        Register the moving image first: shift it by this many pixels (scikit-image's convention, the shift
        that registers the moving image onto the reference, e.g. from :func:`pipeline.register`; for video
        one per frame) and correlate the shifted image. The map keeps the reference's grid; pixels whose
        source lies outside the moving image (or touches its nodata) are missing data.
    interpolation : {"linear", "cubic", "lanczos3"}, default "cubic"
        The local kernel that applies a shift's fractional part (see :mod:`pipeline.core.interpolation`).

    Returns
    -------
    Same kind as ``reference``
        float32 NCC in [-1, 1]. An xarray input gives a DataArray named ``ncc``
        with the reference's dims and coords and its own attrs (a long name and
        ``units: "1"``; see :data:`pipeline.core.variables.OUTPUT_ATTRS`), not the
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
        return _local_ncc_xarray(reference, moving, window, reference_mask, moving_mask,
                                 {**options, "shift": shift, "interpolation": interpolation})
    if isinstance(moving, xr.DataArray):
        moving = moving.data
    if shift is not None:
        moving, options["nodata"], moving_mask = apply_shift(reference, moving, shift, interpolation, nodata,
                                                             moving_mask, fixed=not extras)
    lazy, reference, moving, radius, kwargs = prepare(reference, moving, window, reference_mask, moving_mask,
                                                      **options)
    if lazy:
        result = local_ncc_dask(reference, moving, radius, **kwargs)
        return {name: result[i] for i, name in enumerate(EXTRA_NAMES)} if extras else result
    result = local_ncc_numpy(reference, moving, window, **kwargs)
    if extras:
        return dict(zip(EXTRA_NAMES, (result[0], *result[1])))
    return result


def _local_ncc_xarray(reference: xr.DataArray, moving: Any, window: int, reference_mask: Any, moving_mask: Any,
                      options: dict[str, Any]) -> xr.DataArray | xr.Dataset:
    """:func:`local_ncc` of a DataArray reference: the result keeps its dims and coords, each variable its attrs."""
    moving_dims = moving.dims if isinstance(moving, xr.DataArray) else None
    check_pair(reference.shape, np.shape(moving), reference.dtype, moving.dtype, window, options["boundary"],
               reference.dims, moving_dims, caller="api")
    plain = lambda v: v.data if isinstance(v, xr.DataArray) else v  # noqa: E731
    result = local_ncc(reference.data, plain(moving), window, reference_mask=plain(reference_mask),
                       moving_mask=plain(moving_mask), **options)
    wrap = lambda data, name: xr.DataArray(data, dims=reference.dims, coords=reference.coords,  # noqa: E731
                                           attrs=_output_attrs(name, reference, moving), name=name)
    if options["extras"]:
        return xr.Dataset({name: wrap(data, name) for name, data in result.items()})
    return wrap(result, "ncc")


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


@dataclass(frozen=True)
class Registered:
    """What :func:`register` found: the shift(s) to apply, their quality, and the local method's field.

    Attributes
    ----------
    shift : numpy.ndarray
        ``(2,)`` ``(dy, dx)`` for an image, ``(t, 2)`` for video: scikit-image's convention, the shift that
        registers the moving image onto the reference; pass it to :func:`local_ncc` as ``shift``.
    estimates : list of Estimate
        One per image or frame (:class:`pipeline.core.registration.Estimate`: ``correlation`` after
        registration, ``gain``, ``offset``, phase ``peak``, tile ``spread`` px, ``tiles``).
    field : Field or list of Field, optional
        ``method="local"``: a shift per tile (:class:`pipeline.core.tilefield.Field`; one per frame for video).
    """

    shift: np.ndarray
    estimates: list
    field: Any = None


def register(reference: Any, moving: Any, *, method: str = "translation", upsample: int = 20,
             max_shift: float = 200.0, tolerance: float = 0.5, reference_frame: str | int = "each", tile: int = 64,
             search: int | None = None, nodata: float | tuple[float | None, float | None] | None = None,
             reference_mask: Any = None, moving_mask: Any = None) -> Registered:
    """Estimate the subpixel translation that registers ``moving`` onto ``reference`` (per frame for video).

    Reads a coarse level and a bounded set of full-resolution tiles (dask inputs compute only those), so a
    huge image is never loaded. Then ``local_ncc(reference, moving, shift=result.shift)`` correlates the
    *registered* image (correlating the unshifted one is the classic mistake).

    Parameters
    ----------
    reference, moving : numpy.ndarray, dask.array.Array or xarray.DataArray
        Images of one shape, ``(y, x)`` or ``(t, y, x)``.
    method : {"translation", "local"}
        ``local`` adds a shift per ``tile x tile`` tile (searched within ``search`` px of the global one).
    upsample, max_shift, tolerance, reference_frame, tile, search
        As the config's ``registration`` keys (see ``configs/reference.yaml``).
    nodata, reference_mask, moving_mask
        Missing pixels, as in :func:`local_ncc`: they leave every sum.

    Returns
    -------
    Registered

    Raises
    ------
    InputError
        Flat or unrelated images, a shift beyond ``max_shift``, tiles disagreeing by more than ``tolerance``
        (for ``translation``: use ``method="local"``), mismatched shapes.
    """
    if method not in ("translation", "local"):
        raise InputError(f"method must be 'translation' or 'local', got {method!r}")
    plain = lambda v: v.data if isinstance(v, xr.DataArray) else v  # noqa: E731
    reference, moving = plain(reference), plain(moving)
    _check_array(reference, "reference")
    _check_array(moving, "moving")
    if np.shape(reference) != np.shape(moving) or len(np.shape(reference)) not in (2, 3):
        raise InputError(f"reference and moving must be 2-D or 3-D arrays of one shape, got {np.shape(reference)} "
                         f"and {np.shape(moving)}")
    values = nodata_pair(nodata)
    readers = [_region_reader(image, value, plain(mask))
               for image, value, mask in ((reference, values[0], reference_mask), (moving, values[1], moving_mask))]
    shape = tuple(np.shape(reference))
    if len(shape) == 3:
        readers = [lambda t, r, read=read: read((t,) + tuple(r)) for read in readers]
    # One BLAS thread per task: scikit-image's upsampled DFT is matrix products, and BLAS's own threads fighting
    # the pool's cost up to 10x there.
    with threadpool_limits(1), ThreadPoolExecutor(available_cores()) as pool:
        found = register_images(*readers, shape, method=method, upsample=upsample, max_shift=max_shift,
                                tolerance=tolerance, reference_frame=reference_frame, tile=tile, search=search,
                                map=pool.map)
    return Registered(found.shift, found.estimates, found.field)


def _region_reader(image, nodata, mask):
    """``read(region)``: float64 values of ``image`` over ``region``, NaN where missing (dask computes just that)."""
    def read(region):
        values = image[tuple(region)]
        valid = None if mask is None else mask[tuple(region)]
        if isinstance(values, da.Array) or isinstance(valid, da.Array):
            values, valid = da.compute(values, valid, scheduler="threads")
        return as_missing(values, nodata, valid)

    return read


def open_image(url: Any, *, channels: str | int | None = None, series: int = 0, level: int = 0,
               dims: list[str] | None = None, chunks: dict[str, int] | None = None, alpha: bool = False,
               storage_options: dict[str, Any] | None = None) -> xr.DataArray:
    """Open any input a run reads as a lazy, dask-backed DataArray, read as a run reads it.

    Parameters
    ----------
    url
        A zarr array (path or URL), a TIFF, PNG/JPEG or video file, a glob of frame files or a list of them.
    channels, series, level, dims, storage_options
        As the config's keys: the colour policy (None: luminance for colour), a TIFF's series and pyramid
        level, dimension names, fsspec options for URLs.
    chunks
        Dask chunk sizes by dim name (default: the stored chunks, e.g. a TIFF's tiles or one video frame).
    alpha
        Return the image's validity mask from its alpha channel (bool, True = valid) instead of the image.

    Examples
    --------
    >>> left = open_image("clips/left.mp4")               # (t, y, x) uint8, t in seconds  # doctest: +SKIP
    >>> ncc = local_ncc(left, open_image("clips/right.mp4"), 9)                            # doctest: +SKIP
    """
    from . import io

    info = io.inspect_input(url, dims, storage_options=storage_options, series=series, level=level,
                            channels=channels)
    if alpha:
        mask = io.alpha_mask(info)
        if mask is None:
            raise InputError(f"input {info.url!r} has no alpha channel; open it without alpha=True")
        info = mask
    unknown = sorted(set(chunks or {}) - set(info.dims))
    if unknown:
        raise InputError(f"chunks names {', '.join(unknown)} but {info.url!r} has dims {', '.join(info.dims)}")
    sizes = tuple(min((chunks or {}).get(d, c), n) for d, c, n in zip(info.dims, info.zarr_chunks, info.shape))
    return io.open_input(info, sizes)
