"""Per-worker power: opening one device in a worker (local.py), the worker-side ops (ops.py), the
router-side WorkerPower over them (remote.py), the off-loop clock actuator (clock_actuator.py), and
RuntimeBackend logging a failed worker op."""

from __future__ import annotations

import ast
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from fake_nvml import FakeNvml

from wattserve.runtime.power.base import (
    GpuInitError,
    GpuNotFoundError,
    GpuPermissionError,
    GpuPowerError,
    GpuRangeError,
)
from wattserve.runtime.power.clock_actuator import ClockActuator
from wattserve.runtime.power.local import open_device_power, parse_visible, visible_device
from wattserve.runtime.power.modelled import ModelledGpuPower
from wattserve.runtime.power.nvml import NvmlGpuPower
from wattserve.runtime.power.ops import power_op, power_stats
from wattserve.runtime.power.remote import WorkerPower

from manual_clock import Clock

POWER = Path(__file__).resolve().parents[1] / "src" / "wattserve" / "runtime" / "power"


def nvml_agent(fake: FakeNvml, index: int | str = 0) -> NvmlGpuPower:
    return NvmlGpuPower(indices=[index], nvml=fake, install_handlers=False)


# ---- local.py ----

def test_visible_devices_parse_like_cuda_up_to_the_first_bad_entry() -> None:
    assert parse_visible("2, 0,GPU-abc-1") == [2, 0, "GPU-abc-1"]
    assert parse_visible("1,x,0") == [1]
    assert parse_visible("1,1,0") == [1]
    assert parse_visible("MIG-GPU-aaaa/1/0,3") == ["MIG-GPU-aaaa/1/0", 3]
    assert parse_visible("") == []
    assert visible_device(1, None) == 1
    assert visible_device(1, "3,2") == 2
    with pytest.raises(GpuNotFoundError, match="names 2"):
        visible_device(2, "3,2")


def test_cuda_n_opens_the_nth_visible_gpu_by_index() -> None:
    fake = FakeNvml(count=4)
    a = open_device_power("nvml", "cuda:1", "h100", "llama-3.1-8b", dict, env={"CUDA_VISIBLE_DEVICES": "3,2"},
                          nvml=fake, install_handlers=False)
    assert a.count() == 1 and a.handles == [fake.devices[2]]
    b = open_device_power("auto", "cuda", "h100", "llama-3.1-8b", dict, env={}, nvml=fake, install_handlers=False)
    assert b.handles == [fake.devices[0]]


def test_cuda_n_opens_a_uuid_or_mig_entry_by_uuid() -> None:
    fake = FakeNvml(count=3, migs=1)
    env = {"CUDA_VISIBLE_DEVICES": f"{fake.devices[2].uuid},{fake.devices[0].migs[0].uuid}"}
    a = open_device_power("nvml", "cuda:0", "h100", "llama-3.1-8b", dict, env=env, nvml=fake, install_handlers=False)
    assert a.handles == [fake.devices[2]]
    b = open_device_power("nvml", "cuda:1", "h100", "llama-3.1-8b", dict, env=env, nvml=fake, install_handlers=False)
    assert b.handles == [fake.devices[0]]


def test_auto_is_modelled_on_cpu_and_reads_this_workers_stats() -> None:
    st = {"busy_s": 0.0, "steps": 0, "tokens": 0, "role": "decode"}
    a = open_device_power("auto", "cpu", "h100", "llama-3.1-8b", lambda: st)
    assert isinstance(a, ModelledGpuPower) and a.count() == 1 and a.modelled
    assert a.stats(0) is st


def test_auto_on_cuda_without_nvml_falls_back_and_says_so_nvml_does_not() -> None:
    notes: list[str] = []
    a = open_device_power("auto", "cuda:0", "h100", "llama-3.1-8b", dict, env={}, nvml=FakeNvml(driver=False),
                          note=notes.append, install_handlers=False)
    assert a.modelled and len(notes) == 1 and "falling back to modelled" in notes[0]
    with pytest.raises(GpuInitError, match="NVML could not start"):
        open_device_power("nvml", "cuda:0", "h100", "llama-3.1-8b", dict, env={}, nvml=FakeNvml(driver=False),
                          install_handlers=False)
    with pytest.raises(GpuPowerError, match="allowed: amdsmi, auto, modelled, nvml"):
        open_device_power("rapl", "cpu", "h100", "llama-3.1-8b", dict)


