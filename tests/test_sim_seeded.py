"""Requests seeded running at time 0 (Cluster.seed_running): how the planner's model starts a
candidate from the batches the cluster runs now (experiments/plan_sim.py)."""

from __future__ import annotations

import numpy as np
import pytest

from wattserve.results.records import COMPLETED
from wattserve.schema.cluster import ClusterConfig
from wattserve.sim.cluster import Cluster
from wattserve.workload import Workload

SPEC = dict(gpu="h100", model="llama-3.1-8b", tp=1)


def rows(seeded: int, arriving: int, output: int = 50) -> Workload:
    arr = np.concatenate([np.zeros(seeded), 0.5 + 0.01 * np.arange(arriving)])
    n = seeded + arriving
    return Workload(arr, np.full(n, 500, dtype=np.int64), np.full(n, output, dtype=np.int64))


@pytest.mark.parametrize("role", ["decode", "colocated", "concurrent"])
def test_a_seeded_request_decodes_the_rest_of_its_output_without_a_prefill(role: str) -> None:
    spec = ClusterConfig(**SPEC, prefill=1 if role == "decode" else 0, decode=1 if role == "decode" else 0,
                         **({role: 2} if role != "decode" else {}))
    wl = rows(seeded=8, arriving=4)
    cluster = Cluster(spec, wl)
    target = next(i.iid for i in cluster.instances if i.role == role)
    for _ in range(8):
        cluster.seed_running(target)
    res = cluster.run()
    rec = res.records
    assert (rec.status == COMPLETED).all()
    assert (rec.ttft[:8] == 0).all() and (rec.decode_inst[:8] == target).all()
    assert (rec.prefill_inst[:8] == -1).all(), "seeded rows were never prefilled"
    assert (rec.ttft[8:] > 0).all(), "the other rows arrived and were prefilled"
    one_token = res.records.e2el[:8] / 49
    assert (one_token > 0).all() and (one_token < 0.05).all()


def test_seeded_requests_fill_the_batch_a_new_arrival_then_shares() -> None:
    """A request arriving beside a seeded batch of 200 decodes slower than on an empty instance."""
    spec = ClusterConfig(**SPEC, prefill=0, decode=0, colocated=1)
    tpot = []
    for seeded in (0, 200):
        wl = rows(seeded, 1, output=200)
        cluster = Cluster(spec, wl)
        for _ in range(seeded):
            cluster.seed_running(0)
        r = cluster.run().records
        tpot.append((r.e2el[-1] - r.ttft[-1]) / 199)
    assert tpot[1] > 1.5 * tpot[0]


def test_an_idle_instance_holding_seeded_requests_hands_them_to_another_decoder_when_it_switches() -> None:
    """Its routing must no longer name it when it evacuates (it used to hand them back to itself)."""
    spec = ClusterConfig(**SPEC, prefill=1, decode=2)
    wl = rows(seeded=6, arriving=0)
    cluster = Cluster(spec, wl)
    for _ in range(6):
        cluster.seed_running(1)
    cluster.set_role(1, "prefill")
    res = cluster.run()
    assert (res.records.status == COMPLETED).all()
    assert (res.records.decode_inst == 2).all()
    assert "prefill" in (cluster.instances[1].role, cluster.instances[1].switching_to)


def test_seeded_requests_on_an_instance_draining_without_migration_finish_there() -> None:
    """A prefill instance still decoding what it held (an instant switch out of colocated) that
    switches to decode with no other decoder to migrate to drains in place instead of waiting
    forever for its batch to empty."""
    spec = ClusterConfig(**SPEC, prefill=2, decode=1)
    cluster = Cluster(spec, rows(seeded=5, arriving=0))
    for _ in range(5):
        cluster.seed_running(0)
    cluster.set_role(0, "decode")
    res = cluster.run()
    assert (res.records.status == COMPLETED).all() and cluster.done()
