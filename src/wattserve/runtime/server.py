"""`wattserve serve`: workers, router, OpenAI API, power agent and controllers in one command."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wattserve.control.registry import NEEDS_MODEL, SWITCHES_CONCURRENT
from wattserve.errors import UsageError
from wattserve.runtime.engine.args import EngineArgs
from wattserve.runtime.launcher import ProcessLauncher, WorkerLauncher
from wattserve.runtime.power.remote import WorkerPower
from wattserve.runtime.restarter import Restarter
from wattserve.runtime.router import Router, WorkerClient
from wattserve.runtime.transport import owner_prefix, server_prefix, sweep
from wattserve.runtime.worker_spec import WorkerSpec
from wattserve.schema.serve import ServeConfig
from wattserve.seam import BudgetSignal

ServeArgs = ServeConfig
"""The old name of ServeConfig (wattserve.schema.serve), for code that still imports it."""


def _roles(a: ServeConfig) -> list[str]:
    if sum(1 for n in (a.prefill or a.decode, a.colocated, a.concurrent) if n) > 1:
        raise UsageError("instances: use one of --concurrent N, --colocated N or --prefill/--decode")
    roles = (["prefill"] * a.prefill + ["decode"] * a.decode + ["colocated"] * a.colocated
             + ["concurrent"] * a.concurrent)
    if not roles:
        raise UsageError("instances: need at least one worker (--prefill 1 --decode 1, or --colocated 1)")
    if a.prefill and not a.decode or a.decode and not a.prefill:
        raise UsageError(f"instances: a disaggregated server needs prefill >= 1 and decode >= 1 "
                         f"(got prefill={a.prefill}, decode={a.decode})")
    return roles


def check_inputs(a: ServeConfig) -> None:
    """Refuse what the schema cannot see (the model's name among the runtime's, the weights folder,
    the torch device) in this process, before any worker is spawned: a worker's failure would
    otherwise surface as its own traceback-shaped message after seconds of start-up. torch is
    imported here only for a CUDA device (to count them): the router itself never needs it."""
    from wattserve.catalog.models import MODELS
    from wattserve.runtime.engine.config import SMALL_CONFIGS

    names = [*SMALL_CONFIGS, *MODELS]
    if a.model.lower() not in names:
        raise UsageError(f"--model: unknown value {a.model!r}; allowed: {', '.join(names)}")
    if a.weights != "dummy":
        w = Path(a.weights)
        if not w.is_dir():
            raise UsageError(f"--weights: {a.weights!r} is not a folder; allowed: dummy or a folder of HF "
                             "safetensors")
        if not any(w.glob("*.safetensors")):
            raise UsageError(f"--weights: no *.safetensors files in {a.weights!r}; allowed: dummy or a folder "
                             "of HF safetensors")
    _check_positions(a)
    if a.control.policy in SWITCHES_CONCURRENT:
        raise UsageError(f"--policy: {a.control.policy} moves workers into and out of concurrent, and the runtime's "
                         "workers do not switch into or out of concurrent; allowed: planner")
    if a.control.policy in NEEDS_MODEL and a.concurrent:
        raise UsageError(f"--policy: {a.control.policy} moves workers between prefill, decode and colocated, and "
                         "concurrent workers do not switch roles; allowed with it: --prefill/--decode or --colocated")
    if a.step_log is not None:
        log = Path(a.step_log)
        try:
            log.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"cannot create {a.step_log!r} ({e.strerror}); allowed: a folder to write step logs "
                             "into", "step_log") from None
        if not os.access(log, os.W_OK):
            raise UsageError(f"{a.step_log!r} is not writable; allowed: a folder to write step logs into",
                             "step_log")
    device = re.fullmatch(r"(cpu|cuda)(?::(\d+))?", a.device)
    if device is None:
        raise UsageError(f"--device: {a.device!r} is not a torch device; allowed: cpu, cuda, cuda:N")
    roles = _roles(a)
    modelled = a.power_backend == "modelled" or a.power_backend == "auto" and a.device == "cpu"
    if modelled and a.control.budget_w is not None:
        from wattserve.catalog.gpus import GPUS

        lo = len(roles) * GPUS[a.gpu].cap_min_w
        if a.control.budget_w < lo:
            raise UsageError(f"--budget: {a.control.budget_w:g} W is below the sum of the minimum caps; "
                             f"allowed: >= {lo:g} W for {len(roles)} worker(s) of {a.gpu}")
    if a.control.policy is not None:
        from wattserve.catalog.gpus import GPUS

        a.control.budget_signal(floor_w=len(roles) * GPUS[a.gpu].cap_min_w if modelled else None)
        a.control.target_signal()
        if modelled:
            a.control.operating_table(a.gpu, a.model, 1)
    _check_listen(a.host, a.port)
    if device.group(1) == "cuda":
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UsageError(f"--device: {a.device!r} asked for, but torch sees no CUDA device; allowed: cpu")
        index = None if device.group(2) is None else int(device.group(2))
        wanted = len(roles) if index is None else index + 1
        if wanted > count:
            need = f"{len(roles)} worker(s), one GPU each" if index is None else f"cuda:{index}"
            raise UsageError(f"--device: {need} asked for, but torch sees {count} CUDA device(s)")


def _check_positions(a: ServeConfig) -> None:
    """A prompt limit beyond the model's positions would be accepted here and fail in the engine;
    so would an expert-parallel degree the model cannot take (ModelConfig refuses it when built)."""
    from wattserve.runtime.engine.config import config_from_hf, get_config

    cfg = get_config(a.model)
    if a.weights != "dummy":
        cfg = config_from_hf(Path(a.weights), cfg)
    if a.ep != cfg.ep:
        cfg = dataclasses.replace(cfg, ep=a.ep)
    if a.max_prompt_tokens >= cfg.max_positions:
        raise UsageError(f"--max-prompt-tokens: {a.max_prompt_tokens} leaves no room to generate in {a.model}'s "
                         f"{cfg.max_positions} positions; allowed: an integer from 1 to {cfg.max_positions - 1}")


def _check_listen(host: str, port: int) -> None:
    """Bind the API's address once, as aiohttp will (SO_REUSEADDR), so that a busy port or an unknown
    host is refused before the workers load their weights."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise UsageError(f"--host: cannot resolve {host!r} ({e.strerror}); allowed: an address of this "
                         "machine, e.g. 127.0.0.1 or 0.0.0.0") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError as e:
            raise UsageError(f"--host/--port: cannot listen on {host}:{port} ({e.strerror})") from None


