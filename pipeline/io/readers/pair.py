"""A stored pair read as one array: each block task reads its region of both images (halo included) at once."""

from __future__ import annotations

import uuid

import numpy as np

from .chunks import ChunkedSource
from .info import InputInfo
from .inputs import source_of

__all__ = ["open_pair", "PairReader"]


def open_pair(reference: InputInfo, moving: InputInfo, *, halo: int = 0, cache_bytes: int = 0
              ) -> PairReader | None:
    """Both inputs as one array-like of shape ``(2,) + shape`` that reads a region of both at once.

    A task that reads its block of both images (halo included) needs no other
    task's data: nothing moves between workers. Local chunk files are decoded
    straight into the caller's buffer (:meth:`PairReader.read_into`), each
    image in its own dtype. Only for inputs of the same shape; None otherwise.

    Neighbouring blocks read the same edge chunks for their halos. With
    ``halo`` (the window radius) and ``cache_bytes``, each process keeps the
    ``halo``-wide edges of the chunks it decodes, and the chunks it decoded
    only in part, up to ``cache_bytes``, for the blocks that need them next.
    """
    if reference.shape != moving.shape:
        return None
    sources = [source_of(info) for info in (reference, moving)]
    run = uuid.uuid4().hex  # cached chunks belong to this reader's run: a later run never sees them
    for i, src in enumerate(sources):
        if isinstance(src, ChunkedSource):
            src.cache = (run, i, int(halo), int(cache_bytes)) if halo and cache_bytes else None
    return PairReader(*sources, token=(reference.url, moving.url))


class PairReader:
    """Two same-shaped arrays read as one with a leading axis of 2 (reference, moving).

    ``dtypes`` are the two images' own dtypes; ``dtype`` is one both can be read into (numpy's result type).
    A block task reads each image into a buffer of its own dtype (:func:`pipeline.chunked.tasks.read_pair_block`).
    """

    def __init__(self, reference, moving, token=None):
        self.sources = (reference, moving)
        self.dtypes = (np.dtype(reference.dtype), np.dtype(moving.dtype))
        self.dtype = np.result_type(*self.dtypes)
        self.shape = (2,) + tuple(int(n) for n in reference.shape)
        self.ndim = len(self.shape)
        self._token = token

    def __dask_tokenize__(self):
        return ("lncc-pair", self._token, self.shape, tuple(str(d) for d in self.dtypes))

    def read_into(self, region: list[slice], out) -> None:
        """Fill ``out`` (shape ``(2,) + region's shape``, or two arrays of the region's shape) with both images'
        values in ``region`` (step-1 slices)."""
        for i, source in enumerate(self.sources):
            if hasattr(source, "read_into"):
                source.read_into(region, out[i])  # decoded (or shifted) straight into the pair block
            else:
                out[i] = source[tuple(region)]
