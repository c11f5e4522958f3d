"""Workloads used by the named scenarios.

sonnet-shift follows RAPID's evaluation: 1,000 prefill-heavy requests (8K tokens in, 128 out), then
1,000 decode-heavy requests (about 500 in, 500 out), Poisson arrivals at the swept rate. The
decode-heavy lengths are uniform in [400, 600] so that they are "about" 500, as the issue states.
longbench-like: long prompts up to 8K (LongBench's documents are 5K-15K words; truncated to the
8K-token window, with short answers): prompts uniform in [2,000, 8,000], outputs uniform in [32, 256].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wattserve.errors import unknown
from wattserve.workload import LengthDist, SyntheticSpec, Workload, generate, load_trace

WORKLOADS = ("sonnet-shift", "longbench-like", "azure-conv", "azure-code")
REQUESTS_PER_PHASE = 1000
TRACE_REQUESTS = 5000


def _concat(a: Workload, b: Workload, name: str) -> Workload:
    gap = float(np.diff(b.arrival_s[:2])[0]) if len(b) > 1 else 0.0
    return Workload(np.concatenate([a.arrival_s, b.arrival_s + a.arrival_s[-1] + gap]),
                    np.concatenate([a.prompt_tokens, b.prompt_tokens]),
                    np.concatenate([a.output_tokens, b.output_tokens]), name)


def azure_trace(data_dir: str | Path, kind: str) -> Path:
    """The Azure LLM 2023 trace `kind` ('conv' or 'code') in the shared data folder."""
    return Path(data_dir) / "traces" / "azure_llm_2023" / f"AzureLLMInferenceTrace_{kind}.csv"


def make_workload(name: str, rate: float, seed: int, data_dir: str | None = None,
                  per_phase: int = REQUESTS_PER_PHASE) -> Workload:
    if name == "sonnet-shift":
        pre = generate(SyntheticSpec(rate=rate, num_requests=per_phase, duration_s=None,
                                     prompt=LengthDist("fixed", value=8192), output=LengthDist("fixed", value=128)),
                       seed)
        dec = generate(SyntheticSpec(rate=rate, num_requests=per_phase, duration_s=None,
                                     prompt=LengthDist("uniform", low=400, high=600),
                                     output=LengthDist("uniform", low=400, high=600)), seed + 1)
        return _concat(pre, dec, name)
    if name == "longbench-like":
        return generate(SyntheticSpec(rate=rate, num_requests=2 * per_phase, duration_s=None,
                                      prompt=LengthDist("uniform", low=2000, high=8000),
                                      output=LengthDist("uniform", low=32, high=256), name=name), seed)
    if name in ("azure-conv", "azure-code"):
        if data_dir is None:
            raise unknown("data", None, ["a shared data folder (--data)"])
        kind = "conv" if name == "azure-conv" else "code"
        trace = load_trace(str(azure_trace(data_dir, kind)))
        return trace.rescale(rate).head(TRACE_REQUESTS)
    raise unknown("workload", name, WORKLOADS)


def phase_bounds(w: Workload, name: str, per_phase: int = REQUESTS_PER_PHASE) -> list[tuple[int, int]]:
    """Request index ranges the oracle treats as windows with one static configuration each."""
    n = len(w)
    if name == "sonnet-shift":
        return [(0, per_phase), (per_phase, n)]
    half = n // 2
    return [(0, half), (half, n)]
