"""Reading a config: the file (size-limited), YAML (safe, no duplicate keys or tags), overrides, validation."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..errors import ConfigError
from .messages import NOT_SHOWN, STORAGE_OPTIONS_EXPECTED, clip, format_errors, short
from .models import RunConfig

__all__ = ["MAX_CONFIG_BYTES", "MAX_CONFIG_VALUES", "load_config", "parse_config", "apply_overrides"]


#: Largest config file read, in bytes. A config holds paths and settings (a few KiB); anything near this is
#: not a config, and parsing YAML costs ~0.4 s per MiB.
MAX_CONFIG_BYTES = 1024 * 1024


#: Most values (scalars, keys, lists and mappings) a config may hold once YAML aliases are expanded, each
#: alias counting everything under its anchor again. A real config has fewer than a hundred; nine levels of
#: nine-fold aliases in a few hundred bytes expand to 9**9 (~387 million), which pydantic would walk.
MAX_CONFIG_VALUES = 100_000


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
            raise _BadScalar(None, None, f"cannot read this value ({clip(str(exc), 80)}); quote it if it is meant "
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
        return ConfigError(f"{where} has the key {short(exc.key)} twice in one mapping (line {exc.first} and line "
                           f"{exc.second}); a key may appear once, and YAML would silently keep the last: "
                           "remove one")
    if isinstance(exc, _ForbiddenTag):
        tag = clip(exc.tag.replace("tag:yaml.org,2002:", "!!"), 80)
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
    problem = clip(getattr(exc, "problem", None) or str(exc).splitlines()[0])
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
        raise ConfigError(format_errors(exc)) from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (values parsed as YAML) to a config mapping.

    Nothing set under ``storage_options`` is echoed in an error: it may hold credentials.
    """
    data = dict(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        secret = item.startswith("storage_options")
        shown = f"storage_options... {NOT_SHOWN}" if secret else short(item)
        if not sep or not key:
            raise ConfigError(f"--set expects key=value (e.g. window=9 or compute.workers=2), got {shown}")
        try:
            value = _load_yaml(raw) if raw else ""
        except (_DuplicateKey, _ForbiddenTag, RecursionError) as exc:
            raise _yaml_problem(f"--set {key if secret else short(item)}", exc) from None
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is not None and not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                if secret:
                    raise ConfigError(f"--set {short(key)}: {where} is a {type(child).__name__}, not a mapping "
                                      f"{NOT_SHOWN}; {STORAGE_OPTIONS_EXPECTED}: set {where}=... as a whole")
                raise ConfigError(f"--set {short(item)}: {where} is {short(child)}, not a mapping; "
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
            raise ConfigError(f"config file {short(str(path))} is {size:,} bytes; expected at most "
                              f"{MAX_CONFIG_BYTES:,} bytes (1 MiB) for a config, which holds paths and settings: "
                              "check that this is the config file, and keep data out of it")
        return raw.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {short(str(path))} does not exist; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {short(str(path))}: {clip(str(exc))}") from None


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
        raise _yaml_problem(f"config file {short(str(path))}", exc) from None
    if data is None:
        data = {}
    if overrides:
        if not isinstance(data, dict):
            raise ConfigError(f"config error: expected a mapping of keys, got {type(data).__name__}")
        data = apply_overrides(data, overrides)
    return parse_config(data)
