"""The run configuration: a strict, frozen schema read from YAML with ``safe_load``.

Every error names the key path, the value that came and what is expected, e.g.
``config error: compute.workers: expected an integer >= 1, got 'two' (str)``.
"""

from __future__ import annotations

import bisect
import math
import os
import reprlib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)

from .errors import ConfigError

__all__ = ["ComputeConfig", "JobqueueConfig", "NodataConfig", "PairConfig", "RunConfig", "load_config", "parse_config", "apply_overrides"]

# hide_input_in_errors: pydantic's own message text would embed a repr of the input; ours bounds what it echoes.
_STRICT = ConfigDict(frozen=True, extra="forbid", strict=True, hide_input_in_errors=True)

#: Largest config file read, in bytes. A config holds paths and settings (a few KiB); anything near this is
#: not a config, and parsing YAML costs ~0.4 s per MiB.
MAX_CONFIG_BYTES = 1024 * 1024

#: Most values (scalars, keys, lists and mappings) a config may hold once YAML aliases are expanded, each
#: alias counting everything under its anchor again. A real config has fewer than a hundred; nine levels of
#: nine-fold aliases in a few hundred bytes expand to 9**9 (~387 million), which pydantic would walk.
MAX_CONFIG_VALUES = 100_000

#: Errors listed in one message (the rest are counted), and characters of any one error's text.
_MAX_ERRORS = 10
_MAX_TEXT = 200

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
            raise ValueError(f"expected a size such as 2GB or 512MiB, got {_short(value)}") from None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or value <= 0:
        raise ValueError(f"expected a positive size such as 2GB or 512MiB, got {_describe(value)}")
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
                         f"tcp://host:8786, got {_short(value)}")

    @model_validator(mode="after")
    def _consistent(self) -> ComputeConfig:
        if self.scheduler == "jobqueue" and self.jobqueue is None:
            raise ValueError("scheduler: jobqueue needs a compute.jobqueue section (system, cores, memory, ...); "
                             "see configs/cluster-slurm.yaml")
        if self.jobqueue is not None and self.scheduler != "jobqueue":
            raise ValueError(f"compute.jobqueue is given but scheduler is {_short(self.scheduler)}; "
                             "set scheduler: jobqueue or remove the jobqueue section")
        only_local = [k for k in ("threads_per_worker", "memory_limit") if getattr(self, k) is not None]
        if only_local and self.scheduler != "local":
            raise ValueError(f"{', '.join(only_local)} only apply to scheduler: local (got scheduler "
                             f"{_short(self.scheduler)}); remove them or use scheduler: local")
        if self.workers is not None and (self.scheduler == "jobqueue" or _is_address(self.scheduler)):
            raise ValueError(f"workers does not apply to scheduler {_short(self.scheduler)} (the cluster has its own "
                             "workers); remove it, or set jobqueue.jobs for a jobqueue cluster")
        return self

    @property
    def distributed(self) -> bool:
        """True when the run goes through a dask.distributed cluster."""
        return self.scheduler in ("local", "jobqueue") or _is_address(self.scheduler)


def _is_address(value: str) -> bool:
    import re

    return re.fullmatch(r"(tcp|tls|ucx|inproc|ws|wss)://[^\s/]+(:\d+)?/?", value) is not None