# ---- ops.py ----

def test_set_cap_op_answers_with_the_read_back() -> None:
    a = nvml_agent(FakeNvml(clock=Clock()))
    ev = power_op(a, {"op": "set_cap", "watts": 450, "seq": 7}, clock=lambda: 12.5)
    assert ev == {"ev": "power", "op": "set_cap", "seq": 7, "value": 450, "ok": True, "cap_w": 450.0,
                  "cap_in_force_w": 450.0, "locked_clock_mhz": None, "error": None, "error_kind": None, "t": 12.5}


def test_failed_ops_become_ok_false_with_the_typed_kind_and_never_raise() -> None:
    a = nvml_agent(FakeNvml(root=False))
    ev = power_op(a, {"op": "set_cap", "watts": 450})
    assert not ev["ok"] and ev["error_kind"] == "permission" and "no permission" in ev["error"]
    assert ev["cap_w"] == 700.0
    ev = power_op(nvml_agent(FakeNvml()), {"op": "set_cap", "watts": 90})
    assert not ev["ok"] and ev["error_kind"] == "range" and "[200, 700] W" in ev["error"]
    ev = power_op(nvml_agent(FakeNvml()), {"op": "set_cap"})
    assert not ev["ok"] and "malformed" in ev["error"]
    ev = power_op(nvml_agent(FakeNvml()), {"op": "overclock"})
    assert not ev["ok"] and "allowed: set_cap, lock_clock, restore" in ev["error"]


def test_lock_clock_and_restore_ops() -> None:
    fake = FakeNvml()
    a = nvml_agent(fake)
    ev = power_op(a, {"op": "lock_clock", "mhz": 1410})
    assert ev["ok"] and ev["locked_clock_mhz"] == 1410 and fake.devices[0].locked == (1410, 1410)
    power_op(a, {"op": "set_cap", "watts": 300})
    ev = power_op(a, {"op": "restore"})
    assert ev["ok"] and ev["cap_w"] == 700.0 and ev["locked_clock_mhz"] is None
    assert fake.devices[0].locked is None


def test_power_stats_are_json_and_a_lost_gpu_gives_nones_not_an_exception() -> None:
    fake = FakeNvml()
    a = nvml_agent(fake)
    st = power_stats(a, clock=lambda: 3.0)
    assert set(st) >= {"name", "power_w", "energy_j", "cap_w", "cap_min_w", "cap_max_w", "clock_mhz",
                       "locked_clock_mhz", "supported_clocks_mhz", "throttle_reasons", "modelled"}
    assert json.loads(json.dumps(st)) == st
    assert st["cap_min_w"] == 200.0 and st["supported_clocks_mhz"][-1] == 1980 and st["error"] is None
    fake.devices[0].lost = True
    lost = power_stats(a)
    assert lost["power_w"] is None and lost["cap_w"] is None and "lost" in lost["error"]


def test_modelled_power_stats_carry_the_catalog_clocks() -> None:
    m = open_device_power("modelled", "cpu", "h100", "llama-3.1-8b", dict)
    st = power_stats(m)
    assert st["modelled"] and st["supported_clocks_mhz"][0] == 345 and st["cap_max_w"] == 700.0


# ---- remote.py ----

