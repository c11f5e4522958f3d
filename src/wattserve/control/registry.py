"""Controllers by name, so scenarios, the schema and the CLI can pick them.

There is no `colocated` controller: colocation is a cluster layout (`cluster.colocated`), and static
caps on a colocated cluster are the `static` policy on that layout."""

from __future__ import annotations

from typing import Any

from wattserve.control.loop import Controller
from wattserve.control.pals import PalsController
from wattserve.control.planner import PlannerController
from wattserve.control.policies import RapidController, StaticController
from wattserve.control.uniform import UniformCapController
from wattserve.errors import UsageError
from wattserve.registry import Registry
from wattserve.seam.operating_table import OperatingTable
from wattserve.seam.plan import PlanModel

NEEDS_TABLE = ("pals", "batch-only")
"""Policies that plan from fitted models (`wattserve fit`): the caller passes `table=`."""
NEEDS_MODEL = ("planner", "planner-concurrent")
PLANNER_GOVERNOR = "decode-slack"
"""The step governor a run of a planner gets when it names none: BiScale's decode tier (arXiv
2602.18755), whose target the planner sets (docs/planner.md); max-clock, the default otherwise,
takes no target."""
"""Policies that plan with a model of the cluster (seam.PlanModel): the caller passes `model=` (and
optionally `screen=`)."""
SWITCHES_CONCURRENT = ("planner-concurrent",)
"""Policies that move instances into and out of concurrent (RAPID-Serve, arXiv 2601.11822): the
cluster must be built to switch (the simulator's `Cluster(concurrent_switch=True)`; the runtime's
concurrent workers do not switch)."""


def _pals(name: str, table: OperatingTable | None = None, **kw: Any) -> Controller:
    if table is None:
        raise UsageError(f"{name} plans from fitted models (wattserve profile, then wattserve fit) and none "
                         "were found for this GPU, model and TP", "control.pals_models")
    return PalsController(table=table, name=name, move_cap=name == "pals", **kw)

def _planner(model: PlanModel | None = None, name: str = "planner", **kw: Any) -> Controller:
    if model is None:
        raise UsageError(f"{name} plans with a model of the cluster, and this back end built none; allowed here: "
                         "the other policies", "control.policy")
    return PlannerController(model=model, name=name, **kw)


CONTROLLERS: Registry[Controller] = Registry("policy", {
    "static": lambda **kw: StaticController(name="static", **kw),
    "static-split": lambda **kw: StaticController(name="static-split", **kw),
    "rapid-power": lambda **kw: RapidController(name="rapid-power", move_power=True, move_roles=False, **kw),
    "rapid-roles": lambda **kw: RapidController(name="rapid-roles", move_power=False, move_roles=True, **kw),
    "rapid": lambda **kw: RapidController(name="rapid", move_power=True, move_roles=True, **kw),
    "tdp": lambda **kw: UniformCapController(name="tdp", **kw),
    "static-cap": lambda **kw: UniformCapController(name="static-cap", fixed_share=True, **kw),
    "batch-only": lambda **kw: _pals("batch-only", **kw),
    "pals": lambda **kw: _pals("pals", **kw),
    "planner": _planner,
    "planner-concurrent": lambda **kw: _planner(name="planner-concurrent", **{**kw, "concurrent": True}),
})


def make_controller(name: str, **params: Any) -> Controller:
    return CONTROLLERS.make(name, **params)
