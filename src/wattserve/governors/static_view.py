"""A `StepView` whose every field is given: for governor tests, benchmarks and offline replays.

The simulator's `InstanceView` and the runtime's `EngineStepView` read a live engine; this one holds
plain values, so a governor can be asked about a batch and a queue that no engine is running (the
way `bench/governor_speed.py` times decisions and the governor tests check them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from wattserve.catalog.gpus import GpuSpec
from wattserve.catalog.models import BatchShape
from wattserve.perf.latency import LatencyModel
from wattserve.perf.power import PowerModel


@dataclass
class StaticView:
    phase: str
    shape: BatchShape
    gpu: GpuSpec
    latency: LatencyModel
    power: PowerModel
    now_s: float = 0.0
    queue: list[tuple[float, int]] = field(default_factory=list)
    """(arrival s, tokens still to prefill) of the prompts behind the batch, oldest first."""
    arrivals: list[float] = field(default_factory=list)
    """Arrival times of the requests whose prompt ends in the batch."""
    slo_ttft_s: float | None = None
    slo_tpot_s: float | None = None
    kv_usage: float = 0.0
    prefill_token_budget: int = 2048
    cap_w: float = 700.0
    locked_clock_mhz: int | None = None
    ttft_seen: list[float] = field(default_factory=list)
    tpot_seen: list[float] = field(default_factory=list)

    def queued_prompts(self) -> Sequence[tuple[float, int]]:
        return self.queue

    def batch_arrivals_s(self) -> Sequence[float]:
        return self.arrivals

    def recent_ttft_s(self) -> Sequence[float]:
        return self.ttft_seen

    def recent_tpot_s(self) -> Sequence[float]:
        return self.tpot_seen
