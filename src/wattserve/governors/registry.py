"""Step governors by name, so scenarios, the schema and the CLI can pick them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, is_dataclass
from typing import Any

from wattserve.governors.biscale import BiScaleGovernor
from wattserve.governors.decode_slack import DecodeSlackGovernor, SlackCaches
from wattserve.governors.max_clock import MaxClockGovernor
from wattserve.governors.prefill_mpc import PrefillMpcGovernor
from wattserve.governors.rapid_serve import RapidServeGovernor
from wattserve.governors.tpot_slack import TpotSlackGovernor
from wattserve.registry import Registry
from wattserve.seam.governor import StepGovernor, Targeted

GOVERNORS: Registry[StepGovernor] = Registry("governor", {
    "max-clock": MaxClockGovernor,
    "tpot-slack": TpotSlackGovernor,
    "biscale": BiScaleGovernor,
    "decode-slack": DecodeSlackGovernor,
    "prefill-mpc": PrefillMpcGovernor,
    "rapid-serve": RapidServeGovernor,
})


def make_governor(name: str, **kwargs: Any) -> StepGovernor:
    """The governor `name`; keyword arguments (e.g. BiScale's `prefill_base_mhz` and
    `decode_base_mhz` from tier 1) go to its constructor."""
    return GOVERNORS.make(name, **kwargs)


def targeted_governors() -> list[str]:
    """The governors that take a controller's target (`SetStepTarget`)."""
    return [n for n in GOVERNORS.names() if isinstance(GOVERNORS.make(n), Targeted)]


def sharing_factory(name: str) -> Callable[[], StepGovernor]:
    """Governors `name`, each made anew, sharing one `SlackCaches` where the governor has them (a
    `caches` field): for many engines alike, as a model of the cluster builds
    (experiments/plan_sim.py)."""
    cls = GOVERNORS[GOVERNORS.resolve(name)]
    if not (is_dataclass(cls) and "caches" in {f.name for f in fields(cls)}):
        return lambda: make_governor(name)
    caches = SlackCaches()
    return lambda: make_governor(name, caches=caches)
