"""What each engine's /metrics page tells a controller, and under which names.

vLLM's names are from docs.vllm.ai "Production Metrics" (https://docs.vllm.ai/en/stable/usage/metrics/)
and its V1 logger (vllm/v1/metrics/loggers.py); SGLang's from docs.sglang.io "Production Metrics"
(https://docs.sglang.io/references/production_metrics.html). Both rename metrics between releases, so
each observable has candidate names, newest first, and the first one a page carries wins: one reader
serves a fleet whose engines were upgraded at different times.

Neither engine exports everything `wattserve.seam.state.InstanceState` holds. Both export the queue and
batch sizes, KV usage, token and request counters and latency histograms. Neither exports the number of
requests being prefilled (`prefilling`; vLLM's and SGLang's "running" counts both prefilling and
decoding requests), the uncomputed prompt tokens queued (`waiting_tokens`), the age of the oldest
queued request (`oldest_wait_s`; only histograms of finished requests' queue times), or the batch limit
in force (`max_seqs`; a launch flag, not a metric). A back end built on this fills those with what it
knows from configuration, or leaves controllers that need them unsupported.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from wattserve.runtime.fleet.prom import Buckets, Scrape, quantile_between

WINDOW_S = 5.0
"""The recent window of `InstanceState.ttft_p90_s` and `tpot_p90_s`: the simulator's and our runtime's
(`sim.backend.WINDOW_S`, `runtime.backend.WINDOW_S`), so a controller sees the same window on any back end."""

FILLS = frozenset({"role", "waiting", "running", "kv_usage", "ttft_p90_s", "tpot_p90_s", "prompt_tokens",
                   "output_tokens", "completed", "alive"})
"""InstanceState fields a vLLM or SGLang server lets us fill: `role` from how it was launched, `alive` from
whether its /metrics page answers, the rest from the page."""

COMPUTE_SHARE_REFUSAL = ("needs the engine's own compute partitioning (RAPID-Serve), which neither engine "
                         "exposes")
STEP_TARGET_REFUSAL = ("needs a per-step clock governor inside the engine, which neither engine has; its clock "
                       "follows the power cap and any clock lock (SetClock)")


@dataclass(frozen=True)
class EngineSpec:
    """One engine's metric names (candidates newest first; the first one present wins) and what a
    controller can and cannot do to it at run time."""

    name: str
    running: tuple[str, ...]
    """Gauge: requests in the running batch (prefilling or decoding)."""
    waiting: tuple[str, ...]
    """Gauge: requests queued, not yet scheduled."""
    kv_usage: tuple[str, ...]
    """Gauge: fraction of the KV cache in use, 0..1."""
    prompt_tokens: tuple[str, ...]
    """Counter: prompt tokens processed."""
    generation_tokens: tuple[str, ...]
    """Counter: tokens generated."""
    completed: tuple[str, ...]
    """Counter: requests finished (summed over every label set, e.g. vLLM's `finished_reason`)."""
    ttft: tuple[str, ...]
    """Histogram base name: time to first token, seconds."""
    tpot: tuple[str, ...]
    """Histogram base name: time per output token, seconds. Per-request TPOT where the engine has it
    (vLLM's request_time_per_output_token, what InstanceState.tpot_p90_s means); else the gap between
    successive outputs (inter-token latency), one observation per gap, which weights long requests more."""
    versions: str
    """Engine releases these names are from."""
    fills: frozenset[str]
    """InstanceState fields this engine lets us fill."""
    runtime_actions: frozenset[str]
    """Seam actions the engine itself supports at run time. Power caps and clocks (SetPowerCap, SetClock)
    go through the node agents, not the engine, so they are not listed here."""
    refusals: dict[str, str] = field(hash=False)
    """Seam action name -> why the engine cannot do it at run time (one sentence)."""


VLLM = EngineSpec(
    name="vllm",
    running=("vllm:num_requests_running",),
    waiting=("vllm:num_requests_waiting",),
    kv_usage=("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    prompt_tokens=("vllm:prompt_tokens_total",),
    generation_tokens=("vllm:generation_tokens_total",),
    completed=("vllm:request_success_total",),
    ttft=("vllm:time_to_first_token_seconds",),
    tpot=("vllm:request_time_per_output_token_seconds", "vllm:inter_token_latency_seconds",
          "vllm:time_per_output_token_seconds"),
    versions=("vLLM 0.6 to 0.11 (V0 and V1 engines): kv_cache_usage_perc since 0.9.2 (gpu_cache_usage_perc "
              "before, hidden from 0.11); request_time_per_output_token_seconds and inter_token_latency_seconds "
              "since 0.11 (time_per_output_token_seconds, an inter-token latency, before; hidden from 0.12)"),
    fills=FILLS,
    runtime_actions=frozenset(),
    refusals={
        "SetBatchLimit": "vLLM fixes max_num_seqs when the engine starts (--max-num-seqs); no API changes it "
                         "at run time",
        "SetRole": "vLLM fixes a server's prefill/decode role at launch (--kv-transfer-config kv_role)",
        "SetComputeShare": COMPUTE_SHARE_REFUSAL,
        "SetStepTarget": STEP_TARGET_REFUSAL,
    },
)

SGLANG = EngineSpec(
    name="sglang",
    running=("sglang:num_running_reqs",),
    waiting=("sglang:num_queue_reqs",),
    kv_usage=("sglang:token_usage",),
    prompt_tokens=("sglang:prompt_tokens_total",),
    generation_tokens=("sglang:generation_tokens_total",),
    completed=("sglang:num_requests_total", "sglang:e2e_request_latency_seconds_count"),
    ttft=("sglang:time_to_first_token_seconds",),
    tpot=("sglang:inter_token_latency_seconds", "sglang:time_per_output_token_seconds"),
    versions=("SGLang releases of 2024-2025 run with --enable-metrics: newer ones export "
              "inter_token_latency_seconds and num_requests_total, older ones time_per_output_token_seconds "
              "and, for finished requests, only the e2e latency histogram's count"),
    fills=FILLS,
    runtime_actions=frozenset(),
    refusals={
        "SetBatchLimit": "SGLang's --max-running-requests is fixed at launch",
        "SetRole": "SGLang's --disaggregation-mode is fixed at launch",
        "SetComputeShare": COMPUTE_SHARE_REFUSAL,
        "SetStepTarget": STEP_TARGET_REFUSAL,
    },
)

ENGINES: dict[str, EngineSpec] = {"vllm": VLLM, "sglang": SGLANG}

_DISPLAY = {"vllm": "vLLM", "sglang": "SGLang"}


@dataclass(frozen=True)
class EngineReading:
    """What one scrape of one engine says, summed over its label sets (cumulative counters and
    histograms: a controller takes its own differences)."""

    running: int
    waiting: int
    kv_usage: float
    prompt_tokens: int
    output_tokens: int
    completed: int
    ttft: Buckets | None
    tpot: Buckets | None


def read_engine(spec: EngineSpec, scrape: Scrape) -> EngineReading:
    """Read one engine's page: the first candidate name present for each observable, summed over label
    sets (a vLLM server with data parallelism labels each engine core's samples by `engine`), except KV
    usage, a fraction, which is the mean over label sets. A name declared on the page with no sample yet
    (a labelled counter nothing has incremented) reads 0.

    Raises ValueError naming the field and the names looked for when a gauge or counter is missing: the
    page is from another engine, or from a version whose names we do not know. A missing histogram gives
    None (a latency the controller goes without)."""

    def first(field_name: str) -> str:
        names: tuple[str, ...] = getattr(spec, field_name)
        for n in names:
            if scrape.has(n):
                return n
        raise ValueError(f"{field_name}: this /metrics page has none of {', '.join(names)}: "
                         f"is it a {_DISPLAY.get(spec.name, spec.name)} server?")

    def count(field_name: str) -> int:
        return round(scrape.total(first(field_name)) or 0.0)

    def histogram(names: tuple[str, ...]) -> Buckets | None:
        return next((b for b in map(scrape.buckets, names) if b is not None), None)

    running, waiting = count("running"), count("waiting")
    kv = scrape.values(first("kv_usage"))
    return EngineReading(
        running=running,
        waiting=waiting,
        kv_usage=math.fsum(kv) / len(kv) if kv else 0.0,
        prompt_tokens=count("prompt_tokens"),
        output_tokens=count("generation_tokens"),
        completed=count("completed"),
        ttft=histogram(spec.ttft),
        tpot=histogram(spec.tpot),
    )


class LatencyWindow:
    """TTFT and TPOT percentiles over the last `window_s` seconds of one engine, from its cumulative
    histograms: the difference between the latest reading and the reading at or before `window_s` ago.

    A controller polls at its own period, so the window spans from the newest reading at least `window_s`
    old (or the oldest kept, while fewer seconds have been seen) to the latest: at least the window, and
    at most one polling period more. Prometheus does the same with `increase(x_bucket[5s])` between its
    scrapes (https://prometheus.io/docs/prometheus/latest/querying/functions/#increase), without the
    extrapolation to the window's edges."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s must be positive, not {window_s}")
        self.window_s = window_s
        self._readings: deque[tuple[float, EngineReading]] = deque()

    def add(self, t: float, reading: EngineReading) -> None:
        """Keep the reading taken at time `t` (seconds, non-decreasing), and drop those older than the
        newest reading at or before `t - window_s`."""
        if self._readings and t < self._readings[-1][0]:
            raise ValueError(f"readings must arrive in time order: {t} after {self._readings[-1][0]}")
        self._readings.append((t, reading))
        cut = t - self.window_s
        while len(self._readings) >= 2 and self._readings[1][0] <= cut:
            self._readings.popleft()

    def ttft_p90_s(self) -> float | None:
        """90th-percentile TTFT of the requests that got their first token in the window; None when none did."""
        if not self._readings:
            return None
        return quantile_between(self._readings[0][1].ttft, self._readings[-1][1].ttft, 0.9)

    def tpot_p90_s(self) -> float | None:
        """90th-percentile TPOT over the window (see EngineSpec.tpot for what an observation is); None when
        there was none."""
        if not self._readings:
            return None
        return quantile_between(self._readings[0][1].tpot, self._readings[-1][1].tpot, 0.9)
