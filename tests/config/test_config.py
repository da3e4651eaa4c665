"""The YAML config schema: defaults, batches, error messages that name the key path, --set overrides."""

from __future__ import annotations

import math

import pytest
import yaml
from pydantic import ValidationError

from pipeline.config import ComputeConfig, PairConfig, RunConfig, apply_overrides, load_config, parse_config
from pipeline.errors import ConfigError

SINGLE = "reference: ref.zarr\nmoving: mov.zarr\noutput: out.zarr\n"


def write_yaml(tmp_path, text, name="config.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(tmp_path, text) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write_yaml(tmp_path, text))
    message = str(info.value)
    assert "\n" not in message
    return message


# --- valid configs --------------------------------------------------------------------------------


def test_minimal_config_gets_documented_defaults(tmp_path):
    """A config with only reference/moving/output loads with every documented default."""
    cfg = load_config(write_yaml(tmp_path, SINGLE))
    assert isinstance(cfg, RunConfig)
    assert (cfg.reference, cfg.moving, cfg.output.path) == ("ref.zarr", "mov.zarr", "out.zarr")
    assert cfg.pairs is None
    assert cfg.window == 7
    assert cfg.boundary == "reflect"
    assert cfg.flat == 0.0 and isinstance(cfg.flat, float)
    assert cfg.dims is None and cfg.chunks is None
    assert cfg.zarr_format == 3
    assert cfg.compressor == "none"
    assert cfg.compute == ComputeConfig(scheduler="threads", workers=None)
    assert cfg.all_pairs() == [PairConfig(reference="ref.zarr", moving="mov.zarr", output="out.zarr")]


def test_full_config_keeps_every_value(tmp_path):
    """Every key given in YAML comes through with its value and type."""
    text = SINGLE + (
        "window: 11\nboundary: nan\nflat: -0.5\ndims: [t, y, x]\nchunks: {t: 2, y: 64, x: 32}\n"
        "zarr_format: 2\ncompressor: zstd\ncompute: {scheduler: synchronous, workers: 3}\n"
    )
    cfg = load_config(write_yaml(tmp_path, text))
    assert cfg.window == 11
    assert cfg.boundary == "nan"
    assert cfg.flat == -0.5
    assert cfg.dims == ["t", "y", "x"]
    assert cfg.chunks == {"t": 2, "y": 64, "x": 32}
    assert cfg.zarr_format == 2
    assert cfg.compressor == "zstd"
    assert cfg.compute.scheduler == "synchronous" and cfg.compute.workers == 3


def test_integer_flat_becomes_float(tmp_path):
    """`flat: 0` (a YAML int) is accepted and stored as a float."""
    cfg = load_config(write_yaml(tmp_path, SINGLE + "flat: 1\n"))
    assert cfg.flat == 1.0 and isinstance(cfg.flat, float)


def test_flat_nan_is_accepted(tmp_path):
    """`flat: .nan` loads as NaN."""
    cfg = load_config(write_yaml(tmp_path, SINGLE + "flat: .nan\n"))
    assert math.isnan(cfg.flat)


def test_batch_of_pairs(tmp_path):
    """A `pairs:` list gives one PairConfig per entry, in order, and no single pair."""
    text = (
        "pairs:\n"
        "  - {reference: a.zarr, moving: b.zarr, output: ab.zarr}\n"
        "  - {reference: c.zarr, moving: d.zarr, output: cd.zarr}\n"
        "window: 5\n"
    )
    cfg = load_config(write_yaml(tmp_path, text))
    assert cfg.reference is None and cfg.moving is None and cfg.output is None
    assert cfg.all_pairs() == [
        PairConfig(reference="a.zarr", moving="b.zarr", output="ab.zarr"),
        PairConfig(reference="c.zarr", moving="d.zarr", output="cd.zarr"),
    ]
    assert cfg.window == 5


# --- errors name the key path ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        pytest.param("colour: red\n", ["colour:", "unknown key"], id="unknown-top-level-key"),
        pytest.param("compute:\n  foo: 1\n", ["compute.foo:", "unknown key"], id="unknown-nested-key"),
        pytest.param("window: '7'\n", ["window:", "'7'", "without quotes"], id="window-string"),
        pytest.param("window: 7.5\n", ["window:", "7.5"], id="window-float"),
        pytest.param("compute:\n  workers: two\n", ["compute.workers:", "'two'"], id="workers-string"),
        pytest.param("compute:\n  workers: 0\n", ["compute.workers:", "0"], id="workers-zero"),
        pytest.param("window: 8\n", ["window:", "odd", "7 or 9"], id="even-window"),
        pytest.param("window: 1\n", ["window:", ">= 3"], id="window-1"),
        pytest.param("boundary: wrap\n", ["boundary:", "'wrap'", "reflect", "nearest", "constant", "nan"],
                     id="boundary-unknown"),
        pytest.param("flat: .inf\n", ["flat:", "[-1, 1]"], id="flat-inf"),
        pytest.param("dims: [y]\n", ["dims:", "2 names"], id="dims-length"),
        pytest.param("dims: [y, y]\n", ["dims:", "distinct"], id="dims-duplicate"),
        pytest.param("chunks: {y: 0}\n", ["chunks.y:", "0"], id="chunk-zero"),
        pytest.param("zarr_format: 4\n", ["zarr_format:", "4"], id="zarr-format"),
        pytest.param("compressor: gzip\n", ["compressor:", "'gzip'"], id="compressor"),
        pytest.param("compute:\n  scheduler: cluster\n", ["compute.scheduler:", "'cluster'"], id="scheduler"),
    ],
)
def test_error_names_key_path(tmp_path, extra, expected):
    """Each schema error is one line starting 'config error:' and naming the key path and the value."""
    message = config_error(tmp_path, SINGLE + extra)
    assert message.startswith("config error: ")
    for fragment in expected:
        assert fragment in message, (fragment, message)


