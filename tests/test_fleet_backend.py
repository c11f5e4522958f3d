"""The external-engine back end's contract without a network: every policy declares what it needs,
a policy an engine cannot serve is refused naming why, actions the engine fixes at launch are
refused with the engine's reason, and a down endpoint is an instance with alive=False."""

from __future__ import annotations

import pytest

pytest.importorskip("aiohttp")

from fake_nvml import FakeNvml  # noqa: E402

from wattserve.catalog.gpus import gpu_key  # noqa: E402
from wattserve.control.needs import POLICY_NEEDS, missing  # noqa: E402
from wattserve.control.registry import CONTROLLERS  # noqa: E402
from wattserve.errors import UsageError  # noqa: E402
from wattserve.runtime.fleet.backend import FleetBackend  # noqa: E402
from wattserve.runtime.fleet.endpoints import EndpointPool  # noqa: E402
from wattserve.runtime.fleet.engines import ENGINES, EngineReading  # noqa: E402
from wattserve.runtime.fleet.manage import check_policy  # noqa: E402
from wattserve.runtime.power.nvml import NvmlGpuPower  # noqa: E402
from wattserve.runtime.power.ops import power_stats  # noqa: E402
from wattserve.runtime.power.remote import WorkerPower  # noqa: E402
from wattserve.seam import (  # noqa: E402
    ActuationRefused,
    BudgetSignal,
    SetBatchLimit,
    SetComputeShare,
    SetPowerCap,
    SetRole,
)


def test_every_policy_declares_its_needs() -> None:
    assert set(POLICY_NEEDS) == set(CONTROLLERS.names())


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_cap_only_policies_run_and_role_or_batch_policies_are_refused(engine: str) -> None:
    spec = ENGINES[engine]
    for policy in ("static", "static-split", "tdp", "static-cap", "rapid-power"):
        check_policy(policy, spec)
    for policy in ("rapid", "rapid-roles", "pals", "batch-only"):
        with pytest.raises(UsageError) as e:
            check_policy(policy, spec)
        assert e.value.field == "control.policy" and "allowed: static" in str(e.value)


def test_a_back_end_that_fills_everything_can_run_every_policy() -> None:
    from dataclasses import fields

    from wattserve.seam import InstanceState

    every = frozenset(f.name for f in fields(InstanceState))
    acts = frozenset({"SetPowerCap", "SetRole", "SetBatchLimit", "SetClock"})
    assert all(missing(p, every, acts) == ([], []) for p in POLICY_NEEDS)


def _backend(endpoint_roles: tuple[str, ...] = ("prefill", "decode")) -> tuple[FleetBackend, NvmlGpuPower]:
    nv = NvmlGpuPower(nvml=FakeNvml(count=2), install_handlers=False)
    power = WorkerPower(2, lambda i, h: None, lambda i: {"power": power_stats(nv, gpu=i)})
    pool = EndpointPool(tuple(f"http://e{i}:1" for i in range(len(endpoint_roles))), endpoint_roles, ENGINES["vllm"])
    pool.endpoints[0].reading = EngineReading(3, 2, 0.5, 100, 40, 7, None, None)
    pool.endpoints[1].alive = False
    import asyncio

    loop = asyncio.new_event_loop()
    return FleetBackend(pool, power, BudgetSignal((0.0,), (1000.0,)), 1.0, 0.05, loop=loop), nv


def test_fleet_state_carries_the_engines_readings_and_marks_a_down_endpoint() -> None:
    b, _ = _backend()
    st = b.observe()
    assert [i.role for i in st.instances] == ["prefill", "decode"]
    i0 = st.instances[0]
    assert (i0.running, i0.waiting, i0.kv_usage, i0.prompt_tokens, i0.output_tokens, i0.completed) == \
        (3, 2, 0.5, 100, 40, 7)
    assert st.instances[1].alive is False and st.by_role("decode") == []
    assert [g.instance for g in st.gpus] == [0, 1] and st.gpus[0].cap_max_w == 700.0
    assert b.info().gpu == "h100" and b.info().tp == 1


def test_actions_the_engine_fixes_at_launch_are_refused_with_its_reason() -> None:
    b, _ = _backend()
    for action, text in ((SetBatchLimit(0, 8), "max_num_seqs"), (SetRole(0, "decode"), "kv_role"),
                         (SetComputeShare(0, 0.5, 0.5), "compute")):
        with pytest.raises(ActuationRefused, match=text):
            b.apply(action)
    with pytest.raises(ActuationRefused, match="outside the allowed range"):
        b.apply(SetPowerCap(0, 900.0))


@pytest.mark.parametrize("name,key", [("NVIDIA H100 80GB HBM3", "h100"), ("H100-SXM (modelled)", "h100"),
                                      ("NVIDIA A100-SXM4-40GB", "a100-40gb"), ("Mystery GPU", "Mystery GPU")])
def test_device_names_map_to_catalog_gpus(name: str, key: str) -> None:
    assert (gpu_key(name) or name) == key
