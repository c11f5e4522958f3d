"""Prometheus text exposition, with vLLM's metric names where one exists (vllm:...), plus power
series (wattserve:...). Written by hand to keep the runtime's dependencies small; tests parse it
with prometheus_client's parser."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0)


@dataclass
class Histogram:
    name: str
    help: str
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, v: float) -> None:
        i = bisect.bisect_left(self.buckets, v)
        if i < len(self.counts):
            self.counts[i] += 1
        self.total += v
        self.n += 1

    def render(self, labels: str) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        acc = 0
        for b, c in zip(self.buckets, self.counts):
            acc += c
            out.append(f'{self.name}_bucket{{{labels},le="{b}"}} {acc}')
        out.append(f'{self.name}_bucket{{{labels},le="+Inf"}} {self.n}')
        out.append(f"{self.name}_sum{{{labels}}} {self.total}")
        out.append(f"{self.name}_count{{{labels}}} {self.n}")
        return out


@dataclass
class ServerMetrics:
    model: str
    ttft: Histogram = field(default_factory=lambda: Histogram(
        "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", TTFT_BUCKETS))
    itl: Histogram = field(default_factory=lambda: Histogram(
        "vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", ITL_BUCKETS))
    e2e: Histogram = field(default_factory=lambda: Histogram(
        "vllm:e2e_request_latency_seconds", "Histogram of end to end request latency in seconds.", E2E_BUCKETS))
    success: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    generation_tokens: int = 0

    def render(self, workers: list[dict], gpus: list[dict]) -> str:
        lab = f'model_name="{self.model}"'
        lines: list[str] = []

        def gauge(name: str, help_: str, samples: list[tuple[str, float]]) -> None:
            lines.extend([f"# HELP {name} {help_}", f"# TYPE {name} gauge"])
            lines.extend(f"{name}{{{lab}{extra}}} {v}" for extra, v in samples)

        def counter(name: str, help_: str, samples: list[tuple[str, float]]) -> None:
            base = name.removesuffix("_total")
            lines.extend([f"# HELP {base} {help_}", f"# TYPE {base} counter"])
            lines.extend(f"{name}{{{lab}{extra}}} {v}" for extra, v in samples)

        gauge("vllm:num_requests_running", "Number of requests in model execution batches.",
              [("", sum(w.get("running", 0) for w in workers))])
        gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.",
              [("", sum(w.get("waiting", 0) for w in workers))])
        used = sum(w.get("kv_blocks_used", 0) for w in workers)
        total = sum(w.get("kv_blocks", 0) for w in workers) or 1
        gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", [("", used / total)])
        gauge("wattserve:worker_kv_cache_usage_perc", "KV-cache usage per worker.",
              [(f',worker="{w["wid"]}",role="{w["role"]}"', w.get("kv_usage", 0.0)) for w in workers])
        counter("vllm:prompt_tokens_total", "Number of prefill tokens processed.", [("", self.prompt_tokens)])
        counter("vllm:generation_tokens_total", "Number of generation tokens processed.",
                [("", self.generation_tokens)])
        counter("vllm:request_success_total", "Count of successfully processed requests.",
                [(f',finished_reason="{k}"', v) for k, v in sorted(self.success.items())] or [("", 0)])
        for h in (self.ttft, self.itl, self.e2e):
            lines.extend(h.render(lab))
        for name, key, help_ in (("wattserve:gpu_power_watts", "power_w", "GPU power draw in watts."),
                                 ("wattserve:gpu_power_cap_watts", "cap_w", "GPU power cap in force, watts."),
                                 ("wattserve:gpu_sm_clock_mhz", "clock_mhz", "GPU SM clock in MHz.")):
            gauge(name, help_, [(f',gpu="{g["gpu"]}",modelled="{str(g["modelled"]).lower()}"', g[key]) for g in gpus])
        counter("wattserve:gpu_energy_joules_total", "GPU energy since the server started, joules.",
                [(f',gpu="{g["gpu"]}",modelled="{str(g["modelled"]).lower()}"', g["energy_j"]) for g in gpus])
        return "\n".join(lines) + "\n"
