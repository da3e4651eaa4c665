"""The run configuration: a strict, frozen schema read from YAML with ``safe_load``.

Every error names the key path, the value that came and what is expected, e.g.
``config error: compute.workers: expected an integer >= 1, got 'two' (str)``.
"""

from __future__ import annotations

import bisect
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from ..core.checks import flat_ok, window_problem
from ..core.masks import nodata_pair
from .messages import describe, short
from .registration import RegistrationConfig

__all__ = ["ComputeConfig", "JobqueueConfig", "NodataConfig", "OutputConfig", "PairConfig", "RunConfig",
           "JOBQUEUE_SYSTEMS", "COMPRESSION_LEVELS", "input_paths"]


# hide_input_in_errors: pydantic's own message text would embed a repr of the input; ours bounds what it echoes.
_STRICT = ConfigDict(frozen=True, extra="forbid", strict=True, hide_input_in_errors=True)


PositiveInt = Annotated[int, Field(ge=1)]


def _bytes(value: Any) -> Any:
    """A size as an int of bytes, from an int or a string such as '2GB' or '512MiB'."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as 2GB or 512MiB, got {value} (bool)")
    if isinstance(value, str):
        from dask.utils import parse_bytes

        try:
            value = parse_bytes(value)
        except (ValueError, TypeError):
            raise ValueError(f"expected a size such as 2GB or 512MiB, got {short(value)}") from None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or value <= 0:
        raise ValueError(f"expected a positive size such as 2GB or 512MiB, got {describe(value)}")
    return value


Size = Annotated[int, BeforeValidator(_bytes)]


#: The dask-jobqueue cluster classes by batch system name.
JOBQUEUE_SYSTEMS = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "sge": "SGECluster", "lsf": "LSFCluster",
                    "htcondor": "HTCondorCluster", "moab": "MoabCluster", "oar": "OARCluster"}


class JobqueueConfig(BaseModel):
    """A dask-jobqueue cluster on a batch system: each job runs dask workers that connect back to this run."""

    model_config = _STRICT

    system: Literal["slurm", "pbs", "sge", "lsf", "htcondor", "moab", "oar"]
    """Batch system; selects the dask-jobqueue cluster class."""
    cores: PositiveInt
    """Cores per job."""
    memory: Size
    """Memory per job, e.g. 16GB."""
    jobs: PositiveInt = 1
    """Number of jobs to submit (``cluster.scale(jobs=...)``)."""
    processes: PositiveInt | None = None
    """Worker processes per job (default: dask-jobqueue's choice, about sqrt(cores))."""
    walltime: str | None = None
    """Wall time per job in the system's format, e.g. '01:00:00'."""
    queue: str | None = None
    """Queue or partition."""
    account: str | None = None
    """Account or project charged."""
    job_extra_directives: list[str] = []
    """Extra lines for the job script header, e.g. ['--gres=gpu:0']."""
    job_script_prologue: list[str] = []
    """Shell lines run before the worker starts, e.g. ['source /opt/venvs/lncc/bin/activate']."""
    interface: str | None = None
    """Network interface the workers and scheduler use, e.g. ib0."""
    local_directory: str | None = None
    """Worker scratch directory on the compute nodes."""


_SCHEDULER_NAMES = ("threads", "processes", "synchronous", "local", "jobqueue")


class ComputeConfig(BaseModel):
    """Where and how the dask graph runs."""

    model_config = _STRICT

    scheduler: str = "threads"
    """``threads`` (default), ``processes``, ``synchronous`` (debugging), ``local`` (a dask.distributed
    LocalCluster), ``jobqueue`` (a batch-system cluster, see ``jobqueue``) or the address of a running
    dask scheduler, e.g. ``tcp://scheduler.example.org:8786``."""
    workers: PositiveInt | None = None
    """Threads (threads), processes (processes) or worker processes (local); default: the CPUs available."""
    threads_per_worker: PositiveInt | None = None
    """Threads in each worker process (local; default 1 with several workers)."""
    memory_limit: Size | None = None
    """dask's memory limit per worker (local); default: ``memory`` if given, else dask's default."""
    memory: Size | None = None
    """Memory budget per worker process (for threads/processes/synchronous: this process), e.g. 2GB. It picks
    the processing block size; explicit ``chunks`` that do not fit are an error."""
    jobqueue: JobqueueConfig | None = None
    """The batch-system cluster, required with ``scheduler: jobqueue``."""

    @field_validator("scheduler")
    @classmethod
    def _scheduler(cls, value: str) -> str:
        if value in _SCHEDULER_NAMES or _is_address(value):
            return value
        raise ValueError(f"expected one of {', '.join(_SCHEDULER_NAMES)} or a scheduler address such as "
                         f"tcp://host:8786, got {short(value)}")

    @model_validator(mode="after")
    def _consistent(self) -> ComputeConfig:
        if self.scheduler == "jobqueue" and self.jobqueue is None:
            raise ValueError("scheduler: jobqueue needs a compute.jobqueue section (system, cores, memory, ...); "
                             "see configs/cluster-slurm.yaml")
        if self.jobqueue is not None and self.scheduler != "jobqueue":
            raise ValueError(f"compute.jobqueue is given but scheduler is {short(self.scheduler)}; "
                             "set scheduler: jobqueue or remove the jobqueue section")
        only_local = [k for k in ("threads_per_worker", "memory_limit") if getattr(self, k) is not None]
        if only_local and self.scheduler != "local":
            raise ValueError(f"{', '.join(only_local)} only apply to scheduler: local (got scheduler "
                             f"{short(self.scheduler)}); remove them or use scheduler: local")
        if self.workers is not None and (self.scheduler == "jobqueue" or _is_address(self.scheduler)):
            raise ValueError(f"workers does not apply to scheduler {short(self.scheduler)} (the cluster has its own "
                             "workers); remove it, or set jobqueue.jobs for a jobqueue cluster")
        return self

    @property
    def distributed(self) -> bool:
        """True when the run goes through a dask.distributed cluster."""
        return self.scheduler in ("local", "jobqueue") or _is_address(self.scheduler)


def _is_address(value: str) -> bool:
    import re

    return re.fullmatch(r"(tcp|tls|ucx|inproc|ws|wss)://[^\s/]+(:\d+)?/?", value) is not None


def _frame_list(value: Any) -> Any:
    """A list of frame files as a tuple of paths (a YAML list), anything else as it came."""
    if isinstance(value, list):
        if not value:
            raise ValueError("expected a path, a glob such as frames/left_*.png or a non-empty list of frame files, "
                             "got []")
        bad = next((v for v in value if not isinstance(v, str)), None)
        if bad is not None:
            raise ValueError(f"expected a list of frame file paths, got an entry {describe(bad)}")
        return tuple(value)
    return value


#: An image input: a path or URL (zarr, TIFF, PNG/JPEG, video, or a glob of frame files), or a list of frame files.
ImageInput = Annotated[str | tuple[str, ...], BeforeValidator(_frame_list)]


def input_paths(value: str | tuple[str, ...] | None) -> list[str]:
    """The paths an input names (each file of a list; a path or glob as given)."""
    if value is None:
        return []
    return list(value) if isinstance(value, tuple) else [value]


#: The compression levels each output ``compressor`` takes (blosc's clevel for lz4, zstd's level).
COMPRESSION_LEVELS = {"lz4": (1, 9), "zstd": (1, 22)}


def _output_path(value: Any) -> Any:
    """``output: PATH`` is ``output: {path: PATH}``."""
    return {"path": value} if isinstance(value, str) else value


class OutputConfig(BaseModel):
    """Where a pair's NCC map goes and how it is stored; ``output: PATH`` is the short form of ``{path: PATH}``."""

    model_config = _STRICT

    path: str
    encoding: Literal["float32", "float16", "int16"] = "float32"
    """How NCC values (and valid fractions) are stored: ``float32``; ``float16`` (within 2.5e-4); ``int16``, NCC x
    32767 rounded, -32768 for NaN, read back through the CF ``scale_factor``/``_FillValue`` attributes (within
    1.6e-5: a step of 3.1e-5). The extra outputs' standard deviations stay float32."""
    multiscale: bool = False
    """Also write an OME-Zarr (NGFF) pyramid of NaN-aware means, built block by block while the run writes."""
    compressor: Literal["lz4", "zstd", "none"] | None = None
    """The chunks' compressor; by default the top-level ``compressor`` (``none``)."""
    level: Annotated[int, Field(ge=1)] | None = None
    """The compressor's level: lz4 1-9 (default 5), zstd 1-22 (default 1); needs a compressor."""

    @field_validator("level")
    @classmethod
    def _level_in_range(cls, value: int | None, info) -> int | None:
        compressor = info.data.get("compressor")
        if value is not None and compressor in COMPRESSION_LEVELS:
            lo, hi = COMPRESSION_LEVELS[compressor]
            if not lo <= value <= hi:
                raise ValueError(f"{compressor} takes levels {lo}-{hi}, got {value}")
        return value

    def settings(self) -> dict[str, Any]:
        """The settings that shape the stored bytes beyond the path, where they differ from the defaults (so an
        output written before these settings existed keeps its config hash)."""
        return self.model_dump(exclude={"path"}, exclude_defaults=True)


OutputSpec = Annotated[OutputConfig, BeforeValidator(_output_path)]


class PairConfig(BaseModel):
    """One reference/moving pair, optional validity masks, and where its NCC map goes."""

    model_config = _STRICT

    reference: ImageInput
    moving: ImageInput
    output: OutputSpec
    reference_mask: str | None = None
    moving_mask: str | None = None


class NodataConfig(BaseModel):
    """Nodata values per input (None: the input has no nodata value)."""

    model_config = _STRICT

    reference: float | None = None
    moving: float | None = None

    @field_validator("reference", "moving", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


class RunConfig(BaseModel):
    """A whole run: one pair (``reference``/``moving``/``output``) or a batch (``pairs``)."""

    model_config = _STRICT

    reference: ImageInput | None = None
    moving: ImageInput | None = None
    output: OutputSpec | None = None
    reference_mask: str | None = None
    moving_mask: str | None = None
    pairs: list[PairConfig] | None = None
    window: int = 7
    boundary: Literal["reflect", "nearest", "constant", "nan"] = "reflect"
    flat: float = 0.0
    nodata: float | NodataConfig | None = None
    min_valid: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    extra_outputs: bool = False
    registration: RegistrationConfig = RegistrationConfig()
    """Align the moving image onto the reference before correlating (see :class:`RegistrationConfig`)."""
    dims: list[str] | None = None
    series: Annotated[int, Field(ge=0)] = 0
    """TIFF inputs: the image series read (0, the first; an OME-TIFF's images are its series)."""
    level: Annotated[int, Field(ge=0)] = 0
    """TIFF inputs: the pyramid level read (0, full resolution; 1, the first reduced level, ...)."""
    channels: Literal["luminance", "mean", "separate"] | Annotated[int, Field(ge=0)] | None = None
    """Colour inputs: ``luminance`` (Rec. 709; the default; a video's luma plane), ``mean``, ``separate`` (one map
    per channel, on a ``c`` axis) or a channel index. An alpha channel is the validity mask."""
    chunks: dict[str, PositiveInt] | None = None
    zarr_format: Literal[2, 3] = 3
    compressor: Literal["lz4", "zstd", "none"] = "none"
    compute: ComputeConfig = ComputeConfig()
    storage_options: dict[str, Any] | None = None
    """fsspec options for URL inputs and outputs (e.g. ``endpoint_url``, ``profile``). Never printed nor stored
    in the output; prefer credentials from the environment or a profile to keys in the file."""

    @field_validator("flat", "nodata", "min_valid", mode="before")
    @classmethod
    def _flat_number(cls, value: Any) -> Any:
        # YAML gives ints for "0" and floats for ".nan"; both are fine, a bool is not.
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value

    @field_validator("window")
    @classmethod
    def _odd_window(cls, value: int) -> int:
        problem = window_problem(value, short)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("flat")
    @classmethod
    def _finite_or_nan(cls, value: float) -> float:
        if not flat_ok(value):
            raise ValueError(f"expected a number in [-1, 1] or .nan (NCC values lie in [-1, 1]), got {value}")
        return value

    @field_validator("dims")
    @classmethod
    def _dims(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if len(value) not in (2, 3):
                raise ValueError(f"expected 2 names [y, x] or 3 names [t, y, x], got {len(value):,}: {short(value)}")
            if len(set(value)) != len(value):
                raise ValueError(f"expected distinct names, got {short(value)}")
        return value

    @model_validator(mode="after")
    def _one_pair_or_batch(self) -> RunConfig:
        single = [k for k in ("reference", "moving", "output", "reference_mask", "moving_mask")
                  if getattr(self, k) is not None]
        if self.pairs is not None:
            if single:
                raise ValueError(f"give either 'pairs' or reference/moving/output, not both (found {', '.join(single)} "
                                 "beside pairs); move them into the pairs list")
            if not self.pairs:
                raise ValueError("'pairs' is empty; list at least one {reference, moving, output}")
        elif not {"reference", "moving", "output"} <= set(single):
            missing = [k for k in ("reference", "moving", "output") if k not in single]
            raise ValueError(f"missing required key(s) {', '.join(missing)}: a run needs reference, moving and "
                             "output (or a 'pairs' list)")
        _check_outputs(self.all_pairs())
        self._check_levels()
        return self

    def _check_levels(self) -> None:
        """Each output's compression level against its compressor (its own, or the top-level one), reported
        under the level's own key path."""
        from pydantic_core import ValidationError as CoreError

        for i, pair in enumerate(self.all_pairs()):
            level, compressor = pair.output.level, self.compressor_of(pair.output)
            if level is None:
                continue
            if compressor == "none":
                problem = (f"level {level} needs a compressor: add output.compressor: zstd (levels 1-22) or lz4 "
                           "(1-9)")
            elif not COMPRESSION_LEVELS[compressor][0] <= level <= COMPRESSION_LEVELS[compressor][1]:
                lo, hi = COMPRESSION_LEVELS[compressor]
                problem = f"{compressor} (the top-level compressor) takes levels {lo}-{hi}, got {level}"
            else:
                continue
            loc = ("pairs", i, "output", "level") if self.pairs is not None else ("output", "level")
            raise CoreError.from_exception_data("RunConfig", [{"type": "value_error", "loc": loc, "input": level,
                                                               "ctx": {"error": ValueError(problem)}}])

    def compressor_of(self, output: OutputConfig) -> str:
        """An output's compressor: its own, else the run's ``compressor``."""
        return output.compressor or self.compressor

    def all_pairs(self) -> list[PairConfig]:
        """The pairs of this run, whether given singly or as a batch."""
        if self.pairs is not None:
            return list(self.pairs)
        return [PairConfig(reference=self.reference, moving=self.moving, output=self.output,
                           reference_mask=self.reference_mask, moving_mask=self.moving_mask)]

    def nodata_pair(self) -> tuple[float | None, float | None]:
        """Nodata values as (reference, moving)."""
        if isinstance(self.nodata, NodataConfig):
            return self.nodata.reference, self.nodata.moving
        return nodata_pair(self.nodata)


def _normalise(path: str) -> str:
    if path.startswith("file://"):
        path = path[len("file://"):]
    if "://" in path:
        return path.rstrip("/")
    return str(Path(path).resolve())


def _path_key(path: str) -> str:
    """The normalised path with one trailing slash: ``a`` lies inside ``b`` iff ``a``'s key starts with ``b``'s."""
    return _normalise(path).rstrip("/") + "/"


def _check_outputs(pairs: list[PairConfig]) -> None:
    """Refuse outputs equal to or nested in another output or any input (paths compared normalised).

    Sorted keys and prefix look-ups instead of comparing every two paths: a batch of a thousand pairs
    took over three minutes that way.
    """
    outputs = sorted((_path_key(p.output.path), p.output.path) for p in pairs)
    # In sorted order a key is followed first by the keys it is a prefix of: neighbours suffice.
    for (key, first), (next_key, second) in zip(outputs, outputs[1:]):
        if next_key.startswith(key):
            raise ValueError(f"two pairs write the same or nested outputs ({short(first)} and {short(second)}); "
                             "give each pair its own output")
    by_key = dict(outputs)
    keys = [key for key, _ in outputs]
    for inp in (i for p in pairs for spec in (p.reference, p.moving, p.reference_mask, p.moving_mask)
                for i in input_paths(spec)):
        key = _path_key(inp)
        if key in by_key:
            raise ValueError(f"output {short(by_key[key])} is also an input; write the map to another path")
        after = bisect.bisect_left(keys, key)
        inside = keys[after] if after < len(keys) and keys[after].startswith(key) else None  # output in input
        if inside is None:  # the input inside an output: one of the input's parent directories is an output
            inside = next((k for k in _parents(key) if k in by_key), None)
        if inside is not None:
            raise ValueError(f"output {short(by_key[inside])} and input {short(inp)} are nested in one another: "
                             "writing the output would destroy the input; write the map to another path")


def _parents(key: str) -> list[str]:
    """Every proper prefix of ``key`` that ends at a slash (``/a/b/`` gives ``/``, ``/a/``)."""
    return [key[: i + 1] for i in range(len(key) - 1) if key[i] == "/"]
