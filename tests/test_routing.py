"""One routing policy module: the simulator's and the runtime's routers pick the same way."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from wattserve.errors import UsageError
from wattserve.routing import LeastLoaded, LoadView, RoundRobin, make_policy
from wattserve.routing import make_policy as make_router


@dataclass
class Load:
    pending_prefill_tokens: int = 0
    decode_load: int = 0
    kv_live_blocks: int = 0
    kv_blocks: int = 100


def test_least_loaded_prompts_by_queued_tokens_then_decode_load() -> None:
    p = LeastLoaded()
    a, b, c = Load(500, 1), Load(300, 9), Load(300, 2)
    assert p.pick_prefill([a, b, c]) is c
    first, second = Load(0, 3), Load(0, 3)
    assert p.pick_prefill([first, second]) is first


def test_least_loaded_handoffs_by_sequences_then_kv() -> None:
    p = LeastLoaded()
    a, b, c = Load(decode_load=4, kv_live_blocks=1), Load(decode_load=2, kv_live_blocks=50), \
        Load(decode_load=2, kv_live_blocks=10)
    assert p.pick_decode([a, b, c]) is c
    first, second = Load(decode_load=2, kv_live_blocks=10), Load(decode_load=2, kv_live_blocks=10)
    assert p.pick_decode([first, second]) is first


def test_round_robin_keeps_one_counter_per_phase() -> None:
    p = RoundRobin()
    c = [Load(0), Load(1), Load(2)]
    assert [c.index(p.pick_prefill(c)) for _ in range(4)] == [1, 2, 0, 1]
    assert [c.index(p.pick_decode(c)) for _ in range(2)] == [1, 2]


def test_unknown_policy_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="router: unknown value .random.; allowed: round_robin, least_loaded"):
        make_policy("random")


def test_simulator_router_is_the_shared_policy() -> None:
    assert isinstance(make_router("least_loaded"), LeastLoaded)
    assert isinstance(make_router("round_robin"), RoundRobin)


def test_runtime_router_reads_workers_as_load_views() -> None:
    pytest.importorskip("torch")
    from wattserve.runtime.router import Router, WorkerClient

    ws = [WorkerClient(i, "decode", "127.0.0.1", 0) for i in range(3)]
    router = Router(ws, "tiny", "least_loaded")
    assert isinstance(router.policy, LeastLoaded)
    ws[0].decoding |= {"a", "b"}
    ws[1].decoding |= {"c"}
    ws[2].decoding |= {"d"}
    ws[1].stats["kv_blocks_used"] = 40
    ws[2].stats["kv_blocks_used"] = 12
    views: list[LoadView] = ws
    assert router.policy.pick_decode(views) is ws[2]
    ws[0].prefill_queue["x"] = 10
    ws[1].prefill_queue["y"] = 10
    assert router.policy.pick_prefill(views) is ws[2]
    sim_view = [Load(10, 2, 0), Load(10, 1, 40), Load(0, 1, 12)]
    assert router.policy.pick_prefill(sim_view) is sim_view[2]
