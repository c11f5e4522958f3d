"""What a planning controller asks of a model of the cluster: for the load it expects, how well
would each candidate configuration (a disaggregated split, or every instance colocated or
concurrent) serve, and at what power.

The planner (control/planner.py, wattserve's own policy) searches configurations every period with
a model instead of reacting to pressure as RAPID does. The model sits behind this seam: the
simulator itself (experiments/plan_sim.py: a short simulation per candidate, after pruning) or the
closed-form queueing estimate from the latency and power models (perf/plan_analytic.py). A
controller imports only the seam, so whoever builds it hands it a model, as PALS gets its
OperatingTable."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol


@dataclass(frozen=True)
class LoadEstimate:
    rate_rps: float
    """Requests arriving per second."""
    prompt_tokens: float
    """Mean prompt length, tokens."""
    output_tokens: float
    """Mean output length, tokens (the first token included)."""
    backlog: int = 0
    """Requests already queued for prefill when the plan starts."""
    dispersion: float = 1.0
    """Index of dispersion of the arrivals (variance over mean of the requests arriving per planning
    period; 1 for Poisson): production traces arrive in bursts that load a cluster harder than a
    Poisson stream of the same rate."""
    running: tuple[tuple[str, int], ...] = ()
    """The requests in each live instance's decode batch when the plan starts, as (role, count). A
    model that can starts from them, so a candidate inherits the batches running now rather than an
    empty cluster (decode batches take a request's life, seconds, to fill), and a switch pays for
    draining or migrating them."""


@dataclass(frozen=True)
class Layout:
    """A configuration: how many instances prefill (the rest decode), and the per-GPU cap of each
    role; or, with `colocated`, every instance colocated (hybrid batches) under one cap
    (`prefill` 0, both caps equal); or, with `concurrent`, every instance concurrent (RAPID-Serve's
    prefill and decode streams on the same GPUs, arXiv 2601.11822) under one cap. Each role may
    also have its GPUs' SM clock locked (`SetClock`; a whole layout's one clock is `decode_clock_mhz`),
    and the step governors a target (`SetStepTarget`): under a cap a lock only lowers the clock, and
    a target lets the governor lower it per iteration, so both trade speed the load does not need
    for power (BiScale's base clocks and per-iteration decode DVFS, arXiv 2602.18755)."""

    prefill: int
    prefill_cap_w: float
    decode_cap_w: float
    colocated: bool = False
    concurrent: bool = False
    prefill_clock_mhz: int | None = None
    """Clock lock of the prefill instances' GPUs, MHz; None unlocked."""
    decode_clock_mhz: int | None = None
    """Clock lock of the decode instances' GPUs (of every GPU in a whole layout), MHz; None unlocked."""
    step_target: float | None = None
    """Every instance's step-governor target (`SetStepTarget`: the share of the TPOT SLO a decode
    iteration may take; 0 spends no slack); None where the governors take no target."""
    decode_max_seqs: int | None = None
    """Batch limit of the decode instances (of every instance in a whole layout), `SetBatchLimit`;
    None: the engine's own."""

    @staticmethod
    def all_in(role: str, cap_w: float) -> Layout:
        """Every instance in `role` (colocated or concurrent) under one cap."""
        return Layout(0, cap_w, cap_w, role == "colocated", role == "concurrent")

    @staticmethod
    def all_colocated(cap_w: float) -> Layout:
        return Layout.all_in("colocated", cap_w)

    @staticmethod
    def all_concurrent(cap_w: float) -> Layout:
        return Layout.all_in("concurrent", cap_w)

    def clock_of(self, role: str) -> int | None:
        """The clock lock of `role`'s GPUs: prefill's, or decode's for any other role."""
        return self.prefill_clock_mhz if role == "prefill" else self.decode_clock_mhz

    @property
    def tuned(self) -> bool:
        """Whether it sets more than roles and caps: a clock lock, a step target above 0, or a
        batch limit."""
        return (self.prefill_clock_mhz is not None or self.decode_clock_mhz is not None or bool(self.step_target)
                or self.decode_max_seqs is not None)

    def plain(self) -> Layout:
        """The same roles and caps, tuned no further: no clock locks, the engines' batch limits, and
        a step target of 0 where the governors take one."""
        return replace(self, prefill_clock_mhz=None, decode_clock_mhz=None, decode_max_seqs=None,
                       step_target=None if self.step_target is None else 0.0)

    @property
    def whole(self) -> str | None:
        """The one role of a layout whose instances all serve requests whole (colocated or
        concurrent); None for a disaggregated split."""
        return "colocated" if self.colocated else "concurrent" if self.concurrent else None


CAP_LEVELS = 7
"""How many prefill caps the planner spreads over a GPU's cap range (and the oracle searches)."""


def cap_grid(lo_w: float, hi_w: float, levels: int = CAP_LEVELS) -> list[float]:
    """`levels` per-GPU caps spread evenly over a GPU's cap range (rounded to a milliwatt): the
    planner's candidate prefill caps, which the oracle searches too, so that it bounds the planner."""
    return [round(lo_w + (hi_w - lo_w) * k / max(1, levels - 1), 3) for k in range(levels)]


def want_of(lay: Layout, instances: int) -> dict[str, int]:
    """How many of `instances` take each role in `lay`."""
    if lay.whole is not None:
        return {lay.whole: instances}
    return {"prefill": lay.prefill, "decode": instances - lay.prefill}


class PlanModel(Protocol):
    def predict(self, load: LoadEstimate, layouts: Sequence[Layout], current: Layout | None = None,
                need: Sequence[float | None] | None = None) -> list[tuple[float, float]]:
        """Per layout: (expected share of requests meeting both SLOs 0..1, expected cluster draw W),
        reached from `current` (the layout in force: a model that can, prices the switch) or from
        scratch. `need`, per layout, is the attainment below which the layout changes no decision:
        a model may stop judging it once it is certainly below, and report an upper bound instead."""
        ...
