"""Step governors by name, so scenarios and the CLI can pick them."""

from __future__ import annotations

from collections.abc import Callable

from wattserve.errors import unknown
from wattserve.governors.max_clock import MaxClockGovernor
from wattserve.governors.tpot_slack import TpotSlackGovernor
from wattserve.seam.governor import StepGovernor

GOVERNORS: dict[str, Callable[[], StepGovernor]] = {
    "max-clock": MaxClockGovernor,
    "tpot-slack": TpotSlackGovernor,
}


def make_governor(name: str) -> StepGovernor:
    if name not in GOVERNORS:
        raise unknown("governor", name, GOVERNORS)
    return GOVERNORS[name]()
