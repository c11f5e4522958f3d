"""Controllers by name, so scenarios and the CLI can pick them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from wattserve.control.loop import Controller
from wattserve.control.policies import RapidController, StaticController
from wattserve.errors import unknown

CONTROLLERS: dict[str, Callable[..., Controller]] = {
    "static": lambda **kw: StaticController(name="static", **kw),
    "static-split": lambda **kw: StaticController(name="static-split", **kw),
    "colocated": lambda **kw: StaticController(name="colocated", **kw),
    "rapid-power": lambda **kw: RapidController(name="rapid-power", move_power=True, move_roles=False, **kw),
    "rapid-roles": lambda **kw: RapidController(name="rapid-roles", move_power=False, move_roles=True, **kw),
    "rapid": lambda **kw: RapidController(name="rapid", move_power=True, move_roles=True, **kw),
}


def make_controller(name: str, **params: Any) -> Controller:
    if name not in CONTROLLERS:
        raise unknown("policy", name, CONTROLLERS)
    return CONTROLLERS[name](**params)
