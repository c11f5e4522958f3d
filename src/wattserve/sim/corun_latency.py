"""The latency each stream of a concurrent instance sees: its own roofline, slowed by the other stream.

A concurrent instance (RAPID-Serve, arXiv 2601.11822) runs prefill and decode on the same GPUs at
once. `CoRun` holds what both streams share (the decode share and the batch each stream runs now);
`StreamLatency` is a `LatencyModel` for one stream, so the instance's `StepClock` and closed-form
decode runs work unchanged: `iteration` returns the stream's time beside the other stream
(perf/corun.py) with the GPU's combined utilization, so the power model prices both streams and a
cap bounds their sum; `decode_coeffs` is the secant of that time between an empty context and
`REF_CTX` tokens per sequence, since the slowdown is not linear in the context.
"""

from __future__ import annotations

from wattserve.catalog.models import BatchShape
from wattserve.perf.corun import IDLE, INTERFERENCE, Demand, combined, demand, shared_time
from wattserve.perf.latency import IterCost, LatencyModel

REF_CTX = 4096
"""Context per sequence at which the decode secant is taken (a typical chat context)."""

OTHER = {"prefill": "decode", "decode": "prefill"}


class CoRun:
    __slots__ = ("base", "decode_share", "shapes", "_other")

    def __init__(self, base: LatencyModel) -> None:
        self.base = base
        self._other: tuple[BatchShape | None, float, IterCost | None, Demand] = (None, 0.0, None, IDLE)
        """The other stream's last (shape, clock, cost alone, demand): a stream's clock search and
        its successive steps time the same co-runner batch at the same few clocks."""
        self.decode_share: float | None = None
        """Fraction of the compute units the decode stream holds; None: both hold all of them."""
        self.shapes: dict[str, BatchShape | None] = {"prefill": None, "decode": None}
        """The batch each stream runs now (None: that stream is idle)."""

    def share(self, phase: str) -> float | None:
        s = self.decode_share
        if s is None:
            return None
        return s if phase == "decode" else 1.0 - s

    def times(self, phase: str, shape: BatchShape, clock_mhz: float) -> tuple[IterCost, float, IterCost | None, float]:
        """(own cost alone, own shared time, other's cost alone, other's shared time) at a clock."""
        base = self.base
        own = base.iteration(shape, clock_mhz)
        other_phase = OTHER[phase]
        other_shape = self.shapes[other_phase]
        if other_shape is None:
            return own, shared_time(own, self.share(phase), None, 0.0), None, 0.0
        shape_c, clock_c, oc, od = self._other
        if shape_c is not other_shape or clock_c != clock_mhz or oc is None:
            oc = base.iteration(other_shape, clock_mhz)
            od = demand(oc)
            self._other = (other_shape, clock_mhz, oc, od)
        own_d = demand(own)
        t = shared_time(own, self.share(phase), od, INTERFERENCE[phase], own_d)
        to = shared_time(oc, self.share(other_phase), own_d, INTERFERENCE[other_phase], od)
        return own, t, oc, to


class StreamLatency:
    """`LatencyModel` of one stream of a concurrent instance."""

    __slots__ = ("corun", "phase")

    def __init__(self, corun: CoRun, phase: str) -> None:
        self.corun = corun
        self.phase = phase

    def regime(self) -> int:
        """1 while the other stream runs a batch, else 0: a stream's clock under a cap jumps between
        the two (both streams draw power), so its clock search keeps a starting point for each."""
        return 0 if self.corun.shapes[OTHER[self.phase]] is None else 1

    def iteration(self, shape: BatchShape, clock_mhz: float) -> IterCost:
        own, t, other, to = self.corun.times(self.phase, shape, clock_mhz)
        return combined(own, t, other, to)

    def decode_coeffs(self, seqs: int, clock_mhz: float) -> tuple[float, float]:
        t0 = self.iteration(BatchShape(decode_seqs=seqs), clock_mhz).time_s
        ref = REF_CTX * seqs
        t1 = self.iteration(BatchShape(decode_seqs=seqs, decode_ctx=ref), clock_mhz).time_s
        return t0, (t1 - t0) / ref
