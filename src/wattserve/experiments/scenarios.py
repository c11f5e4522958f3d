"""Named comparison scenarios.

rapid-mi300x follows RAPID's evaluation setup as the issue gives it: 8x MI300X (750 W each, 6,000 W
in all) under a 4,800 W cluster budget, Llama-3.1-8B at TP1, SLOs TTFT 1 s and TPOT 40 ms read at the
80% attainment point, workloads sonnet-shift and longbench-like. rapid-h100: 8x H100 under 4,000 W
with the Azure 2023 conversation and code traces rescaled over a range of rates.
"""

from __future__ import annotations

from dataclasses import dataclass

from wattserve.errors import unknown

POLICIES = ("static", "static-split", "rapid-power", "rapid-roles", "rapid", "colocated", "oracle")


@dataclass(frozen=True, eq=False)
class NamedScenario:
    name: str
    gpu: str
    model: str
    tp: int
    prefill: int
    decode: int
    budget_w: float
    slo_ttft_ms: float
    slo_tpot_ms: float
    workloads: tuple[str, ...]
    rates: dict[str, tuple[float, ...]]
    """Request rates (req/s) swept for each workload."""
    attainment_target: float = 0.8
    policies: tuple[str, ...] = POLICIES
    prefill_caps_w: tuple[float, ...] = (450, 500, 550, 600, 650, 700, 750)
    """Candidate per-GPU prefill caps for the static-split optimiser and the oracle."""
    oracle_prefill_counts: tuple[int, ...] = (2, 3, 4, 5, 6)

    @property
    def num_gpus(self) -> int:
        return (self.prefill + self.decode) * self.tp


SCENARIOS = {
    "rapid-mi300x": NamedScenario(
        name="rapid-mi300x", gpu="mi300x", model="llama-3.1-8b", tp=1, prefill=4, decode=4, budget_w=4800,
        slo_ttft_ms=1000, slo_tpot_ms=40, workloads=("sonnet-shift", "longbench-like"),
        rates={"sonnet-shift": (18, 22, 26, 30, 34, 38), "longbench-like": (30, 36, 42, 48, 54, 60)},
    ),
    "rapid-h100": NamedScenario(
        name="rapid-h100", gpu="h100", model="llama-3.1-8b", tp=1, prefill=4, decode=4, budget_w=4000,
        slo_ttft_ms=1000, slo_tpot_ms=40, workloads=("azure-conv", "azure-code"),
        rates={"azure-conv": (100, 130, 160, 190, 220), "azure-code": (8, 12, 16, 20, 24, 28)},
        prefill_caps_w=(400, 450, 500, 550, 600, 650, 700),
    ),
}


def get_scenario(name: str) -> NamedScenario:
    if name not in SCENARIOS:
        raise unknown("scenario", name, SCENARIOS)
    return SCENARIOS[name]