class Workers:
    """N workers in one process: `send` runs the op on the worker's own agent at once and keeps its
    event for the test to deliver; `stats` is each worker's latest frame, refreshed by `tick`."""

    def __init__(self, agents: list[Any]) -> None:
        self.agents = agents
        self.t = 0.0
        self.frames: list[dict[str, Any]] = [{} for _ in agents]
        self.events: list[tuple[int, dict[str, Any]]] = []
        self.sent: list[tuple[int, dict[str, Any]]] = []
        self.dead: set[int] = set()
        self.tick()

    def now(self) -> float:
        self.t += 1.0
        return self.t

    def tick(self) -> None:
        self.frames = [{"ev": "stats", "power": power_stats(a, clock=self.now)} for a in self.agents]

    def send(self, wid: int, h: dict[str, Any]) -> None:
        if wid in self.dead:
            raise ConnectionResetError("worker gone")
        self.sent.append((wid, h))
        self.events.append((wid, power_op(self.agents[wid], h, clock=self.now)))

    def deliver(self, wp: WorkerPower) -> None:
        for wid, ev in self.events:
            wp.on_event(wid, ev)
        self.events.clear()


def remote(agents: list[Any]) -> tuple[WorkerPower, Workers]:
    w = Workers(agents)
    return WorkerPower(len(agents), w.send, lambda i: w.frames[i]), w


def test_worker_power_reads_each_workers_stats() -> None:
    fake = FakeNvml(count=2)
    wp, _ = remote([nvml_agent(fake, 0), nvml_agent(fake, 1)])
    assert wp.count() == 2 and not wp.modelled
    assert wp.cap_range_w(1) == (200.0, 700.0) and wp.power_w(0) == 650.0 and wp.power_cap_w(1) == 700.0
    assert wp.supported_clocks_mhz(0)[0] == 345 and wp.name(0) == "NVIDIA H100 80GB HBM3"


def test_out_of_range_caps_are_refused_synchronously_and_nothing_is_sent() -> None:
    wp, w = remote([nvml_agent(FakeNvml())])
    with pytest.raises(GpuRangeError, match=r"\[200, 700\] W"):
        wp.set_power_cap(0, 800)
    with pytest.raises(GpuRangeError, match=r"outside \[345, 1980\] MHz"):
        wp.lock_clock(0, 2100)
    with pytest.raises(GpuRangeError, match="does not exist"):
        wp.set_power_cap(3, 400)
    assert w.sent == []


def test_a_cap_is_the_asked_value_until_the_read_back_then_the_read_back_wins_over_older_stats() -> None:
    fake = FakeNvml()
    wp, w = remote([nvml_agent(fake)])
    assert wp.set_power_cap(0, 400) == 400.0
    assert w.sent == [(0, {"op": "set_cap", "watts": 400.0, "seq": 1})]
    assert wp.power_cap_w(0) == 400.0
    fake.devices[0].limit_mw = 401_000
    w.deliver(wp)
    assert wp.power_cap_w(0) == 400.0
    w.tick()
    assert wp.power_cap_w(0) == 401.0


def test_a_refused_worker_op_is_kept_per_gpu_and_queued_for_the_log() -> None:
    wp, w = remote([nvml_agent(FakeNvml()), nvml_agent(FakeNvml(root=False))])
    wp.set_power_cap(1, 300)
    wp.set_power_cap(0, 300)
    w.deliver(wp)
    f = wp.last_error(1)
    assert f is not None and f.op == "set_cap" and f.value == 300.0 and f.kind == "permission"
    assert isinstance(f.error(), GpuPermissionError)
    assert wp.last_error(0) is None
    assert wp.power_cap_w(1) == 700.0 and wp.power_cap_w(0) == 300.0
    assert [x.gpu for x in wp.take_failures()] == [1]
    assert wp.take_failures() == []


def test_an_old_ops_answer_does_not_clear_a_newer_request() -> None:
    wp, w = remote([nvml_agent(FakeNvml())])
    wp.set_power_cap(0, 400)
    first = w.events.pop()
    wp.set_power_cap(0, 350)
    wp.on_event(0, first[1])
    assert wp.power_cap_w(0) == 350.0


