"""Everything a worker holds for its device's power, in one object, so that wiring a worker takes
four calls: open it, answer power ops with `handle`, put `stats()` in the stats frame under
"power", and pass the step governor's clock to `request_clock` before each step.

The agent is the worker's own (local.py); clock changes, the governor's and the control plane's,
go through one ClockActuator, so the device gets the lower of the two and the step loop never
waits for a driver call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wattserve.runtime.power.base import GpuPower
from wattserve.runtime.power.clock_actuator import ClockActuator
from wattserve.runtime.power.local import open_device_power
from wattserve.runtime.power.ops import POWER_OPS, power_op, power_stats


@dataclass
class DevicePower:
    agent: GpuPower
    clocks: ClockActuator

    @classmethod
    def open(cls, backend: str, device: str, gpu: str, power_as_model: str, stats: Callable[[], dict],
             **kw: Any) -> DevicePower:
        """See open_device_power; `stats` returns the engine's counters, never this object's stats."""
        agent = open_device_power(backend, device, gpu, power_as_model, stats, **kw)
        return cls(agent, ClockActuator(agent))

    @staticmethod
    def is_power_op(header: dict[str, Any]) -> bool:
        return header.get("op") in POWER_OPS

    def handle(self, header: dict[str, Any]) -> dict[str, Any]:
        """The {"ev": "power"} event answering one op (see ops.power_op)."""
        return power_op(self.agent, header, self.clocks)

    def stats(self) -> dict[str, Any]:
        """The "power" entry of the worker's stats frame (ops.power_stats, plus the actuator's
        counters under "clock_actuator")."""
        return {**power_stats(self.agent, self.clocks), "clock_actuator": self.clocks.stats()}

    def request_clock(self, mhz: int | None) -> None:
        """The step governor's clock for the coming steps; returns at once."""
        self.clocks.request(mhz)

    def limits(self) -> tuple[float, int | None]:
        """The cap in force and the control plane's clock lock, for the engine's StepView."""
        cap = getattr(self.agent, "cap_in_force_w", self.agent.power_cap_w)(0)
        return float(cap), self.clocks.ceiling

    def close(self) -> None:
        """Stop the actuator's thread and put the device's defaults back."""
        self.clocks.close()
        self.agent.restore()
