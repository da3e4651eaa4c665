"""The maths of local NCC on in-memory blocks: numpy and numba only.

Its single job is to compute on arrays that are already in memory: the NCC kernel and its exact integer
paths, boundaries and padding, nodata masks, block statistics, where a block lies in its grid, the checks
of a pair's shapes, dtypes and options, and per-thread buffers. It imports nothing of the project but the
exception classes of :mod:`pipeline.errors`: no dask, no zarr, no xarray, no files. Later: window shapes and
registration maths.
"""
