"""The seam between controllers and cluster back ends (simulator now, real runtime later).

Controllers see a `ClusterState` and emit `Action`s; a `Backend` turns actions into actuation and
state into observations. Both sides import this module and nothing of each other, so a controller
written against the simulator runs unchanged against real GPUs.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from wattserve.errors import UsageError

PHASES = ("prefill", "decode")


@dataclass(frozen=True)
class GpuState:
    index: int
    instance: int
    cap_w: float
    """The cap in force (settled)."""
    cap_target_w: float
    """The cap last asked for; differs from cap_w while a change settles."""
    cap_min_w: float
    cap_max_w: float
    clock_mhz: int
    clock_max_mhz: int
    locked_clock_mhz: int | None
    power_w: float
    """Average power since the previous observation."""
    throttled: bool
    """The power cap, not the workload, set the clock in the last iteration (NVML's SW power cap reason)."""


@dataclass(frozen=True)
class InstanceState:
    iid: int
    role: str
    switching_to: str | None
    gpus: tuple[int, ...]
    waiting: int
    waiting_tokens: int
    running: int
    kv_usage: float
    max_seqs: int
    ttft_p90_s: float | None
    tpot_p90_s: float | None
    recent_completions: int
    oldest_wait_s: float


@dataclass(frozen=True)
class ClusterState:
    time_s: float
    budget_w: float
    slo_ttft_s: float | None
    slo_tpot_s: float | None
    instances: tuple[InstanceState, ...]
    gpus: tuple[GpuState, ...]

    def by_role(self, role: str) -> list[InstanceState]:
        return [i for i in self.instances if i.role == role and i.switching_to is None]


@dataclass(frozen=True)
class SetPowerCap:
    gpu: int
    watts: float


@dataclass(frozen=True)
class SetClock:
    gpu: int
    mhz: int | None


@dataclass(frozen=True)
class SetRole:
    instance: int
    role: str


@dataclass(frozen=True)
class SetBatchLimit:
    instance: int
    max_seqs: int


@dataclass(frozen=True)
class SetComputeShare:
    instance: int
    phase: str
    fraction: float


Action = SetPowerCap | SetClock | SetRole | SetBatchLimit | SetComputeShare


def check_role_change(name: str, role_now: str, switching_to: str | None, target: str,
                      active_peers_in_role: int) -> bool:
    """The role-change contract every back end enforces. Returns False when there is nothing to do;
    raises UsageError when the change is not allowed: an unknown or colocated role, a switch already
    under way, or leaving the current phase with no active instance."""
    if target not in PHASES or role_now not in PHASES:
        raise UsageError(f"role: {name} is {role_now}; allowed target roles: {', '.join(PHASES)} "
                         "(on disaggregated instances)")
    if switching_to is not None:
        raise UsageError(f"role: {name} is already switching to {switching_to}")
    if role_now == target:
        return False
    if active_peers_in_role == 0:
        raise UsageError(f"role: {name} is the last {role_now} instance; each phase keeps one")
    return True


class ActuationRefused(Exception):
    """The back end cannot do this (out of range, would empty a phase, unsupported)."""


class Backend(Protocol):
    cap_settle_s: float

    def now(self) -> float: ...

    def call_at(self, t: float, fn: Callable[[], None]) -> None: ...

    def observe(self) -> ClusterState: ...

    def apply(self, action: Action) -> float:
        """Start the action; return the time it takes effect. Raises ActuationRefused."""
        ...

    def done(self) -> bool:
        """True once the workload is finished, so periodic loops stop."""
        ...


@dataclass(frozen=True)
class BudgetSignal:
    """A piecewise-constant cluster power budget: watts[i] holds from times[i] on."""

    times: tuple[float, ...] = (0.0,)
    watts: tuple[float, ...] = (0.0,)

    @staticmethod
    def constant(watts: float) -> BudgetSignal:
        return BudgetSignal((0.0,), (float(watts),))

    def at(self, t: float) -> float:
        i = bisect.bisect_right(self.times, t) - 1
        return self.watts[max(0, i)]

    def min_over(self, t0: float, t1: float) -> float:
        i0 = max(0, bisect.bisect_right(self.times, t0) - 1)
        i1 = max(0, bisect.bisect_right(self.times, t1) - 1)
        return min(self.watts[i0:i1 + 1])

    def change_times(self) -> Sequence[float]:
        return self.times[1:]


@dataclass
class Actuation:
    time_s: float
    kind: str
    target: int
    value: float | str | None
    status: str
    effective_s: float | None = None
    note: str = ""


@dataclass
class ActuationLog:
    entries: list[Actuation] = field(default_factory=list)

    def add(self, a: Actuation) -> None:
        self.entries.append(a)

    def count(self, kind: str, status: str = "applied") -> int:
        return sum(1 for e in self.entries if e.kind == kind and e.status == status)