def worker_specs(a: ServeConfig) -> list[WorkerSpec]:
    """One WorkerSpec per worker, in id order (the id is also its GPU's index)."""
    base = a.engine_fields()
    specs = []
    for i, role in enumerate(_roles(a)):
        dev = f"cuda:{i}" if a.device == "cuda" else a.device
        specs.append(WorkerSpec(i, role, EngineArgs(**{**base, "device": dev}), a.kv_transport, a.threads,
                                "127.0.0.1", gpu=a.gpu, power_as_model=a.power_as_model, governor=a.governor,
                                slo_ttft_s=a.slo.ttft_ms and a.slo.ttft_ms / 1e3,
                                slo_tpot_s=a.slo.tpot_ms and a.slo.tpot_ms / 1e3,
                                shm_prefix=owner_prefix(os.getpid(), i), power_backend=a.power_backend,
                                step_log=a.step_log))
    return specs


async def make_launcher(a: ServeConfig) -> WorkerLauncher:
    """Local child processes, or Ray actors in one placement group (runtime/ray_launcher.py; Ray
    starts or is joined off the event loop)."""
    if a.launcher != "ray":
        return ProcessLauncher()
    from wattserve.runtime.ray_launcher import RayLauncher

    specs = worker_specs(a)
    return await asyncio.get_running_loop().run_in_executor(None, RayLauncher, specs, a.placement, a.ray_address)


def close_launcher(launcher: WorkerLauncher) -> None:
    close = getattr(launcher, "close", None)
    if close is not None:
        close()


