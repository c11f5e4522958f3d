"""Controllers by name, so scenarios, the schema and the CLI can pick them.

There is no `colocated` controller: colocation is a cluster layout (`cluster.colocated`), and static
caps on a colocated cluster are the `static` policy on that layout."""

from __future__ import annotations

from typing import Any

from wattserve.control.loop import Controller
from wattserve.control.policies import RapidController, StaticController
from wattserve.registry import Registry

CONTROLLERS: Registry[Controller] = Registry("policy", {
    "static": lambda **kw: StaticController(name="static", **kw),
    "static-split": lambda **kw: StaticController(name="static-split", **kw),
    "rapid-power": lambda **kw: RapidController(name="rapid-power", move_power=True, move_roles=False, **kw),
    "rapid-roles": lambda **kw: RapidController(name="rapid-roles", move_power=False, move_roles=True, **kw),
    "rapid": lambda **kw: RapidController(name="rapid", move_power=True, move_roles=True, **kw),
})


def make_controller(name: str, **params: Any) -> Controller:
    return CONTROLLERS.make(name, **params)
