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
Every request is logged with its time, whether applied or refused.
"""

from __future__ import annotations

from wattserve.seam import (
    Action,
    Actuation,
    ActuationLog,
    ActuationRefused,
    Backend,
    BudgetSignal,
    SetPowerCap,
)

EPS_W = 1e-6


class BudgetGuard:
    def __init__(self, backend: Backend, budget: BudgetSignal, log: ActuationLog | None = None,
                 lead_s: float | None = None) -> None:
        self.backend = backend
        self.budget = budget
        self.log = log if log is not None else ActuationLog()
        self.lead_s = lead_s if lead_s is not None else 2.0 * backend.cap_settle_s
        st = backend.observe()
        self.ranges = {g.index: (g.cap_min_w, g.cap_max_w) for g in st.gpus}
        self.in_force = {g.index: g.cap_w for g in st.gpus}
        self.settling: dict[int, list[float]] = {g.index: [] for g in st.gpus}
        self.pending_raise: dict[int, float] = {}
        self.min_sum = sum(lo for lo, _ in self.ranges.values())
        self.peak_committed_w = self.committed_sum()
        for t in budget.change_times():
            backend.call_at(max(backend.now(), t - self.lead_s), self.enforce)

    # ---- accounting ----
    def committed(self, gpu: int) -> float:
        s = self.settling[gpu]
        return max(self.in_force[gpu], max(s)) if s else self.in_force[gpu]

    def committed_sum(self) -> float:
        return sum(self.committed(g) for g in self.in_force)

    def target(self, gpu: int) -> float:
        """The cap this GPU is heading to: a queued raise, else the latest request."""
        if gpu in self.pending_raise:
            return self.pending_raise[gpu]
        s = self.settling[gpu]
        return s[-1] if s else self.in_force[gpu]

    def effective_budget(self) -> float:
        now = self.backend.now()
        return self.budget.min_over(now, now + self.lead_s)

    def _note(self) -> None:
        c = self.committed_sum()
        if c > self.peak_committed_w:
            self.peak_committed_w = c

    # ---- requests ----
    def submit(self, actions: list[Action]) -> None:
        now = self.backend.now()
        caps: dict[int, float] = {}
        for a in actions:
            if isinstance(a, SetPowerCap):
                lo, hi = self.ranges.get(a.gpu, (None, None))
                if lo is None:
                    self.log.add(Actuation(now, "cap", a.gpu, a.watts, "refused", note="unknown GPU"))
                elif not lo - EPS_W <= a.watts <= hi + EPS_W:
                    self.log.add(Actuation(now, "cap", a.gpu, a.watts, "refused",
                                           note=f"outside [{lo:g}, {hi:g}] W"))
                else:
                    caps[a.gpu] = a.watts
            else:
                self._pass_through(a)
        for g, w in caps.items():
            if abs(w - self.target(g)) < 0.5:
                continue
            if w < self.committed(g):
                self.pending_raise.pop(g, None)
                self._issue(g, w)
            else:
                self.pending_raise[g] = w
        self.enforce()

    def _pass_through(self, a: Action) -> None:
        now = self.backend.now()
        kind = type(a).__name__.removeprefix("Set").lower()
        target = getattr(a, "instance", getattr(a, "gpu", -1))
        value = getattr(a, "role", getattr(a, "mhz", getattr(a, "max_seqs", getattr(a, "fraction", None))))
        try:
            t = self.backend.apply(a)
        except ActuationRefused as e:
            self.log.add(Actuation(now, kind, target, value, "refused", note=str(e)))
            return
        self.log.add(Actuation(now, kind, target, value, "applied", effective_s=t))

    def _issue(self, gpu: int, watts: float) -> None:
        now = self.backend.now()
        try:
            t = self.backend.apply(SetPowerCap(gpu, watts))
        except ActuationRefused as e:
            self.log.add(Actuation(now, "cap", gpu, watts, "refused", note=str(e)))
            return
        self.settling[gpu].append(watts)
        self.log.add(Actuation(now, "cap", gpu, watts, "applied", effective_s=t))
        self._note()
        self.backend.call_at(t, lambda: self._settled(gpu, watts))

    def _settled(self, gpu: int, watts: float) -> None:
        s = self.settling[gpu]
        if watts in s:
            s.remove(watts)
        self.in_force[gpu] = watts
        self._try_raises()

    def _try_raises(self) -> None:
        budget = self.effective_budget()
        for g in sorted(self.pending_raise, key=lambda g: self.pending_raise[g] - self.committed(g)):
            want = self.pending_raise[g]
            headroom = budget - self.committed_sum()
            inc = want - self.committed(g)
            if inc <= headroom + EPS_W:
                del self.pending_raise[g]
                self._issue(g, want)
            elif headroom >= 5.0:
                self._issue(g, self.committed(g) + headroom)

    def enforce(self) -> None:
        """Bring the targets under the (looked-ahead) budget, then grant queued raises."""
        budget = self.effective_budget()
        targets = {g: min(self.target(g), self.committed(g)) if g in self.pending_raise else self.target(g)
                   for g in self.in_force}
        total = sum(targets.values())
        if total > budget + EPS_W:
            self.pending_raise.clear()
            spare = total - self.min_sum
            f = max(0.0, (budget - self.min_sum) / spare) if spare > 0 else 0.0
            for g, t in targets.items():
                lo = self.ranges[g][0]
                new = lo + (t - lo) * f
                if new < self.committed(g) - EPS_W:
                    self._issue(g, new)
            if budget < self.min_sum:
                self.log.add(Actuation(self.backend.now(), "budget", -1, budget, "infeasible",
                                       note=f"budget below the sum of minimum caps {self.min_sum:g} W"))
        self._try_raises()