class PairConfig(BaseModel):
    """One reference/moving pair, optional validity masks, and where its NCC map goes."""

    model_config = _STRICT

    reference: str
    moving: str
    output: str
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

    reference: str | None = None
    moving: str | None = None
    output: str | None = None
    reference_mask: str | None = None
    moving_mask: str | None = None
    pairs: list[PairConfig] | None = None
    window: int = 7
    boundary: Literal["reflect", "nearest", "constant", "nan"] = "reflect"
    flat: float = 0.0
    nodata: float | NodataConfig | None = None
    min_valid: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5
    extra_outputs: bool = False
    dims: list[str] | None = None
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
        if value < 3:
            raise ValueError(f"expected an odd integer >= 3, got {_short(value)}; use 3 or more")
        if value % 2 == 0:
            raise ValueError(f"expected an odd integer (the window needs a centre pixel), got {_short(value)}; "
                             f"use {_short(value - 1)} or {_short(value + 1)}")
        return value

    @field_validator("flat")
    @classmethod
    def _finite_or_nan(cls, value: float) -> float:
        if not (math.isnan(value) or -1.0 <= value <= 1.0):
            raise ValueError(f"expected a number in [-1, 1] or .nan (NCC values lie in [-1, 1]), got {value}")
        return value

    @field_validator("dims")
    @classmethod
    def _dims(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if len(value) not in (2, 3):
                raise ValueError(f"expected 2 names [y, x] or 3 names [t, y, x], got {len(value):,}: {_short(value)}")
            if len(set(value)) != len(value):
                raise ValueError(f"expected distinct names, got {_short(value)}")
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
        return self

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
        return self.nodata, self.nodata


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
    outputs = sorted((_path_key(p.output), p.output) for p in pairs)
    # In sorted order a key is followed first by the keys it is a prefix of: neighbours suffice.
    for (key, first), (next_key, second) in zip(outputs, outputs[1:]):
        if next_key.startswith(key):
            raise ValueError(f"two pairs write the same or nested outputs ({_short(first)} and {_short(second)}); "
                             "give each pair its own output")
    by_key = dict(outputs)
    keys = [key for key, _ in outputs]
    for inp in (i for p in pairs for i in (p.reference, p.moving, p.reference_mask, p.moving_mask) if i):
        key = _path_key(inp)
        if key in by_key:
            raise ValueError(f"output {_short(by_key[key])} is also an input; write the map to another path")
        after = bisect.bisect_left(keys, key)
        inside = keys[after] if after < len(keys) and keys[after].startswith(key) else None  # output in input
        if inside is None:  # the input inside an output: one of the input's parent directories is an output
            inside = next((k for k in _parents(key) if k in by_key), None)
        if inside is not None:
            raise ValueError(f"output {_short(by_key[inside])} and input {_short(inp)} are nested in one another: "
                             "writing the output would destroy the input; write the map to another path")


def _parents(key: str) -> list[str]:
    """Every proper prefix of ``key`` that ends at a slash (``/a/b/`` gives ``/``, ``/a/``)."""
    return [key[: i + 1] for i in range(len(key) - 1) if key[i] == "/"]


class _ShortRepr(reprlib.Repr):
    """reprlib's bounded repr, also for bytes (``!!binary``), which reprlib would repr whole before cutting."""

    def repr_bytes(self, value: bytes, level: int) -> str:
        text = repr(value[: self.maxstring])
        return text if len(value) <= self.maxstring else text[:-1] + "..." + text[-1]

    repr_bytearray = repr_bytes


_REPR = _ShortRepr()
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = 6
_REPR.maxlevel = 3


def _short(value: Any) -> str:
    """A repr of at most ~100 characters, built without ever building the whole repr of ``value``."""
    return _REPR.repr(value)


def _clip(text: str, limit: int = _MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(value: Any) -> str:
    return f"{_short(value)} ({type(value).__name__})"


#: The message for any problem under storage_options, whose values are never echoed.
_STORAGE_OPTIONS_EXPECTED = "expected a mapping of fsspec options such as endpoint_url, profile"
_NOT_SHOWN = "(value not shown: it may hold credentials)"


def _storage_options_hint(error: dict[str, Any]) -> str:
    kind = type(error.get("input")).__name__
    came = f"a key of type {kind}" if "[key]" in error["loc"] else f"a value of type {kind}"
    return f"{_STORAGE_OPTIONS_EXPECTED}, keyed by option name, got {came} {_NOT_SHOWN}"


def _hint(error: dict[str, Any]) -> str:
    value = error.get("input")
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key; remove it or check its spelling (see configs/reference.yaml)"
    if kind == "missing":
        return "required key is missing"
    if isinstance(value, str) and kind in ("float_type", "int_type"):
        try:
            float(value)
        except ValueError:
            pass
        else:
            if "e" in value.lower() and "." not in value:
                return (f"expected a number, got the string {_short(value)}: YAML 1.1 reads '1e-5' as a string; "
                        "write it with a dot (1.0e-5) or as 0.00001")
            return f"expected a number, got the string {_short(value)}; write it without quotes"
    if isinstance(value, bool) and kind in ("float_type", "int_type"):
        return (f"expected a number, got {value} (bool): YAML 1.1 reads yes/no/on/off as booleans; "
                "write a number")
    if isinstance(value, bool) and kind in ("string_type", "literal_error"):
        expected = _clip(error["msg"]).lower().removeprefix("input should be ")
        return f"expected {expected}, got {value} (bool): YAML 1.1 reads no/yes/on/off as booleans; quote the value, e.g. 'no'"
    # pydantic's message text is not ours to trust for length: clip it.
    message = _clip(error["msg"].removeprefix("Value error, "))
    if kind.startswith("value_error") or kind == "assertion_error":
        return message
    return f"{message[0].lower() + message[1:]}, got {_describe(value)}"


def _format_errors(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    parts = []
    for error in errors[:_MAX_ERRORS]:
        loc = error["loc"]
        if loc and loc[0] == "storage_options":
            parts.append(f"storage_options: {_storage_options_hint(error)}")
            continue
        # Mapping keys (under chunks, say) come from the file and can be any length.
        path = ".".join(_clip(str(p), 60) for p in loc) or "(top level)"
        parts.append(f"{path}: {_hint(error)}")
    if len(errors) > _MAX_ERRORS:
        parts.append(f"and {len(errors) - _MAX_ERRORS:,} more errors")
    return "config error: " + "; ".join(parts)


def _check_expanded_size(data: Any) -> None:
    """Refuse a structure of more than :data:`MAX_CONFIG_VALUES` values, counting every visit.

    YAML aliases load as shared references, so a few hundred bytes can stand for
    hundreds of millions of values; validating (or printing) them would walk every
    one. The walk stops at the limit, so it costs at most that many steps, and a
    self-referencing alias (``&a [*a]``) ends there too.
    """
    count = 0
    seen: set[int] = set()
    shared = False
    stack = [iter((data,))]
    while stack:
        for value in stack[-1]:
            count += 1
            if count > MAX_CONFIG_VALUES:
                _refuse_size(shared)
            if isinstance(value, dict):
                children = (v for item in value.items() for v in item)
            elif isinstance(value, (list, tuple, set, frozenset)):
                children = iter(value)
            else:
                continue
            # Scalars may be shared by the interpreter (small ints); a container reached twice is an alias.
            shared = shared or id(value) in seen
            seen.add(id(value))
            stack.append(children)
            break
        else:
            stack.pop()


def _refuse_size(shared: bool) -> None:
    if shared:
        raise ConfigError(f"config error: YAML anchors/aliases expand to more than {MAX_CONFIG_VALUES:,} values "
                          f"(each *alias repeats everything under its &anchor; a config may hold at most "
                          f"{MAX_CONFIG_VALUES:,}); write the values out without nesting aliases")
    raise ConfigError(f"config error: expected at most {MAX_CONFIG_VALUES:,} values in a config, got more; "
                      "a config holds paths and settings: keep data out of it")


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, first: int, second: int) -> None:
        super().__init__(key, first, second)
        self.key, self.first, self.second = key, first, second


class _BadScalar(yaml.constructor.ConstructorError):
    """A scalar that a safe constructor refused (its problem text says what to do)."""


class _ForbiddenTag(yaml.YAMLError):
    def __init__(self, tag: str, line: int) -> None:
        super().__init__(tag, line)
        self.tag, self.line = tag, line


# libyaml's parser when PyYAML was built with it: ~7x faster on a token-dense file (a 1 MiB list of numbers
# takes ~17 s with the pure-Python parser on a busy machine). The constructors are the same safe ones.
_SafeBase = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _ConfigLoader(_SafeBase):
    """``yaml.safe_load``'s loader (only the safe constructors) that also refuses duplicate keys.

    PyYAML keeps the last of two equal keys in a mapping; in a config that
    silently drops a setting.
    """

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._checked: set[int] = set()

    def flatten_mapping(self, node) -> None:
        # Every mapping passes here before it is constructed, and a mapping merged into another
        # (<<: *base) passes here before the merge rewrites its value: so each one is checked as written.
        # A key beside a merge may override a merged one; that is what merges are for.
        if id(node) not in self._checked:
            self._checked.add(id(node))
            seen: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node)
                first = seen.setdefault(key, key_node)
                if first is not key_node:
                    raise _DuplicateKey(key, first.start_mark.line + 1, key_node.start_mark.line + 1)
        super().flatten_mapping(node)

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:
            # A safe constructor refusing a scalar, e.g. 2024-13-01 (month 13) or an int of > 4300 digits.
            raise _BadScalar(None, None, f"cannot read this value ({_clip(str(exc), 80)}); quote it if it is meant "
                             "as a string", node.start_mark) from None


def _refuse_tag(loader: _ConfigLoader, node: yaml.Node) -> Any:
    raise _ForbiddenTag(node.tag, node.start_mark.line + 1)


# Every tag without a safe constructor (!!python/object/apply:..., !custom) comes here, instead of
# SafeLoader's "could not determine a constructor", which reads like a syntax error.
_ConfigLoader.add_constructor(None, _refuse_tag)


def _load_yaml(text: str) -> Any:
    """``yaml.safe_load`` with duplicate keys and unknown tags refused (see :class:`_ConfigLoader`)."""
    return yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader subclass


def _yaml_problem(where: str, exc: BaseException) -> ConfigError:
    """The one-line error for a config document (``where``: the file or the ``--set`` item) that did not load."""
    if isinstance(exc, _DuplicateKey):
        return ConfigError(f"{where} has the key {_short(exc.key)} twice in one mapping (line {exc.first} and line "
                           f"{exc.second}); a key may appear once, and YAML would silently keep the last: "
                           "remove one")
    if isinstance(exc, _ForbiddenTag):
        tag = _clip(exc.tag.replace("tag:yaml.org,2002:", "!!"), 80)
        if tag.startswith("!!python/"):
            return ConfigError(f"{where} line {exc.line}: the tag {tag} constructs a Python object, and tags that "
                               "construct Python objects are not allowed in a config; write plain values (strings, "
                               "numbers, lists, mappings) instead")
        return ConfigError(f"{where} line {exc.line}: the tag {tag} is not a plain YAML type, and a config allows "
                           "only plain values; remove the tag and write a string, number, list or mapping")
    if isinstance(exc, RecursionError):
        return ConfigError(f"{where} nests lists or mappings too deeply to read (a config needs three levels); "
                           "remove the extra nesting")
    mark = getattr(exc, "problem_mark", None)
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = _clip(getattr(exc, "problem", None) or str(exc).splitlines()[0])
    fix = "" if isinstance(exc, _BadScalar) else "; fix the syntax there"
    return ConfigError(f"{where} is not valid YAML{at}: {problem}{fix}")


def parse_config(data: Any) -> RunConfig:
    """Validate a mapping (as read from YAML) into a :class:`RunConfig`.

    Raises
    ------
    ConfigError
        With every problem on one line (the first ten, the rest counted), each
        named by its key path; also when ``data`` holds more than
        :data:`MAX_CONFIG_VALUES` values, counting each YAML alias in full.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"config error: expected a mapping of keys (reference:, moving:, ...), "
                          f"got {type(data).__name__}; see configs/reference.yaml")
    _check_expanded_size(data)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc)) from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (values parsed as YAML) to a config mapping.

    Nothing set under ``storage_options`` is echoed in an error: it may hold credentials.
    """
    data = dict(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        secret = item.startswith("storage_options")
        shown = f"storage_options... {_NOT_SHOWN}" if secret else _short(item)
        if not sep or not key:
            raise ConfigError(f"--set expects key=value (e.g. window=9 or compute.workers=2), got {shown}")
        try:
            value = _load_yaml(raw) if raw else ""
        except (_DuplicateKey, _ForbiddenTag, RecursionError) as exc:
            raise _yaml_problem(f"--set {key if secret else _short(item)}", exc) from None
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is not None and not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                if secret:
                    raise ConfigError(f"--set {_short(key)}: {where} is a {type(child).__name__}, not a mapping "
                                      f"{_NOT_SHOWN}; {_STORAGE_OPTIONS_EXPECTED}: set {where}=... as a whole")
                raise ConfigError(f"--set {_short(item)}: {where} is {_short(child)}, not a mapping; "
                                  f"set {where}=... as a whole")
            child = dict(child or {})
            node[part] = child
            node = child
        node[parts[-1]] = value
    return data


def _read_config_text(path: Path) -> str:
    """The text of a config file of at most :data:`MAX_CONFIG_BYTES` (the rest is never read)."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_CONFIG_BYTES + 1)
            size = max(os.fstat(file.fileno()).st_size, len(raw))
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"config file {_short(str(path))} is {size:,} bytes; expected at most "
                              f"{MAX_CONFIG_BYTES:,} bytes (1 MiB) for a config, which holds paths and settings: "
                              "check that this is the config file, and keep data out of it")
        return raw.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {_short(str(path))} does not exist; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {_short(str(path))}: {_clip(str(exc))}") from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config with ``yaml.safe_load``'s constructors, apply overrides and validate it.

    Raises
    ------
    ConfigError
        If the file is missing, unreadable or over :data:`MAX_CONFIG_BYTES`; is
        not valid YAML (the message gives the line), repeats a key in a mapping
        or uses a tag that constructs Python objects; expands (through YAML
        aliases) to over :data:`MAX_CONFIG_VALUES` values; or does not fit the
        schema.
    """
    path = Path(path)
    text = _read_config_text(path)
    try:
        data = _load_yaml(text)
    except (yaml.YAMLError, RecursionError) as exc:
        raise _yaml_problem(f"config file {_short(str(path))}", exc) from None
    if data is None:
        data = {}
    if overrides:
        if not isinstance(data, dict):
            raise ConfigError(f"config error: expected a mapping of keys, got {type(data).__name__}")
        data = apply_overrides(data, overrides)
    return parse_config(data)
