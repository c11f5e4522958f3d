"""The default governor: no clock request, so every iteration runs at the highest clock that the
power cap and any control-plane clock lock allow (what a GPU's firmware does on its own)."""

from __future__ import annotations

from wattserve.seam.governor import UNGOVERNED, StepDecision, StepView


class MaxClockGovernor:
    name = "max-clock"

    def decide(self, view: StepView) -> StepDecision:
        return UNGOVERNED
