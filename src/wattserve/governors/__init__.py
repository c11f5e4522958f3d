"""Step governors: per-iteration policies behind `wattserve.seam.StepGovernor`."""

from wattserve.governors.biscale import BiScaleGovernor
from wattserve.governors.decode_slack import DecodeSlackGovernor
from wattserve.governors.max_clock import MaxClockGovernor
from wattserve.governors.prefill_mpc import PrefillMpcGovernor
from wattserve.governors.registry import GOVERNORS, make_governor
from wattserve.governors.tpot_slack import TpotSlackGovernor

__all__ = ["GOVERNORS", "BiScaleGovernor", "DecodeSlackGovernor", "MaxClockGovernor", "PrefillMpcGovernor",
           "TpotSlackGovernor", "make_governor"]
