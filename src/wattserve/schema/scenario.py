"""A scenario: one validated document (cluster, workload, SLO, power control, seed) from which a run
can be repeated exactly. `simulate` writes the resolved one as DIR/config.yaml."""

from __future__ import annotations

from pydantic import Field, model_validator

from wattserve.catalog.gpus import get_gpu
from wattserve.control.registry import NEEDS_MODEL, PLANNER_GOVERNOR
from wattserve.schema.base import Strict, flag
from wattserve.schema.cluster import ClusterConfig
from wattserve.schema.control import ControlConfig
from wattserve.schema.slo import SloConfig
from wattserve.schema.workload import WorkloadConfig


class Scenario(Strict):
    name: str = "default"
    seed: int = Field(0, ge=0, le=2**63 - 1, description="random seed", json_schema_extra=flag("seed"))
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

    @model_validator(mode="after")
    def _planner_governs(self) -> Scenario:
        """A planner sets the targets of its step governors; a scenario that runs one and names no
        governor gets `PLANNER_GOVERNOR` rather than max-clock, which takes none. A governor named,
        max-clock included, stands; the resolved scenario (DIR/config.yaml) names it."""
        engine = self.cluster.engine
        if self.control.policy in NEEDS_MODEL and "governor" not in engine.model_fields_set:
            object.__setattr__(self.cluster, "engine", engine.model_copy(update={"governor": PLANNER_GOVERNOR}))
        return self

    @model_validator(mode="after")
    def _policy_sets_caps(self) -> Scenario:
        """A policy sets every GPU's cap itself under the budget, so a fixed cap given beside it would
        be silently overridden: refuse the pair instead of choosing a winner."""
        c = self.cluster
        given = [name for name, v in (("power_cap_w", c.power_cap_w), ("prefill_cap_w", c.prefill_cap_w),
                                      ("decode_cap_w", c.decode_cap_w)) if v is not None]
        if self.control.policy is not None and given:
            raise ValueError(f"cluster.{given[0]}: a fixed cap cannot be combined with a power policy "
                             f"({self.control.policy!r} sets every cap itself under the budget); drop one of them")
        return self
