"""What a back end over live GPUs shows controllers of its GPUs, and how it logs the power ops that
failed after `apply` returned: one implementation for our runtime (workers' agents) and for an
external fleet (node agents), so a GpuState means the same on both."""

from __future__ import annotations

from collections.abc import Callable

from wattserve.runtime.power.base import GpuPower
from wattserve.seam import Actuation, ActuationLog, GpuState


def gpu_state(agent: GpuPower, i: int, instance: int, clock_max_mhz: int, locked_mhz: int | None) -> GpuState:
    """GPU i as the agent reads it now: the cap in force (settled) and the cap asked, the range, the
    clock, the lock the control plane set, the draw, the energy counter, and whether the power cap
    is throttling it (NVML's SW power cap reason)."""
    lo, hi = agent.cap_range_w(i)
    in_force = getattr(agent, "cap_in_force_w", agent.power_cap_w)(i)
    return GpuState(index=i, instance=instance, cap_w=in_force, cap_target_w=agent.power_cap_w(i), cap_min_w=lo,
                    cap_max_w=hi, clock_mhz=int(agent.clock_mhz(i)), clock_max_mhz=clock_max_mhz,
                    locked_clock_mhz=locked_mhz, power_w=float(agent.power_w(i)), energy_j=float(agent.energy_j(i)),
                    throttled="sw_power_cap" in agent.throttle_reasons(i))


def log_failures(agent: GpuPower, log: ActuationLog, now: float, who: Callable[[int], str]) -> list[int]:
    """Ops the agent reports as failed (`take_failures`, where it has it) written to `log` as
    "failed" with `who(gpu)` before the message; returns the GPUs whose clock lock failed."""
    take = getattr(agent, "take_failures", None)
    if take is None:
        return []
    locks = []
    for f in take():
        kind = {"set_cap": "cap", "lock_clock": "clock"}.get(f.op, f.op)
        log.add(Actuation(now, kind, f.gpu, f.value, "failed", note=f"{who(f.gpu)}{f.message}"))
        if f.op == "lock_clock":
            locks.append(f.gpu)
    return locks
