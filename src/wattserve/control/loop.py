"""Runs controllers on their own periods against any back end, through the BudgetGuard."""

from __future__ import annotations

from typing import Protocol

from wattserve.control.budget_rises import follow_rises
from wattserve.control.guard import BudgetGuard
from wattserve.seam import Action, Backend, ClusterState, Offloads


class Controller(Protocol):
    """A policy. `start` sees the first observation; `decide` runs every `period_s` seconds."""

    name: str
    period_s: float

    def start(self, state: ClusterState) -> list[Action]: ...

    def decide(self, state: ClusterState) -> list[Action]: ...


class ControlLoop:
    def __init__(self, backend: Backend, guard: BudgetGuard, controllers: list[Controller]) -> None:
        self.backend = backend
        self.guard = guard
        self.controllers = controllers
        self.ticks = 0

    def start(self) -> None:
        """Starts every controller, and gives caps back at budget rises unless every controller
        re-plans its caps on budget changes itself (control/budget_rises.py)."""
        for c in self.controllers:
            self.guard.submit(c.start(self.backend.observe()))
            if c.period_s > 0:
                self._schedule(c)
        if not all(getattr(c, "follows_budget", False) for c in self.controllers):
            follow_rises(self.backend, self.guard.budget, self.guard.submit)

    def _schedule(self, c: Controller) -> None:
        self.backend.call_at(self.backend.now() + c.period_s, lambda: self._tick(c))

    def _tick(self, c: Controller) -> None:
        """One decision. A controller that searches (`offload`) on a back end that can run work off
        its event loop (`offload(fn, then)`: the runtime, where the API shares that loop) decides on
        the state observed now while requests keep flowing; its actions go through the guard when
        it is done, and its next tick is a period after this one began (or at once, if it ran
        longer). Elsewhere (the simulator, whose time does not pass while it decides) it decides
        inline. A controller says it searches with an `offload` attribute (the planner)."""
        if self.backend.done():
            return
        self.ticks += 1
        state = self.backend.observe()
        if not isinstance(self.backend, Offloads) or not getattr(c, "offload", False):
            self.guard.submit(c.decide(state))
            self._schedule(c)
            return
        began = self.backend.now()

        def then(actions: list[Action]) -> None:
            self.guard.submit(actions)
            self.backend.call_at(max(self.backend.now(), began + c.period_s), lambda: self._tick(c))

        self.backend.offload(lambda: c.decide(state), then)
