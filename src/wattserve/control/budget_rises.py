"""Caps given back when the budget rises.

The BudgetGuard cuts caps when the budget falls but never raises them, and a controller that only
moves power between phases (RAPID) never asks for more; so after a demand-response cut such a
policy would stay at the cut level. The ControlLoop therefore answers every rise of the budget with
`rise_caps` (through the guard, which grants only what fits) unless each of its controllers re-plans
its caps on budget changes itself (declares `follows_budget = True`: tdp, static-cap, pals)."""

from __future__ import annotations

from collections.abc import Callable

from wattserve.seam import Action, Backend, ClusterState, SetPowerCap, StepSignal


def rise_caps(state: ClusterState) -> list[SetPowerCap]:
    """Caps raised so that their targets sum to the budget in force, each GPU's share of the rise in
    proportion to its cap above its minimum (clamped at its maximum; what a clamped GPU cannot take
    goes to the others): the inverse of the BudgetGuard's proportional cut, so a budget that drops
    and comes back returns the caps to the split the policy had chosen. Empty when the targets
    already use the budget."""
    caps = {g.index: g.cap_target_w for g in state.gpus}
    lo = {g.index: g.cap_min_w for g in state.gpus}
    hi = {g.index: g.cap_max_w for g in state.gpus}
    growing = [g for g in caps if caps[g] < hi[g] - 1e-9]
    for _ in range(len(caps)):
        room = state.budget_w - sum(caps.values())
        if room <= 1e-3 or not growing:
            break
        weight = {g: caps[g] - lo[g] for g in growing}
        total = sum(weight.values())
        if total <= 1e-9:
            weight, total = dict.fromkeys(growing, 1.0), float(len(growing))
        for g in growing:
            caps[g] = min(hi[g], caps[g] + room * weight[g] / total)
        growing = [g for g in growing if caps[g] < hi[g] - 1e-9]
    return [SetPowerCap(g.index, caps[g.index]) for g in state.gpus if caps[g.index] > g.cap_target_w + 0.5]


def follow_rises(backend: Backend, budget: StepSignal, submit: Callable[[list[Action]], None]) -> None:
    """At every rise of `budget`, submit `rise_caps` (through the BudgetGuard, which grants only what
    fits)."""
    for t, before, after in zip(budget.times[1:], budget.values, budget.values[1:]):
        if after > before:
            backend.call_at(max(backend.now(), t), lambda: submit(rise_caps(backend.observe())))
