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
    assert (cfg.reference, cfg.moving, cfg.output) == ("ref.zarr", "mov.zarr", "out.zarr")
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
    assert cfg.pairs[0].output == "o.zarr"


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
