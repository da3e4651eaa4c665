"""What a run reports: per-pair results, the whole run's summary, and the peak memory it sampled."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

__all__ = ["PairResult", "RunSummary", "PeakRss"]


@dataclass
class PairResult:
    """What one pair's run produced."""

    output: str
    shape: tuple[int, ...]
    pixels: int
    mean: float
    quantiles: dict[str, float]
    nan_fraction: float
    action: str = "fresh"
    blocks_computed: int = 0
    blocks_total: int = 0
    flat_fraction: float = 0.0
    damaged: int = 0
    #: The applied shift(s), one line (None without registration).
    registration: str | None = None
    #: How colour inputs were read (the channel policy, an alpha mask), one line; None for grey-level inputs.
    channels: str | None = None


@dataclass
class RunSummary:
    """What a whole run produced, for the CLI's summary screen."""

    pairs: list[PairResult] = field(default_factory=list)
    #: Wall time of the computation itself (the blocks, their writes and the durability sync).
    seconds: float = 0.0
    #: Wall time before it: checks, fingerprints, preparing outputs, and loading (or compiling) the kernels.
    startup_seconds: float = 0.0
    #: Of ``seconds``: making the outputs durable before they are marked complete (syncfs).
    sync_seconds: float = 0.0
    peak_rss_mb: float = 0.0

    @property
    def pixels(self) -> int:
        """Pixels computed by this run (blocks already done or up to date are not counted)."""
        return sum(p.pixels * p.blocks_computed // max(p.blocks_total, 1) for p in self.pairs)


class PeakRss:
    """Samples the resident memory of this process and all its children (e.g. process-pool workers).

    ``ru_maxrss`` would be simpler but on Linux it survives ``exec``, so a
    process started by a large parent reports the parent's peak.
    """

    def __init__(self, interval: float = 0.1):

        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        while True:
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:  # a child that just exited
                    pass
            self.peak = max(self.peak, total)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mb(self) -> float:
        return self.peak / 1e6
