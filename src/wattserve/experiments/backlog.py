"""A backlog: requests offered faster than any configuration serves them, so the served throughput
is set by the configuration (power cap, batch limit), not by the arrivals.

PALS (Power-Aware LLM Serving for Mixture-of-Experts Models, arXiv 2605.21427) states its QoS goal
as a throughput target and profiles each (cap, batch) on a saturated engine; `wattserve profile`
and the pals-moe scenario measure the same way, over a fixed window (the backlog never drains).
Lengths: the paper's prompt and output lengths are not public; we chose ShareGPT-like chat shapes,
lognormal prompts (median 512, 64-2,048) and outputs (median 256, 32-1,024), so that decode
dominates as it does in chat serving.
"""

from __future__ import annotations

import math

from wattserve.workload import LengthDist, SyntheticSpec, Workload, generate

PROMPT = LengthDist("lognormal", mu=math.log(512), sigma=0.6, low=64, high=2048)
OUTPUT = LengthDist("lognormal", mu=math.log(256), sigma=0.6, low=32, high=1024)


def mean_output_tokens(samples: int = 100_000) -> float:
    """The output length's mean (the clipped lognormal has no tidy closed form), from a fixed sample."""
    import numpy as np

    return float(OUTPUT.sample(np.random.default_rng(0), samples).mean())


def backlog_workload(rate: float, duration_s: float, seed: int = 0) -> Workload:
    """Poisson arrivals at `rate` req/s for `duration_s` seconds, chat-shaped lengths."""
    return generate(SyntheticSpec(rate=rate, prompt=PROMPT, output=OUTPUT, duration_s=duration_s,
                                  num_requests=None, name="backlog"), seed)