def test_clock_locks_go_to_the_worker_and_read_back() -> None:
    fake = FakeNvml()
    wp, w = remote([nvml_agent(fake)])
    wp.lock_clock(0, 1410)
    assert wp.locked_clock_mhz(0) == 1410
    w.deliver(wp)
    assert wp.locked_clock_mhz(0) == 1410 and fake.devices[0].locked == (1410, 1410)
    wp.lock_clock(0, None)
    w.deliver(wp)
    assert wp.locked_clock_mhz(0) is None


def test_restore_asks_every_worker_even_past_a_dead_one() -> None:
    fakes = [FakeNvml(), FakeNvml(), FakeNvml()]
    wp, w = remote([nvml_agent(f) for f in fakes])
    for i in range(3):
        wp.set_power_cap(i, 300)
    w.dead.add(1)
    wp.restore()
    assert [wid for wid, h in w.sent if h["op"] == "restore"] == [0, 2]
    assert fakes[0].devices[0].limit_mw == 700_000 and fakes[2].devices[0].limit_mw == 700_000
    f = wp.last_error(1)
    assert f is not None and f.op == "restore" and f.kind == "lost" and "could not reach worker 1" in f.message


def test_an_op_to_an_unreachable_worker_is_a_typed_lost_gpu() -> None:
    from wattserve.runtime.power.base import GpuLostError

    wp, w = remote([nvml_agent(FakeNvml())])
    w.dead.add(0)
    with pytest.raises(GpuLostError, match="could not reach worker 0"):
        wp.set_power_cap(0, 300)
    assert wp.power_cap_w(0) == 700.0


def test_a_worker_without_power_readings_is_a_clear_error() -> None:
    wp = WorkerPower(1, lambda i, h: None, lambda i: {"ev": "stats"})
    with pytest.raises(GpuInitError, match="has not reported its power"):
        wp.power_w(0)


def test_a_reading_the_worker_could_not_take_is_a_typed_error_with_its_reason() -> None:
    fake = FakeNvml()
    wp, w = remote([nvml_agent(fake)])
    fake.devices[0].lost = True
    w.tick()
    with pytest.raises(GpuPowerError, match="could not read energy_j .*lost"):
        wp.energy_j(0)
    with pytest.raises(GpuPowerError, match="could not read cap_w"):
        wp.power_cap_w(0)


def test_remote_power_imports_no_router_or_worker() -> None:
    tree = ast.parse((POWER / "remote.py").read_text())
    mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    mods |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert all(not m.startswith("wattserve") or m.startswith("wattserve.runtime.power.") for m in mods if m)


# ---- clock_actuator.py ----

class GatedAgent:
    """lock_clock blocks until the test opens the gate, so the test can show request() does not."""

    def __init__(self, fail: set[int] | None = None) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.calls: list[int | None] = []
        self.fail = fail or set()

    def lock_clock(self, i: int, mhz: int | None) -> None:
        self.entered.set()
        assert self.gate.wait(10), "the test never opened the gate"
        if mhz in self.fail:
            raise GpuRangeError(f"clock (GPU {i}): {mhz} MHz refused")
        self.calls.append(mhz)


def ticks() -> Any:
    n = iter(range(10**6))
    return lambda: float(next(n))


def test_requests_return_while_the_device_call_is_in_flight_and_coalesce_to_the_latest() -> None:
    agent = GatedAgent()
    act = ClockActuator(agent, timer=ticks())  # type: ignore[arg-type]
    try:
        act.request(1000)
        assert agent.entered.wait(10)
        act.request(1100)
        act.request(1200)
        act.request(1300)
        assert agent.calls == []
        agent.gate.set()
        assert act.idle(10)
        assert agent.calls == [1000, 1300] and act.applied == 1300
        assert act.coalesced == 2 and act.calls == 2
    finally:
        agent.gate.set()
        act.close()


def test_no_op_requests_make_no_device_call_and_latency_is_recorded_per_call() -> None:
    agent = GatedAgent()
    agent.gate.set()
    act = ClockActuator(agent, timer=ticks())  # type: ignore[arg-type]
    try:
        for mhz in (1000, 1000, 1000):
            act.request(mhz)
            assert act.idle(10)
        assert agent.calls == [1000]
        assert list(act.latencies_s) == [1.0] and act.stats()["latency_max_s"] == 1.0
    finally:
        act.close()