async def start_workers(a: ServeConfig, launcher: WorkerLauncher | None = None) -> list[WorkerClient]:
    """Launch every worker (in parallel); if one fails, the others are stopped and its error raised."""
    launcher = launcher or ProcessLauncher()
    specs = worker_specs(a)
    loop = asyncio.get_running_loop()
    started = await asyncio.gather(*(loop.run_in_executor(None, launcher.launch, s) for s in specs),
                                   return_exceptions=True)
    errors = [r for r in started if isinstance(r, BaseException)]
    if errors:
        for r in started:
            if not isinstance(r, BaseException):
                r.proc.kill()
        raise errors[0]
    return [WorkerClient(s.wid, s.role, w.host, w.port, w.proc) for s, w in zip(specs, started)]


def worker_power(router: Router) -> WorkerPower:
    """The router-side view of every worker's own power agent (runtime.power.remote): caps and
    clock locks go to the worker that owns the GPU; readings come from its stats frames."""
    wp = WorkerPower(len(router.workers), send=lambda wid, h: router.workers[wid].send(h),
                     stats=lambda wid: router.workers[wid].stats)
    router.on_power = wp.on_event
    return wp


def _power_note(agent: WorkerPower, a: ServeConfig) -> str:
    names = sorted({agent.name(i) for i in range(agent.count())})
    if agent.modelled:
        where = "CPU workers" if a.device == "cpu" else "no power library reached the GPUs"
        return f"{where}: power figures are modelled ({a.gpu} running {a.power_as_model})"
    return f"power and clocks through each worker's own agent ({', '.join(names)})"


def _report_down(w: WorkerClient) -> None:
    print(f"wattserve serve: {w.down_reason}; serving on without it (GET /health reports it)", file=sys.stderr,
          flush=True)


def _sweep_dead(router: Router, w: WorkerClient) -> None:
    """Unlink the KV segments a dead worker created and no live request still carries."""
    sweep(owner_prefix(os.getpid(), w.wid), keep={str(h.get("name")) for h in router.live_handles()})


def start_control(a: ServeConfig, router: Router, agent: WorkerPower, budget: BudgetSignal,
                  plan: dict[str, Any] | None = None) -> None:
    """The control plane over live workers, as build_run builds it over the simulator: the budget
    and target signals (time: seconds since the back end started), the guard, the one controller
    (made here and nowhere else in serve), and the caps given back when the budget rises. `plan`:
    the models a planning policy is handed (built above the runtime, cli/serve.py, since they
    simulate)."""
    from wattserve.control import BudgetGuard, ControlLoop, make_controller
    from wattserve.runtime.backend import RuntimeBackend

    backend = RuntimeBackend(router, agent, budget, a.slo.ttft_ms and a.slo.ttft_ms / 1e3,
                             a.slo.tpot_ms and a.slo.tpot_ms / 1e3, target=a.control.target_signal())
    info = backend.info()
    params: dict[str, Any] = {}
    table = a.control.operating_table(info.gpu, info.model, info.tp)
    if table is not None:
        params["table"] = table
    if a.control.policy == "static-cap":
        params["cap_w"] = budget.floor() / info.gpu_count
    params.update(plan or {})
    controller = make_controller(str(a.control.policy), **params)
    guard = BudgetGuard(backend, budget)
    guard.enforce()
    ControlLoop(backend, guard, [controller]).start()


Advise = Callable[[list[tuple[float, int, int]], float], dict[str, Any]]
"""A placement advisor: (finished requests as (arrival s, prompt tokens, output tokens), window s) ->
a placement (instances, TP and base clock per phase). Built above the runtime (cli/serve.py), since
it simulates; it must pickle, because it runs in its own process."""


def _describe(rec: dict[str, Any]) -> str:
    def clk(mhz: int | None) -> str:
        return "max" if mhz is None else f"{mhz} MHz"
    return (f"{rec['prefill']} prefill x TP{rec['prefill_tp']} at {clk(rec['prefill_mhz'])}, {rec['decode']} decode "
            f"x TP{rec['decode_tp']} at {clk(rec['decode_mhz'])}")


