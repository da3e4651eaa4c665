"""One configured run: plan it, decide where it runs, keep its outputs' state, execute it.

Its single job is a run from a validated :class:`~pipeline.config.RunConfig`: planning and chunk sizing
(:mod:`.plan`, :mod:`.chunking`), the registration to apply (:mod:`.registration`), the memory budget
(:mod:`.budget`), where it runs (:mod:`.cluster`: dask's
schedulers or dask.distributed), what the outputs record (:mod:`.provenance`), the sinks its blocks go to
(:mod:`.sinks`), execution in named steps (:mod:`.execute`), what it reports (:mod:`.summary`) and what an
output holds (:mod:`.describe`); and two commands beside runs: converting inputs once (:mod:`.ingest`) and
drawing outputs (:mod:`.preview`). It may import the config, :mod:`pipeline.chunked`, :mod:`pipeline.io` and
:mod:`pipeline.core`; the output's files themselves (ledger, lock, provenance) are written through
:mod:`pipeline.io`.
"""

from importlib import import_module

#: Where each public name lives: imported on first use, so that a command such as ``lncc preview`` does not
#: load the run machinery (numba's kernels, the schedulers) it never calls.
_HOMES = {"run": "execute", "ingest": "ingest", "IngestSummary": "ingest", "preview": "preview",
          "PreviewSummary": "preview", "plan_run": "plan", "register_run": "plan", "PairPlan": "plan",
          "PairResult": "summary", "Registration": "registration", "RunSummary": "summary"}

__all__ = ["run", "ingest", "IngestSummary", "preview", "PreviewSummary", "plan_run", "register_run", "PairPlan",
           "PairResult", "Registration", "RunSummary"]


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_HOMES[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
