"""PALS: power cap and batch limit chosen jointly, from offline models and a feedback loop.

After "PALS: Power-Aware LLM Serving for Mixture-of-Experts Models" (Hankendi, Shahout, Yu, Coskun;
arXiv 2605.21427). Every period the controller reads the throughput target and the budget in force
(`ClusterState.target_tok_s`, `budget_w`) and:
- feed-forward: among the (cap, batch) points of its `OperatingTable` whose cap fits the budget
  share (budget / GPUs: the BudgetGuard counts caps, not draw), the one with the best predicted
  tokens per joule that meets the target with a margin; if none meets it, the one with the highest
  predicted throughput under the budget. It re-plans when the target or the budget steps, and
  resets the loop below.
- feedback: a PI loop on the measured cluster throughput (this controller's own difference of the
  output-token counters) trims the cap around the feed-forward cap, at most `max_step_w` per period
  (the authors' released controller moves at most 15 W per step, with a 0.5-2 s period); the
  integral stops growing while the cap is pinned at a bound (anti-windup). It never trims below
  the cap of best predicted tokens per joule for the planned batch: beyond it a lower cap costs
  energy per token, which is what the controller is there to save.
- actuation: `SetPowerCap` on every GPU and `SetBatchLimit` on every instance, submitted together,
  so the BudgetGuard defers a batch raise until the cap raises it needs are in force.
`batch-only` is the same planner with the cap fixed at the budget share: it tunes the batch alone.
The paper's gains, PID gains and margins are not public beyond the facts above; ours are chosen so
that a 10% shortfall moves the cap by about 10 W at once and 3 W per period after.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from wattserve.seam import Action, ClusterState, SetBatchLimit, SetPowerCap
from wattserve.seam.operating_table import OperatingPoint, OperatingTable


def plan(table: OperatingTable, target_tok_s: float | None, share_w: float, instances: int, tp: int,
         margin: float, fixed_cap: bool = False) -> OperatingPoint:
    """The feed-forward choice. `share_w` is the per-GPU cap the budget allows. With `fixed_cap`
    (batch-only) only that cap is considered, and the batch is sized to the target: the lowest
    predicted power that meets it (PALS's released feed-forward rule), since at a fixed cap the
    batch is the only way to spend less."""
    top = min(share_w, table.caps_w[-1])
    if fixed_cap:
        caps: list[float] = [top]
    else:
        caps = [c for c in table.caps_w if c <= top + 1e-9] or [table.caps_w[0]]
        if top > caps[-1] + 1e-9:
            caps.append(top)
    points = [table.at(c, b) for c in caps for b in table.batches]
    if target_tok_s is not None:
        meeting = [p for p in points if p.tok_s * instances >= target_tok_s * (1.0 + margin)]
        if meeting and fixed_cap:
            return min(meeting, key=lambda p: (p.power_w, -p.tok_s))
        if meeting:
            return max(meeting, key=lambda p: (p.tok_per_j(tp), -p.power_w))
        return max(points, key=lambda p: (p.tok_s, -p.power_w))
    return max(points, key=lambda p: (p.tok_per_j(tp), -p.power_w))


@dataclass
class PalsController:
    follows_budget: ClassVar[bool] = True
    """It re-plans its caps when the budget steps (the ControlLoop need not give caps back)."""
    table: OperatingTable
    name: str = "pals"
    period_s: float = 1.0
    move_cap: bool = True
    """False: batch-only (the cap stays at the budget share)."""
    margin: float = 0.05
    """Feed-forward and setpoint headroom over the target (relative)."""
    kp_w: float = 100.0
    """Cap trim per unit of relative throughput error, W."""
    ki_w: float = 30.0
    """Cap trim per unit of accumulated relative error (one unit per period), W."""
    max_step_w: float = 15.0
    deadband_w: float = 2.0
    """Trims smaller than this are not sent (a cap write costs a driver call and a settle)."""
    settle_periods: int = 2
    """Periods after a re-plan before the loop acts (the new batch fills, the new cap settles)."""
    _ff: OperatingPoint | None = None
    _cap: float = 0.0
    _integral: float = 0.0
    _hold: int = 0
    _key: tuple[float | None, float] = (None, 0.0)
    _last: tuple[float, int] | None = None

    def start(self, state: ClusterState) -> list[Action]:
        return self.decide(state)

    def decide(self, state: ClusterState) -> list[Action]:
        live = [i for i in state.instances if i.alive and i.switching_to is None]
        if not live:
            return []
        gpus = {g.index: g for g in state.gpus}
        mine = [gpus[x] for i in live for x in i.gpus]
        share = state.budget_w / len(state.gpus)
        cap_lo = max(min(g.cap_min_w for g in mine), self.table.caps_w[0])
        cap_hi = min(min(g.cap_max_w for g in mine), share)
        tokens = sum(i.output_tokens for i in live)
        rate = None
        if self._last is not None and state.time_s > self._last[0]:
            rate = (tokens - self._last[1]) / (state.time_s - self._last[0])
        self._last = (state.time_s, tokens)
        target = state.target_tok_s
        key = (None if target is None else round(target, 3), round(state.budget_w, 3))
        if self._ff is None or key != self._key:
            self._key = key
            self._ff = plan(self.table, target, share, len(live), len(live[0].gpus), self.margin,
                            fixed_cap=not self.move_cap)
            self._cap = min(max(self._ff.cap_w, cap_lo), cap_hi)
            self._integral = 0.0
            self._hold = self.settle_periods
        elif self._hold > 0:
            self._hold -= 1
        elif self.move_cap and target and rate is not None:
            self._cap = self._trim(target, rate, max(cap_lo, min(self._ff.cap_w, self._best_cap())), cap_hi)
        if not self.move_cap:
            self._cap = cap_hi
        out: list[Action] = []
        for g in mine:
            if abs(g.cap_target_w - self._cap) > 0.5:
                out.append(SetPowerCap(g.index, self._cap))
        for i in live:
            if i.max_seqs != self._ff.batch:
                out.append(SetBatchLimit(i.iid, self._ff.batch))
        return out

    def _best_cap(self) -> float:
        """The cap of best predicted tokens per joule at the planned batch: trimming below it would
        spend less power but more energy per token, so the loop does not go there."""
        assert self._ff is not None
        batch = self._ff.batch
        return max(self.table.caps_w, key=lambda c: self.table.at(c, batch).tok_per_j(1))

    def _trim(self, target: float, rate: float, lo: float, hi: float) -> float:
        """One PI step on the relative error to the setpoint target * (1 + margin)."""
        assert self._ff is not None
        err = (target * (1.0 + self.margin) - rate) / target
        pinned = (self._cap >= hi - 1e-9 and err > 0) or (self._cap <= lo + 1e-9 and err < 0)
        if not pinned:
            self._integral += err
        want = self._ff.cap_w + self.kp_w * err + self.ki_w * self._integral
        step = min(max(want - self._cap, -self.max_step_w), self.max_step_w)
        if abs(step) < self.deadband_w:
            return self._cap
        return min(max(self._cap + step, lo), hi)
