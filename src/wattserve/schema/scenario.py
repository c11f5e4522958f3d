"""A scenario: one validated document (cluster, workload, SLO, power control, seed) from which a run
can be repeated exactly. `simulate` writes the resolved one as DIR/config.yaml."""

from __future__ import annotations

from pydantic import Field, model_validator

from wattserve.catalog.gpus import get_gpu
from wattserve.schema.base import Strict, flag
from wattserve.schema.cluster import ClusterConfig
from wattserve.schema.control import ControlConfig
from wattserve.schema.slo import SloConfig
from wattserve.schema.workload import WorkloadConfig


class Scenario(Strict):
    name: str = "default"
    seed: int = Field(0, description="random seed", json_schema_extra=flag("seed"))
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    workload: WorkloadConfig = Field(default_factory=WorkloadConfig)
    slo: SloConfig = Field(default_factory=SloConfig)
    control: ControlConfig = Field(default_factory=ControlConfig)

    @model_validator(mode="after")
    def _budget_fits(self) -> Scenario:
        """A budget below the sum of the minimum caps cannot be held by any policy."""
        budget = self.control.budget_w
        gpu = get_gpu(self.cluster.gpu)
        if budget is not None and budget < self.cluster.num_gpus * gpu.cap_min_w:
            raise ValueError(f"control.budget_w: {budget:g} W is below {self.cluster.num_gpus} x "
                             f"{gpu.cap_min_w:g} W, the sum of {gpu.name}'s minimum caps")
        return self
