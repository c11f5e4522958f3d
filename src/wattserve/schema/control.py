"""The power control plane of a run: a cluster budget, the policy that spends it, and the
throughput target the policy tracks.

A policy needs a budget and a budget needs a policy: a policy without a budget has nothing to
divide, and a budget without a policy has nobody to hold it. The budget is `--budget W` (constant),
a `--budget-trace FILE` of watts over time, or a named `--budget-trace SHAPE` scaled to `--budget`
(docs/budgets.md). Files are read when a run is built (`budget_signal`), not while validating, so a
scenario validates without touching the disk; the shape's syntax and the target's number are
checked here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from wattserve.control.registry import CONTROLLERS, NEEDS_TABLE
from wattserve.errors import UsageError
from wattserve.schema.base import Strict, flag
from wattserve.schema.choices import PolicyName
from wattserve.seam import BudgetSignal, StepSignal
from wattserve.seam.operating_table import OperatingTable
from wattserve.workload.step_signal import (
    SHAPE_NAMES,
    load_steps,
    parse_number,
    shape_name,
    shape_params,
    shape_steps,
)

BUDGET_TRACE = "control.budget_trace"
TARGET = "control.target_trace"


class ControlConfig(Strict):
    budget_w: float | None = Field(None, gt=0, description="cluster power budget, W (run a --policy under it; "
                                   "with a --budget-trace SHAPE, the full level)", json_schema_extra=flag("budget"))
    budget_trace: str | None = Field(
        None, description=f"the budget over time: a CSV FILE with header time_s,watts, or a SHAPE of --budget "
        f"({SHAPE_NAMES}) with optional parameters, e.g. demand-response:start=120,minutes=3,level=0.6 "
        "(docs/budgets.md)", json_schema_extra=flag("budget-trace"))
    target_trace: str | None = Field(
        None, description="cluster output throughput target the policy tracks, tok/s: a number, or a CSV FILE "
        "with header time_s,tok_s", json_schema_extra=flag("target"))
    policy: PolicyName | None = Field(None, description="power policy run under the budget (needs --budget or "
                                      "--budget-trace)", json_schema_extra=flag("policy", CONTROLLERS.names()))
    pals_models: str | None = Field(
        None, description="fitted models (wattserve fit) that --policy pals and batch-only plan from [default: "
        "the models shipped with wattserve]", json_schema_extra=flag("pals-models"))

    @model_serializer(mode="wrap")
    def _omit_unset_signals(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A config.yaml without a budget trace or target reads as it did before these fields
        existed, so earlier runs' configs and their reruns stay byte-identical."""
        out: dict[str, Any] = handler(self)
        for key in ("budget_trace", "target_trace", "pals_models"):
            if out.get(key) is None:
                out.pop(key, None)
        return out

    @model_validator(mode="after")
    def _both(self) -> ControlConfig:
        trace = self.budget_trace
        if trace is not None:
            _check_budget_trace(trace, self.budget_w)
        if self.target_trace is not None:
            _check_target(self.target_trace)
        has_budget = self.budget_w is not None or trace is not None
        if (self.policy is None) == has_budget:
            raise ValueError("give both a policy (--policy NAME) and a budget (--budget W), or neither; "
                             "--budget-trace FILE may stand for --budget")
        if self.target_trace is not None and self.policy is None:
            raise ValueError(f"{TARGET}: a throughput target is for a power policy to track; give --policy too")
        if self.pals_models is not None and self.policy not in NEEDS_TABLE:
            raise ValueError(f"control.pals_models: fitted models are for --policy {' or '.join(NEEDS_TABLE)}")
        return self

    def operating_table(self, gpu: str, model: str, tp: int, ep: int = 1) -> OperatingTable | None:
        """The fitted models' table for this deployment when the policy plans from one (else None):
        from --pals-models, or the models shipped with wattserve. A file that cannot be read, is not
        a `wattserve fit` document, or has no group for this deployment is refused naming the flag."""
        if self.policy not in NEEDS_TABLE:
            return None
        field = "control.pals_models"
        try:
            if self.pals_models is None:
                from importlib import resources

                text = resources.files("wattserve.data").joinpath("pals_models.json").read_text()
            else:
                text = Path(self.pals_models).read_text()
            doc = json.loads(text)
        except OSError as e:
            raise UsageError(f"cannot read {self.pals_models!r} ({e.strerror or e}); allowed: a file written by "
                             "wattserve fit", field) from None
        except json.JSONDecodeError as e:
            raise UsageError(f"{self.pals_models!r} is not JSON ({e.msg}, line {e.lineno}); allowed: a file "
                             "written by wattserve fit", field) from None
        try:
            return OperatingTable.from_models(doc, gpu, model, tp, ep)
        except KeyError as e:
            if self.pals_models is None:
                raise UsageError(f"{self.policy} plans from fitted models, and the shipped file has {e.args[0]}; "
                                 "fit models for this deployment (wattserve profile, then wattserve fit) and give "
                                 "them with --pals-models FILE", "control.policy") from None
            raise UsageError(f"{e.args[0]}; fit models for it (wattserve profile, then wattserve fit)",
                             field) from None
        except (ValueError, TypeError) as e:
            raise UsageError(f"{self.pals_models!r}: {e}; allowed: a file written by wattserve fit", field) from None

    def budget_signal(self, floor_w: float | None = None) -> BudgetSignal | None:
        """The budget over the run (None without one), reading a --budget-trace file; refused where
        it falls below `floor_w` (the sum of the GPUs' minimum caps), naming the first such time."""
        if self.budget_trace is None:
            return None if self.budget_w is None else BudgetSignal.constant(self.budget_w)
        if shape_name(self.budget_trace) is not None:
            assert self.budget_w is not None
            times, watts = shape_steps(self.budget_trace, self.budget_w, BUDGET_TRACE)
        else:
            times, watts = load_steps(self.budget_trace, "watts", BUDGET_TRACE, f", or a shape ({SHAPE_NAMES})")
        if floor_w is not None:
            for t, w in zip(times, watts):
                if w < floor_w - 1e-9:
                    raise UsageError(f"{w:g} W from {t:g} s is below the sum of the minimum caps; allowed: "
                                     f">= {floor_w:g} W at every time", BUDGET_TRACE)
        return BudgetSignal(times, watts)

    def target_signal(self) -> StepSignal | None:
        """The throughput target over the run (tok/s), or None without one."""
        if self.target_trace is None:
            return None
        value = parse_number(self.target_trace)
        if value is not None:
            return StepSignal.constant(value)
        return StepSignal(*load_steps(self.target_trace, "tok_s", TARGET, ", or a number (tok/s)"))


