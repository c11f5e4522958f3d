"""Switching simulated instances into and out of concurrent (RAPID-Serve, arXiv 2601.11822), which
the planner searches: a cluster built to switch runs exactly as a plain one until it switches, every
request finishes whatever is in flight when it does, and a concurrent instance reached by switching
serves as one built concurrent."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wattserve.errors import UsageError
from wattserve.results.records import COMPLETED, PENDING
from wattserve.schema.cluster import ClusterConfig
from wattserve.sim.cluster import Cluster
from wattserve.workload import LengthDist, SyntheticSpec, generate


def workload(rate: float = 12.0, n: int = 200, seed: int = 0):  # noqa: ANN201 - a Workload
    return generate(SyntheticSpec(rate=rate, num_requests=n, duration_s=None, arrival="poisson",
                                  prompt=LengthDist("lognormal", mu=7.0, sigma=1.0, low=2, high=8000),
                                  output=LengthDist("lognormal", mu=5.0, sigma=0.9, low=1, high=600)), seed)


def summary(res) -> tuple:  # noqa: ANN001 - a SimResult
    r = res.records
    return (r.status.tolist(), r.ttft.tolist(), r.e2el.tolist(), [g.energy_j for g in res.gpus])


@pytest.mark.parametrize("layout", [dict(colocated=4, prefill=0, decode=0), dict(prefill=2, decode=2),
                                    dict(concurrent=4, prefill=0, decode=0)])
def test_a_cluster_built_to_switch_runs_as_a_plain_one_until_it_switches(layout: dict) -> None:
    spec = ClusterConfig(gpu="h100", model="llama-3.1-8b", tp=1, power_cap_w=500, **layout)
    wl = workload()
    plain = Cluster(spec, wl).run()
    switchable = Cluster(spec, wl, concurrent_switch=True).run()
    assert summary(switchable) == summary(plain)


def test_only_a_cluster_built_for_it_switches_into_concurrent() -> None:
    spec = ClusterConfig(gpu="h100", model="llama-3.1-8b", tp=1, prefill=0, decode=0, colocated=2)
    with pytest.raises(UsageError, match=r"allowed target roles: prefill, decode, colocated$"):
        Cluster(spec, workload()).set_role(0, "concurrent")


def _switching_run(times: list[float], seed: int, rate: float) -> tuple[Cluster, object]:
    spec = ClusterConfig(gpu="h100", model="llama-3.1-8b", tp=1, prefill=0, decode=0, colocated=4,
                         power_cap_w=600)
    cluster = Cluster(spec, workload(rate, 250, seed), concurrent_switch=True)
    roles = ["concurrent", "colocated", "prefill", "concurrent", "decode", "colocated"]
    for k, t in enumerate(times):
        iid, role = k % 4, roles[k % len(roles)]

        def switch(_: object, iid: int = iid, role: str = role) -> None:
            with contextlib.suppress(UsageError):
                cluster.set_role(iid, role)

        cluster.loop.at(t, switch)
    return cluster, cluster.run()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.floats(0.0, 20.0), min_size=1, max_size=10), st.integers(0, 1000), st.floats(4.0, 30.0))
def test_every_request_finishes_and_tokens_add_up_whenever_instances_switch(times: list[float], seed: int,
                                                                           rate: float) -> None:
    cluster, res = _switching_run(sorted(times), seed, rate)
    r = res.records
    assert not np.any(r.status == PENDING)
    done = r.status == COMPLETED
    assert np.all(r.ttft[done] >= 0) and np.all(r.e2el[done] >= r.ttft[done] - 1e-12)
    wl = cluster.workload
    assert sum(i.output_tokens for i in cluster.instances) == int(wl.output_tokens[done].sum())
    for inst in cluster.instances:
        assert inst.kv.seqs == 0 and not inst.active and not inst.waiting and not inst.running


def test_instances_switched_to_concurrent_serve_as_a_concurrent_cluster() -> None:
    """Switched at time 0, before any request, the cluster is the concurrent one exactly."""
    wl = workload(20.0, 300, 3)
    base = dict(gpu="h100", model="llama-3.1-8b", tp=1, prefill=0, decode=0, power_cap_w=600)
    built = Cluster(ClusterConfig(**base, concurrent=4), wl).run()
    cluster = Cluster(ClusterConfig(**base, colocated=4), wl, concurrent_switch=True)
    for iid in range(4):
        cluster.set_role(iid, "concurrent")
    switched = cluster.run()
    assert summary(switched)[:3] == summary(built)[:3]
    assert [g.energy_j for g in switched.gpus] == pytest.approx([g.energy_j for g in built.gpus], rel=1e-9)


def test_a_switch_out_of_concurrent_waits_for_the_prefill_batch_in_flight() -> None:
    spec = ClusterConfig(gpu="h100", model="llama-3.1-8b", tp=1, prefill=0, decode=0, concurrent=2)
    wl = generate(SyntheticSpec(rate=1000.0, num_requests=2, duration_s=None, arrival="poisson",
                                prompt=LengthDist("fixed", value=6000), output=LengthDist("fixed", value=50)), 0)
    cluster = Cluster(spec, wl, concurrent_switch=True)
    seen: list[tuple[str, bool]] = []

    def switch(_: object) -> None:
        inst = next(i for i in cluster.instances if i.p_busy)  # type: ignore[attr-defined]
        cluster.set_role(inst.iid, "colocated")
        seen.append((inst.role, inst.streams))  # type: ignore[attr-defined]

    cluster.loop.at(0.01, switch)
    res = cluster.run()
    assert seen == [("concurrent", True)]
    assert np.all(res.records.status == COMPLETED)
    assert sorted(i.role for i in cluster.instances) == ["colocated", "concurrent"]
