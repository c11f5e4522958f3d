"""Step governors by name, so scenarios, the schema and the CLI can pick them."""

from __future__ import annotations

from typing import Any

from wattserve.governors.biscale import BiScaleGovernor
from wattserve.governors.decode_slack import DecodeSlackGovernor
from wattserve.governors.max_clock import MaxClockGovernor
from wattserve.governors.prefill_mpc import PrefillMpcGovernor
from wattserve.governors.rapid_serve import RapidServeGovernor
from wattserve.governors.tpot_slack import TpotSlackGovernor
from wattserve.registry import Registry
from wattserve.seam.governor import StepGovernor

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
