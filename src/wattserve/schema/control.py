"""The power control plane of a run: a cluster budget and the policy that spends it.

Both or neither: a policy without a budget has nothing to divide, and a budget without a policy
has nobody to hold it."""

from __future__ import annotations

from pydantic import Field, model_validator

from wattserve.control.registry import CONTROLLERS
from wattserve.schema.base import Strict, flag
from wattserve.schema.choices import PolicyName


class ControlConfig(Strict):
    budget_w: float | None = Field(None, gt=0, description="cluster power budget, W (run a --policy under it)",
                                   json_schema_extra=flag("budget"))
    policy: PolicyName | None = Field(None, description="power policy run under the budget (needs --budget)",
                               json_schema_extra=flag("policy", CONTROLLERS.names()))


    @model_validator(mode="after")
    def _both(self) -> ControlConfig:
        if (self.policy is None) != (self.budget_w is None):
            raise ValueError("give both a policy (--policy NAME) and a budget (--budget W), or neither")
        return self
