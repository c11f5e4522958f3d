"""Per-GPU power as a function of SM clock and what the GPU is doing.

P = idle                                   (nothing running)
P = idle + a*s + k_c*u_c*s**gamma + k_m*u_m  (an iteration running)

with s = clock / max clock, u_c the fraction of the iteration the SMs are compute-bound and u_m the
fraction HBM is busy (from the latency model's IterCost). Why this form: CMOS dynamic power is
C*V^2*f and V rises with f across the DVFS range, so the energy of one FLOP grows as s**(gamma-1) and
compute power as u_c*s**gamma; HBM power follows bytes per second and not the SM clock; the clock
tree and always-on logic of a busy GPU burn a*s.

The constants are fitted by scripts/fit_calibration.py (least squares, scipy) to:
- ML.ENERGY v3 average power per GPU vs batch on H100 (anchors/mlenergy/v3_leaderboard/
  v3_configs_flat.csv): Llama-3.1-8B TP1 486-691 W, Llama-3.3-70B TP4 447-637 W,
  Qwen3-30B-A3B TP1 399-494 W;
- Splitwise's prompt-phase power, 700 W on H100 (splitwise-sim configs/power_model/constant.yaml);
- Splitwise's power-capped H100: prompt time x1.3 at a 350 W cap, token time x1.0
  (anchors/mlenergy/literature_sensitivity_anchors.csv, rows S1-S3).
Idle power is the GPU's catalog idle (75 W on H100, Splitwise).
Other GPUs reuse the H100 shape scaled by (TDP - idle) / (700 - 75): a transfer, not a calibration,
and docs/calibration.md says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from wattserve.catalog.gpus import GpuSpec
from wattserve.perf.latency import IterCost

H100_BUSY_W = 131.9
H100_COMPUTE_W = 593.3
H100_MEMORY_W = 258.8
H100_GAMMA = 3.895
_H100_DYNAMIC_RANGE_W = 700.0 - 75.0


class PowerModel(Protocol):
    """Watts one GPU draws. A measured or fitted model can replace the utilization model."""

    @property
    def idle_w(self) -> float: ...

    def busy_power(self, cost: IterCost, clock_mhz: float) -> float: ...


@dataclass(frozen=True)
class UtilizationPowerModel:
    gpu: GpuSpec
    busy_w: float = H100_BUSY_W
    compute_w: float = H100_COMPUTE_W
    memory_w: float = H100_MEMORY_W
    gamma: float = H100_GAMMA

    @staticmethod
    def for_gpu(gpu: GpuSpec) -> UtilizationPowerModel:
        k = (gpu.tdp_w - gpu.idle_w) / _H100_DYNAMIC_RANGE_W
        return UtilizationPowerModel(gpu, H100_BUSY_W * k, H100_COMPUTE_W * k, H100_MEMORY_W * k, H100_GAMMA)

    @property
    def idle_w(self) -> float:
        return self.gpu.idle_w

    def busy_power(self, cost: IterCost, clock_mhz: float) -> float:
        s = clock_mhz / self.gpu.clock_max_mhz
        return (self.gpu.idle_w + self.busy_w * s + self.compute_w * cost.compute_util * s**self.gamma
                + self.memory_w * cost.memory_util)