def test_several_errors_reported_together(tmp_path):
    """Two bad keys are both named in the one-line message."""
    message = config_error(tmp_path, SINGLE + "window: 8\ncompute:\n  foo: 1\n")
    assert "window:" in message and "compute.foo:" in message


def test_yaml11_exponent_without_dot(tmp_path):
    """`flat: 1e-5` loads as a string under YAML 1.1; the error explains and suggests 1.0e-5."""
    assert yaml.safe_load("flat: 1e-5") == {"flat": "1e-5"}  # the trap itself
    message = config_error(tmp_path, SINGLE + "flat: 1e-5\n")
    assert "flat:" in message
    assert "1.0e-5" in message


def test_yaml11_exponent_with_dot_is_accepted(tmp_path):
    """The suggested spelling `flat: 1.0e-5` loads as the number."""
    cfg = load_config(write_yaml(tmp_path, SINGLE + "flat: 1.0e-5\n"))
    assert cfg.flat == pytest.approx(1e-5)


def test_yaml11_no_is_false(tmp_path):
    """`boundary: no` loads as False under YAML 1.1; the error says to quote it."""
    assert yaml.safe_load("boundary: no") == {"boundary": False}  # the trap itself
    message = config_error(tmp_path, SINGLE + "boundary: no\n")
    assert "boundary:" in message
    assert "False" in message
    assert "quote" in message


@pytest.mark.parametrize("missing", ["reference", "moving", "output"])
def test_missing_required_key(tmp_path, missing):
    """A single-pair config without reference, moving or output names the missing key."""
    lines = [line for line in SINGLE.splitlines(keepends=True) if not line.startswith(missing + ":")]
    message = config_error(tmp_path, "".join(lines))
    assert "missing" in message
    assert missing in message
    present = {"reference", "moving", "output"} - {missing}
    assert not any(f"key(s) {p}" in message for p in present)


def test_missing_key_inside_pairs(tmp_path):
    """A pair without output is reported as pairs.N.output."""
    text = "pairs:\n  - {reference: a.zarr, moving: b.zarr, output: o.zarr}\n  - {reference: c.zarr, moving: d.zarr}\n"
    message = config_error(tmp_path, text)
    assert "pairs.1.output:" in message
    assert "missing" in message


def test_pairs_and_reference_both_given(tmp_path):
    """Giving pairs and reference/moving/output together is refused, naming the stray keys."""
    text = SINGLE + "pairs:\n  - {reference: a.zarr, moving: b.zarr, output: o.zarr}\n"
    message = config_error(tmp_path, text)
    assert "pairs" in message
    assert "reference" in message and "not both" in message


def test_empty_pairs(tmp_path):
    """An empty pairs list is refused."""
    message = config_error(tmp_path, "pairs: []\n")
    assert "pairs" in message and "empty" in message


