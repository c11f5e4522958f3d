"""The Backend protocol: how a control loop observes a cluster and actuates it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from wattserve.seam.actions import Action
from wattserve.seam.info import ClusterInfo
from wattserve.seam.state import ClusterState


class ActuationRefused(Exception):
    """The back end cannot do this (out of range, would empty a phase, unsupported)."""


class Backend(Protocol):
    cap_settle_s: float

    def now(self) -> float: ...

    def call_at(self, t: float, fn: Callable[[], None]) -> None: ...

    def observe(self) -> ClusterState:
        """A fresh snapshot. It has no side effects: any number of controllers may observe, and
        each takes its own differences of the monotonic counters."""
        ...

    def info(self) -> ClusterInfo:
        """What does not change while the cluster runs (GPU kind, model, TP, clocks, cap range)."""
        ...

    def apply(self, action: Action) -> float:
        """Start the action; return the time it takes effect. Raises ActuationRefused."""
        ...

    def done(self) -> bool:
        """True once the workload is finished, so periodic loops stop."""
        ...


@runtime_checkable
class Offloads(Protocol):
    """A back end whose clock runs while a controller decides (the runtime, whose API shares the
    control loop's event loop) and that can run a decision elsewhere. The simulator has no such
    method: its time stands still while a controller decides."""

    def offload(self, fn: Callable[[], list[Action]], then: Callable[[list[Action]], None]) -> None:
        """Run `fn` off the back end's event loop and hand its result to `then` on the loop."""
        ...
