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

from .execute import run
from .ingest import IngestSummary, ingest
from .plan import PairPlan, plan_run, register_run
from .preview import PreviewSummary, preview
from .registration import Registration
from .summary import PairResult, RunSummary

__all__ = ["run", "ingest", "IngestSummary", "preview", "PreviewSummary", "plan_run", "register_run", "PairPlan",
           "PairResult", "Registration", "RunSummary"]
