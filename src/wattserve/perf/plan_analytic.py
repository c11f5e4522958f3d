"""The planner's closed-form model (seam.PlanModel): how a disaggregated layout would serve a load,
from the latency and power models alone, in microseconds per layout, so a planner can rank every
candidate and simulate only the best few.

Prefill: each prefill instance is an M/M/1 queue of whole prompts served at the operating point its
cap allows (one prompt per batch; prefill is compute-bound, so batching gains little); the sojourn
time of M/M/1 is exponential with rate mu - lambda (Kleinrock, Queueing Systems vol. 1, 3.2), so the
share of prompts whose first token beats the TTFT SLO is 1 - exp(-(mu - lambda) * SLO), and 0 when
lambda >= mu. Decode: Little's law gives each decode instance's batch B = lambda_d * (output - 1) *
TPOT, and TPOT is the iteration time of that batch (alpha + beta * context) at the clock its cap
allows: a fixed point, found by iteration; a batch that outgrows the KV cache or diverges misses.
The share meeting the TPOT SLO is a logistic in TPOT / SLO (batches vary around the mean). These are
ranking estimates, not forecasts: the simulated model (experiments/plan_sim.py) decides among the
best of them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from wattserve.catalog.gpus import GpuSpec
from wattserve.catalog.models import BatchShape, ModelSpec
from wattserve.perf.latency import LatencyModel
from wattserve.perf.operating_point import operating_point
from wattserve.perf.power import PowerModel

OVERLOAD = 0.05
"""An overloaded prefill queue misses its SLO for nearly every request; the score left, OVERLOAD /
rho, only keeps the ranking graded (less overloaded ranks higher) so the best few reach the simulator."""
TPOT_SPREAD = 10.0
"""Steepness of the TPOT logistic: at 10% over the SLO about 27% of requests still meet it."""


class AnalyticPlanModel:
    def __init__(self, gpu: GpuSpec, model: ModelSpec, tp: int, instances: int, latency: LatencyModel,
                 power: PowerModel, slo_ttft_s: float | None, slo_tpot_s: float | None, kv_tokens: int) -> None:
        self.gpu = gpu
        self.model = model
        self.tp = tp
        self.instances = instances
        self.latency = latency
        self.power = power
        self.slo_ttft_s = slo_ttft_s
        self.slo_tpot_s = slo_tpot_s
        self.kv_tokens = kv_tokens
        """KV capacity of one instance, tokens."""

    def predict(self, load: Any, layouts: Sequence[Any], current: Any = None,
                need: Sequence[float | None] | None = None) -> list[tuple[float, float]]:
        """Steady state only: the switch from `current` is not priced here, and `need` saves nothing."""
        return [self._one(load, lay) for lay in layouts]

    def _one(self, load: Any, lay: Any) -> tuple[float, float]:
        p, d = lay.prefill, self.instances - lay.prefill
        if p < 1 or d < 1 or load.rate_rps <= 0:
            return (0.0 if p < 1 or d < 1 else 1.0), self.instances * self.tp * self.power.idle_w
        prompt = max(1, int(round(load.prompt_tokens)))
        out = max(1.0, load.output_tokens)
        pre = operating_point(self.gpu, self.latency, self.power, BatchShape.prefill(prompt), lay.prefill_cap_w)
        mu = 1.0 / pre.cost.time_s
        lam = load.rate_rps / p
        rho = lam / mu
        if rho >= 1.0:
            att_ttft = OVERLOAD / rho
        else:
            slo = self.slo_ttft_s or math.inf
            backlog_s = load.backlog / p / mu
            att_ttft = max(OVERLOAD, 1.0 - math.exp(-(mu - lam) * max(0.0, slo - backlog_s)))
        tpot, batch = self._decode(load.rate_rps / d, prompt, out, lay.decode_cap_w)
        if tpot is None:
            att_tpot = 0.0
        elif self.slo_tpot_s:
            att_tpot = 1.0 / (1.0 + math.exp((tpot / self.slo_tpot_s - 1.0) * TPOT_SPREAD))
        else:
            att_tpot = 1.0
        idle = self.power.idle_w
        pre_w = idle + min(1.0, rho) * (pre.power_w - idle)
        ctx = int(prompt + out / 2)
        dec = operating_point(self.gpu, self.latency, self.power, BatchShape.decode(max(1, int(batch)), ctx),
                              lay.decode_cap_w)
        dec_w = dec.power_w if batch >= 1 else idle
        return att_ttft * att_tpot, (p * pre_w + d * dec_w) * self.tp

    def _decode(self, lam: float, prompt: int, out: float, cap_w: float) -> tuple[float | None, float]:
        """(TPOT, batch) at the fixed point of Little's law, or (None, batch) when it diverges."""
        ctx = prompt + out / 2
        batch = 1.0
        tpot = 0.0
        for _ in range(40):
            n = max(1, int(math.ceil(batch)))
            if n * ctx > self.kv_tokens:
                return None, batch
            op = operating_point(self.gpu, self.latency, self.power, BatchShape.decode(n, int(ctx)), cap_w)
            tpot = op.cost.time_s
            new = lam * (out - 1.0) * tpot
            if abs(new - batch) < 0.01 * max(1.0, batch):
                return tpot, new
            batch = 0.5 * batch + 0.5 * new
        return None, batch