def test_the_device_gets_the_lower_of_ceiling_and_request() -> None:
    agent = GatedAgent()
    agent.gate.set()
    act = ClockActuator(agent, timer=ticks())  # type: ignore[arg-type]
    try:
        act.set_ceiling(1200)
        act.request(1500)
        assert act.idle(10) and agent.calls == [1200]
        act.request(900)
        assert act.idle(10) and agent.calls[-1] == 900
        act.request(None)
        assert act.idle(10) and agent.calls[-1] == 1200
        act.set_ceiling(None)
        assert act.idle(10) and agent.calls[-1] is None
    finally:
        act.close()


def test_a_refused_ceiling_raises_and_keeps_the_old_one() -> None:
    agent = GatedAgent(fail={800})
    agent.gate.set()
    act = ClockActuator(agent, timer=ticks())  # type: ignore[arg-type]
    try:
        act.set_ceiling(1200)
        with pytest.raises(GpuRangeError, match="800 MHz refused"):
            act.set_ceiling(800)
        assert act.ceiling == 1200 and act.applied == 1200
    finally:
        act.close()


def test_a_failed_background_call_is_recorded_reported_and_not_retried() -> None:
    agent = GatedAgent(fail={700})
    agent.gate.set()
    seen: list[GpuPowerError] = []
    act = ClockActuator(agent, on_error=seen.append, timer=ticks())  # type: ignore[arg-type]
    try:
        act.request(700)
        assert act.idle(10)
        act.request(1000)
        assert act.idle(10)
        act.request(700)
        assert act.idle(10)
        assert act.errors == 2 and "700 MHz refused" in (act.last_error or "")
        assert len(seen) == 2 and isinstance(seen[0], GpuRangeError)
        assert agent.calls == [1000]
    finally:
        act.close()


def test_power_op_lock_goes_through_the_actuator_as_its_ceiling() -> None:
    fake = FakeNvml()
    a = nvml_agent(fake)
    act = ClockActuator(a)
    try:
        act.request(900)
        assert act.idle(10) and fake.devices[0].locked == (900, 900)
        ev = power_op(a, {"op": "lock_clock", "mhz": 1410}, clocks=act)
        assert ev["ok"] and ev["locked_clock_mhz"] == 1410 and fake.devices[0].locked == (900, 900)
        act.request(None)
        assert act.idle(10) and fake.devices[0].locked == (1410, 1410)
        st = power_stats(a, clocks=act)
        assert st["locked_clock_mhz"] == 1410 and st["device_locked_clock_mhz"] == 1410
        ev = power_op(a, {"op": "restore"}, clocks=act)
        assert ev["ok"] and act.ceiling is None and fake.devices[0].locked is None
        act.request(900)
        assert act.idle(10) and fake.devices[0].locked == (900, 900)
    finally:
        act.close()


# ---- RuntimeBackend over WorkerPower ----

class StubWorker:
    def __init__(self, wid: int) -> None:
        self.wid = wid
        self.role = "colocated"
        self.switching_to = None
        self.stats: dict[str, Any] = {}
        self.output_tokens = 0
        self.completed = 0
        self.alive = True


class StubRouter:
    model = "tiny"

    def __init__(self, n: int) -> None:
        self.workers = [StubWorker(i) for i in range(n)]
        self.recent: list[Any] = []
        self.limits: list[tuple[int, float, int | None]] = []

    def oldest_wait_s(self, w: Any, now: float) -> float:
        return 0.0

    def set_limits(self, wid: int, cap_w: float, locked: int | None) -> None:
        self.limits.append((wid, cap_w, locked))


