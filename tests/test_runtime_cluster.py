"""Router + worker processes in one event loop: KV hand-off equality and live role switches."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

pytest.importorskip("torch")
aiohttp = pytest.importorskip("aiohttp")

from wattserve.control import BudgetGuard, ControlLoop  # noqa: E402
from wattserve.runtime.backend import RuntimeBackend  # noqa: E402
from wattserve.runtime.engine.sequence import SamplingParams  # noqa: E402
from wattserve.runtime.router import Router  # noqa: E402
from wattserve.runtime.server import ServeArgs, start_workers, worker_power  # noqa: E402
from wattserve.seam import Action, BudgetSignal, ClusterState, SetRole  # noqa: E402

GREEDY = SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True)
PROMPTS = [[256, *f"prompt number {i} about power budgets".encode()] for i in range(4)]


async def collect(router: Router, prompt: list[int], params: SamplingParams) -> tuple[list[int], str]:
    st = router.submit(prompt, params)
    toks: list[int] = []
    while True:
        kind, v = await st.queue.get()
        if kind == "token":
            toks.append(v)
        else:
            return toks, f"{kind}:{v}"


async def outputs(args: ServeArgs, launcher: object = None, exits: list | None = None) -> list[list[int]]:
    """Greedy tokens of PROMPTS through a router and workers; `exits` gets the workers' exit codes."""
    clients = await start_workers(args, launcher)  # type: ignore[arg-type]
    router = Router(clients, args.model)
    await router.start()
    try:
        res = []
        for p in PROMPTS:
            toks, end = await collect(router, p, GREEDY)
            assert end == "done:length"
            res.append(toks)
        return res
    finally:
        await router.close()
        if exits is not None:
            exits.extend(w.proc.exitcode for w in clients)


@pytest.mark.parametrize("transport", ["shm", "tcp"])
def test_handoff_is_token_identical_to_colocated(transport: str) -> None:
    disagg = asyncio.run(outputs(ServeArgs(prefill=1, decode=1, kv_transport=transport, seed=4)))
    coloc = asyncio.run(outputs(ServeArgs(prefill=0, decode=0, colocated=1, seed=4)))
    assert disagg == coloc
    assert all(len(t) == 40 for t in disagg)


@dataclass
class ScriptedRoles:
    """A controller that moves worker 2 to prefill at 0.5 s, and back to decode once it is ready."""

    name: str = "scripted"
    period_s: float = 0.1
    step: int = 0

    def start(self, state: ClusterState) -> list[Action]:
        return []

    def decide(self, state: ClusterState) -> list[Action]:
        w2 = state.instances[2]
        if self.step == 0 and state.time_s >= 0.5:
            self.step = 1
            return [SetRole(2, "prefill")]
        if self.step == 1 and w2.role == "prefill" and w2.switching_to is None:
            self.step = 2
            return [SetRole(2, "decode")]
        return []


async def role_switch_run(n: int, concurrency: int) -> tuple[list[str], Router, list]:
    args = ServeArgs(prefill=1, decode=2, seed=1)
    router = Router(await start_workers(args), args.model)
    await router.start()
    agent = worker_power(router)
    budget = BudgetSignal.constant(1500.0)
    backend = RuntimeBackend(router, agent, budget, 1.0, 0.05)
    guard = BudgetGuard(backend, budget)
    guard.enforce()
    ControlLoop(backend, guard, [ScriptedRoles()]).start()
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> str:
        async with sem:
            params = SamplingParams(max_tokens=16 + i % 48, temperature=0.0, ignore_eos=True)
            toks, end = await collect(router, [256, *f"request {i}".encode()], params)
            if end == "done:length":
                assert len(toks) == params.max_tokens
            return end

    try:
        ends = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), 240)
        for _ in range(100):
            if sum(1 for e in guard.log.entries if e.kind == "role") == 2 and router.workers[2].role == "decode" \
                    and router.workers[2].switching_to is None:
                break
            await asyncio.sleep(0.1)
        return ends, router, guard.log.entries
    finally:
        await router.close()


