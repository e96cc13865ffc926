"""Latency statistics of one model on one target, and the measurement record every backend returns.

Every backend (local interpreter, adb + benchmark_model, Edge TPU) reports a `Measurement`: either a
`LatencyStats` or an error saying why that model could not be timed there, so one failing row never
stops a table. Statistics are in milliseconds. Rows from TFLite's benchmark_model (adb) have no
median or p90: older builds print only count/avg/std/min/max, and the percentiles newer builds add
are kept in `details` so that every adb row is ranked by the same statistic, the mean.
"""
import dataclasses
from typing import List, Optional, Sequence

import numpy as np

LATENCY_STATISTICS = ("typical", "median", "mean", "min")


@dataclasses.dataclass
class LatencyStats:
    count: int
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    median_ms: Optional[float] = None
    p90_ms: Optional[float] = None

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> "LatencyStats":
        samples = np.asarray(samples_ms, dtype=np.float64)
        if samples.size == 0:
            raise ValueError("no latency samples")
        return cls(count=int(samples.size), mean_ms=float(samples.mean()), std_ms=float(samples.std()),
                   min_ms=float(samples.min()), max_ms=float(samples.max()),
                   median_ms=float(np.median(samples)), p90_ms=float(np.percentile(samples, 90)))

    @property
    def typical_ms(self) -> float:
        """The figure tables sort and plot by: the median when known, else the mean."""
        return self.median_ms if self.median_ms is not None else self.mean_ms

    def statistic_ms(self, statistic: str) -> float:
        """One statistic by name: 'typical' (see `typical_ms`), 'median', 'mean' or 'min'."""
        if statistic == "typical":
            return self.typical_ms
        if statistic not in LATENCY_STATISTICS:
            raise ValueError(f"unknown latency statistic {statistic!r}; one of {', '.join(LATENCY_STATISTICS)}")
        value = getattr(self, f"{statistic}_ms")
        if value is None:
            raise ValueError(f"this measurement has no {statistic} (benchmark_model over adb reports no median)")
        return value


@dataclasses.dataclass
class Measurement:
    """One model on one target of one device: latency, or the error that prevented it."""
    model_path: str
    backend: str                     # local | adb | edgetpu
    target: str                      # Target.label, e.g. "cpu", "nnapi(accelerator=qti-dsp)"
    device: str                      # e.g. "Pixel 4 (SM8150) R58M123ABC" or the local CPU's name
    threads: int
    latency: Optional[LatencyStats] = None
    error: str = ""
    details: dict = dataclasses.field(default_factory=dict)   # backend extras (init time, command, ...)
    samples_ms: List[float] = dataclasses.field(default_factory=list)   # every timed run, when known

    @property
    def ok(self) -> bool:
        return self.latency is not None and not self.error


def pool_rounds(rounds: Sequence[Measurement]) -> Measurement:
    """One measurement from several rounds of the same model and target: the samples of every round
    pooled, so that slow drift of a shared machine weighs on all models alike. A failed round fails it."""
    first = rounds[0]
    pooled = dataclasses.replace(first, details=dict(first.details, rounds=len(rounds)),
                                 samples_ms=[sample for m in rounds for sample in m.samples_ms])
    failed = next((m for m in rounds if not m.ok), None)
    if failed is not None:
        pooled.latency, pooled.error = None, failed.error or "no latency measured"
    elif len(rounds) > 1:
        pooled.latency = LatencyStats.from_samples(pooled.samples_ms)
    return pooled
