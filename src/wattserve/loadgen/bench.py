"""`wattserve bench`: drive an OpenAI-compatible server and report `vllm bench serve`'s metrics.

Arrivals are Poisson, or gamma with --burstiness (vLLM's definition: shape = burstiness), or replayed
from an Azure CSV / Mooncake JSONL trace. Each request streams (SSE): TTFT is the time to the first
chunk with content, ITL the gaps between chunks, TPOT (e2e - TTFT) / (output tokens - 1), and
goodput counts requests inside every --goodput SLO. Token counts come from the server's `usage`
when it reports them (stream_options.include_usage), else from the chunks. Prompt lengths
(--random-input-len, a trace's) are the server's tokens as its usage counts them, sized with its
/tokenize before the run (wattserve.loadgen.prompts), or words with --tokenizer words.

Every planned request ends as completed or failed, so vLLM's `completed + failed` is the number
planned whatever the server does: an HTTP error, an SSE error event, a stream cut short or without
[DONE], a request past --request-timeout, and (after SIGINT or SIGTERM) a request cancelled in flight
or never sent all fail with a reason, and the result counts them by reason in `failures`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wattserve.errors import UsageError
from wattserve.loadgen.failures import describe, http_error, server_message
from wattserve.loadgen.prompts import word_prompt
from wattserve.schema.bench import BenchConfig

if TYPE_CHECKING:
    from wattserve.workload import Workload

MAX_SPAN_S = 10_000_000.0
"""Longest span of arrivals a run may plan (about four months: a week-long trace fits); beyond it a
tiny --request-rate would have the run sleep for ever, or overflow."""
NOT_SENT = "not sent: interrupted"
CANCELLED = "cancelled in flight: interrupted"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_STATUS = {"SIGINT": 130, "SIGTERM": 143}
"""A stopped run exits as a shell reports a process killed by the signal (128 + its number)."""


@dataclass
class Outcome:
    ok: bool = False
    ttft: float = 0.0
    itls: list[float] = field(default_factory=list)
    latency: float = 0.0
    prompt_tokens: int = 0
    output_tokens: int = 0
    text: str = ""
    error: str = ""


def schedule(a: BenchConfig, trace: Workload | None = None) -> list[tuple[float, int, int]]:
    """(send time offset, prompt length, max_tokens) for each request; `trace` is a.trace already
    loaded (see `load_trace_of`), so that a bad trace is refused before anything else happens. The
    prompts are made later (`with_prompts`), once the server can say how it counts tokens."""
    nprng = np.random.default_rng(a.seed)
    if a.trace:
        from wattserve.workload import load_trace

        w = trace if trace is not None else load_trace(a.trace)
        if a.request_rate != float("inf"):
            w = w.rescale(a.request_rate)
        w = w.head(a.num_prompts)
        return [(float(t), int(p), int(o)) for t, p, o in zip(w.arrival_s, w.prompt_tokens, w.output_tokens)]
    if a.request_rate == float("inf"):
        times = np.zeros(a.num_prompts)
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            gaps = nprng.gamma(a.burstiness, 1.0 / (a.request_rate * a.burstiness), size=a.num_prompts)
            times = np.cumsum(gaps) - gaps[0]
    return [(float(t), a.random_input_len, a.random_output_len) for t in times]


def with_prompts(specs: list[tuple[float, int, int]], prompts: list[str]) -> list[tuple[float, str, int]]:
    """(send time offset, prompt, max_tokens): each scheduled request with its prompt."""
    return [(t, p, o) for (t, _, o), p in zip(specs, prompts, strict=True)]


def plan(a: BenchConfig, trace: Workload | None = None) -> list[tuple[float, str, int]]:
    """The schedule with prompts counted in words (no server needed)."""
    specs = schedule(a, trace)
    rng = random.Random(a.seed)
    return with_prompts(specs, [word_prompt(n, rng) for _, n, _ in specs])


def asked_length(a: BenchConfig) -> str:
    """The lengths asked for, as the user gave them (for lines about prompts)."""
    return "the trace asks" if a.trace else f"--random-input-len {a.random_input_len}"


def request_body(a: BenchConfig, prompt: str, max_tokens: int) -> dict[str, Any]:
    """vLLM's OpenAI request: streamed, greedy, with usage in the last chunk."""
    body: dict[str, Any] = {"max_tokens": max_tokens, "stream": True, "temperature": 0.0,
                            "stream_options": {"include_usage": True}}
    if a.model:
        body["model"] = a.model
    if a.ignore_eos:
        body["ignore_eos"] = True
    if "chat" in a.endpoint:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    return body


