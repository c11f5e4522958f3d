"""What a controller sees of a cluster: one snapshot per observation.

Every field has one meaning, written in its docstring, and both back ends fill it with that meaning
(tests/test_seam_conformance.py checks them against each other). Rates are not in the snapshot:
an observation is shared by every controller that asks, so a rate "since the last look" would
depend on who looked last. Instead the snapshot carries monotonic counters (`GpuState.energy_j`,
`InstanceState.prompt_tokens`, `output_tokens`, `completed`) and each controller takes its own
differences over its own period, as Prometheus counters are meant to be read
(https://prometheus.io/docs/concepts/metric_types/#counter).
"""

from __future__ import annotations

from dataclasses import dataclass

PHASES = ("prefill", "decode")


@dataclass(frozen=True)
class GpuState:
    index: int
    """GPU index, 0..N-1 across the cluster; the target of SetPowerCap and SetClock."""
    instance: int
    """Id of the instance this GPU belongs to."""
    cap_w: float
    """Power cap in force (settled), W: the one the GPU obeys now."""
    cap_target_w: float
    """Power cap last asked for, W; differs from cap_w while a change settles."""
    cap_min_w: float
    """Lowest cap this GPU accepts, W."""
    cap_max_w: float
    """Highest cap this GPU accepts, W."""
    clock_mhz: int
    """SM clock of the latest iteration, MHz (the clock the GPU last ran work at)."""
    clock_max_mhz: int
    """Highest SM clock this GPU supports, MHz (top of `ClusterInfo.clocks_mhz`)."""
    locked_clock_mhz: int | None
    """Clock lock set through SetClock and in force, MHz; None when unlocked."""
    power_w: float
    """Draw at the instant of the observation, W, as the back end's meter gives it: the modelled
    draw now in the simulator; the power agent's reading in the runtime (NVML's
    nvmlDeviceGetPowerUsage, itself a short average taken by the driver, or the modelled agent's
    latest estimate). For energy over an interval use differences of `energy_j`."""
    energy_j: float
    """Energy drawn since the back end started, J; never decreases."""
    throttled: bool
    """The power cap, not the workload or a clock lock, set the clock of the latest iteration while
    the GPU was busy (NVML's SW power cap reason)."""


@dataclass(frozen=True)
class InstanceState:
    iid: int
    """Instance id, 0..M-1; the target of SetRole and SetBatchLimit."""
    role: str
    """'prefill', 'decode' or 'colocated': the role it serves in now."""
    switching_to: str | None
    """Role it is switching to (it takes no new work meanwhile); None when not switching."""
    gpus: tuple[int, ...]
    """Indices of its GPUs (one TP group)."""
    waiting: int
    """Requests assigned here and not yet admitted to a batch: queued prompts (including preempted
    requests queued for recomputation) and KV hand-offs arriving or waiting to join."""
    waiting_tokens: int
    """Prompt tokens still to prefill here: the uncomputed tokens of queued prompts and of prompts
    being prefilled in chunks (recomputation after preemption included)."""
    prefilling: int
    """Requests admitted here whose prompt is being prefilled (they hold KV and have more than one
    token left to compute)."""
    running: int
    """Requests in the decode batch here (generating one token per iteration)."""
    kv_usage: float
    """Fraction of this instance's KV blocks in use, 0..1."""
    max_seqs: int
    """Batch limit in force: the most requests admitted at once (SetBatchLimit sets it)."""
    ttft_p90_s: float | None
    """90th-percentile TTFT of the requests whose first token this instance produced in the back
    end's recent window (5 s), measured from arrival at the cluster; None when there were none."""
    tpot_p90_s: float | None
    """90th-percentile TPOT (time per output token after the first) of the requests that finished
    decoding here in the recent window (5 s); None when there were none."""
    oldest_wait_s: float
    """Seconds since the arrival at the cluster of the oldest request queued or prefilling here that
    has not produced its first token; 0.0 when there is none."""
    prompt_tokens: int
    """Prompt tokens prefilled here, counted once per request when its first token is produced here
    (recomputation after preemption is not counted again); never decreases."""
    output_tokens: int
    """Tokens generated here (the first token included), counted as produced; never decreases."""
    completed: int
    """Requests that produced their last token here; never decreases."""
    alive: bool = True
    """False once the instance is down (its worker process died): it serves nothing, takes no
    action, and counts for no phase. A simulated instance never dies."""
    step_target: float | None = None
    """Share of the TPOT SLO its step governor lets a decode iteration take (SetStepTarget; 0: it
    spends no slack); None when its governor takes no target."""


@dataclass(frozen=True)
class ClusterState:
    time_s: float
    """Seconds since the back end started (simulated or monotonic)."""
    budget_w: float
    """Cluster power budget in force now, W."""
    slo_ttft_s: float | None
    slo_tpot_s: float | None
    instances: tuple[InstanceState, ...]
    """Indexed by instance id."""
    gpus: tuple[GpuState, ...]
    """Indexed by GPU index."""
    target_tok_s: float | None = None
    """The operator's cluster throughput target in force now, output tokens per second (PALS's
    QoS target, arXiv 2605.21427); None when the run has none."""

    def by_role(self, role: str) -> list[InstanceState]:
        """The live instances serving `role` now (not switching): those a policy may act on."""
        return [i for i in self.instances if i.role == role and i.switching_to is None and i.alive]
