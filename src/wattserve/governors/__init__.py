"""Step governors: per-iteration policies behind `wattserve.seam.StepGovernor`."""

from wattserve.governors.max_clock import MaxClockGovernor
from wattserve.governors.registry import GOVERNORS, make_governor
from wattserve.governors.tpot_slack import TpotSlackGovernor

__all__ = ["GOVERNORS", "MaxClockGovernor", "TpotSlackGovernor", "make_governor"]