async def one(session: Any, a: BenchConfig, prompt: str, max_tokens: int) -> Outcome:
    """One streamed request, timed as vLLM's async_request_openai_completions times it. Stricter than
    vLLM in two ways: an SSE error event fails the request with the server's message (vLLM would
    count the tokens before it as a success), and so does a stream that ends without [DONE]."""
    headers = {"Authorization": f"Bearer {a.api_key}"} if a.api_key else {}
    out = Outcome()
    start = time.perf_counter()
    url = a.base_url.rstrip("/") + a.endpoint
    async with session.post(url, json=request_body(a, prompt, max_tokens), headers=headers) as r:
        if r.status != 200:
            out.error = http_error(r.status, await r.text(errors="replace"))
            return out
        await read_stream(r.content, "chat" in a.endpoint, out, start)
    return out


async def read_stream(content: Any, chat: bool, out: Outcome, start: float) -> None:
    """Fill `out` from the SSE lines of a response: TTFT, ITLs, text, and the usage counts."""
    chunks = 0
    last = start
    async for raw in content:
        line = raw.decode(errors="replace").strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        msg = json.loads(data)
        if not isinstance(msg, dict):
            raise ValueError(f"an SSE event is not a JSON object: {data[:80]!r}")
        if "error" in msg:
            out.error = server_message(msg["error"])
            return
        usage = msg.get("usage")
        if usage:
            out.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            out.output_tokens = int(usage.get("completion_tokens") or 0)
        for c in msg.get("choices") or []:
            piece = (c.get("delta") or {}).get("content") if chat else c.get("text")
            if piece is None:
                continue
            now = time.perf_counter()
            if chunks == 0:
                out.ttft = now - start
            else:
                out.itls.append(now - last)
            last = now
            chunks += 1
            out.text += piece
    else:
        out.error = "stream ended before [DONE]"
        return
    out.latency = time.perf_counter() - start
    out.output_tokens = out.output_tokens or chunks
    out.ok = chunks > 0
    if not out.ok:
        out.error = "no tokens in the response"


async def attempt(session: Any, a: BenchConfig, prompt: str, max_tokens: int) -> Outcome:
    """`one` under --request-timeout; any fault is a failed Outcome, so that every request ends as
    completed or failed (only cancellation passes through)."""
    try:
        return await asyncio.wait_for(one(session, a, prompt, max_tokens), a.request_timeout_s)
    except Exception as e:
        if type(e) is TimeoutError:
            return Outcome(error=f"timed out after {a.request_timeout_s:g} s")
        return Outcome(error=describe(e))


def check_plan(a: BenchConfig, reqs: list[tuple[float, int, int]] | list[tuple[float, str, int]]) -> str:
    """Refuse a plan whose arrivals never end (a rate so low that the gaps overflow), and say up
    front how many requests the run sends over how long, so a long run is no surprise."""
    if not reqs:
        raise UsageError(f"--trace: {a.trace!r} has no requests to send")
    span = reqs[-1][0]
    if not span <= MAX_SPAN_S:
        over = f"{span:,.3g} s" if np.isfinite(span) else "more seconds than a float holds"
        where = "--trace" if a.trace and a.request_rate == float("inf") else "--request-rate"
        raise UsageError(f"{where}: the arrivals span {over}; allowed: arrivals within {MAX_SPAN_S:,.0f} s "
                         "(raise --request-rate, or inf: all at once)")
    rate = "all at once" if a.request_rate == float("inf") and not a.trace else \
        f"arrivals over {span:,.1f} s"
    return f"wattserve bench: {len(reqs)} requests to {a.base_url.rstrip('/')}{a.endpoint}, {rate}"


@dataclass
class Slot:
    """One planned request: when and what to send, whether it was sent, and how it ended."""
    offset: float
    prompt: str
    max_tokens: int
    sent: bool = False
    outcome: Outcome | None = None

    def final(self) -> Outcome:
        """Its outcome; a request cut short by a stop failed as not sent or cancelled in flight."""
        if self.outcome is not None:
            return self.outcome
        return Outcome(error=CANCELLED if self.sent else NOT_SENT)


async def send(session: Any, a: BenchConfig, slot: Slot, t0: float, sem: asyncio.Semaphore | None) -> None:
    delay = slot.offset - (time.perf_counter() - t0)
    if delay > 0:
        await asyncio.sleep(delay)
    async with sem or contextlib.nullcontext():
        slot.sent = True
        slot.outcome = await attempt(session, a, slot.prompt, slot.max_tokens)


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event, caught: list[str]) -> Iterator[None]:
    """SIGINT and SIGTERM (what `timeout` and schedulers send) set `stop` instead of killing the run,
    so the requests that finished are still reported; the first signal's name goes in `caught`."""
    loop = asyncio.get_running_loop()

    def handler(sig: signal.Signals) -> None:
        if not caught:
            caught.append(sig.name)
        stop.set()

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, handler, sig)
    try:
        yield
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)


