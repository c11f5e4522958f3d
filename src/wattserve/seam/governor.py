"""The step governor: the per-iteration decision point, shared by the simulator and the runtime.

Controllers (`control/`) act every second or so on the whole cluster. Some policies act at the
timescale of one engine iteration instead: BiScale ("BiScale: Energy-Efficient Disaggregated LLM
Serving via Phase-Aware Placement and DVFS", arXiv 2602.18755) picks an SM clock per iteration
(model-predictive for prefill, slack-based for decode); RAPID-Serve (arXiv 2601.11822) will pick a
compute share. Before each iteration, or each closed-form decode run in the simulator, an engine
shows its governor a `StepView` and runs what the returned `StepDecision` says.

The decision is a clock *request*, as `nvidia-smi -lgc` is: the GPU still obeys its power cap, so
the clock the iteration runs at is the highest supported clock at or below the request (and any
clock lock set through the control plane) whose power fits the cap. `hold_iters` says how many
iterations the answer stands, so a decode run whose answer does not change stays one event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from wattserve.catalog.gpus import GpuSpec
from wattserve.catalog.models import BatchShape
from wattserve.perf.latency import LatencyModel
from wattserve.perf.power import PowerModel

HOLD_UNTIL_CHANGE = 1 << 30
"""`hold_iters` for a decision that stands until the batch changes."""

STEP_PHASES = ("prefill", "decode", "mixed")


@dataclass(frozen=True, slots=True)
class StepDecision:
    clock_mhz: int | None
    """Requested SM clock in MHz; None asks for the highest the cap and any clock lock allow."""
    hold_iters: int = HOLD_UNTIL_CHANGE
    """How many iterations this decision stands for (>= 1); the engine asks again after them, or
    earlier when the batch changes."""
    decode_share: float | None = None
    """For an engine running prefill and decode concurrently on the same GPUs (RAPID-Serve,
    arXiv 2601.11822): the fraction of compute units (SMs, CUs, CPU cores) the decode stream gets,
    the prefill stream the rest. None gives both all of them (the paper's "overallocation"); other
    engines ignore it."""


UNGOVERNED = StepDecision(None, HOLD_UNTIL_CHANGE)


class StepView(Protocol):
    """What an engine shows its governor just before an iteration. Cheap fields are attributes;
    anything that costs work to gather is a method, so a governor pays only for what it reads."""

    @property
    def now_s(self) -> float:
        """Seconds since the engine started (simulated or monotonic)."""
        ...

    @property
    def phase(self) -> str:
        """'prefill' (prompt chunks only), 'decode' (decode tokens only) or 'mixed'."""
        ...

    @property
    def shape(self) -> BatchShape:
        """The batch about to run (for a decode run: its first iteration)."""
        ...

    @property
    def kv_usage(self) -> float:
        """Fraction of this engine's KV blocks in use, 0..1."""
        ...

    @property
    def cap_w(self) -> float:
        """Per-GPU power cap in force, W."""
        ...

    @property
    def locked_clock_mhz(self) -> int | None:
        """Clock lock set through the control plane (SetClock), if any."""
        ...

    @property
    def slo_ttft_s(self) -> float | None: ...

    @property
    def slo_tpot_s(self) -> float | None: ...

    @property
    def prefill_token_budget(self) -> int:
        """Tokens one iteration may compute (the chunked-prefill budget): a prefill governor rolls
        its queue forward in batches of this size."""
        ...

    @property
    def gpu(self) -> GpuSpec: ...

    @property
    def latency(self) -> LatencyModel:
        """Latency model of this GPU, model and TP degree."""
        ...

    @property
    def power(self) -> PowerModel:
        """Power model of this GPU."""
        ...

    def queued_prompts(self) -> Sequence[tuple[float, int]]:
        """(arrival time s, tokens its prefill must still compute after the batch about to run) of
        the prompts queued or part-prefilled here, oldest first: the prompt, or after a recompute
        preemption the prompt plus the tokens generated."""
        ...

    def batch_arrivals_s(self) -> Sequence[float]:
        """Arrival times of the requests whose prompt finishes in the batch about to run: their
        TTFT ends with it, so a prefill governor holds that batch to their deadlines too."""
        ...

    def recent_ttft_s(self) -> Sequence[float]:
        """TTFTs of requests whose first token this engine produced in the last few seconds."""
        ...

    def recent_tpot_s(self) -> Sequence[float]:
        """TPOTs of requests that finished decoding on this engine in the last few seconds."""
        ...


class StepGovernor(Protocol):
    """One object per engine: it may keep state between iterations, and it runs unchanged in the
    simulator's instance and in the runtime engine's step."""

    name: str

    def decide(self, view: StepView) -> StepDecision: ...


@runtime_checkable
class Targeted(Protocol):
    """A step governor whose target a controller sets (`SetStepTarget`): the share of the TPOT SLO
    a decode iteration may take, 0 for none (it then asks for no clock). Both back ends report it
    (`InstanceState.step_target`) and apply `SetStepTarget` through `retarget`."""

    @property
    def target_share(self) -> float: ...

    def retarget(self, share: float) -> None: ...


def target_of(governor: StepGovernor) -> float | None:
    """The target a governor holds (`InstanceState.step_target`), or None when it takes none."""
    return governor.target_share if isinstance(governor, Targeted) else None


def check_share(share: float) -> None:
    """A step target's share: 0 <= share <= 1 (ValueError otherwise)."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"step target share {share:g}; allowed: 0 <= share <= 1")
