"""What a controller sees of a cluster: one snapshot per observation."""

from __future__ import annotations

from dataclasses import dataclass

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