async def finish(tasks: list[asyncio.Future[None]], stop: asyncio.Event) -> None:
    """Wait for every request, or until `stop`; then cancel the rest and wait for them to unwind."""
    everything = asyncio.gather(*tasks, return_exceptions=True)
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({everything, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if not everything.done():
        for t in tasks:
            t.cancel()
    await everything


async def run(a: BenchConfig, reqs: list[tuple[float, str, int]],
              announce: Callable[[], None] | None = None) -> dict[str, Any]:
    """Send `reqs` and summarize them; `announce` runs once a signal would stop the run cleanly.

    No connection limit (vLLM's TCPConnector(limit=0) unless --max-concurrency): with aiohttp's
    default of 100 a request would wait for a connection inside its own TTFT and timeout."""
    import aiohttp

    slots = [Slot(*r) for r in reqs]
    sem = asyncio.Semaphore(a.max_concurrency) if a.max_concurrency else None
    stop = asyncio.Event()
    caught: list[str] = []
    connector = aiohttp.TCPConnector(limit=a.max_concurrency or 0)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None), connector=connector) as session:
        with stop_on_signals(stop, caught):
            if announce is not None:
                announce()
            t0 = time.perf_counter()
            await finish([asyncio.ensure_future(send(session, a, s, t0, sem)) for s in slots], stop)
            duration = time.perf_counter() - t0
    res = summarize(a, [s.final() for s in slots], duration)
    res["interrupted"] = caught[0] if caught else None
    return res


def summarize(a: BenchConfig, outs: list[Outcome], duration: float) -> dict[str, Any]:
    """vLLM's result fields; `input_lens` and `output_lens` (its per-request lists, in the order
    planned) hold the server's usage counts of the completed requests."""
    ok = [o for o in outs if o.ok]
    ttft = np.array([o.ttft for o in ok])
    tpot = np.array([(o.latency - o.ttft) / (o.output_tokens - 1) for o in ok if o.output_tokens > 1])
    itl = np.array([x for o in ok for x in o.itls])
    e2el = np.array([o.latency for o in ok])
    slos = a.slos
    good = 0
    for o in ok:
        t = (o.latency - o.ttft) / (o.output_tokens - 1) if o.output_tokens > 1 else 0.0
        if all(v * 1e3 <= slos[k] for k, v in (("ttft", o.ttft), ("tpot", t), ("e2el", o.latency))
               if k in slos):
            good += 1
    total_in = sum(o.prompt_tokens for o in ok)
    total_out = sum(o.output_tokens for o in ok)
    res: dict[str, Any] = {
        "date": datetime.now().strftime("%Y%m%d-%H%M%S"), "backend": "openai", "base_url": a.base_url,
        "endpoint": a.endpoint, "model_id": a.model, "num_prompts": len(outs),
        "request_rate": "inf" if a.request_rate == float("inf") else a.request_rate, "burstiness": a.burstiness,
        "max_concurrency": a.max_concurrency, "duration": duration, "completed": len(ok),
        "failed": len(outs) - len(ok), "total_input_tokens": total_in, "total_output_tokens": total_out,
        "request_throughput": len(ok) / duration if duration else 0.0,
        "request_goodput": good / duration if duration and slos else None,
        "output_throughput": total_out / duration if duration else 0.0,
        "total_token_throughput": (total_in + total_out) / duration if duration else 0.0,
        "input_lens": [o.prompt_tokens for o in ok], "output_lens": [o.output_tokens for o in ok],
        "errors": [o.error for o in outs if not o.ok],
        "failures": tally(o.error for o in outs if not o.ok),
    }
    for name, arr in (("ttft", ttft), ("tpot", tpot), ("itl", itl), ("e2el", e2el)):
        ms = arr * 1e3
        res[f"mean_{name}_ms"] = float(ms.mean()) if len(ms) else 0.0
        res[f"median_{name}_ms"] = float(np.median(ms)) if len(ms) else 0.0
        res[f"std_{name}_ms"] = float(ms.std()) if len(ms) else 0.0
        for p in a.percentiles:
            res[f"p{p:g}_{name}_ms"] = float(np.percentile(ms, p)) if len(ms) else 0.0
    return res


def tally(errors: Iterable[str]) -> dict[str, int]:
    """Failures by reason, most frequent first, ties by name: the same faults read the same on every
    run, whichever request met them first."""
    return dict(sorted(Counter(errors).items(), key=lambda kv: (-kv[1], kv[0])))


