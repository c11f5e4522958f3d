"""A trace replayed on the real runtime, the runtime half of `wattserve validate` (issue 12).

`replay` starts `python -m wattserve serve` as its own process (the router, its OpenAI API and
engine worker processes on CPU), waits for its banner, and drives it with the load generator's own
pieces (`wattserve.loadgen`): prompts sized in the server's tokens through its /tokenize, each
request sent at its arrival time, streamed, with `ignore_eos` so that it generates exactly its
max_tokens, and timed at the client as `wattserve bench` (and vLLM's `bench serve`) time it. The
server is then stopped with SIGTERM, as a user stops it, and what it might have left (worker
processes, KV segments in /dev/shm) is looked for and cleaned up.

`RuntimeLayout` holds every engine setting a simulator must mirror to model this server. What the
settings do in the runtime (runtime/engine/scheduler.py, engine.py):

- each step runs the running sequences first (one token per decode, the rest of an unfinished
  prompt up to what the token budget has left), then admits waiting prompts in arrival order while
  the budget (`max_batched_tokens`), the sequence limit (`max_num_seqs`) and free KV blocks allow;
  there is no chunk size of its own, a prompt's chunk is whatever the step's budget has left;
- admission keeps one free block per running sequence as headroom; when a running sequence cannot
  grow, the newest running sequence is preempted and later recomputed (vLLM's recompute);
- `1p1d`: the prefill worker computes the prompt and the first token, which streams to the client at
  once; its KV (float32 on CPU) is copied out through `kv_transport` and the decode worker continues
  from it (it admits a hand-off at once when below `max_num_seqs` and the KV fits, else queues it);
- `colocated`: one worker does both in mixed steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from wattserve.schema.runtime_engine import RuntimeEngineConfig
from wattserve.schema.serve import ServeConfig

LAYOUTS = ("1p1d", "colocated")
START_TIMEOUT_S = 180.0
"""Longest the server may take to load its workers and print its banner."""
STOP_TIMEOUT_S = 30.0
"""Longest the server may take to stop after SIGTERM before it is killed."""
IDLE_PROBES = 5
"""Sequential requests on the idle server behind each idle cost (their mean)."""
CPU_KV_BYTES = 256 * 2**20
"""The KV cache a CPU worker gives itself when --num-blocks is not given (LLMEngine._auto_blocks)."""
CPU_KV_DTYPE_BYTES = 4
"""A CPU worker's KV is float32 (EngineArgs' dtype "auto" on CPU)."""
BANNER = re.compile(r"\[(.*)\], listening on (http://\S+)")
WORKER = re.compile(r"(\d+):(\w+) pid (\d+)")
TTFT_SERIES = re.compile(r"^vllm:time_to_first_token_seconds_(sum|count)\{[^}]*\} (\S+)$", re.M)


def _engine_default(name: str) -> Any:
    return RuntimeEngineConfig.model_fields[name].default


def _serve_default(name: str) -> Any:
    return ServeConfig.model_fields[name].default


@dataclass(frozen=True)
class RuntimeLayout:
    """One server to replay on, with the runtime's defaults for everything not given.

    `block_size` is the runtime's and cannot be set (serve has no flag for it). `num_blocks` None
    means the runtime's own rule; `kv_blocks` says what that comes to (on CPU), and the server is
    always started with that number, so the simulator can be given the same."""

    layout: Literal["1p1d", "colocated"] = "colocated"
    model: str = _engine_default("model")
    threads: int = _serve_default("threads")
    """torch threads per worker (--threads-per-worker)."""
    max_num_seqs: int = _engine_default("max_num_seqs")
    max_batched_tokens: int = _engine_default("max_batched_tokens")
    """Token budget of one step; chunked prefill fills what the running sequences leave of it."""
    num_blocks: int | None = _engine_default("num_blocks")
    kv_transport: str = _serve_default("kv_transport")
    """How KV travels from the prefill to the decode worker (1p1d only)."""
    router: str = _serve_default("router")
    governor: str = _serve_default("governor")
    device: str = _engine_default("device")
    step_log: str | None = None
    """A folder for the workers' step logs (serve --step-log), or None."""
    block_size: int = field(default=_engine_default("block_size"), init=False)
    max_prompt_tokens: int = field(default=_serve_default("max_prompt_tokens"), init=False)
    max_tokens: int = field(default=_serve_default("max_tokens"), init=False)

    def __post_init__(self) -> None:
        from wattserve.catalog.models import MODELS

        if self.layout not in LAYOUTS:
            raise ValueError(f"layout {self.layout!r}; allowed: {', '.join(LAYOUTS)}")
        if self.model.lower() not in MODELS:
            raise ValueError(f"model {self.model!r}; allowed: tiny, small or another of the catalog's")
        for name in ("threads", "max_num_seqs", "max_batched_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_blocks is None and self.device != "cpu":
            raise ValueError(f"num_blocks: a {self.device} worker sizes its KV from free memory; give a number")

    @property
    def workers(self) -> dict[str, int]:
        """Workers by role."""
        return {"prefill": 1, "decode": 1} if self.layout == "1p1d" else {"colocated": 1}

    @property
    def kv_blocks(self) -> int:
        """KV blocks per worker: `num_blocks`, else what a CPU worker gives itself (256 MiB of
        float32 K and V over the model's layers, KV heads and head size)."""
        if self.num_blocks is not None:
            return self.num_blocks
        from wattserve.catalog.models import MODELS

        m = MODELS[self.model.lower()]
        per_token = 2 * m.layers * m.kv_heads * m.head_dim * CPU_KV_DTYPE_BYTES
        return max(16, CPU_KV_BYTES // (per_token * self.block_size))

    def settings(self) -> dict[str, Any]:
        """Every setting as plain data, `kv_blocks` resolved and the worker counts included."""
        return {**asdict(self), "num_blocks": self.kv_blocks, "workers": self.workers}

    def serve_args(self, seed: int) -> list[str]:
        """`wattserve serve` flags for this layout (any free port; dummy weights of `seed`)."""
        roles = ["--prefill", "1", "--decode", "1"] if self.layout == "1p1d" else ["--colocated", "1"]
        return ["--model", self.model, "--seed", str(seed), "--device", self.device, "--host", "127.0.0.1",
                "--port", "0", *roles, "--threads-per-worker", str(self.threads),
                "--max-num-seqs", str(self.max_num_seqs), "--max-batched-tokens", str(self.max_batched_tokens),
                "--num-blocks", str(self.kv_blocks), "--kv-transport", self.kv_transport, "--router", self.router,
                "--governor", self.governor, *(["--step-log", self.step_log] if self.step_log else [])]


@dataclass(frozen=True)
class IdleCosts:
    """The serving path's fixed costs, measured on the idle server after a warm-up, each the mean of
    IDLE_PROBES sequential requests whose prompt is one token (the BOS of an empty text).

    `ttft_s`: max_tokens 1, from the client's POST to the first streamed token: HTTP and JSON both
    ways, tokenization, the router's placement, the worker frame each way, one engine step of one
    prompt token (sampling included) and the first SSE chunk. In 1p1d the prefill worker ends such
    a request itself (no KV hand-off). `server_ttft_s`: the same requests' TTFT as the router
    counts it (/metrics, vllm:time_to_first_token_seconds: from the router placing the request to
    the worker's token frame), so `ttft_s - server_ttft_s` is the API's share (HTTP, JSON,
    tokenization, SSE). `first_gap_s`: max_tokens 2, the client's gap from the first to the second
    token: one decode step plus the frame and chunk, and in 1p1d the KV hand-off (copy out, the
    router's hop, copy in)."""

    ttft_s: float
    server_ttft_s: float
    first_gap_s: float


@dataclass
class ReplayResult:
    """Per-request results in the order given (failures: NaN times, 0 tokens, `ok` False and the
    reason in `errors`), and the run's wall time and throughput as `wattserve bench` computes them
    (`duration_s` from the first arrival's time 0 to the last request's end)."""

    layout: RuntimeLayout
    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    """What the server counted (its usage); the lengths asked for, as the test checks."""
    output_tokens: np.ndarray
    ttft_s: np.ndarray
    tpot_s: np.ndarray
    """(e2e - ttft) / (output tokens - 1); NaN where a request produced one token."""
    e2e_s: np.ndarray
    ok: np.ndarray
    errors: list[str]
    duration_s: float
    request_throughput: float
    idle: IdleCosts
    bench: dict[str, Any]
    """The load generator's summary (vLLM's field names; mean, median, p50 and p99 in ms)."""
    server_pid: int
    worker_pids: dict[str, int]
    """Role -> process id of each worker (1p1d: prefill, decode)."""
    leftovers: list[str] = field(default_factory=list)
    """What the server left after it stopped (live worker processes, /dev/shm segments), all
    cleaned up here; empty when it stopped cleanly."""

    @property
    def completed(self) -> int:
        return int(self.ok.sum())

    @property
    def failed(self) -> int:
        return len(self.ok) - self.completed


@dataclass
class _Server:
    proc: subprocess.Popen
    url: str = ""
    worker_pids: dict[str, int] = field(default_factory=dict)
    leftovers: list[str] = field(default_factory=list)


def replay(layout: RuntimeLayout, arrivals_s: Sequence[float] | np.ndarray, prompt_tokens: Sequence[int] | np.ndarray,
           output_tokens: Sequence[int] | np.ndarray, seed: int = 0, timeout_s: float = 600.0) -> ReplayResult:
    """Replay requests (arrival offsets from time 0 in seconds, prompt and output lengths in tokens)
    on a fresh server of `layout`. `seed` seeds the dummy weights and the prompts' words;
    `timeout_s` bounds each request, from its send to its last token (a request past it fails)."""
    arrivals = np.asarray(arrivals_s, dtype=float)
    prompts = np.asarray(prompt_tokens, dtype=int)
    outputs = np.asarray(output_tokens, dtype=int)
    _check_requests(layout, arrivals, prompts, outputs)
    with _serving(layout, seed) as server:
        outs, duration, summary, idle = asyncio.run(_drive(server.url, layout, arrivals, prompts, outputs, seed,
                                                           timeout_s))
    ok = np.array([o.ok for o in outs], dtype=bool)
    nan = float("nan")
    ttft = np.array([o.ttft if o.ok else nan for o in outs])
    e2e = np.array([o.latency if o.ok else nan for o in outs])
    n_out = np.array([o.output_tokens if o.ok else 0 for o in outs], dtype=int)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(n_out > 1, (e2e - ttft) / (n_out - 1), nan)
    return ReplayResult(layout, arrivals, np.array([o.prompt_tokens if o.ok else 0 for o in outs], dtype=int),
                        n_out, ttft, tpot, e2e, ok, [o.error for o in outs], duration,
                        float(summary["request_throughput"]), idle, summary, server.proc.pid,
                        dict(server.worker_pids), server.leftovers)


def _check_requests(layout: RuntimeLayout, arrivals: np.ndarray, prompts: np.ndarray, outputs: np.ndarray) -> None:
    """Refuse what the server would refuse request by request, before it is started."""
    if not len(arrivals) == len(prompts) == len(outputs) or len(arrivals) == 0:
        raise ValueError(f"arrivals, prompts and outputs must be as long as each other and not empty, got "
                         f"{len(arrivals)}, {len(prompts)} and {len(outputs)}")
    if not np.all(np.isfinite(arrivals)) or arrivals.min() < 0:
        raise ValueError("arrival times must be finite offsets >= 0 s from the start of the run")
    if prompts.min() < 2 or prompts.max() > layout.max_prompt_tokens:
        raise ValueError(f"prompt lengths must be from 2 (a word and the BOS) to the server's "
                         f"{layout.max_prompt_tokens} tokens, got {prompts.min()}..{prompts.max()}")
    if outputs.min() < 1 or outputs.max() > layout.max_tokens:
        raise ValueError(f"output lengths must be from 1 to the server's {layout.max_tokens} tokens, "
                         f"got {outputs.min()}..{outputs.max()}")
    capacity = layout.kv_blocks * layout.block_size
    if (prompts + outputs).max() > capacity:
        raise ValueError(f"a request of {(prompts + outputs).max()} tokens exceeds a worker's KV cache "
                         f"({capacity} tokens)")


@contextlib.contextmanager
def _serving(layout: RuntimeLayout, seed: int) -> Iterator[_Server]:
    """`wattserve serve` for `layout`, ready to take requests; whatever happens inside, stopped
    (SIGTERM, then SIGKILL after STOP_TIMEOUT_S) and checked for leftovers (`_Server.leftovers`)."""
    with tempfile.TemporaryDirectory(prefix="wattserve-replay-") as tmp:
        log = Path(tmp) / "serve.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "wattserve", "serve", *layout.serve_args(seed)],
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        server = _Server(proc)
        try:
            _ready(server, log)
            yield server
        finally:
            _stop(proc)
            server.leftovers = _leftovers(server)


def _ready(server: _Server, log: Path) -> None:
    """Wait for the banner the server prints once its workers are up and its API listens; read its
    URL and its workers' process ids from it."""
    proc = server.proc
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        m = BANNER.search(text)
        if m:
            server.url = m.group(2)
            server.worker_pids = {role: int(pid) for _, role, pid in WORKER.findall(m.group(1))}
            return
        if proc.poll() is not None:
            raise RuntimeError(f"wattserve serve exited with status {proc.returncode} before it listened:\n"
                               f"{text[-2000:]}")
        time.sleep(0.1)
    raise RuntimeError(f"wattserve serve did not listen within {START_TIMEOUT_S:.0f} s:\n"
                       f"{log.read_text(errors='replace')[-2000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _alive(pid: int) -> bool:
    """Whether the process runs (a zombie no longer does: it waits only to be reaped, and a worker
    orphaned by its server is reaped by whoever adopts it, which a container may never do)."""
    if Path("/proc/self/stat").exists():
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (FileNotFoundError, ProcessLookupError):
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _leftovers(server: _Server, grace_s: float = 5.0) -> list[str]:
    """Workers still running after their server stopped (given `grace_s` to notice their socket
    closed), killed; and the server's KV segments left in /dev/shm, unlinked. What was found."""
    from wattserve.runtime.transport import server_prefix, sweep

    deadline = time.monotonic() + grace_s
    while any(_alive(p) for p in server.worker_pids.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    found = []
    for role, pid in server.worker_pids.items():
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            found.append(f"{role} worker pid {pid}")
    found += [f"/dev/shm/{name}" for name in sweep(server_prefix(server.proc.pid))]
    return found


async def _drive(url: str, layout: RuntimeLayout, arrivals: np.ndarray, prompts: np.ndarray, outputs: np.ndarray,
                 seed: int, timeout_s: float) -> tuple[list[Any], float, dict[str, Any], IdleCosts]:
    """Size the prompts, warm the server up, measure its idle costs, then send every request at its
    arrival time over a fresh client session with no connection limit, as `wattserve bench` does."""
    import aiohttp

    from wattserve.loadgen.bench import Slot, send, summarize
    from wattserve.loadgen.prompts import size_prompts
    from wattserve.schema.bench import BenchConfig

    a = BenchConfig(base_url=url, model=layout.model, num_prompts=len(arrivals), ignore_eos=True, seed=seed,
                    request_timeout_s=timeout_s, percentile_metrics="ttft,tpot,itl,e2el", metric_percentiles="50,99")
    sizing = await size_prompts(a, [int(n) for n in prompts], "the replayed trace")
    longest = int(np.argmax(prompts))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
        await _request(session, a, sizing.prompts[longest], 4)
        idle = await _idle_costs(session, a)
    slots = [Slot(float(t), p, int(o)) for t, p, o in zip(arrivals, sizing.prompts, outputs)]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None), connector=connector) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(send(session, a, s, t0, None) for s in slots))
        duration = time.perf_counter() - t0
    outs = [s.final() for s in slots]
    return outs, duration, summarize(a, outs, duration), idle


async def _request(session: Any, a: Any, prompt: str, max_tokens: int) -> Any:
    """One streamed request through the load generator; a failure here is the server's fault."""
    from wattserve.loadgen.bench import attempt

    out = await attempt(session, a, prompt, max_tokens)
    if not out.ok:
        raise RuntimeError(f"a probe request failed on the idle server: {out.error}")
    return out


async def _idle_costs(session: Any, a: Any) -> IdleCosts:
    ttfts = []
    sum0, count0 = await _server_ttft(session, a.base_url)
    for _ in range(IDLE_PROBES):
        ttfts.append((await _request(session, a, "", 1)).ttft)
    sum1, count1 = await _server_ttft(session, a.base_url)
    gaps = [(await _request(session, a, "", 2)).itls[0] for _ in range(IDLE_PROBES)]
    server = (sum1 - sum0) / (count1 - count0) if count1 > count0 else math.nan
    return IdleCosts(float(np.mean(ttfts)), server, float(np.mean(gaps)))


async def _server_ttft(session: Any, url: str) -> tuple[float, float]:
    """(sum, count) of the router's TTFT histogram on /metrics."""
    async with session.get(url.rstrip("/") + "/metrics") as r:
        text = await r.text()
    series = {name: float(value) for name, value in TTFT_SERIES.findall(text)}
    return series.get("sum", math.nan), series.get("count", 0.0)
