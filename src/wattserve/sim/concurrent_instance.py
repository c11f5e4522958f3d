"""A concurrent instance: prefill and decode run at the same time on the same GPUs, as two streams.

RAPID-Serve ("RAPID-Serve: Resource-efficient and Accelerated P/D Intra-GPU Disaggregation",
Masood, Gaur, Jayasena, arXiv 2601.11822) runs separate prefill and decode processes on the same
GPUs, sharing the weights and the KV cache (no transfer), with prompts prefilled whole (not chunked).
Here the decode stream is the `Instance`'s own machinery (continuous batching, closed-form decode
runs, preemption); the prefill stream is one whole-prompt batch at a time beside it, up to the
prefill token budget. Both share one KV ledger, one clock and one power draw: their latency models
(`corun_latency.StreamLatency`) see each other, the GPU's power follows their combined utilization,
and the cap bounds the sum.

When the prefill stream starts or ends a batch, or the compute share changes, the other stream's
speed changes mid-step: the decode run is cut at the iteration in flight and that iteration finishes
at the new speed (`_split`, exact as for a clock change), and the prefill batch's remaining work is
re-timed at its new speed. The step governor is asked at each boundary of either stream; its
`decode_share` (RAPID-Serve's Adaptive Resource Manager: `governors/rapid_serve.py`) sets the split,
unless the control plane pinned one (`SetComputeShare`). The prefill's contention is evaluated with
the decode batch at the start of the decode step that runs beside it.

An instance built to switch (`Cluster(concurrent_switch=True)`, for the planner) is a
`ConcurrentInstance` in every role: with its streams off (any role but concurrent) it is the plain
`Instance`, clock and all. A switch into concurrent takes effect at once, as one into colocated does
(seam/roles.instant_switch): prompts that hybrid batches had begun continue on the prefill stream
once the step in flight ends. A switch out waits for the prefill batch in flight, if any, then
takes effect; what the instance holds finishes there.
"""

from __future__ import annotations

from typing import Any

from wattserve.catalog.models import BatchShape
from wattserve.seam.governor import StepDecision
from wattserve.sim.corun_latency import CoRun, StreamLatency
from wattserve.sim.gpu import IDLE as IDLE_SHARE
from wattserve.sim.instance import Instance
from wattserve.sim.step_clock import MIXED, StepClock

__all__ = ["ConcurrentInstance"]


