"""The Python entry point: local NCC of numpy, dask or xarray inputs."""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from .graph import local_ncc_dask
from .kernel import local_ncc_numpy
from .validate import check_pair

__all__ = ["local_ncc"]


def local_ncc(
    reference: Any,
    moving: Any,
    window: int = 7,
    *,
    boundary: str = "reflect",
    flat: float = 0.0,
) -> Any:
    """Per-pixel local normalized cross-correlation of two images.

    For each pixel, the signed Pearson correlation of the two ``window x window``
    windows centred there: ``mean((p1 - m1) (p2 - m2)) / (std(p1) std(p2))`` with
    population standard deviations.

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
        Value where a window is flat (all its values equal) in either image, so
        the correlation is undefined. May be ``numpy.nan``.

    Returns
    -------
    Same kind as ``reference``
        float32 NCC in [-1, 1]. An xarray input gives a DataArray named ``ncc``
        with the reference's dims, coords and attrs; a dask input gives a lazy
        dask array with the reference's chunks (y/x chunks shorter than the window
        radius are merged).

    Examples
    --------
    >>> import numpy as np
    >>> from pipeline import local_ncc
    >>> rng = np.random.default_rng(0)
    >>> a = rng.random((64, 64))
    >>> bool(np.allclose(local_ncc(a, 2 * a + 1, 5), 1.0))
    True
    """
    if isinstance(reference, xr.DataArray):
        moving_dims = moving.dims if isinstance(moving, xr.DataArray) else None
        check_pair(reference.shape, np.shape(moving), reference.dtype, moving.dtype, window, boundary,
                   reference.dims, moving_dims)
        mov_data = moving.data if isinstance(moving, xr.DataArray) else moving
        result = local_ncc(reference.data, mov_data, window, boundary=boundary, flat=flat)
        return xr.DataArray(result, dims=reference.dims, coords=reference.coords, attrs=dict(reference.attrs),
                            name="ncc")
    if isinstance(moving, xr.DataArray):
        moving = moving.data
    check_pair(np.shape(reference), np.shape(moving), reference.dtype, moving.dtype, window, boundary)
    if isinstance(reference, da.Array) or isinstance(moving, da.Array):
        ref = da.asarray(reference)
        mov = da.asarray(moving)
        return local_ncc_dask(ref, mov, window, boundary=boundary, flat=flat)
    return local_ncc_numpy(np.asarray(reference), np.asarray(moving), window, boundary=boundary, flat=flat)
