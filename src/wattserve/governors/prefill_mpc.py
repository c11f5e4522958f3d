"""BiScale tier 2, prefill: model-predictive clock control over the next few prefill batches.

BiScale ("BiScale: Energy-Efficient Disaggregated LLM Serving via Phase-Aware Placement and DVFS",
Basit, Liu, Kong, Hu, arXiv 2602.18755; DualScale in v3) picks each prefill iteration's clock by
model-predictive control: prefill is compute-bound, so its time scales with the clock, and the
clock a batch can afford depends on the TTFT deadlines of everything queued behind it.

Each decision rolls the queue forward, assuming no new arrivals: batch 0 is the batch about to run
(`view.shape`); the queued prompts (`view.queued_prompts()`, oldest first) then fill batches 1..H-1
first-come-first-served, chunked at the prefill token budget (`view.prefill_token_budget`). For
every batch and every level of a coarse clock table the latency model predicts its time and the
power model its energy (`busy_power` x time). A DP over (batch, level), where each batch holds the
previous level or moves one level, minimises energy subject to every request finishing its prefill
inside the horizon meeting its TTFT SLO: now + the predicted times up to its last chunk <=
arrival + SLO (the request's wait so far plus its predicted batch times). Each (batch, level) keeps
two labels, the least-energy feasible path and the fastest path, so a feasible plan is found
whenever one exists in the level graph (time only grows along a path, and the fastest label is
exact); the least-energy label is the DP's answer. The first clock is applied. No feasible plan:
the maximum clock (the max-clock plan). Requests that would finish beyond the horizon are not
constrained; the next decisions see them.

The plan assumes no new arrivals, so under sustained load it would spend slack the next arrivals
need. The observed TTFTs (`view.recent_ttft_s()`, read once a second) set a mode, with thresholds
of our choosing: p90 under 0.3 x the SLO ('cool'): the plan may use any level; in between
('warm'), and whenever anything is queued behind the batch about to run, the plan stays at or above
the tier-1 base clock, which tier 1 chose for the window's arrival rate and so is the clock known
to carry the load; p90 over the SLO margin ('hot'): at or above the level above the base.

Constants we chose (the paper's are not public): horizon H = 8 batches; `levels` = 8 clocks spread
evenly over the GPU's table, always holding the maximum and the tier-1 base clock; a 5% time margin
on the SLO. Guards to the maximum clock: KV usage >= 0.8 (a slow prefill then risks preemptions),
and an overrun: when the previous decision predicted more batches back-to-back and the time since
it exceeds its prediction by more than `overrun_margin` (25%), the model is off (a cap lowering
the clock, interference), so this decision runs flat out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from wattserve.catalog.models import BatchShape
from wattserve.seam.governor import UNGOVERNED, StepDecision, StepView

KV_GUARD = 0.8


def rollout(first: BatchShape | None, queue: Sequence[tuple[float, int]], budget: int,
            horizon: int, first_arrivals: Sequence[float] = ()) -> tuple[list[BatchShape], list[float]]:
    """The next `horizon` prefill batches, FCFS and chunked at `budget`, and for each the earliest
    arrival among the requests whose last chunk it runs (inf when none); `first_arrivals` are
    those of the batch about to run."""
    shapes: list[BatchShape] = []
    oldest: list[float] = []
    if first is not None and first.prefill_tokens > 0:
        shapes.append(first)
        oldest.append(min(first_arrivals, default=float("inf")))
    budget = max(1, budget)
    i, done = 0, 0
    n_q = len(queue)
    while len(shapes) < horizon and i < n_q:
        left = budget
        pt = seqs = pctx = 0
        pairs = masked = 0.0
        arr = float("inf")
        while left > 0 and i < n_q:
            a, tokens = queue[i]
            n = min(tokens - done, left)
            pt += n
            pairs += n * (done + (n + 1) / 2)
            masked += n * (n - 1) / 2
            pctx += done
            left -= n
            if done + n >= tokens:
                seqs += 1
                arr = min(arr, a)
                i, done = i + 1, 0
            else:
                done += n
        shapes.append(BatchShape(prefill_tokens=pt, prefill_seqs=seqs, prefill_attn_pairs=pairs, prefill_ctx=pctx,
                                 prefill_masked_pairs=masked))
        oldest.append(arr)
    return shapes, oldest


def coarse_levels(clocks: Sequence[int], n: int, base: int | None) -> list[int]:
    """`n` clocks spread evenly over `clocks` (ascending), with the maximum and `base` included."""
    m = len(clocks)
    picks = {clocks[round(k * (m - 1) / max(1, n - 1))] for k in range(n)} if n > 1 else {clocks[-1]}
    picks.add(clocks[-1])
    if base is not None:
        picks.add(min(clocks, key=lambda c: abs(c - base)))
    return sorted(picks)


@dataclass(frozen=True, slots=True)
class Plan:
    clocks: tuple[int, ...]
    times_s: tuple[float, ...]
    energy_j: float
    feasible: bool


@dataclass
class PrefillMpcGovernor:
    name: str = "prefill-mpc"
    horizon: int = 8
    levels: int = 8
    slo_margin: float = 0.95
    overrun_margin: float | None = 0.25
    """Overrun guard threshold; None turns the guard off."""
    base_mhz: int | None = None
    """Tier 1's base clock: the level the first plan starts from, and the clock with no SLO."""
    _level: int | None = field(default=None, repr=False)
    _last: tuple[float, float, bool] | None = field(default=None, repr=False)
    """(decision time, predicted time of its batch, more batches were planned right after)."""
    _tables: dict[tuple[str, int | None], list[int]] = field(default_factory=dict, repr=False)
    _costs: dict[tuple[tuple[float, ...], int], tuple[float, float]] = field(default_factory=dict, repr=False)
    feedback_s: float = 1.0
    """How often observed TTFTs are read back (`view.recent_ttft_s()`)."""
    cool: float = 0.3
    """Observed p90 TTFT below this fraction of the SLO lets the plan go under the base clock."""
    _mode: str = field(default="cool", repr=False)
    _next_feedback: float = field(default=0.0, repr=False)

    def _observed(self, view: StepView, slo: float) -> str:
        """'hot' while the observed p90 TTFT of the last few seconds exceeds the SLO margin, 'cool'
        while it is under `cool` x the SLO (or nothing was seen), else 'warm'; read every period."""
        now = view.now_s
        if now >= self._next_feedback:
            self._next_feedback = now + self.feedback_s
            seen = view.recent_ttft_s()
            p90 = sorted(seen)[int(0.9 * (len(seen) - 1))] if seen else 0.0
            self._mode = "hot" if p90 > slo * self.slo_margin else "cool" if p90 < slo * self.cool else "warm"
        return self._mode

    def table(self, view: StepView) -> list[int]:
        key = (view.gpu.name, self.base_mhz)
        t = self._tables.get(key)
        if t is None:
            t = self._tables[key] = coarse_levels(view.gpu.clocks, self.levels, self.base_mhz)
        return t

    def _price(self, view: StepView, shapes: list[BatchShape], levels: list[int], start: int, lo: int
               ) -> tuple[list[list[float]], list[list[float]]]:
        """Predicted time and energy of each batch at each level a plan can reach from `start`
        (one level per batch, none below `lo`) and at the top (the max-clock plan); inf elsewhere.
        Costs are kept across decisions: with no new arrivals, the next decision's batches are this
        one's shifted by one, so most are priced once."""
        lat, pw = view.latency, view.power
        cache = self._costs
        if len(cache) > 8192:
            cache.clear()
        top = len(levels) - 1
        inf = float("inf")
        times: list[list[float]] = []
        energy: list[list[float]] = []
        for k, s in enumerate(shapes):
            tr, er = [inf] * len(levels), [inf] * len(levels)
            key = (s.prefill_tokens, s.prefill_seqs, s.prefill_attn_pairs, s.prefill_ctx, s.decode_seqs, s.decode_ctx,
                   s.prefill_masked_pairs)
            hi = min(top, start + 1 + k)
            for lv in (*range(max(lo, start - 1 - k), hi + 1), *((top,) if hi < top else ())):
                mhz = levels[lv]
                got = cache.get((key, mhz))
                if got is None:
                    cost = lat.iteration(s, mhz)
                    got = cache[(key, mhz)] = (cost.time_s, cost.time_s * pw.busy_power(cost, mhz))
                tr[lv], er[lv] = got
            times.append(tr)
            energy.append(er)
        return times, energy

    def plan(self, view: StepView, floor: float = 0) -> Plan | None:
        """The least-energy feasible plan from the current level, the max-clock plan when none is
        feasible (`feasible` False when even that misses a deadline), or None with nothing to run.
        `floor` 0.5 (or anything queued behind the first batch) keeps the plan at or above the base
        clock's level, 1 at or above the level above it; 0 lets it use every level."""
        slo = view.slo_ttft_s
        levels = self.table(view)
        top = len(levels) - 1
        shapes, oldest = rollout(view.shape, view.queued_prompts(), view.prefill_token_budget, self.horizon,
                                 view.batch_arrivals_s())
        if not shapes:
            return None
        now = view.now_s
        budget = [(a + slo * self.slo_margin - now) if slo is not None else float("inf") for a in oldest]
        if self._level is not None:
            start = min(self._level, top)
        elif self.base_mhz is not None:
            start = min(range(len(levels)), key=lambda k: abs(levels[k] - self.base_mhz))
        else:
            start = top
        lo = 0
        if floor or len(shapes) > 1:
            base = self.base_mhz if self.base_mhz is not None else levels[top]
            lo = min(range(len(levels)), key=lambda k: abs(levels[k] - base))
            lo = min(top, lo + int(floor >= 1))
            start = max(start, lo)
        times, energy = self._price(view, shapes, levels, start, lo)
        inf = float("inf")
        # a label is (energy, time, level, parent label): the least-energy and the fastest path per level
        Label = tuple[float, float, int, Any]
        cheap: list[Label | None] = [None] * len(levels)
        fast: list[Label | None] = [None] * len(levels)
        t0, e0, b0 = times[0], energy[0], budget[0]
        for lv in (start - 1, start, start + 1):
            if lo <= lv <= top and t0[lv] <= b0:
                cheap[lv] = fast[lv] = (e0[lv], t0[lv], lv, None)
        for k in range(1, len(shapes)):
            tk, ek, bk = times[k], energy[k], budget[k]
            nc: list[Label | None] = [None] * len(levels)
            nf: list[Label | None] = [None] * len(levels)
            for lv in range(max(lo, start - 1 - k), min(top, start + 1 + k) + 1):
                best_e: Label | None = None
                best_t: Label | None = None
                t_lv, e_lv = tk[lv], ek[lv]
                for p in (lv - 1, lv, lv + 1):
                    if p < 0 or p > top:
                        continue
                    c, f = cheap[p], fast[p]
                    for lab in ((c,) if c is f else (c, f)):
                        if lab is None:
                            continue
                        t = lab[1] + t_lv
                        if t > bk:
                            continue
                        e = lab[0] + e_lv
                        if best_e is None or e < best_e[0]:
                            best_e = (e, t, lv, lab)
                        if best_t is None or t < best_t[1]:
                            best_t = (e, t, lv, lab)
                nc[lv], nf[lv] = best_e, best_t
            cheap, fast = nc, nf
        best = min((lab for lab in cheap if lab is not None), key=lambda lab: lab[0], default=None)
        if best is not None:
            path: list[int] = []
            node: Label | None = best
            while node is not None:
                path.append(node[2])
                node = node[3]
            path.reverse()
            return Plan(tuple(levels[i] for i in path), tuple(times[k][i] for k, i in enumerate(path)),
                        best[0], True)
        t_max = [row[top] for row in times]
        cum, ok = 0.0, True
        for k, t in enumerate(t_max):
            cum += t
            ok = ok and cum <= budget[k]
        return Plan((levels[top],) * len(shapes), tuple(t_max), sum(row[top] for row in energy) if ok else inf, ok)

    def prefill_clock(self, view: StepView) -> StepDecision:
        now = view.now_s
        last, self._last = self._last, None
        top_mhz = view.gpu.clocks[-1]
        if view.kv_usage >= KV_GUARD:
            self._level = None
            return StepDecision(top_mhz, 1)
        if (last is not None and last[2] and self.overrun_margin is not None
                and now - last[0] > last[1] * (1.0 + self.overrun_margin)):
            self._level = None
            return StepDecision(top_mhz, 1)
        if view.slo_ttft_s is None:
            return StepDecision(self.base_mhz, 1) if self.base_mhz is not None else UNGOVERNED
        mode = self._observed(view, view.slo_ttft_s)
        plan = self.plan(view, floor=0 if mode == "cool" else 1 if mode == "hot" else 0.5)
        if plan is None:
            return StepDecision(self.base_mhz, 1) if self.base_mhz is not None else UNGOVERNED
        levels = self.table(view)
        first = plan.clocks[0]
        self._level = levels.index(first)
        self._last = (now, plan.times_s[0], len(plan.clocks) > 1)
        return StepDecision(first, 1)

    def decide(self, view: StepView) -> StepDecision:
        if view.phase != "prefill":
            return UNGOVERNED
        return self.prefill_clock(view)
