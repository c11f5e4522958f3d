"""Named comparison scenarios.

rapid-mi300x follows RAPID's evaluation setup as the issue gives it: 8x MI300X (750 W each, 6,000 W
in all) under a 4,800 W cluster budget, Llama-3.1-8B at TP1, SLOs TTFT 1 s and TPOT 40 ms read at the
80% attainment point, workloads sonnet-shift and longbench-like. rapid-h100: 8x H100 under 4,000 W
with the Azure 2023 conversation and code traces rescaled over a range of rates.

A comparison's rows are arms: a power policy on a cluster layout, or the oracle, which is an
experiment (a hindsight search over static configurations), not a policy. The row labels stay the
names that compare.json has always used: `colocated` is the static policy on the colocated layout.

pals-moe (PALS's evaluation shape: MoE models, a moving throughput target, a demand-response
budget) is a different kind of comparison, not a rate sweep: pals_moe.py defines it. biscale-h100
(BiScale's evaluation shape: placement re-planned per window, per-iteration DVFS) is a rate sweep
whose arms plan their own placements: biscale_scenario.py defines it. rapid-serve-mi300x (RAPID-Serve's:
layouts compared by goodput, per model and synthetic workload): rapid_serve_scenario.py.
budget-drop (issue 15): rapid-mi300x's cluster with every power policy under a budget that drops by
30% for a minute and comes back, reporting breaches and attainment during and after the drop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from wattserve.experiments.biscale_scenario import BiScaleScenario
from wattserve.experiments.pals_moe import PalsScenario
from wattserve.experiments.rapid_serve_scenario import RapidServeScenario
from wattserve.registry import Registry
from wattserve.schema.cluster import ClusterConfig
from wattserve.schema.control import ControlConfig
from wattserve.schema.scenario import Scenario
from wattserve.schema.slo import SloConfig


@dataclass(frozen=True)
class Arm:
    """One row of a comparison. `experiment` is 'policy' (run `policy` on `layout` under the budget)
    or 'oracle' (wattserve.experiments.oracle; `policy` and `layout` are unused)."""

    label: str
    policy: str = "static"
    layout: Literal["disaggregated", "colocated"] = "disaggregated"
    experiment: Literal["policy", "oracle"] = "policy"
    governor: str = "max-clock"
    """The step governor of every instance (the planners' arms: decode-slack, whose target they set)."""


ARMS = (
    Arm("static"), Arm("static-split", "static-split"), Arm("rapid-power", "rapid-power"),
    Arm("rapid-roles", "rapid-roles"), Arm("rapid", "rapid"), Arm("colocated", "static", "colocated"),
    Arm("planner", "planner", governor="decode-slack"),
    Arm("planner-concurrent", "planner-concurrent", governor="decode-slack"), Arm("oracle", experiment="oracle"),
)
"""The planners' arms run BiScale's decode-slack governor (arXiv 2602.18755) on every instance: the
planner starts its target at 0, which spends no slack, and raises it where its model and the
observed latencies show slack (control/planner.py)."""


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
    arms: tuple[Arm, ...] = ARMS
    perf_profile: str = "default"
    """The perf profile every run of the scenario uses (compare --perf-profile)."""
    prefill_caps_w: tuple[float, ...] = (450, 500, 550, 600, 650, 700, 750)
    """Candidate per-GPU prefill caps for the static-split optimiser and the oracle."""
    oracle_prefill_counts: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7)
    budget_events: dict[str, str] | None = None
    """Per workload, a budget shape of `budget_w` (workload.step_signal: e.g. a demand-response
    event) that every arm runs under instead of the constant budget; None: constant."""

    @property
    def num_gpus(self) -> int:
        return (self.prefill + self.decode) * self.tp

    @property
    def policies(self) -> tuple[str, ...]:
        """The row labels (`compare --policies` picks among them)."""
        return tuple(a.label for a in self.arms)

    def arm(self, label: str) -> Arm:
        return next(a for a in self.arms if a.label == label)

    def scenario(self, arm: Arm | None = None, seed: int = 0, workload: str | None = None) -> Scenario:
        """The schema scenario of one policy arm (no policy: static caps set on the cluster later),
        under `workload`'s budget event where the scenario has one."""
        colocated = arm is not None and arm.layout == "colocated"
        n = self.num_gpus // self.tp
        cluster = ClusterConfig(gpu=self.gpu, model=self.model, tp=self.tp, prefill=0 if colocated else self.prefill,
                                decode=0 if colocated else self.decode, colocated=n if colocated else 0,
                                perf_profile=self.perf_profile)
        if arm is not None:
            cluster = cluster.model_copy(update={"engine": cluster.engine.model_copy(update={"governor": arm.governor})})
        event = self.budget_events.get(workload) if self.budget_events and workload else None
        control = ControlConfig() if arm is None else ControlConfig(budget_w=self.budget_w, budget_trace=event,
                                                                    policy=arm.policy)
        return Scenario(name=self.name, seed=seed, cluster=cluster, control=control,
                        slo=SloConfig(ttft_ms=self.slo_ttft_ms, tpot_ms=self.slo_tpot_ms))

    def static(self, prefill: int, prefill_cap_w: float, decode_cap_w: float) -> Scenario:
        """A disaggregated split with fixed caps per role and no policy (the static-split search and
        the oracle try these)."""
        cluster = ClusterConfig(gpu=self.gpu, model=self.model, tp=self.tp, prefill=prefill,
                                decode=self.num_gpus // self.tp - prefill, prefill_cap_w=prefill_cap_w,
                                decode_cap_w=decode_cap_w, perf_profile=self.perf_profile)
        return self._no_policy(cluster)

    def static_colocated(self, cap_w: float) -> Scenario:
        """Every instance colocated, every GPU capped at `cap_w`, no policy (the oracle tries these)."""
        return self.static_whole("colocated", cap_w)

    def static_whole(self, role: str, cap_w: float) -> Scenario:
        """Every instance in `role` (colocated or concurrent), every GPU capped at `cap_w`, no policy
        (the oracle tries these)."""
        cluster = ClusterConfig(gpu=self.gpu, model=self.model, tp=self.tp, prefill=0, decode=0,
                                **{role: self.num_gpus // self.tp}, power_cap_w=cap_w, perf_profile=self.perf_profile)
        return self._no_policy(cluster)

    def _no_policy(self, cluster: ClusterConfig) -> Scenario:
        return Scenario(name=self.name, cluster=cluster,
                        slo=SloConfig(ttft_ms=self.slo_ttft_ms, tpot_ms=self.slo_tpot_ms))


DROP = "demand-response:start={start},minutes=1,level=0.7"
"""budget-drop's event (issue 15): 30% of the budget cut for a minute, then restored. sonnet-shift's
starts 10 s in (its 8K-prompt phase is under way, the cut spans the shift to short prompts, and
requests still arrive after it at the swept rates); the Azure code trace's 90 s in. Static splits
and the oracle are left out: they hold caps fixed by construction, so they cannot follow a budget
that moves."""


SCENARIOS: Registry[NamedScenario | PalsScenario | BiScaleScenario | RapidServeScenario] = Registry("scenario", {
    "rapid-h100": lambda: NamedScenario(
        name="rapid-h100", gpu="h100", model="llama-3.1-8b", tp=1, prefill=4, decode=4, budget_w=4000,
        slo_ttft_ms=1000, slo_tpot_ms=40, workloads=("azure-conv", "azure-code"),
        rates={"azure-conv": (100, 130, 160, 190, 220), "azure-code": (8, 12, 16, 20, 24, 28)},
        prefill_caps_w=(400, 450, 500, 550, 600, 650, 700),
    ),
    "rapid-mi300x": lambda: NamedScenario(
        name="rapid-mi300x", gpu="mi300x", model="llama-3.1-8b", tp=1, prefill=4, decode=4, budget_w=4800,
        slo_ttft_ms=1000, slo_tpot_ms=40, workloads=("sonnet-shift", "longbench-like"),
        rates={"sonnet-shift": (18, 22, 26, 30, 34, 38), "longbench-like": (30, 36, 42, 48, 54, 60)},
    ),
    "budget-drop": lambda: NamedScenario(
        name="budget-drop", gpu="mi300x", model="llama-3.1-8b", tp=1, prefill=4, decode=4, budget_w=4800,
        slo_ttft_ms=1000, slo_tpot_ms=40, workloads=("sonnet-shift", "azure-code"),
        rates={"sonnet-shift": (18, 26), "azure-code": (12, 20)},
        arms=tuple(a for a in ARMS if a.label not in ("static-split", "oracle")),
        budget_events={"sonnet-shift": DROP.format(start=10), "azure-code": DROP.format(start=90)},
    ),
    "pals-moe": PalsScenario,
    "biscale-h100": BiScaleScenario,
    "rapid-serve-mi300x": RapidServeScenario,
})


def get_scenario(name: str) -> NamedScenario | PalsScenario | BiScaleScenario | RapidServeScenario:
    return SCENARIOS.make(name)
