"""BudgetGuard: keeps the sum of GPU power caps under the cluster budget at every instant.

A cap change is not instantaneous: a lowered cap binds only after it settles, and a raised cap may
be drawn against as soon as it is asked for. So for each GPU the guard counts the larger of the cap
in force and every cap still settling (the `committed` cap), and it
- refuses caps outside a GPU's range;
- issues lowers at once, and raises only when the committed sum plus the raise fits the budget,
  which in practice means after the lowers that pay for them have settled;
- looks ahead by `lead_s` on the budget signal, so a budget drop is met by lowering caps before the
  drop takes effect (budget signals must give at least the settle time as notice);
- when the budget falls below the committed sum, takes caps down proportionally above their minimum.
Every request is logged with its time, whether applied or refused. Accounting is in integer
milliwatts, NVML's own unit, so sums are exact; caps are floored to the milliwatt.

Joint actions are ordered. A batch-limit raise submitted together with cap raises for GPUs of the
same instance is deferred (logged "deferred") until every one of those raises is in force, so the
larger batch never runs on the old, lower cap: PALS ("Power-Aware LLM Serving", see the issue
tracker) pairs a larger batch with the watts it needs, and a raised cap is granted only as the
budget frees up. If such a cap raise is withdrawn (the budget fell, or a later submit lowered the
cap) the deferred raise is dropped (logged "dropped"). Batch-limit lowers, and raises submitted
without a cap raise, go at once; a later batch limit for the same instance replaces a deferred one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from wattserve.seam import (
    Action,
    Actuation,
    ActuationLog,
    ActuationRefused,
    Backend,
    BudgetSignal,
    SetBatchLimit,
    SetPowerCap,
)

EPS_W = 1e-6


@dataclass
class DeferredLimit:
    """A batch-limit raise waiting for cap raises: `needs` maps each GPU to the milliwatts that
    must be in force before the limit is applied."""

    action: SetBatchLimit
    needs: dict[int, int]
    submitted_s: float


def _mw(watts: float) -> int:
    """Milliwatts, rounded down: for caps the guard issues."""
    return int(math.floor(watts * 1000.0 + 1e-6))


def _mw_up(watts: float) -> int:
    """Milliwatts, rounded up: for caps observed in force, so accounting never under-counts them."""
    return int(math.ceil(watts * 1000.0 - 1e-6))


class BudgetGuard:
    def __init__(self, backend: Backend, budget: BudgetSignal, log: ActuationLog | None = None,
                 lead_s: float | None = None) -> None:
        self.backend = backend
        self.budget = budget
        self.log = log if log is not None else ActuationLog()
        self.lead_s = lead_s if lead_s is not None else 2.0 * backend.cap_settle_s
        st = backend.observe()
        self.ranges = {g.index: (g.cap_min_w, g.cap_max_w) for g in st.gpus}
        self.in_force = {g.index: _mw_up(g.cap_w) for g in st.gpus}
        self.settling: dict[int, list[int]] = {g.index: [] for g in st.gpus}
        self.pending_raise: dict[int, int] = {}
        self.instance_gpus = {i.iid: i.gpus for i in st.instances}
        self.batch_limit = {i.iid: i.max_seqs for i in st.instances}
        self.deferred: dict[int, DeferredLimit] = {}
        self.min_sum = sum(_mw(lo) for lo, _ in self.ranges.values())
        self.peak_committed_w = self.committed_sum() / 1000.0
        for t in budget.change_times():
            backend.call_at(max(backend.now(), t - self.lead_s), self.enforce)

    # ---- accounting ----
    def committed(self, gpu: int) -> int:
        """Milliwatts: the larger of the cap in force and every cap still settling."""
        s = self.settling[gpu]
        return max(self.in_force[gpu], max(s)) if s else self.in_force[gpu]

    def committed_sum(self) -> int:
        return sum(self.committed(g) for g in self.in_force)

    def target(self, gpu: int) -> int:
        """The cap this GPU is heading to: a queued raise, else the latest request."""
        if gpu in self.pending_raise:
            return self.pending_raise[gpu]
        s = self.settling[gpu]
        return s[-1] if s else self.in_force[gpu]

    def effective_budget(self) -> int:
        now = self.backend.now()
        return _mw(self.budget.min_over(now, now + self.lead_s))

    def _note(self) -> None:
        c = self.committed_sum() / 1000.0
        if c > self.peak_committed_w:
            self.peak_committed_w = c

    # ---- requests ----
    def submit(self, actions: list[Action]) -> None:
        now = self.backend.now()
        caps: dict[int, int] = {}
        limits: list[SetBatchLimit] = []
        for a in actions:
            if isinstance(a, SetPowerCap):
                lo, hi = self.ranges.get(a.gpu, (None, None))
                if lo is None:
                    self.log.add(Actuation(now, "cap", a.gpu, a.watts, "refused", note="unknown GPU"))
                elif not lo - EPS_W <= a.watts <= hi + EPS_W:
                    self.log.add(Actuation(now, "cap", a.gpu, a.watts, "refused",
                                           note=f"outside [{lo:g}, {hi:g}] W"))
                else:
                    caps[a.gpu] = min(_mw(a.watts), _mw(hi))
            elif isinstance(a, SetBatchLimit):
                limits.append(a)
            else:
                self._pass_through(a)
        for g, w in caps.items():
            if abs(w - self.target(g)) < 500:
                continue
            if w < self.committed(g):
                self.pending_raise.pop(g, None)
                self._issue(g, w)
            else:
                self.pending_raise[g] = w
        raises = {g: min(w, self.target(g)) for g, w in caps.items() if min(w, self.target(g)) > self.in_force[g]}
        for a in limits:
            self._submit_limit(a, raises)
        self.enforce()

    def _submit_limit(self, a: SetBatchLimit, raises: dict[int, int]) -> None:
        self.deferred.pop(a.instance, None)
        needs = {g: raises[g] for g in self.instance_gpus.get(a.instance, ()) if g in raises}
        if not needs or a.max_seqs <= self.batch_limit.get(a.instance, a.max_seqs):
            self._pass_through(a)
            return
        now = self.backend.now()
        self.deferred[a.instance] = DeferredLimit(a, needs, now)
        self.log.add(Actuation(now, "batchlimit", a.instance, a.max_seqs, "deferred",
                               note="until the cap raise of GPU(s) " + ",".join(map(str, sorted(needs))) + " is in force"))

    def _release_limits(self) -> None:
        """Apply deferred batch-limit raises whose watts are in force; drop those whose cap raise was
        withdrawn."""
        for iid, d in list(self.deferred.items()):
            if all(self.in_force[g] >= mw for g, mw in d.needs.items()):
                del self.deferred[iid]
                self._pass_through(d.action)
            elif any(self.in_force[g] < mw and self.target(g) < mw for g, mw in d.needs.items()):
                del self.deferred[iid]
                self.log.add(Actuation(self.backend.now(), "batchlimit", iid, d.action.max_seqs, "dropped",
                                       note="the cap raise it waited for was withdrawn"))

    def _pass_through(self, a: Action) -> None:
        now = self.backend.now()
        kind = type(a).__name__.removeprefix("Set").lower()
        parts = fields(a)
        target, value = getattr(a, parts[0].name), getattr(a, parts[-1].name)
        try:
            t = self.backend.apply(a)
        except ActuationRefused as e:
            self.log.add(Actuation(now, kind, target, value, "refused", note=str(e)))
            return
        self.log.add(Actuation(now, kind, target, value, "applied", effective_s=t))
        if isinstance(a, SetBatchLimit):
            self.batch_limit[a.instance] = a.max_seqs

    def _issue(self, gpu: int, mw: int) -> None:
        now = self.backend.now()
        watts = mw / 1000.0
        try:
            t = self.backend.apply(SetPowerCap(gpu, watts))
        except ActuationRefused as e:
            self.log.add(Actuation(now, "cap", gpu, watts, "refused", note=str(e)))
            return
        self.settling[gpu].append(mw)
        self.log.add(Actuation(now, "cap", gpu, watts, "applied", effective_s=t))
        self._note()
        self.backend.call_at(t, lambda: self._settled(gpu, mw))

    def _settled(self, gpu: int, mw: int) -> None:
        s = self.settling[gpu]
        if mw in s:
            s.remove(mw)
        self.in_force[gpu] = mw
        self._try_raises()
        self._release_limits()

    def _try_raises(self) -> None:
        budget = self.effective_budget()
        for g in sorted(self.pending_raise, key=lambda g: self.pending_raise[g] - self.committed(g)):
            want = self.pending_raise[g]
            headroom = budget - self.committed_sum()
            inc = want - self.committed(g)
            if inc <= headroom:
                del self.pending_raise[g]
                self._issue(g, want)
            elif headroom >= 5000:
                self._issue(g, self.committed(g) + headroom)

    def enforce(self) -> None:
        """Bring the targets under the (looked-ahead) budget, then grant queued raises."""
        budget = self.effective_budget()
        targets = {g: min(self.target(g), self.committed(g)) if g in self.pending_raise else self.target(g)
                   for g in self.in_force}
        total = sum(targets.values())
        if total > budget:
            self.pending_raise.clear()
            spare = total - self.min_sum
            f = max(0.0, (budget - self.min_sum) / spare) if spare > 0 else 0.0
            for g, t in targets.items():
                lo = _mw(self.ranges[g][0])
                new = lo + int(math.floor((t - lo) * f))
                if new < self.committed(g):
                    self._issue(g, new)
            if budget < self.min_sum:
                self.log.add(Actuation(self.backend.now(), "budget", -1, budget / 1000.0, "infeasible",
                                       note=f"budget below the sum of minimum caps {self.min_sum / 1000:g} W"))
        self._try_raises()
        self._release_limits()