def test_duplicate_outputs_in_pairs(tmp_path):
    """Two pairs writing the same output are refused, naming the output."""
    text = (
        "pairs:\n"
        "  - {reference: a.zarr, moving: b.zarr, output: same.zarr}\n"
        "  - {reference: c.zarr, moving: d.zarr, output: same.zarr}\n"
    )
    message = config_error(tmp_path, text)
    assert "'same.zarr'" in message and "same or nested outputs" in message


def test_duplicate_outputs_spelled_differently(tmp_path):
    """Two pairs writing the same store under different spellings are refused."""
    text = (
        "pairs:\n"
        "  - {reference: a.zarr, moving: b.zarr, output: same.zarr}\n"
        "  - {reference: c.zarr, moving: d.zarr, output: ./same.zarr}\n"
    )
    message = config_error(tmp_path, text)
    assert "same or nested outputs" in message


@pytest.mark.parametrize("output", ["ref.zarr", "./ref.zarr", "mov.zarr/"], ids=["same", "dot-slash", "trailing"])
def test_output_equal_to_an_input(tmp_path, output):
    """An output that is one of the inputs (however spelled) is refused."""
    message = config_error(tmp_path, f"reference: ref.zarr\nmoving: mov.zarr\noutput: {output}\n")
    assert "also an input" in message
    assert repr(output) in message


def test_yaml_syntax_error_gives_line(tmp_path):
    """A YAML syntax error names the file and the line of the problem."""
    text = "reference: ref.zarr\nmoving: mov.zarr\noutput: [out.zarr\nwindow: 7\n"
    message = config_error(tmp_path, text)
    assert "not valid YAML" in message
    assert "config.yaml" in message
    assert "line 4" in message


def test_yaml_syntax_error_line_follows_the_error(tmp_path):
    """The reported line moves with the error (bad indentation on line 2)."""
    message = config_error(tmp_path, "reference: ref.zarr\n  moving: mov.zarr\noutput: out.zarr\n")
    assert "line 2" in message


def test_missing_config_file(tmp_path):
    """A config path that does not exist gives a ConfigError naming it."""
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "does not exist" in str(info.value)
    assert "nope.yaml" in str(info.value)


@pytest.mark.parametrize("text", ["- reference: a.zarr\n- moving: b.zarr\n", "just a string\n", "42\n"],
                         ids=["list", "string", "number"])
def test_non_mapping_document(tmp_path, text):
    """A YAML document that is not a mapping is refused with 'expected a mapping'."""
    message = config_error(tmp_path, text)
    assert "expected a mapping" in message


def test_empty_document_reports_missing_keys(tmp_path):
    """An empty file is treated as an empty mapping: the missing keys are named."""
    message = config_error(tmp_path, "")
    assert "missing" in message and "reference" in message and "output" in message


def test_parse_config_rejects_non_mapping():
    """parse_config itself refuses a list."""
    with pytest.raises(ConfigError, match="expected a mapping"):
        parse_config(["reference", "moving"])


# --- --set overrides ------------------------------------------------------------------------------


def test_apply_overrides_values_and_nesting():
    """--set parses values as YAML, reaches into nested keys and creates missing levels, without mutating."""
    data = {"window": 7, "compute": {"scheduler": "threads"}}
    out = apply_overrides(data, ["window=9", "compute.workers=2", "a.b.c=deep", "flat=.nan", "boundary=nearest"])
    assert out["window"] == 9 and isinstance(out["window"], int)
    assert out["compute"] == {"scheduler": "threads", "workers": 2}
    assert out["a"] == {"b": {"c": "deep"}}
    assert math.isnan(out["flat"])
    assert out["boundary"] == "nearest"
    assert data == {"window": 7, "compute": {"scheduler": "threads"}}  # the input is left alone


def test_apply_overrides_later_wins():
    """When a key is set twice the last --set wins."""
    assert apply_overrides({}, ["window=5", "window=11"]) == {"window": 11}


@pytest.mark.parametrize("item", ["window", "=9", ""])
def test_apply_overrides_malformed(item):
    """An override without key=value raises ConfigError quoting it."""
    with pytest.raises(ConfigError) as info:
        apply_overrides({}, [item])
    assert repr(item) in str(info.value)


