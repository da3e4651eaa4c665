"""lncc: chunked, out-of-core local normalized cross-correlation maps.

The public API is :func:`local_ncc` (numpy, dask and xarray inputs), :func:`register` (the shift that
aligns the moving image, to pass to ``local_ncc(..., shift=...)``) and
:func:`pipeline.job.run` (a whole configured zarr -> zarr job, from
:func:`pipeline.config.load_config`).

The package is layered; each layer imports only those below it (checked by
import-linter, see ``pyproject.toml``): :mod:`pipeline.cli` on top, then
:mod:`pipeline.job` (one run) beside :mod:`pipeline.api`, then
:mod:`pipeline.config`, then :mod:`pipeline.chunked` (dask wiring) beside
:mod:`pipeline.io` (stores and files), then :mod:`pipeline.core` (numpy and
numba maths), and :mod:`pipeline.errors` at the bottom.
"""

from importlib.metadata import PackageNotFoundError, version

from .errors import ConfigError, InputError, LnccError

try:
    __version__ = version("lncc")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["local_ncc", "register", "Registered", "open_image", "ConfigError", "InputError", "LnccError", "__version__"]


def __getattr__(name: str):
    # Imported on first use, so that importing the package (as the ``lncc`` command does) loads no numpy:
    # the command first limits the BLAS thread pools (see pipeline.cli).
    if name in ("local_ncc", "register", "Registered", "open_image"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
