"""Where the scenario configuration used to live; kept so that `wattserve.config` imports still work.

The models are in wattserve.schema (one idea per module), reading and writing YAML in
wattserve.schema.loading, and building a workload or a whole run in wattserve.experiments.build.
"""

from __future__ import annotations

from wattserve.experiments.build import build_workload
from wattserve.schema.loading import load_scenario, scenario_yaml
from wattserve.schema.scenario import Scenario
from wattserve.schema.slo import SloConfig
from wattserve.schema.workload import LengthConfig, WorkloadConfig

__all__ = ["LengthConfig", "Scenario", "SloConfig", "WorkloadConfig", "build_workload", "load_scenario",
           "scenario_yaml"]
