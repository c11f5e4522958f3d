"""Uniform caps: every GPU asks for the same cap, every period, and leaves the batch limit alone.

The PALS baselines (arXiv 2605.21427, "PALS: Power-Aware LLM Serving for Mixture-of-Experts Models"):
`tdp` asks for each GPU's maximum cap (no capping; under a budget that cannot pay for it the
BudgetGuard takes every cap down proportionally, and the raise is asked again once the budget
returns); `static-cap` holds one cap for the whole run, the one that fits the lowest budget the run
will see (the caller passes it as `cap_w` when it knows the budget signal; otherwise the budget
share at start), so it never needs the guard to cut it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from wattserve.seam import Action, ClusterState, SetPowerCap


@dataclass
class UniformCapController:
    follows_budget: ClassVar[bool] = True
    """It re-plans its caps when the budget steps (the ControlLoop need not give caps back)."""
    name: str = "tdp"
    cap_w: float | None = None
    """The cap every GPU asks for; None: each GPU's maximum (or, with `fixed_share`, the budget share
    at start)."""
    fixed_share: bool = False
    period_s: float = 1.0

    def start(self, state: ClusterState) -> list[Action]:
        if self.fixed_share and self.cap_w is None:
            self.cap_w = state.budget_w / len(state.gpus)
        return self.decide(state)

    def decide(self, state: ClusterState) -> list[Action]:
        out: list[Action] = []
        for g in state.gpus:
            want = g.cap_max_w if self.cap_w is None else min(g.cap_max_w, max(g.cap_min_w, self.cap_w))
            if abs(g.cap_target_w - want) > 0.5:
                out.append(SetPowerCap(g.index, want))
        return out