async def advise_placement(window_s: float, router: Router, advise: Advise, stop: asyncio.Event) -> None:
    """Every `window_s`, BiScale's tier 1 on the requests finished in the last window, in a separate
    process so the API's event loop never waits on the search; the answer is logged and set on
    /metrics (`wattserve:recommended_placement`), never applied (workers keep their TP)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    loop = asyncio.get_running_loop()
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    try:
        while True:
            try:
                await asyncio.wait_for(stop.wait(), window_s)
                return
            except TimeoutError:
                pass
            lo = time.monotonic() - window_s
            seen = [r for r in router.finished if r[0] >= lo]
            try:
                rec = await loop.run_in_executor(pool, advise, seen, window_s)
            except Exception as e:  # the search failing must not take the server down
                print(f"wattserve serve: placement recommendation failed: {e!r}", file=sys.stderr, flush=True)
                continue
            router.metrics.recommend(rec)
            print(f"wattserve serve: BiScale tier 1 recommends {_describe(rec)} for the last {window_s:g} s "
                  f"({rec['requests']} requests; not applied)", flush=True)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


async def serve(a: ServeConfig, stop: asyncio.Event | None = None, advise: Advise | None = None,
                plan: dict[str, Any] | None = None) -> None:
    from aiohttp import web

    from wattserve.runtime.api import Api
    from wattserve.runtime.engine.config import get_config
    from wattserve.runtime.engine.tokenizer import load_tokenizer
    from wattserve.runtime.power.base import samples
    from wattserve.runtime.transport import make_transport

    get_config(a.model)
    make_transport(a.kv_transport)
    stop = stop or asyncio.Event()
    launcher = await make_launcher(a)
    try:
        clients = await start_workers(a, launcher)
    except BaseException:
        await asyncio.get_running_loop().run_in_executor(None, close_launcher, launcher)
        raise
    router = Router(clients, a.model, a.router)
    restarter = Restarter(router, worker_specs(a), launcher) if a.restart_workers else None

    def on_down(w: WorkerClient) -> None:
        _report_down(w)
        _sweep_dead(router, w)
        if restarter is not None:
            restarter(w)

    router.on_down = on_down
    agent = None
    runner = None
    advisor: asyncio.Task | None = None
    listening = False
    try:
        await router.start()
        n = len(clients)
        agent = worker_power(router)
        print(f"wattserve serve: {_power_note(agent, a)}", flush=True)
        if a.control.budget_w is not None:
            lo = sum(agent.cap_range_w(i)[0] for i in range(n))
            if a.control.budget_w < lo:
                raise UsageError(f"--budget: {a.control.budget_w:g} W is below the sum of the minimum caps; "
                                 f"allowed: >= {lo:g} W for {n} worker(s)")
        budget = a.control.budget_signal(floor_w=sum(agent.cap_range_w(i)[0] for i in range(n)))
        api = Api(router, load_tokenizer(None if a.weights == "dummy" else Path(a.weights)), a.model,
                  a.max_prompt_tokens, a.max_tokens, a.api_key, lambda: samples(agent))
        runner = web.AppRunner(api.app(), handler_cancellation=True, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, a.host, a.port)
        try:
            await site.start()
        except OSError as e:
            raise UsageError(f"--host/--port: cannot listen on {a.host}:{a.port} ({e.strerror})") from None
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        if a.control.policy is not None and budget is not None:
            start_control(a, router, agent, budget, plan)
        if advise is not None and a.placement_window_s is not None:
            advisor = asyncio.create_task(advise_placement(a.placement_window_s, router, advise, stop))
        roles = ", ".join(f"{w.wid}:{w.role} pid {w.proc.pid}" for w in clients)
        print(f"wattserve serve: {a.model} on {n} worker(s) [{roles}], listening on http://{a.host}:{port}",
              flush=True)
        listening = True
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        if advisor is not None:
            stop.set()
            await asyncio.gather(advisor, return_exceptions=True)
        if runner is not None:
            await runner.cleanup()
        if agent is not None:
            agent.restore()
        await router.close()
        await asyncio.get_running_loop().run_in_executor(None, close_launcher, launcher)
        sweep(server_prefix(os.getpid()))
        if listening:
            print("wattserve serve: stopped", file=sys.stderr, flush=True)
