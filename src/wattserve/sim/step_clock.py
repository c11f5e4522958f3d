"""Where one instance's next step runs: SM clock, time and power under its cap, lock and governor.

TP ranks run in lockstep, so the tightest cap and the lowest clock lock of an instance's GPUs set
the clock for all of them. A governor's request acts like a further lock for that step (as
`nvidia-smi -lgc` does): the step runs at the highest supported clock at or below every lock whose
power fits the cap (`perf.operating_point`).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence

from wattserve.catalog.gpus import GpuSpec
from wattserve.catalog.models import BatchShape
from wattserve.perf.latency import LatencyModel
from wattserve.perf.operating_point import OperatingPoint, operating_point
from wattserve.perf.power import PowerModel
from wattserve.sim.gpu import SimGpu

MIXED, DECODE = 0, 1


class StepClock:
    __slots__ = ("spec", "latency", "power", "regime", "clocks", "cap_w", "lock_mhz", "top", "throttled", "_hint",
                 "_governed_hint")

    def __init__(self, spec: GpuSpec, latency: LatencyModel, power: PowerModel,
                 regime: Callable[[], int] | None = None) -> None:
        """`regime` (0 or 1) tells apart two kinds of moment whose clocks differ under one cap: a
        concurrent stream's, with the other stream running or not (`StreamLatency.regime`)."""
        self.spec = spec
        self.latency = latency
        self.regime = regime
        self.power = power
        self.clocks = spec.clocks
        self.cap_w = spec.cap_max_w
        self.lock_mhz: int | None = None
        self.top = len(self.clocks) - 1
        self.throttled = False
        self._hint: dict[int, int] = {}
        """Search starts per kind of step and `regime`."""
        self._governed_hint: dict[tuple[int, int | None], int] = {}
        """Search starts per (kind, requested clock), so a governor alternating clocks stays cheap."""

    def forget_hints(self) -> None:
        """Start the next searches afresh (the instance's work changed kind: a new role)."""
        self._hint.clear()
        self._governed_hint.clear()

    def refresh(self, gpus: Sequence[SimGpu]) -> None:
        """Re-read the caps in force and the clock locks of the instance's GPUs."""
        self.cap_w = min(g.cap_w for g in gpus)
        locks = [g.locked_clock_mhz for g in gpus if g.locked_clock_mhz is not None]
        self.lock_mhz = min(locks) if locks else None
        top = len(self.clocks) - 1
        while top > 0 and self.lock_mhz is not None and self.clocks[top] > self.lock_mhz:
            top -= 1
        self.top = top

    def choose(self, shape: BatchShape, kind: int, requested_mhz: int | None) -> OperatingPoint:
        """The operating point of a step of this shape; `throttled` says whether the cap set it."""
        lock = self.lock_mhz
        if self.regime is not None:
            kind += 2 * self.regime()
        governed = requested_mhz is not None and (lock is None or requested_mhz < lock)
        if governed:
            lock = requested_mhz
        if governed:
            hint = self._governed_hint.get((kind, lock))
            op = operating_point(self.spec, self.latency, self.power, shape, self.cap_w, lock, hint, self.clocks)
            self._governed_hint[(kind, lock)] = op.index
        else:
            op = operating_point(self.spec, self.latency, self.power, shape, self.cap_w, lock, self._hint.get(kind),
                                 self.clocks)
            self._hint[kind] = op.index
        top = self.top
        if governed and self.clocks[top] > lock:  # type: ignore[operator]
            top = max(0, bisect_right(self.clocks, lock) - 1)  # type: ignore[arg-type]
        self.throttled = op.index < top
        return op

    def prefill_share(self, shape: BatchShape, clock_mhz: int) -> float:
        """The prefill part of a step's modelled time: 1 for prompt chunks alone, 0 for decode alone,
        and for a mixed step t_prefill / (t_prefill + t_decode), each phase timed on its own at the
        step's clock (the rule summary.json's prefill/decode energy split uses)."""
        if shape.decode_seqs == 0:
            return 1.0
        if shape.prefill_tokens == 0:
            return 0.0
        lat = self.latency
        tp = lat.iteration(BatchShape(prefill_tokens=shape.prefill_tokens, prefill_seqs=shape.prefill_seqs,
                                      prefill_attn_pairs=shape.prefill_attn_pairs, prefill_ctx=shape.prefill_ctx,
                                      prefill_masked_pairs=shape.prefill_masked_pairs),
                           clock_mhz).time_s
        td = lat.iteration(BatchShape(decode_seqs=shape.decode_seqs, decode_ctx=shape.decode_ctx), clock_mhz).time_s
        return tp / (tp + td) if tp + td > 0 else 0.0
