"""PALS's offline profile: throughput and power of one serving instance for every (GPU, model, TP,
EP, power cap, batch limit), on the simulator or on the runtime's engine workers.

PALS (Hankendi, Shahout, Yu, Coskun, arXiv 2605.21427; its released profiling code and data) sweeps
power caps x batch sizes on a saturated engine and fits throughput and power models to the table.
Each point here is one colocated instance under a backlog (wattserve.experiments.backlog), so the
served throughput is set by the cap and the batch limit, not by the arrivals. The first 20% of the
duration is a warm-up (the batch fills, the KV grows to its steady mix); the rest is the window:

- output_tok_s: output tokens of the instance (one TP group) per second of the window;
- power_w: mean power per GPU over the window (energy difference / window / GPUs);
- joules_per_token: the instance's energy over the window / its output tokens;
- TTFT and TPOT percentiles (ms) of the requests that completed in the window. Under a backlog a
  TTFT counted from arrival measures the queue, so the simulator's TTFT counts from admission (the
  first time the scheduler took the request), which is the engine's own prefill latency plus any
  wait behind a preemption. On the runtime the warm-up is at least RUNTIME_MIN_WARMUP_S and the
  window is the remaining 80% of the duration after it. The runtime's is measured by the client from sending the request, with
  as many clients as the batch limit plus a quarter, so it includes the short wait for a free slot.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from wattserve.errors import UsageError
from wattserve.schema.profile import ProfileConfig

COLUMNS = ("backend", "gpu", "model", "tp", "ep", "cap_w", "batch", "output_tok_s", "power_w", "joules_per_token",
           "ttft_p50_ms", "ttft_p90_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p90_ms", "tpot_p99_ms", "window_s",
           "completed")
WARMUP = 0.2
"""Share of each point's duration left out of the window."""
RUNTIME_MIN_WARMUP_S = 1.0
"""The runtime's warm-up is at least this long: a new cap binds 0.3 s after it is set (the modelled
agent's settle time) and workers report their energy counters every 0.25 s."""
MARGIN = 2.0
"""The offered rate over an upper bound on what the instance can serve: the backlog never drains."""
RUNTIME_OUTPUT_TOKENS = 32
RUNTIME_PROMPT = "the quick brown fox jumps over the lazy dog " * 4


@dataclass(frozen=True)
class Point:
    gpu: str
    model: str
    tp: int
    ep: int
    cap_w: float
    batch: int


def grid(cfg: ProfileConfig) -> list[Point]:
    """Every point, in the order of the rows: GPU, model, TP, EP, cap, batch."""
    return [Point(g, m, t, e, c, b) for g in cfg.gpus for m in cfg.models for t in cfg.tps for e in cfg.eps
            for c in cfg.cap_list for b in cfg.batch_list]


def has_ep() -> bool:
    """Whether the cluster schema has expert parallelism (ClusterConfig.ep); without it only ep=1 runs."""
    from wattserve.schema.cluster import ClusterConfig

    return "ep" in ClusterConfig.model_fields


def offered_rate(gpu: str, model: str, tp: int, batch: int) -> float:
    """Requests per second that no (cap, batch) of this instance keeps up with: `MARGIN` times an upper
    bound on its service rate, `batch` sequences per decode step at the fastest step (an empty KV at
    the top clock, prefill not counted) over the backlog's median output length (below its mean).
    A bound rather than a huge rate keeps the queue, and so the simulator's work, small."""
    from wattserve.catalog import get_gpu, get_model
    from wattserve.experiments.backlog import OUTPUT
    from wattserve.perf.latency import RooflineLatencyModel

    spec = get_gpu(gpu)
    alpha, _ = RooflineLatencyModel(spec, get_model(model), tp).decode_coeffs(batch, spec.clock_max_mhz)
    return MARGIN * batch / (alpha * math.exp(float(OUTPUT.mu or 0.0)))


