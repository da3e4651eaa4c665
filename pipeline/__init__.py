"""lncc: chunked, out-of-core local normalized cross-correlation maps.

The public API is :func:`local_ncc` (numpy, dask and xarray inputs) and
:func:`run` (a whole configured zarr -> zarr job).
"""

from importlib.metadata import PackageNotFoundError, version

from .errors import ConfigError, InputError, LnccError

try:
    __version__ = version("lncc")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["local_ncc", "ConfigError", "InputError", "LnccError", "__version__"]


def __getattr__(name: str):
    # Imported on first use, so that importing the package (as the ``lncc`` command does) loads no numpy:
    # the command first limits the BLAS thread pools (see pipeline.cli).
    if name == "local_ncc":
        from .api import local_ncc

        return local_ncc
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