def failure_line(res: dict[str, Any]) -> str:
    """"failed: 12 (503 worker 1 exited: 9; timed out after 5 s: 3)"."""
    reasons = "; ".join(f"{reason}: {n}" for reason, n in res["failures"].items())
    return f"failed: {res['failed']} ({reasons})"


def report(res: dict[str, Any], a: BenchConfig) -> str:
    lines = ["{s:{c}^{n}}".format(s=" Serving Benchmark Result ", n=50, c="=")]

    def row(k: str, v: Any) -> None:
        lines.append(f"{k:<40}{v:<10.2f}" if isinstance(v, float) else f"{k:<40}{v!s:<10}")

    row("Successful requests:", res["completed"])
    row("Failed requests:", res["failed"])
    row("Benchmark duration (s):", res["duration"])
    row("Total input tokens:", res["total_input_tokens"])
    row("Total generated tokens:", res["total_output_tokens"])
    row("Request throughput (req/s):", res["request_throughput"])
    if res["request_goodput"] is not None:
        row("Request goodput (req/s):", res["request_goodput"])
    row("Output token throughput (tok/s):", res["output_throughput"])
    names = {"ttft": "Time to First Token", "tpot": "Time per Output Token (excl. 1st token)",
             "itl": "Inter-token Latency", "e2el": "End-to-end Latency"}
    for m in a.metrics:
        lines.append("{s:{c}^{n}}".format(s=names[m], n=50, c="-"))
        row(f"Mean {m.upper()} (ms):", res[f"mean_{m}_ms"])
        row(f"Median {m.upper()} (ms):", res[f"median_{m}_ms"])
        for p in a.percentiles:
            row(f"P{p:g} {m.upper()} (ms):", res[f"p{p:g}_{m}_ms"])
    lines.append("=" * 50)
    if res["failed"]:
        lines.append(failure_line(res))
    return "\n".join(lines)


def result_folder(a: BenchConfig) -> Path:
    """The folder --save-result will write to, refused now if the result could not be written
    there, so that a long run is not thrown away at its end. A missing folder is fine when its
    nearest existing parent is a writable folder (it is created when the result is saved)."""
    d = Path(a.result_dir or ".")
    if d.exists() and not d.is_dir():
        raise UsageError(f"--result-dir: {str(d)!r} is a file; allowed: a folder (created if missing)")
    existing = d
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"--result-dir: {str(existing)!r} (in {str(d)!r}) is a file; allowed: a folder "
                         "(created if missing)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--result-dir: cannot write to {str(existing)!r}; allowed: a writable folder")
    if a.result_filename is not None:
        if Path(a.result_filename).name != a.result_filename or a.result_filename in (".", ".."):
            raise UsageError(f"--result-filename: {a.result_filename!r}; allowed: a file name without folders "
                             "(the folder is --result-dir)")
        if (d / a.result_filename).is_dir():
            raise UsageError(f"--result-filename: {str(d / a.result_filename)!r} is a folder; allowed: a file name")
    return d


def load_trace_of(a: BenchConfig) -> Workload | None:
    """The --trace workload, read before anything is sent (a bad trace is a one-line error)."""
    if not a.trace:
        return None
    from wattserve.workload import load_trace

    try:
        return load_trace(a.trace)
    except UsageError as e:
        raise e.named({"workload.trace": "--trace"}) from None


async def check_server(a: BenchConfig, timeout_s: float = 10.0) -> None:
    """Refuse a server that does not accept connections before the run, rather than after sending
    every request into a closed port (at a low --request-rate that takes the whole run)."""
    from urllib.parse import urlsplit

    parts = urlsplit(a.base_url)
    try:
        host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as e:
        raise UsageError(f"--base-url: {a.base_url!r}: {e}") from None
    if not host:
        raise UsageError(f"--base-url: {a.base_url!r} names no host; allowed: http://HOST[:PORT]")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except (OSError, asyncio.TimeoutError) as e:
        why = "timed out" if isinstance(e, asyncio.TimeoutError) else (e.strerror or str(e))
        raise UsageError(f"--base-url: cannot connect to {host}:{port} ({why}); is the server running?") from None
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


def save(res: dict[str, Any], a: BenchConfig) -> Path:
    d = Path(a.result_dir or ".")
    d.mkdir(parents=True, exist_ok=True)
    rate = res["request_rate"]
    name = a.result_filename or f"openai-{rate}qps-{a.model or 'model'}-{res['date']}.json"
    p = d / name
    tmp = p.with_suffix(p.suffix + ".partial")
    tmp.write_text(json.dumps(res, indent=2) + "\n")
    tmp.replace(p)
    return p