def test_200_requests_survive_role_switches() -> None:
    ends, router, log = asyncio.run(role_switch_run(200, 16))
    assert len(ends) == 200
    assert all(e == "done:length" or e.startswith("error:") for e in ends)
    assert ends.count("done:length") == 200
    roles = [e for e in log if e.kind == "role"]
    assert [(e.target, e.value, e.status) for e in roles] == [(2, "prefill", "applied"), (2, "decode", "applied")]
    assert [w.role for w in router.workers] == ["prefill", "decode", "decode"]
    caps = [e for e in log if e.kind == "cap" and e.status == "applied"]
    assert caps and all(e.value <= 700 for e in caps)
    assert not router.requests


@dataclass
class ThroughColocated:
    """A controller that takes a 1P/1D server through colocated and back: worker 0 and then worker 1
    become colocated, then 0 becomes prefill and 1 decode again, each switch at once
    (seam/roles.instant_switch)."""

    name: str = "through-colocated"
    period_s: float = 0.1
    plan: tuple[tuple[float, int, str], ...] = ((0.3, 0, "colocated"), (0.6, 1, "colocated"),
                                                (1.2, 0, "prefill"), (1.5, 1, "decode"))
    step: int = 0

    def start(self, state: ClusterState) -> list[Action]:
        return []

    def decide(self, state: ClusterState) -> list[Action]:
        acts: list[Action] = []
        while self.step < len(self.plan) and state.time_s >= self.plan[self.step][0]:
            _, wid, role = self.plan[self.step]
            acts.append(SetRole(wid, role))
            self.step += 1
        return acts


def test_requests_survive_switches_into_and_out_of_colocated() -> None:
    async def run() -> tuple[list[str], list[str], list, list[str]]:
        args = ServeArgs(prefill=1, decode=1, seed=1)
        router = Router(await start_workers(args), args.model)
        await router.start()
        budget = BudgetSignal.constant(1500.0)
        backend = RuntimeBackend(router, worker_power(router), budget, 1.0, 0.05)
        guard = BudgetGuard(backend, budget)
        guard.enforce()
        ControlLoop(backend, guard, [ThroughColocated()]).start()
        seen: list[str] = []

        async def watch() -> None:
            for _ in range(40):
                seen.append(",".join(w.role for w in router.workers))
                await asyncio.sleep(0.05)

        async def one(i: int) -> str:
            await asyncio.sleep(0.02 * i)
            params = SamplingParams(max_tokens=24 + i % 24, temperature=0.0, ignore_eos=True)
            toks, end = await collect(router, [256, *f"request {i}".encode()], params)
            return end if len(toks) == params.max_tokens or end != "done:length" else "short"

        try:
            ends, _ = await asyncio.wait_for(asyncio.gather(asyncio.gather(*(one(i) for i in range(90))), watch()),
                                             240)
            return ends, seen, guard.log.entries, [w.role for w in router.workers]
        finally:
            await router.close()

    ends, seen, log, roles = asyncio.run(run())
    assert ends.count("done:length") == 90
    assert "colocated,colocated" in seen, "both workers were colocated at once"
    assert [(e.target, e.value, e.status) for e in log if e.kind == "role"] == [
        (0, "colocated", "applied"), (1, "colocated", "applied"), (0, "prefill", "applied"), (1, "decode", "applied")]
    assert roles == ["prefill", "decode"]


def test_a_command_line_launcher_serves_the_same_tokens() -> None:
    """The launcher seam: workers started as command lines (the shape a remote launcher takes) serve
    exactly what spawned children serve, and the router watches their exits the same way."""
    from wattserve.runtime.launcher import CommandLauncher

    args = ServeArgs(prefill=1, decode=1, seed=1)
    codes: list = []
    tokens = asyncio.run(outputs(args, CommandLauncher(), codes))
    assert tokens == asyncio.run(outputs(args))
    assert codes == [0, 0]