def test_runtime_backend_logs_a_failed_worker_op_and_reads_clocks_from_the_workers() -> None:
    pytest.importorskip("torch")
    import asyncio

    from wattserve.runtime.backend import RuntimeBackend
    from wattserve.seam import ActuationRefused, BudgetSignal, SetClock, SetPowerCap

    wp, w = remote([nvml_agent(FakeNvml()), nvml_agent(FakeNvml(root=False))])
    router = StubRouter(2)
    loop = asyncio.new_event_loop()
    try:
        be = RuntimeBackend(router, wp, BudgetSignal.constant(1000), None, None, loop=loop)  # type: ignore[arg-type]
        assert be.info().gpu == "NVIDIA H100 80GB HBM3" and be.info().clocks_mhz[0] == 345
        with pytest.raises(ActuationRefused, match=r"\[200, 700\] W"):
            be.apply(SetPowerCap(0, 100))
        be.apply(SetPowerCap(1, 300))
        be.apply(SetClock(1, 1410))
        w.deliver(wp)
        st = be.observe()
        failed = [e for e in be.log.entries if e.status == "failed"]
        assert [(e.kind, e.target, e.value) for e in failed] == [("cap", 1, 300.0), ("clock", 1, 1410)]
        assert all("no permission" in e.note for e in failed)
        assert st.gpus[1].cap_w == 700.0 and st.gpus[1].locked_clock_mhz is None
    finally:
        loop.close()


# ---- device.py ----

def test_device_power_answers_ops_reports_stats_and_restores_on_close() -> None:
    from wattserve.runtime.power.device import DevicePower

    fake = FakeNvml(count=2)
    dp = DevicePower.open("nvml", "cuda:0", "h100", "llama-3.1-8b", dict, env={"CUDA_VISIBLE_DEVICES": "1"},
                          nvml=fake, install_handlers=False)
    try:
        assert DevicePower.is_power_op({"op": "set_cap"}) and not DevicePower.is_power_op({"op": "add"})
        assert dp.handle({"op": "set_cap", "watts": 350, "seq": 1})["ok"]
        assert dp.handle({"op": "lock_clock", "mhz": 1500, "seq": 2})["locked_clock_mhz"] == 1500
        dp.request_clock(1200)
        assert dp.clocks.idle(10)
        assert fake.devices[1].locked == (1200, 1200) and fake.devices[0].locked is None
        st = dp.stats()
        assert st["cap_w"] == 350.0 and st["locked_clock_mhz"] == 1500 and st["device_locked_clock_mhz"] == 1200
        assert st["clock_actuator"]["applied_mhz"] == 1200 and json.loads(json.dumps(st)) == st
        assert dp.limits() == (350.0, 1500)
    finally:
        dp.close()
    assert fake.devices[1].limit_mw == 700_000 and fake.devices[1].locked is None


def test_the_budget_guard_drives_worker_power_and_a_refusal_lands_in_its_log() -> None:
    """The guard and the back end share one log: the guard's "applied" cap and the worker's later
    "failed" answer for it both appear, in that order."""
    pytest.importorskip("torch")
    import asyncio

    from wattserve.control import BudgetGuard
    from wattserve.runtime.backend import RuntimeBackend
    from wattserve.seam import ActuationLog, BudgetSignal

    wp, w = remote([nvml_agent(FakeNvml()), nvml_agent(FakeNvml(root=False))])
    loop = asyncio.new_event_loop()
    try:
        log = ActuationLog()
        budget = BudgetSignal.constant(1000)
        be = RuntimeBackend(StubRouter(2), wp, budget, None, None, loop=loop, log=log)  # type: ignore[arg-type]
        BudgetGuard(be, budget, log).enforce()
        assert sorted(h["watts"] for _, h in w.sent) == [500.0, 500.0]
        w.deliver(wp)
        w.tick()
        be.observe()
        statuses = [(e.kind, e.target, e.status) for e in log.entries]
        assert statuses.index(("cap", 1, "applied")) < statuses.index(("cap", 1, "failed"))
        assert ("cap", 0, "failed") not in statuses
        assert wp.power_cap_w(0) == 500.0 and wp.power_cap_w(1) == 700.0
    finally:
        loop.close()