def test_load_config_with_overrides(tmp_path):
    """load_config applies overrides before validation."""
    path = write_yaml(tmp_path, SINGLE + "window: 7\n")
    cfg = load_config(path, ["window=9", "compute.workers=2", "compute.scheduler=processes"])
    assert cfg.window == 9
    assert cfg.compute.workers == 2 and cfg.compute.scheduler == "processes"
    assert load_config(path).window == 7  # the file itself is unchanged


def test_override_is_validated(tmp_path):
    """A bad override fails validation like a bad file value, naming the key path."""
    path = write_yaml(tmp_path, SINGLE)
    with pytest.raises(ConfigError) as info:
        load_config(path, ["compute.workers=two"])
    assert "compute.workers:" in str(info.value) and "'two'" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_config(path, ["flat=1e-5"])
    assert "flat:" in str(info.value) and "1.0e-5" in str(info.value)


def test_override_of_non_mapping_document(tmp_path):
    """Overrides on a non-mapping YAML document raise ConfigError, not a TypeError."""
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(write_yaml(tmp_path, "- a\n- b\n"), ["window=9"])


# --- frozen models --------------------------------------------------------------------------------


def test_models_are_frozen(tmp_path):
    """Assigning to any config field raises and leaves the value unchanged."""
    text = "pairs:\n  - {reference: a.zarr, moving: b.zarr, output: o.zarr}\n"
    cfg = load_config(write_yaml(tmp_path, text))
    with pytest.raises(ValidationError):
        cfg.window = 9
    with pytest.raises(ValidationError):
        cfg.compute.workers = 3
    with pytest.raises(ValidationError):
        cfg.pairs[0].output = "elsewhere.zarr"
    assert cfg.window == 7
    assert cfg.compute.workers is None
    assert cfg.pairs[0].output.path == "o.zarr"


# --- outputs that would destroy inputs, flat range, --set on scalars (review findings) ---------------


@pytest.mark.parametrize("data", [
    {"reference": "out/x.zarr/ncc", "moving": "b.zarr", "output": "out/x.zarr"},
    {"reference": "a.zarr", "moving": "b.zarr", "output": "."},
    {"reference": "a.zarr", "moving": "b.zarr", "output": "c.zarr", "moving_mask": "c.zarr/mask"},
    {"pairs": [{"reference": "a.zarr", "moving": "b.zarr", "output": "o1.zarr"},
               {"reference": "c.zarr", "moving": "d.zarr", "output": "a.zarr"}]},
    {"pairs": [{"reference": "a.zarr", "moving": "b.zarr", "output": "o.zarr"},
               {"reference": "c.zarr", "moving": "d.zarr", "output": "o.zarr/inner"}]},
], ids=["input-inside-output", "output-is-cwd", "mask-inside-output", "cross-pair", "nested-outputs"])
def test_outputs_that_would_destroy_an_input_are_refused(data):
    """An output equal to, containing or inside any input, mask or other output of the run is an error."""
    with pytest.raises(ConfigError, match="output"):
        parse_config(data)


def test_file_url_spelling_of_an_input_is_recognised(tmp_path):
    """file:// and relative spellings of the same path are the same path."""
    import os

    with pytest.raises(ConfigError, match="also an input"):
        parse_config({"reference": f"file://{os.getcwd()}/a.zarr", "moving": "b.zarr", "output": "a.zarr"})


@pytest.mark.parametrize("flat", [2.0, -1.5])
def test_flat_outside_the_ncc_range_is_refused(flat):
    """flat must lie in [-1, 1] (or be NaN), so the map stays within [-1, 1]."""
    with pytest.raises(ConfigError, match=r"flat: expected a number in \[-1, 1\]"):
        parse_config({"reference": "a", "moving": "b", "output": "c", "flat": flat})


def test_set_below_a_scalar_is_refused():
    """--set nodata.reference=0 when nodata is a number would silently drop the moving nodata: refused."""
    with pytest.raises(ConfigError, match="nodata is 5, not a mapping"):
        apply_overrides({"nodata": 5}, ["nodata.reference=0"])


# --- hostile or oversized YAML: bounded time, memory and message -----------------------------------


