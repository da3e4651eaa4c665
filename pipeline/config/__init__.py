"""The run configuration: a strict, frozen schema read from YAML with ``safe_load``.

Its single job is to turn a YAML file (and ``--set`` overrides) into a validated :class:`RunConfig`, or one
line naming the key path, the value that came and the fix. It imports only :mod:`pipeline.errors` and
:mod:`pipeline.core.checks` (the window and ``flat`` rules have one home there) and the names of
:mod:`pipeline.core.interpolation`.
"""

from .loading import MAX_CONFIG_BYTES, MAX_CONFIG_VALUES, apply_overrides, load_config, parse_config
from .models import JOBQUEUE_SYSTEMS, ComputeConfig, JobqueueConfig, NodataConfig, PairConfig, RunConfig, input_paths
from .registration import RegistrationConfig

__all__ = ["ComputeConfig", "JobqueueConfig", "NodataConfig", "PairConfig", "RunConfig", "RegistrationConfig",
           "load_config", "parse_config", "apply_overrides", "JOBQUEUE_SYSTEMS", "MAX_CONFIG_BYTES",
           "MAX_CONFIG_VALUES", "input_paths"]