def _check_budget_trace(trace: str, budget_w: float | None) -> None:
    if not trace.strip():
        raise ValueError(f"{BUDGET_TRACE}: empty; allowed: a CSV file with header time_s,watts, or a shape "
                         f"({SHAPE_NAMES})")
    name = shape_name(trace)
    if name is None:
        if budget_w is not None:
            raise ValueError(f"{BUDGET_TRACE}: a budget file gives the watts itself; give --budget-trace FILE or "
                             "--budget W, not both (a SHAPE takes --budget as its full level)")
        return
    try:
        shape_params(trace, BUDGET_TRACE)
    except UsageError as e:
        raise ValueError(f"{BUDGET_TRACE}: {e.detail}") from None
    if budget_w is None:
        raise ValueError(f"{BUDGET_TRACE}: the shape {name!r} scales the full budget; give --budget W too, or a "
                         "CSV FILE of watts")


def _check_target(text: str) -> None:
    value = parse_number(text)
    if value is None:
        if not text.strip():
            raise ValueError(f"{TARGET}: empty; allowed: a number > 0 (tok/s) or a CSV file with header time_s,tok_s")
        return
    if not (value > 0 and value != float("inf")):
        raise ValueError(f"{TARGET}: {value:g} is not allowed; allowed: a finite number > 0 (tok/s) or a CSV file "
                         "with header time_s,tok_s")