def _percentiles(values: np.ndarray) -> tuple[float, float, float]:
    v = values[np.isfinite(values)]
    if not len(v):
        return (math.nan, math.nan, math.nan)
    p50, p90, p99 = np.percentile(v * 1e3, [50, 90, 99])
    return float(p50), float(p90), float(p99)


def _row(backend: str, p: Point, tokens: float, energy_j: float, window_s: float, ttft_s: np.ndarray,
         tpot_s: np.ndarray) -> dict[str, Any]:
    return {"backend": backend, "gpu": p.gpu, "model": p.model, "tp": p.tp, "ep": p.ep, "cap_w": p.cap_w,
            "batch": p.batch, "output_tok_s": tokens / window_s, "power_w": energy_j / window_s / p.tp,
            "joules_per_token": energy_j / tokens if tokens else math.nan,
            **dict(zip(("ttft_p50_ms", "ttft_p90_ms", "ttft_p99_ms"), _percentiles(ttft_s))),
            **dict(zip(("tpot_p50_ms", "tpot_p90_ms", "tpot_p99_ms"), _percentiles(tpot_s))),
            "window_s": window_s, "completed": len(ttft_s)}


def sim_cluster_config(p: Point) -> Any:
    from wattserve.schema.cluster import ClusterConfig, EngineConfig

    extra = {"ep": p.ep} if has_ep() else {}
    return ClusterConfig(gpu=p.gpu, model=p.model, tp=p.tp, colocated=1, prefill=0, decode=0, power_cap_w=p.cap_w,
                         engine=EngineConfig(max_seqs=p.batch), **extra)


def check_sim(cfg: ProfileConfig) -> None:
    """Build (not run) one instance of every (GPU, model, TP, EP) at its top cap and largest batch, so
    that a model that does not fit or a parallel layout the simulator refuses stops the profile
    before the first point; the error names the profile's flag."""
    from wattserve.schema.scenario import Scenario
    from wattserve.sim.cluster import Cluster
    from wattserve.workload import Workload

    if not has_ep() and cfg.eps != (1,):
        raise UsageError("this build's cluster schema has no expert parallelism; allowed: 1", "ep")
    names = {"cluster.tp": "tp", "cluster.ep": "ep", "cluster.model": "model", "cluster.gpu": "gpu",
             "cluster.engine.max_seqs": "batches", "cluster.power_cap_w": "caps"}
    empty = Workload(np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), "empty")
    seen = set()
    for p in grid(cfg):
        key = (p.gpu, p.model, p.tp, p.ep)
        if key in seen:
            continue
        seen.add(key)
        try:
            Cluster(Scenario(cluster=sim_cluster_config(Point(*key, cfg.cap_list[-1], cfg.batch_list[-1]))).cluster,
                    empty)
        except UsageError as e:
            raise UsageError(e.detail, names.get(e.field or "", e.field)) from None
        except ValueError as e:
            from pydantic import ValidationError

            from wattserve.schema.flags import field_error

            if not isinstance(e, ValidationError):
                raise
            raise UsageError(field_error(e, None, {"cluster.tp": "--tp", "cluster.ep": "--ep"})) from None


def sim_point(p: Point, duration_s: float, seed: int) -> dict[str, Any]:
    """One point on the simulator: the instance's counters read at the window's start (a callback at
    that simulated time) and at its end (the run stops there)."""
    from wattserve.experiments.backlog import backlog_workload
    from wattserve.experiments.build import build_run
    from wattserve.results.records import COMPLETED
    from wattserve.schema.scenario import Scenario

    t0, t1 = WARMUP * duration_s, duration_s
    wl = backlog_workload(offered_rate(p.gpu, p.model, p.tp, p.batch), duration_s, seed)
    run = build_run(Scenario(cluster=sim_cluster_config(p), seed=seed), wl)
    cluster = run.cluster
    inst = cluster.instances[0]
    start: list[float] = []

    def mark(_: Any = None) -> None:
        start.extend([inst.output_tokens_at(t0), sum(g.energy_at(t0) for g in inst.gpus)])

    cluster.loop.at(t0, mark)
    res = run.run(until=t1)
    tokens = inst.output_tokens_at(t1) - start[0]
    energy = sum(g.energy_at(t1) for g in inst.gpus) - start[1]
    r = res.records
    done = (r.status == COMPLETED) & (r.finish >= t0) & (r.finish <= t1)
    return _row("sim", p, tokens, energy, t1 - t0, (r.ttft - r.queue)[done], r.tpot[done])


