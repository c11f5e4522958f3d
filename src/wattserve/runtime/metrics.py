"""The server's Prometheus metrics, through prometheus_client, with vLLM's metric names where one
exists (vllm:...; docs.vllm.ai "Production Metrics") plus power and liveness series (wattserve:...).

One registry per server (no process-wide state): request histograms and counters are updated as
events arrive; gauges that describe workers and GPUs are read at scrape time by a collector from
the snapshot `render` is given."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0)


class _Snapshot(Collector):
    """Worker and GPU gauges from the latest snapshot (set by ServerMetrics.render before a scrape)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.workers: list[dict[str, Any]] = []
        self.gpus: list[dict[str, Any]] = []

    def collect(self) -> Iterator[Metric]:
        m, workers, gpus = self.model, self.workers, self.gpus
        live = [w for w in workers if w.get("alive", True)]

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=["model_name"])
            g.add_metric([m], value)
            return g

        yield gauge("vllm:num_requests_running", "Number of requests in model execution batches.",
                    sum(w.get("running", 0) for w in live))
        yield gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.",
                    sum(w.get("waiting", 0) for w in live))
        used = sum(w.get("kv_blocks_used", 0) for w in live)
        total = sum(w.get("kv_blocks", 0) for w in live) or 1
        yield gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", used / total)
        per = GaugeMetricFamily("wattserve:worker_kv_cache_usage_perc", "KV-cache usage per worker.",
                                labels=["model_name", "worker", "role"])
        alive = GaugeMetricFamily("wattserve:worker_alive", "1 while the worker serves, 0 once it is down.",
                                  labels=["model_name", "worker", "role"])
        limit = GaugeMetricFamily("wattserve:worker_max_num_seqs", "Batch limit in force per worker (vLLM's "
                                  "max_num_seqs; a power policy may move it).", labels=["model_name", "worker", "role"])
        target = GaugeMetricFamily("wattserve:worker_step_target", "Share of the TPOT SLO the worker's step "
                                   "governor lets a decode step take (a power policy may set it; 0 spends no "
                                   "slack); only for governors that take a target.", labels=["model_name", "worker", "role"])
        for w in workers:
            per.add_metric([m, str(w["wid"]), w["role"]], w.get("kv_usage", 0.0))
            alive.add_metric([m, str(w["wid"]), w["role"]], 1.0 if w.get("alive", True) else 0.0)
            limit.add_metric([m, str(w["wid"]), w["role"]], float(w.get("max_num_seqs", 0)))
            if w.get("step_target") is not None:
                target.add_metric([m, str(w["wid"]), w["role"]], float(w["step_target"]))
        yield per
        yield alive
        yield limit
        yield target
        yield gauge("wattserve:workers_live", "Workers alive.", len(live))
        for name, key, doc in (("wattserve:gpu_power_watts", "power_w", "GPU power draw in watts."),
                               ("wattserve:gpu_power_cap_watts", "cap_w", "GPU power cap in force, watts."),
                               ("wattserve:gpu_sm_clock_mhz", "clock_mhz", "GPU SM clock in MHz.")):
            g = GaugeMetricFamily(name, doc, labels=["model_name", "gpu", "modelled"])
            for s in gpus:
                g.add_metric([m, str(s["gpu"]), str(s["modelled"]).lower()], s[key])
            yield g
        energy = CounterMetricFamily("wattserve:gpu_energy_joules", "GPU energy since the server started, joules.",
                                     labels=["model_name", "gpu", "modelled"])
        for s in gpus:
            energy.add_metric([m, str(s["gpu"]), str(s["modelled"]).lower()], s["energy_j"])
        yield energy


class ServerMetrics:
    def __init__(self, model: str) -> None:
        self.model = model
        self.registry = CollectorRegistry(auto_describe=True)
        r, lab = self.registry, ["model_name"]
        self.ttft = Histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                              lab, buckets=TTFT_BUCKETS, registry=r).labels(model)
        self.itl = Histogram("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
                             lab, buckets=ITL_BUCKETS, registry=r).labels(model)
        self.e2e = Histogram("vllm:e2e_request_latency_seconds",
                             "Histogram of end to end request latency in seconds.", lab, buckets=E2E_BUCKETS,
                             registry=r).labels(model)
        self._prompt = Counter("vllm:prompt_tokens", "Number of prefill tokens processed.", lab,
                               registry=r).labels(model)
        self._generation = Counter("vllm:generation_tokens", "Number of generation tokens processed.", lab,
                                   registry=r).labels(model)
        self._success = Counter("vllm:request_success", "Count of successfully processed requests.",
                                [*lab, "finished_reason"], registry=r)
        self._failure = Counter("wattserve:request_failure", "Requests that ended with an error, by HTTP status.",
                                [*lab, "status"], registry=r)
        self._recommended = Gauge("wattserve:recommended_placement", "BiScale tier 1's recommended placement "
                                  "for the last window (instances, tp, base_clock_mhz with 0 = maximum), by "
                                  "phase; not applied.", [*lab, "phase", "field"], registry=r)
        self._snapshot = _Snapshot(model)
        r.register(self._snapshot)

    def finished(self, reason: str, prompt_tokens: int, generation_tokens: int) -> None:
        self._success.labels(self.model, reason).inc()
        self._prompt.inc(prompt_tokens)
        self._generation.inc(generation_tokens)

    def recommend(self, placement: dict[str, Any]) -> None:
        """A tier-1 recommendation (BiScale placement and base clocks) as gauges by phase and field."""
        for phase in ("prefill", "decode"):
            for key, value in (("instances", placement[phase]), ("tp", placement[f"{phase}_tp"]),
                               ("base_clock_mhz", placement[f"{phase}_mhz"] or 0)):
                self._recommended.labels(self.model, phase, key).set(float(value))

    def failed(self, status: int) -> None:
        self._failure.labels(self.model, str(status)).inc()

    def render(self, workers: list[dict[str, Any]], gpus: list[dict[str, Any]]) -> str:
        """The exposition text, with worker and GPU gauges from this snapshot."""
        self._snapshot.workers, self._snapshot.gpus = workers, gpus
        return generate_latest(self.registry).decode()
