"""The kernel wired into dask graphs: dask only, no maths and no stores of its own.

Its single job is to turn arrays and pair readers into graphs whose tasks call :mod:`pipeline.core`:
``map_overlap`` over dask arrays (halo = window radius on the image axes), and one self-reading task per
block for stored pairs, each block handed to a sink inside its task. It may import :mod:`pipeline.core`
(and the error classes); the readers and sinks it is given follow the protocols in
:mod:`pipeline.chunked.protocols`, so it never imports :mod:`pipeline.io`.
"""
