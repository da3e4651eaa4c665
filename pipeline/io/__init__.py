"""The only place that touches stores and files: zarr inputs, NCC map outputs and their bookkeeping.

Its single job is storage: URLs and secret redaction (:mod:`.urls`), the one codec table (:mod:`.codecs`),
readers per format (:mod:`.readers`: zarr, with lncc's own chunk reader and cache; TIFF, images, frame
sequences and video, through the channel policy; a moving image read through a registration shift), writers
(:mod:`.writers`: zarr blocks, background writes, durable files, sample arrays), an output's metadata and
provenance (:mod:`.metadata`), its ledger and checksums (:mod:`.ledger`), its small layers such as the applied
shift (:mod:`.layers`), its state on the store (whose it is, which blocks are intact, making and replacing it,
its lock) and input fingerprints. It may import
:mod:`pipeline.core` (buffers, block positions, statistics columns) and the error classes; never the
chunked, job or CLI layers. What one process keeps between tasks lives in :mod:`.process`.

Outputs are zarr groups written the xarray way: an ``ncc`` variable plus dimension coordinates, readable
with ``xarray.open_zarr(path)["ncc"]``. Every function that opens a URL store also takes
``storage_options`` (fsspec options such as ``endpoint_url``, ``profile``, ``anon``); they are ignored for
local paths and never put in an error message nor in an output's attributes.

The names below are the room's door: the job layer, the scripts and the tests use them.
"""

from .codecs import output_codec
from .encodings import ENCODINGS, describe_encoding, encoded_dtype, output_encoding
from .fingerprint import fingerprint
from .layers import read_layer
from .ledger import block_digest, read_checksums, read_ledger
from .lock import LOCK_FILE, OutputLock
from .metadata import (
                       CHECKSUMS,
                       LEDGER,
                       PROVENANCE_KEY,
                       STATE_GROUP,
                       group_attributes,
                       json_safe,
                       read_provenance,
                       update_provenance,
                       write_group,
)
from .output_blocks import usable_blocks
from .output_create import create_output
from .output_pyramid import block_parts, counts_path, finish_pyramid, level_path, open_level, read_levels
from .output_state import InputIdentities, check_output_path, clean_partials, foreign_entries, output_state
from .process import process_state
from .readers.info import InputInfo
from .readers.inputs import (
                       alpha_mask,
                       input_files,
                       input_format,
                       input_label,
                       inspect_input,
                       open_input,
                       source_of,
)
from .readers.pair import open_pair
from .readers.shifted import open_shifted_pair
from .readers.zarr import array_reader
from .urls import is_local, local_path, redact, store_kwargs
from .writers.arrays import write_array
from .writers.background import finish_writes
from .writers.files import sync_outputs
from .writers.ingest import IMAGE, VALID, IngestWriter, ingest_record
from .writers.preview import draw_preview
from .writers.zarr import OutputWriter

__all__ = [
    "InputInfo", "inspect_input", "open_input", "open_pair", "open_shifted_pair", "array_reader", "source_of",
    "alpha_mask", "input_format", "input_label", "input_files",
    "OutputWriter", "finish_writes", "sync_outputs", "write_array", "output_codec",
    "read_ledger", "read_checksums", "block_digest", "read_layer",
    "PROVENANCE_KEY", "STATE_GROUP", "LEDGER", "CHECKSUMS", "group_attributes", "write_group",
    "update_provenance", "read_provenance",
    "output_state", "foreign_entries", "check_output_path", "InputIdentities", "clean_partials",
    "create_output", "usable_blocks", "LOCK_FILE", "OutputLock",
    "fingerprint", "redact", "is_local", "local_path", "process_state", "json_safe",
    "IngestWriter", "ingest_record", "IMAGE", "VALID", "draw_preview", "store_kwargs",
    "ENCODINGS", "encoded_dtype", "describe_encoding", "output_encoding",
    "level_path", "counts_path", "finish_pyramid", "open_level", "read_levels", "block_parts",
]
