"""What a simulated instance shows its step governor (`wattserve.seam.StepView`).

A read-only window on the instance, made once per instance. While a governed decode run is planned
ahead, `planned_t` and `planned_ctx` move the window to the planned iteration (its start time and
context), so a governor sees each iteration as it would when it runs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Protocol

from wattserve.catalog.gpus import GpuSpec
from wattserve.catalog.models import BatchShape
from wattserve.perf.latency import LatencyModel
from wattserve.perf.power import PowerModel
from wattserve.sim.decode_run import DecodeRun
from wattserve.sim.events import EventLoop
from wattserve.sim.kv_ledger import KvLedger
from wattserve.sim.request import SimRequest
from wattserve.sim.step_clock import StepClock

RECENT_S = 5.0
"""How far back `recent_ttft_s` / `recent_tpot_s` look (the control seam's window)."""


class Viewed(Protocol):
    """What the view reads of an instance."""

    loop: EventLoop
    run: DecodeRun
    kv: KvLedger
    clock: StepClock
    latency: LatencyModel
    slo_ttft_s: float | None
    slo_tpot_s: float | None
    token_budget: int
    waiting: deque[SimRequest]
    active: list[SimRequest]
    recent_ttft: deque[tuple[float, float]]
    recent_tpot: deque[tuple[float, float]]

    @property
    def kv_live_blocks(self) -> int: ...


class InstanceView:
    __slots__ = ("_inst", "phase", "planned_t", "planned_ctx")

    def __init__(self, inst: Viewed) -> None:
        self._inst = inst
        self.phase = "decode"
        """'prefill', 'decode' or 'mixed': set by the instance before it asks."""
        self.planned_t: float | None = None
        """Start of the planned iteration shown (None: the step about to start now)."""
        self.planned_ctx = 0
        """Total decode context of the planned iteration shown."""

    @property
    def now_s(self) -> float:
        return self._inst.loop.now if self.planned_t is None else self.planned_t

    @property
    def shape(self) -> BatchShape:
        run = self._inst.run
        if self.planned_t is not None:
            return BatchShape(decode_seqs=run.b, decode_ctx=self.planned_ctx)
        return run.current_shape()

    @property
    def kv_usage(self) -> float:
        inst = self._inst
        return inst.kv_live_blocks / inst.kv.blocks if inst.kv.blocks else 0.0

    @property
    def cap_w(self) -> float:
        return self._inst.clock.cap_w

    @property
    def locked_clock_mhz(self) -> int | None:
        return self._inst.clock.lock_mhz

    @property
    def slo_ttft_s(self) -> float | None:
        return self._inst.slo_ttft_s

    @property
    def slo_tpot_s(self) -> float | None:
        return self._inst.slo_tpot_s

    @property
    def prefill_token_budget(self) -> int:
        return self._inst.token_budget

    @property
    def gpu(self) -> GpuSpec:
        return self._inst.clock.spec

    @property
    def latency(self) -> LatencyModel:
        return self._inst.latency

    @property
    def power(self) -> PowerModel:
        return self._inst.clock.power

    def queued_prompts(self) -> Sequence[tuple[float, int]]:
        inst = self._inst
        if not inst.active and not inst.waiting:
            return ()
        chunk = {id(r): n for r, n in inst.run.chunks}
        part = [(r.arrival, r.target - r.prefilled - chunk.get(id(r), 0)) for r in inst.active]
        return [p for p in part if p[1] > 0] + [(r.arrival, r.target) for r in inst.waiting]

    def batch_arrivals_s(self) -> Sequence[float]:
        return [r.arrival for r, n in self._inst.run.chunks if r.prefilled + n >= r.target]

    def recent_ttft_s(self) -> Sequence[float]:
        return _recent(self._inst.recent_ttft, self.now_s)

    def recent_tpot_s(self) -> Sequence[float]:
        return _recent(self._inst.recent_tpot, self.now_s)


def _recent(window: deque[tuple[float, float]], now: float) -> list[float]:
    """Samples in the last RECENT_S seconds, newest first: the window is in time order, so the walk
    stops at the first older sample."""
    lo = now - RECENT_S
    out = []
    for t, v in reversed(window):
        if t < lo:
            break
        if t <= now:
            out.append(v)
    return out
