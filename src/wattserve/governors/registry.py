"""Step governors by name, so scenarios, the schema and the CLI can pick them."""

from __future__ import annotations

from wattserve.governors.max_clock import MaxClockGovernor
from wattserve.governors.tpot_slack import TpotSlackGovernor
from wattserve.registry import Registry
from wattserve.seam.governor import StepGovernor

GOVERNORS: Registry[StepGovernor] = Registry("governor", {
    "max-clock": MaxClockGovernor,
    "tpot-slack": TpotSlackGovernor,
})


def make_governor(name: str) -> StepGovernor:
    return GOVERNORS.make(name)