def _sim_point(args: tuple[Point, float, int]) -> dict[str, Any]:
    return sim_point(*args)


def profile_sim(cfg: ProfileConfig, progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Every point of the grid, over a process pool of `cfg.jobs` (default: the cores); rows in grid
    order whatever order the points finish in."""
    check_sim(cfg)
    points = [(p, cfg.duration_s, cfg.seed) for p in grid(cfg)]
    jobs = min(cfg.jobs or os.cpu_count() or 1, len(points))
    rows: list[dict[str, Any]] = []
    if jobs <= 1:
        for a in points:
            rows.append(_sim_point(a))
            if progress:
                progress(len(rows))
        return rows
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(jobs) as pool:
        for row in pool.map(_sim_point, points, chunksize=1):
            rows.append(row)
            if progress:
                progress(len(rows))
    return rows


def check_runtime(cfg: ProfileConfig) -> None:
    """The runtime profiles the small CPU models only: a catalog model's dummy weights would not fit."""
    from wattserve.runtime.engine.config import SMALL_CONFIGS

    for m in cfg.models:
        if m.lower() not in SMALL_CONFIGS:
            raise UsageError(f"unknown runtime model {m!r}; allowed with --backend runtime: "
                             f"{', '.join(SMALL_CONFIGS)}", "model")


async def _client(session: Any, url: str, model: str, stop: asyncio.Event,
                  done: list[tuple[float, float, float]]) -> None:
    """Streams completions back to back until `stop`; records (end, ttft, tpot) of each one."""
    body = {"model": model, "prompt": RUNTIME_PROMPT, "max_tokens": RUNTIME_OUTPUT_TOKENS, "ignore_eos": True,
            "stream": True}
    while not stop.is_set():
        sent = time.monotonic()
        first = None
        chunks = 0
        async with session.post(url + "/v1/completions", json=body) as resp:
            if resp.status != 200:
                raise RuntimeError(f"runtime profile: the server answered {resp.status}: {await resp.text()}")
            async for line in resp.content:
                if line.startswith(b"data: ") and not line.startswith(b"data: [DONE]"):
                    chunks += 1
                    if first is None:
                        first = time.monotonic()
        end = time.monotonic()
        if first is not None:
            done.append((end, first - sent, (end - first) / max(1, RUNTIME_OUTPUT_TOKENS - 1)))


async def _runtime_group(cfg: ProfileConfig, gpu: str, model: str, points: Sequence[Point],
                         progress: Callable[[], None] | None) -> list[dict[str, Any]]:
    """One server (one colocated worker, the modelled power agent of `gpu`) for all points of a
    (GPU, model): the cap and the batch limit are set through the runtime's control seam
    (RuntimeBackend.apply), the load comes over HTTP from streaming clients."""
    import aiohttp
    from aiohttp import web

    from wattserve.runtime.api import Api
    from wattserve.runtime.backend import RuntimeBackend
    from wattserve.runtime.engine.tokenizer import load_tokenizer
    from wattserve.runtime.power.base import samples
    from wattserve.runtime.router import Router
    from wattserve.runtime.server import start_workers, worker_power
    from wattserve.schema.serve import ServeConfig
    from wattserve.seam import BudgetSignal, SetBatchLimit, SetPowerCap

    a = ServeConfig(model=model, colocated=1, port=0, gpu=gpu, power_backend="modelled",
                    max_num_seqs=max(p.batch for p in points), seed=cfg.seed)
    router = Router(await start_workers(a), a.model, a.router)
    runner = None
    agent = None
    rows = []
    try:
        await router.start()
        agent = worker_power(router)
        backend = RuntimeBackend(router, agent, BudgetSignal.constant(1e9), None, None)
        api = Api(router, load_tokenizer(None), a.model, a.max_prompt_tokens, a.max_tokens, None,
                  lambda: samples(agent))
        runner = web.AppRunner(api.app(), handler_cancellation=True, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
        worker = router.workers[0]
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
            for p in points:
                backend.apply(SetPowerCap(0, p.cap_w))
                backend.apply(SetBatchLimit(0, p.batch))
                stop = asyncio.Event()
                done: list[tuple[float, float, float]] = []
                clients = [asyncio.create_task(_client(session, url, a.model, stop, done))
                           for _ in range(p.batch + max(1, p.batch // 4))]
                await asyncio.sleep(max(WARMUP * cfg.duration_s, RUNTIME_MIN_WARMUP_S))
                t0, tok0, e0 = time.monotonic(), worker.output_tokens, agent.energy_j(0)
                await asyncio.sleep(cfg.duration_s * (1 - WARMUP))
                t1, tok1, e1 = time.monotonic(), worker.output_tokens, agent.energy_j(0)
                stop.set()
                for c in clients:
                    c.cancel()
                results = await asyncio.gather(*clients, return_exceptions=True)
                failed = [r for r in results if isinstance(r, BaseException)
                          and not isinstance(r, asyncio.CancelledError)]
                if failed:
                    raise failed[0]
                win = [d for d in done if t0 <= d[0] <= t1]
                rows.append(_row("runtime", p, tok1 - tok0, e1 - e0, t1 - t0,
                                 np.array([d[1] for d in win]), np.array([d[2] for d in win])))
                if progress:
                    progress()
    finally:
        if runner is not None:
            await runner.cleanup()
        if agent is not None:
            agent.restore()
        await router.close()
    return rows


def profile_runtime(cfg: ProfileConfig, progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Every point on live engine workers, one server per (GPU, model), points one after another (they
    share the machine's cores, so running them together would measure contention)."""
    check_runtime(cfg)
    rows: list[dict[str, Any]] = []
    pts = grid(cfg)
    count = [0]

    def tick() -> None:
        count[0] += 1
        if progress:
            progress(count[0])

    for g in cfg.gpus:
        for m in cfg.models:
            rows += asyncio.run(_runtime_group(cfg, g, m, [p for p in pts if (p.gpu, p.model) == (g, m)], tick))
    return rows


def profile(cfg: ProfileConfig, progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    return profile_sim(cfg, progress) if cfg.backend == "sim" else profile_runtime(cfg, progress)


def check_out(path: str) -> None:
    """Refuse, before any point runs, an output the run could not write: Parquet without pyarrow, a
    missing or read-only folder."""
    from wattserve.experiments.fit import check_out as check_writable

    if path.lower().endswith(".parquet"):
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise UsageError(f"{path!r}: writing Parquet needs pyarrow, which is not installed; allowed: a "
                             ".csv path, or pip install pyarrow", "out") from None
    check_writable(path, "a file path ending in .csv or .parquet")


def write_table(rows: Sequence[dict[str, Any]], path: str) -> None:
    """CSV (or Parquet) of `rows` in COLUMNS order, written to a hidden sibling and moved in whole, so
    an interrupted run leaves no partial table."""
    from pathlib import Path

    out = Path(path)
    tmp = out.with_name(f".{out.name}.partial")
    try:
        if out.suffix.lower() == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.table({c: [r[c] for r in rows] for c in COLUMNS}), tmp)
        else:
            with tmp.open("w", encoding="utf-8") as f:
                f.write(",".join(COLUMNS) + "\n")
                for r in rows:
                    f.write(",".join(_cell(r[c]) for c in COLUMNS) + "\n")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(round(v, 6))
    return str(v)