class ConcurrentInstance(Instance):
    @property
    def streams(self) -> bool:
        """Whether prompts run on a stream of their own (in role concurrent; in any other role the
        instance is the plain `Instance`)."""
        return self.role == "concurrent"

    @property
    def mixes(self) -> bool:  # type: ignore[override]
        return self.role != "concurrent"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        spec, power = self.clock.spec, self.clock.power
        self.corun = CoRun(self.latency)
        self.plain_clock = self.clock
        """The clock of the instance's roles without streams (hybrid batches, prefill, decode)."""
        decode, prefill = StreamLatency(self.corun, "decode"), StreamLatency(self.corun, "prefill")
        self.stream_clock = StepClock(spec, decode, power, decode.regime)
        self.pclock = StepClock(spec, prefill, power, prefill.regime)
        self.leaving: str | None = None
        """The role a switch out of concurrent waits to take until the prefill batch in flight ends."""
        self._use_clock(self.streams)
        self.pinned = False
        """Whether the control plane pinned the decode share (`SetComputeShare`)."""
        self.pinned_share: float | None = None
        self.p_left = 1.0
        self.p_t0 = 0.0
        self.p_dur = 0.0
        self.p_end = -1.0
        self.p_start = 0.0
        self.p_version = 0
        self.prefill_busy_s = 0.0
        self.prefill_batches = 0

    @property
    def p_busy(self) -> bool:
        """Whether a prefill batch runs on the prefill stream."""
        return self.corun.shapes["prefill"] is not None

    @property
    def p_shape(self) -> BatchShape:
        shape = self.corun.shapes["prefill"]
        assert shape is not None
        return shape

    def _use_clock(self, streams: bool) -> None:
        """The decode stream's clock with streams (it sees the prefill stream), else the plain one."""
        self.clock = self.stream_clock if streams else self.plain_clock
        self.clock.refresh(self.gpus)
        if streams:
            self.pclock.refresh(self.gpus)

    # ---- role changes ----
    def switch_now(self, role: str) -> None:
        if self.streams and role != "concurrent" and self.p_busy:
            self.leaving = role
            return
        super().switch_now(role)

    def _finish_switch(self, arg: object) -> None:
        streams = (self.switching_to or self.role) == "concurrent"
        if streams != self.streams:
            self._use_clock(streams)
        super()._finish_switch(arg)

    # ---- the seam ----
    def pin_share(self, decode_share: float | None) -> None:
        """Hold the decode stream at `decode_share` of the compute units (None: overallocate) from
        now on, over the governor's answers; takes effect at once, as a step boundary does."""
        self.pinned = True
        self.pinned_share = decode_share
        self._set_share(decode_share)

    def _decide(self) -> StepDecision:
        """The governor's answer at a boundary of either stream; its share holds from here (the
        caller re-times what runs), unless the control plane pinned one."""
        decision = super()._decide()
        if not self.streams:
            return decision
        self.corun.decode_share = self.pinned_share if self.pinned else decision.decode_share
        return decision

    def _set_share(self, share: float | None) -> None:
        if share == self.corun.decode_share:
            return
        self.corun.decode_share = share
        self._retime_both(self.loop.now)

    def _retime_both(self, now: float) -> None:
        if self.busy:
            self._split(self.run.current_shape())
        elif self.p_busy:
            self._prefill_alone(now)

    def on_clock_change(self) -> None:
        if not self.streams:
            super().on_clock_change()
            return
        self.pclock.refresh(self.gpus)
        if self.busy:
            super().on_clock_change()
        else:
            self.clock.refresh(self.gpus)
            if self.p_busy:
                self._prefill_alone(self.loop.now)

    # ---- scheduling ----
    def poke(self) -> None:
        if not self.streams:
            super().poke()
            return
        if not self.busy:
            self.plan()
            return
        if self.pending_join and self.run.k > 1:
            self._split(None)
        if self._prefill_may_start():
            self._start_prefill()

    def plan(self) -> None:
        super().plan()
        if self.streams and self.switching_to is None and self._prefill_may_start():
            self._start_prefill()

    def _prefill_may_start(self) -> bool:
        """Whether the prefill stream may take a batch now: it is idle, prompts wait (or prompts
        that hybrid batches began before a switch into concurrent), no switch out is pending, and
        the decode stream runs no hybrid step (one begun before that switch)."""
        return (not self.p_busy and bool(self.waiting or self.active) and self.leaving is None
                and not (self.busy and self.run.shape is not None))

    def _start_prefill(self) -> None:
        now = self.loop.now
        seats = self.max_seqs - len(self.running) - len(self.pending_join) - len(self.active)
        self._admit(now, seats, self.token_budget)
        if not self.active:
            return
        pt = pairs = masked = 0
        for req in self.active:
            n = req.target - req.prefilled
            pt += n
            pairs += n * (n + 1) // 2
            masked += n * (n - 1) // 2
        shape = BatchShape(prefill_tokens=pt, prefill_seqs=len(self.active), prefill_attn_pairs=pairs,
                           prefill_masked_pairs=masked)
        self.corun.shapes["prefill"] = shape
        self.p_left = 1.0
        self.p_t0 = self.p_start = now
        self.p_dur = 0.0
        self.prefill_batches += 1
        self.view.phase = "decode" if self.busy else "prefill"
        self._decide()
        self._retime_both(now)

    def _prefill_alone(self, now: float) -> None:
        """Only the prefill stream runs: it sets the clock (the highest whose power fits the cap)."""
        self.corun.shapes["decode"] = None
        op = self.pclock.choose(self.p_shape, MIXED, None)
        self._retime_prefill(now, op.clock_mhz)
        for g in self.gpus:
            g.set_power(now, op.power_w, 1.0)
            if g.clock_mhz != op.clock_mhz:
                g.set_clock(now, op.clock_mhz)

    def _retime_prefill(self, now: float, clock_mhz: int) -> float:
        """Re-time the prefill batch's remaining work at the speed it has from now; returns its part
        of the GPU's dynamic power (the energy split between the phases)."""
        if self.p_dur > 0.0:
            self.p_left -= (now - self.p_t0) / self.p_dur
            if self.p_left < 0.0:
                self.p_left = 0.0
        own, t, other, to = self.corun.times("prefill", self.p_shape, clock_mhz)
        self.p_t0 = now
        self.p_dur = t
        end = now + self.p_left * t
        if end != self.p_end:
            self.p_version += 1
            self.p_end = end
            self.loop.at(end, self._on_prefill_end, self.p_version)
        if other is None or t <= 0.0:
            return 1.0
        up = (own.compute_s + own.memory_s) / t
        ud = (other.compute_s + other.memory_s) / to if to > 0.0 else 0.0
        return up / (up + ud) if up + ud > 0.0 else 1.0

    def _launch(self, clock_mhz: int, power_w: float, duration: float, prefill_share: float) -> None:
        if self.p_busy:
            self.corun.shapes["decode"] = BatchShape(decode_seqs=self.run.b, decode_ctx=self.run.c0)
            prefill_share = self._retime_prefill(self.loop.now, clock_mhz)
        super()._launch(clock_mhz, power_w, duration, prefill_share)

    def _went_idle(self, now: float) -> None:
        if not self.streams:
            super()._went_idle(now)
        elif self.p_busy:
            self._prefill_alone(now)
        else:
            self.corun.shapes["decode"] = None
            for g in self.gpus:
                g.set_power(now, self.clock.power.idle_w, IDLE_SHARE)

    def _on_prefill_end(self, version: int) -> None:
        if version != self.p_version:
            return
        now = self.loop.now
        self.prefill_busy_s += now - self.p_start
        self.p_dur = 0.0
        self.p_end = -1.0
        self.corun.shapes["prefill"] = None
        for req in list(self.active):
            n = req.target - req.prefilled
            req.prefilled = req.target
            self.pending_prefill_tokens -= n
            self.prompt_tokens += n
            self._prefill_done(req, now)
        if self.leaving is not None:
            role, self.leaving = self.leaving, None
            super().switch_now(role)
            if self.busy:
                self._split(self.run.current_shape())
            return
        if not self.busy:
            self.plan()
            return
        self.view.phase = "decode"
        self._decide()
        self._split(self.run.current_shape())
        if self.waiting:
            self._start_prefill()
