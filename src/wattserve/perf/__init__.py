"""Latency and power models: what one engine iteration costs in time and watts."""

from wattserve.perf.latency import IterCost, LatencyModel, RooflineLatencyModel
from wattserve.perf.operating_point import OperatingPoint, operating_point
from wattserve.perf.power import PowerModel, UtilizationPowerModel

__all__ = [
    "IterCost", "LatencyModel", "OperatingPoint", "PowerModel", "RooflineLatencyModel",
    "UtilizationPowerModel", "operating_point",
]
