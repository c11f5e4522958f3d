"""Synthetic workloads: Poisson or gamma arrivals, and prompt/output length distributions.

The gamma process follows `vllm bench serve --burstiness`: inter-arrival times are
Gamma(shape=burstiness, scale=1/(rate*burstiness)), so burstiness 1 is Poisson and smaller values
are burstier (coefficient of variation 1/sqrt(burstiness)).

AZURE_CONV is the embedded default, shaped like the Azure LLM inference trace 2023, conversation
(AzureLLMInferenceTrace_conv.csv, 19,366 requests over 3,502 s; Patel et al., Splitwise, ISCA 2024).
Measured on that file: 5.53 req/s; inter-arrival CV 1.094 (gamma shape 0.835). Lengths are not
lognormal (prompts cluster near 200, 400, 1,000 and 4,100 tokens), so they are sampled from the file's
quantiles (AZURE_CONV_QUANTILES, percent -> tokens) with linear interpolation between them:
prompt median 1,020 / mean 1,155, output median 129 / mean 211 in the file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wattserve.errors import UsageError
from wattserve.workload.workload import Workload


@dataclass(frozen=True)
class LengthDist:
    """kind: fixed (value) | uniform (low, high) | lognormal (mu, sigma, low, high) | empirical (values,
    resampled) | quantiles (values at the percents in `percents`, inverse-CDF sampling)."""

    kind: str
    value: int = 0
    low: int = 1
    high: int = 1
    mu: float = 0.0
    sigma: float = 0.0
    values: tuple[int, ...] = ()
    percents: tuple[float, ...] = ()

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.kind == "fixed":
            return np.full(n, self.value, dtype=np.int64)
        if self.kind == "uniform":
            return rng.integers(self.low, self.high + 1, size=n, dtype=np.int64)
        if self.kind == "lognormal":
            x = np.rint(rng.lognormal(self.mu, self.sigma, size=n)).astype(np.int64)
            return np.clip(x, self.low, self.high)
        if self.kind == "empirical":
            return rng.choice(np.asarray(self.values, dtype=np.int64), size=n, replace=True)
        if self.kind == "quantiles":
            u = rng.random(n) * 100.0
            return np.rint(np.interp(u, self.percents, self.values)).astype(np.int64)
        raise UsageError(f"length distribution: unknown kind {self.kind!r}; "
                         "allowed: empirical, fixed, lognormal, quantiles, uniform")


@dataclass(frozen=True)
class SyntheticSpec:
    rate: float
    prompt: LengthDist
    output: LengthDist
    arrival: str = "poisson"
    burstiness: float = 1.0
    duration_s: float | None = 600.0
    num_requests: int | None = None
    name: str = "synthetic"


AZURE_CONV_PERCENTS = (0, 1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99, 99.9, 100)
AZURE_CONV_PROMPT = (2, 29, 181, 207, 387, 403, 703, 1020, 1071, 1130, 1315, 2734, 4083, 4142, 6179, 14050)
AZURE_CONV_OUTPUT = (7, 16, 41, 54, 77, 91, 103, 129, 177, 384, 400, 424, 451, 601, 954, 1000)

AZURE_CONV = SyntheticSpec(
    rate=5.53,
    arrival="gamma",
    burstiness=0.835,
    prompt=LengthDist("quantiles", values=AZURE_CONV_PROMPT, percents=AZURE_CONV_PERCENTS),
    output=LengthDist("quantiles", values=AZURE_CONV_OUTPUT, percents=AZURE_CONV_PERCENTS),
    duration_s=600.0,
    name="azure-conv-synthetic",
)


def generate(spec: SyntheticSpec, seed: int) -> Workload:
    if spec.rate <= 0:
        raise UsageError(f"{spec.rate:g} must be > 0 req/s", "workload.rate")
    if spec.arrival not in ("poisson", "gamma"):
        raise UsageError(f"unknown value {spec.arrival!r}; allowed: gamma, poisson", "workload.arrival")
    shape = 1.0 if spec.arrival == "poisson" else spec.burstiness
    if shape <= 0:
        raise UsageError(f"{shape:g} must be > 0", "workload.burstiness")
    rng = np.random.default_rng(seed)
    if spec.num_requests is not None:
        n = spec.num_requests
    elif spec.duration_s is not None:
        n = int(np.ceil(spec.rate * spec.duration_s * 1.5 + 10 * np.sqrt(spec.rate * spec.duration_s) + 10))
    else:
        raise UsageError("give duration_s or num_requests", "workload.duration_s")
    gaps = rng.gamma(shape, 1.0 / (spec.rate * shape), size=n)
    arrival = np.cumsum(gaps) - gaps[0]
    if spec.num_requests is None and spec.duration_s is not None:
        arrival = arrival[arrival < spec.duration_s]
    n = len(arrival)
    if n == 0:
        raise UsageError("too short for any request to arrive", "workload.duration_s")
    return Workload(arrival, spec.prompt.sample(rng, n), spec.output.sample(rng, n), spec.name)