def _alias_bomb(key: str, levels: int = 9) -> str:
    """``key`` set to ``levels`` levels of nine-fold aliases: a few hundred bytes standing for 9**levels values."""
    anchors = "a0: &l0 [a, a, a, a, a, a, a, a, a]\n" + "".join(
        f"a{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, levels + 1))
    return SINGLE + anchors + f"{key}: *l{levels}\n"


def test_config_file_over_the_size_limit_is_refused_unread(tmp_path):
    """A file over MAX_CONFIG_BYTES is refused with its size and the limit, before YAML parses it."""
    from pipeline.config import MAX_CONFIG_BYTES

    # Invalid YAML after the limit: the error must be about the size, so the rest was never parsed.
    path = write_yaml(tmp_path, SINGLE + "# " + "x" * MAX_CONFIG_BYTES + "\n[unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert f"{path.stat().st_size:,} bytes" in message
    assert "1 MiB" in message and "not valid YAML" not in message


@pytest.mark.parametrize("key", ["window", "dims", "storage_options"])
def test_yaml_alias_bomb_is_refused_quickly(tmp_path, key):
    """Nine levels of nine-fold aliases (9**9 values) are refused in well under a second, naming anchors/aliases."""
    import time

    start = time.perf_counter()
    message = config_error(tmp_path, _alias_bomb(key))
    assert time.perf_counter() - start < 5
    assert "YAML anchors/aliases expand to more than 100,000 values" in message
    assert len(message) < 300


def test_self_referencing_alias_is_refused(tmp_path):
    """``&a [*a]`` loads as a list that contains itself: refused as an alias expansion, not a recursion error."""
    message = config_error(tmp_path, SINGLE + "dims: &a [*a]\n")
    assert "anchors/aliases expand" in message


def test_too_many_plain_values_are_refused(tmp_path):
    """More than MAX_CONFIG_VALUES values without aliases: refused, and the message does not blame aliases."""
    message = config_error(tmp_path, SINGLE + "dims: [" + ", ".join(["y"] * 100_001) + "]\n")
    assert "expected at most 100,000 values" in message and "alias" not in message
    assert len(message) < 300


@pytest.mark.parametrize("text,fragment", [
    (SINGLE + "dims: [" + ", ".join(["y"] * 50_000) + "]\n", "got 50,000"),
    (SINGLE + "compute: {scheduler: '" + "x" * 500_000 + "'}\n", "compute.scheduler"),
    (SINGLE + "chunks:\n  ? " + "k" * 500_000 + "\n  : two\n", "chunks.kkk"),  # explicit key: > 1024 chars
    (SINGLE + "x: &w " + "w" * 100_000 + "\nwindow: [" + ", ".join(["*w"] * 50_000) + "]\n", "window"),
    (SINGLE + "window: " + "2" * 4000 + "\n", "odd integer"),
    (SINGLE + "pairs: [" + ", ".join(["1"] * 50) + "]\n", "and 40 more errors"),
], ids=["long-dims", "long-string", "long-key", "long-list-of-strings", "huge-int", "many-errors"])
def test_echoed_values_are_bounded(tmp_path, text, fragment):
    """A long list, string, key or integer, or many errors, give a short one-line message."""
    message = config_error(tmp_path, text)
    assert fragment in message
    assert len(message) < 1200, len(message)


@pytest.mark.parametrize("text,key,lines", [
    (SINGLE + "window: 7\nwindow: 9\n", "'window'", "line 4 and line 5"),
    (SINGLE + "compute:\n  workers: 2\n  memory: 2GB\n  workers: 3\n", "'workers'", "line 5 and line 7"),
    (SINGLE + "chunks: {1: 3, 0x1: 4}\n", "1", "line 4 and line 4"),
], ids=["top-level", "nested", "same-value-spelled-differently"])
def test_duplicate_key_is_refused_with_its_lines(tmp_path, text, key, lines):
    """A key given twice in one mapping (PyYAML would keep the last) is refused with both lines and 'remove one'."""
    message = config_error(tmp_path, text)
    assert f"the key {key} twice" in message and lines in message and "remove one" in message


def test_key_beside_a_merge_is_not_a_duplicate_but_a_repeated_key_is(tmp_path):
    """A key written beside ``<<: *anchor`` overrides the merged one (what merges are for); one written twice does
    not."""
    text = ("x-base: &base {workers: 2, memory: 1GB}\n" + SINGLE
            + "compute: {<<: *base, workers: 3}\nnodata: {reference: 0, moving: 1, moving: 2}\n")
    message = config_error(tmp_path, text)
    assert "the key 'moving' twice in one mapping (line 6 and line 6)" in message
    assert "workers" not in message


def test_duplicate_key_in_a_set_value_is_refused():
    """--set compute={workers: 1, workers: 2} is refused like the same mapping in the file."""
    with pytest.raises(ConfigError, match="the key 'workers' twice.*remove one"):
        apply_overrides({}, ["compute={workers: 1, workers: 2}"])


@pytest.mark.parametrize("value", ["!!python/object/apply:os.system [echo hi]", "!!python/name:os.system ''",
                                   "!!python/tuple [1, 2]"])
def test_object_constructing_tags_are_not_allowed(tmp_path, value):
    """Tags that construct Python objects are refused as not allowed, with the line, not as a syntax error."""
    message = config_error(tmp_path, SINGLE + f"window: {value}\n")
    assert "construct Python objects are not allowed in a config" in message
    assert "line 4" in message and "plain values" in message
    assert "syntax" not in message


def test_other_unknown_tags_ask_for_plain_values(tmp_path):
    """A custom tag (no safe constructor) is refused asking for a plain value."""
    message = config_error(tmp_path, SINGLE + "window: !odd 7\n")
    assert "!odd" in message and "line 4" in message and "plain values" in message


def test_value_no_safe_constructor_can_build_names_its_line(tmp_path):
    """A scalar such as 2024-13-01 (read as a date, month 13) is a config error with its line, not a ValueError."""
    message = config_error(tmp_path, SINGLE + "moving_mask: 2024-13-01\n")
    assert "line 4" in message and "month must be in 1..12" in message and "quote it" in message


def test_deep_nesting_is_a_config_error(tmp_path):
    """Thousands of nested brackets are a config error, not a RecursionError."""
    message = config_error(tmp_path, SINGLE + "window: " + "[" * 5000 + "]" * 5000 + "\n")
    assert "config.yaml" in message


# --- storage_options values are never echoed -------------------------------------------------------

KEY, SECRET = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.mark.parametrize("value,kind", [
    (f"'key={KEY} secret={SECRET}'", "a value of type str"),
    (f"[{KEY}, {SECRET}]", "a value of type list"),
    (f"{{1: {SECRET}}}", "a key of type int"),
    ("12345", "a value of type int"),
], ids=["string", "list", "non-string-key", "number"])
def test_storage_options_of_the_wrong_type_are_not_echoed(tmp_path, value, kind):
    """Whatever storage_options holds, the error says its type and what is expected, never the value."""
    message = config_error(tmp_path, SINGLE + f"storage_options: {value}\n")
    assert KEY not in message and SECRET[:8] not in message and "12345" not in message
    assert "storage_options: expected a mapping of fsspec options such as endpoint_url, profile" in message
    assert kind in message and "(value not shown: it may hold credentials)" in message


@pytest.mark.parametrize("overrides", [
    [f"storage_options={SECRET}"],
    [f"storage_options={SECRET}", f"storage_options.key={KEY}"],
    [f"storage_options.key:{KEY}"],
    [f"storage_options={{key: {KEY}, key: {SECRET}}}"],
], ids=["scalar", "below-a-scalar", "malformed", "duplicate-key"])
def test_storage_options_overrides_are_not_echoed(tmp_path, overrides):
    """--set storage_options... errors name the key, never the value."""
    with pytest.raises(ConfigError) as info:
        load_config(write_yaml(tmp_path, SINGLE), overrides)
    message = str(info.value)
    assert KEY not in message and SECRET[:8] not in message
    assert "storage_options" in message


def test_large_batch_is_checked_in_linear_time():
    """A thousand pairs validate in seconds (comparing every two paths took minutes), and overlaps are still found."""
    import time

    pairs = [{"reference": f"r{i}.zarr", "moving": f"m{i}.zarr", "output": f"out/o{i}.zarr"} for i in range(1000)]
    start = time.perf_counter()
    assert len(parse_config({"pairs": pairs}).pairs) == 1000
    assert time.perf_counter() - start < 5
    for extra, fragment in [({"output": "out/o3.zarr/inner"}, "same or nested outputs"),
                            ({"reference": "out/o999.zarr/ncc"}, "nested in one another"),
                            ({"moving_mask": "out"}, "nested in one another"),
                            ({"reference": "./out/o500.zarr"}, "is also an input")]:
        last = {"reference": "a.zarr", "moving": "b.zarr", "output": "c.zarr", **extra}
        with pytest.raises(ConfigError, match=fragment):
            parse_config({"pairs": pairs + [last]})
