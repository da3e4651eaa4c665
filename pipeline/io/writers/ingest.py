"""A converted input (``lncc ingest``): an image written to a chunked zarr group block by block, with a ledger of
the blocks done, so a killed conversion resumes where it stopped.

The group holds ``image`` (dims and coordinates the xarray way, readable with ``xarray.open_zarr``), ``valid``
when the source had an alpha channel, and ``_lncc/done`` (one entry per block; a block counts only once its chunks
are written). Its attributes (``lncc_ingest``) say what was converted and how; a group whose attributes say
otherwise is never written into, and a path lncc did not write is never replaced.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr

from ...errors import InputError
from ..codecs import output_codec
from ..metadata import group_attributes, json_safe
from ..urls import filesystem, is_local, local_path, store_kwargs

__all__ = ["INGEST_KEY", "IMAGE", "VALID", "ingest_record", "IngestWriter"]

#: The group attribute that marks an lncc ingest and records its source and settings.
INGEST_KEY = "lncc_ingest"
#: The converted image and its validity mask (from an alpha channel).
IMAGE, VALID = "image", "valid"
#: One entry per block, 1 once the block's chunks are written (in a subgroup: xarray shows only the image).
_DONE = "_lncc/done"


def ingest_record(dest: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """What an existing ingest at ``dest`` recorded (None: nothing there).

    Raises
    ------
    InputError
        If ``dest`` holds anything that is not an lncc ingest (a file, a folder with files, a zarr store of
        someone else's): lncc never writes into it.
    """
    if is_local(dest):
        path = local_path(dest)
        if not path.exists() or (path.is_dir() and not any(path.iterdir())):
            return None
        if path.is_file():
            raise InputError(f"ingest destination {dest!r} is a file; give a new path for the zarr group")
    attrs = group_attributes(dest, storage_options=storage_options)
    if attrs is None and not is_local(dest):
        fs, root = filesystem(dest, storage_options)
        if not fs.exists(root):
            return None
    if attrs is None or INGEST_KEY not in attrs:
        raise InputError(f"ingest destination {dest!r} already holds data lncc did not write; give a new path "
                         "(lncc never replaces other files)")
    return dict(attrs[INGEST_KEY])


class IngestWriter:
    """Writes one ingest's blocks: ``create`` (or reopen), ``write`` block by block, ``finish``."""

    def __init__(self, dest: str, storage_options: dict[str, Any] | None = None):
        self.dest, self.options = dest, storage_options

    def create(self, *, shape, dtype, chunks, dims, coords: dict[str, Any], blocks: int, record: dict[str, Any],
               zarr_format: int, compressor: str, mask: bool) -> None:
        """A new group (replacing an earlier ingest's): empty arrays, coordinates, a ledger of ``blocks`` entries."""
        import xarray as xr

        if is_local(self.dest):
            local_path(self.dest).mkdir(parents=True, exist_ok=True)
        group = zarr.open_group(store=self.dest, mode="w", zarr_format=zarr_format,
                                **store_kwargs(self.dest, self.options))
        group.attrs[INGEST_KEY] = json_safe({**record, "status": "running"})
        codec = output_codec(compressor, zarr_format)
        codecs = {} if codec is None else ({"compressors": codec} if zarr_format == 3 else {"compressor": codec})
        names = {IMAGE: np.dtype(dtype), **({VALID: np.dtype(bool)} if mask else {})}
        for name, kind in names.items():
            extra = {"dimension_names": tuple(dims)} if zarr_format == 3 else {}
            # format 2: no fill value, which xarray would read as a missing value (0 is a pixel value)
            array = group.create_array(name=name, shape=shape, chunks=chunks, dtype=kind,
                                       fill_value=None if zarr_format == 2 else 0, **extra, **codecs)
            if zarr_format == 2:
                array.attrs["_ARRAY_DIMENSIONS"] = list(dims)
        if coords:
            ds = xr.Dataset(coords={k: v for k, v in coords.items()})
            for name in ds.variables:
                ds[name].encoding = {}
            ds.to_zarr(self.dest, mode="a", consolidated=False, zarr_format=zarr_format,
                       **store_kwargs(self.dest, self.options))
        state = group.create_group(_DONE.split("/")[0])
        state.create_array(name=_DONE.split("/")[1], shape=(blocks,), chunks=(1,), dtype=np.uint8, fill_value=0)

    def _group(self):
        return zarr.open_group(store=self.dest, mode="r+", **store_kwargs(self.dest, self.options))

    def done(self) -> np.ndarray:
        """Per block: True once its chunks are written (an unreadable entry reads as not done)."""
        array = self._group()[_DONE]
        out = np.zeros(array.shape, bool)
        for i in range(array.shape[0]):
            try:
                out[i] = bool(array[i])
            except Exception:  # noqa: BLE001 - a torn entry: the block is written again
                out[i] = False
        return out

    def write(self, index: int, region: tuple[slice, ...], image: np.ndarray, valid: np.ndarray | None) -> None:
        """Write one block's values (chunk-aligned), then mark it done."""
        group = getattr(self, "_open", None) or self._group()
        self._open = group
        group[IMAGE][region] = image
        if valid is not None:
            group[VALID][region] = valid
        group[_DONE][index] = 1

    def finish(self, record: dict[str, Any]) -> None:
        """Mark the ingest complete (after every block is done)."""
        group = self._group()
        group.attrs[INGEST_KEY] = json_safe({**record, "status": "complete"})
