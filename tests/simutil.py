"""Shared helpers for the simulator tests."""

from __future__ import annotations

from wattserve.schema.cluster import ClusterConfig
from wattserve.sim.cluster import Cluster, SimResult
from wattserve.workload import LengthDist, SyntheticSpec, generate


def run_sim(spec: ClusterConfig | None = None, *, rate: float = 10.0, n: int = 300, prompt: LengthDist | None = None,
            output: LengthDist | None = None, seed: int = 0, arrival: str = "poisson") -> SimResult:
    wl = generate(SyntheticSpec(rate=rate, num_requests=n, duration_s=None, arrival=arrival,
                                prompt=prompt or LengthDist("lognormal", mu=6.5, sigma=1.0, low=2, high=8000),
                                output=output or LengthDist("lognormal", mu=5.0, sigma=0.9, low=1, high=1000)),
                  seed)
    return Cluster(spec or ClusterConfig(), wl).run()
