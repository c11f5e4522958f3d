"""`wattserve bench`: drive an OpenAI-compatible server and report `vllm bench serve`'s metrics.

Arrivals are Poisson, or gamma with --burstiness (vLLM's definition: shape = burstiness), or replayed
from an Azure CSV / Mooncake JSONL trace. Each request streams (SSE): TTFT is the time to the first
chunk with content, ITL the gaps between chunks, TPOT (e2e - TTFT) / (output tokens - 1), and
goodput counts requests inside every --goodput SLO. Token counts come from the server's `usage`
when it reports them (stream_options.include_usage), else from the chunks.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from wattserve.errors import UsageError

WORDS = ("power", "budget", "token", "decode", "prefill", "cluster", "watt", "clock", "cache", "serve")


@dataclass
class BenchArgs:
    base_url: str = "http://127.0.0.1:8000"
    endpoint: str = "/v1/completions"
    model: str | None = None
    num_prompts: int = 100
    request_rate: float = float("inf")
    burstiness: float = 1.0
    max_concurrency: int | None = None
    random_input_len: int = 128
    random_output_len: int = 64
    trace: str | None = None
    goodput: dict[str, float] = field(default_factory=dict)
    percentile_metrics: tuple[str, ...] = ("ttft", "tpot", "itl")
    metric_percentiles: tuple[float, ...] = (99.0,)
    ignore_eos: bool = False
    api_key: str | None = None
    seed: int = 0
    timeout_s: float = 600.0


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


def parse_goodput(items: list[str] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items or []:
        name, _, value = item.partition(":")
        if name not in ("ttft", "tpot", "e2el") or not value:
            raise UsageError(f"goodput: {item!r} must look like ttft:MS, tpot:MS or e2el:MS")
        try:
            out[name] = float(value)
        except ValueError:
            raise UsageError(f"goodput: {item!r}: {value!r} is not a number of milliseconds") from None
    return out


def make_prompt(n_tokens: int, rng: random.Random) -> str:
    """About n_tokens tokens of text for BPE tokenizers (one word and a space each)."""
    return " ".join(rng.choice(WORDS) for _ in range(max(1, n_tokens)))


def plan(a: BenchArgs) -> list[tuple[float, str, int]]:
    """(send time offset, prompt, max_tokens) for each request."""
    rng = random.Random(a.seed)
    nprng = np.random.default_rng(a.seed)
    if a.trace:
        from wattserve.workload import load_trace

        w = load_trace(a.trace)
        if a.request_rate != float("inf"):
            w = w.rescale(a.request_rate)
        w = w.head(a.num_prompts)
        return [(float(t), make_prompt(int(p), rng), int(o))
                for t, p, o in zip(w.arrival_s, w.prompt_tokens, w.output_tokens)]
    if a.request_rate == float("inf"):
        times = np.zeros(a.num_prompts)
    else:
        gaps = nprng.gamma(a.burstiness, 1.0 / (a.request_rate * a.burstiness), size=a.num_prompts)
        times = np.cumsum(gaps) - gaps[0]
    return [(float(t), make_prompt(a.random_input_len, rng), a.random_output_len) for t in times]


async def one(session: Any, a: BenchArgs, prompt: str, max_tokens: int) -> Outcome:
    import aiohttp

    chat = "chat" in a.endpoint
    body: dict[str, Any] = {"max_tokens": max_tokens, "stream": True, "temperature": 0.0,
                            "stream_options": {"include_usage": True}}
    if a.model:
        body["model"] = a.model
    if a.ignore_eos:
        body["ignore_eos"] = True
    if chat:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    headers = {"Authorization": f"Bearer {a.api_key}"} if a.api_key else {}
    out = Outcome()
    start = time.perf_counter()
    last = start
    try:
        async with session.post(a.base_url.rstrip("/") + a.endpoint, json=body, headers=headers) as r:
            if r.status != 200:
                out.error = f"HTTP {r.status}: {(await r.text())[:200]}"
                return out
            chunks = 0
            async for raw in r.content:
                line = raw.decode().strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                msg = json.loads(data)
                if "error" in msg:
                    out.error = str(msg["error"].get("message"))
                    return out
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
            out.latency = time.perf_counter() - start
            out.output_tokens = out.output_tokens or chunks
            out.ok = chunks > 0
            if not out.ok:
                out.error = "no tokens in the response"
    except (aiohttp.ClientError, asyncio.TimeoutError, json.JSONDecodeError) as e:
        out.error = f"{type(e).__name__}: {e}"
    return out


async def run(a: BenchArgs) -> dict[str, Any]:
    import aiohttp

    reqs = plan(a)
    sem = asyncio.Semaphore(a.max_concurrency) if a.max_concurrency else None
    timeout = aiohttp.ClientTimeout(total=a.timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        t0 = time.perf_counter()

        async def go(offset: float, prompt: str, n: int) -> Outcome:
            delay = offset - (time.perf_counter() - t0)
            if delay > 0:
                await asyncio.sleep(delay)
            if sem is None:
                return await one(session, a, prompt, n)
            async with sem:
                return await one(session, a, prompt, n)

        outs = await asyncio.gather(*(go(t, p, n) for t, p, n in reqs))
        duration = time.perf_counter() - t0
    return summarize(a, outs, duration)


def summarize(a: BenchArgs, outs: list[Outcome], duration: float) -> dict[str, Any]:
    ok = [o for o in outs if o.ok]
    ttft = np.array([o.ttft for o in ok])
    tpot = np.array([(o.latency - o.ttft) / (o.output_tokens - 1) for o in ok if o.output_tokens > 1])
    itl = np.array([x for o in ok for x in o.itls])
    e2el = np.array([o.latency for o in ok])
    good = 0
    for o in ok:
        t = (o.latency - o.ttft) / (o.output_tokens - 1) if o.output_tokens > 1 else 0.0
        if all(v * 1e3 <= a.goodput[k] for k, v in (("ttft", o.ttft), ("tpot", t), ("e2el", o.latency))
               if k in a.goodput):
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
        "request_goodput": good / duration if duration and a.goodput else None,
        "output_throughput": total_out / duration if duration else 0.0,
        "total_token_throughput": (total_in + total_out) / duration if duration else 0.0,
        "errors": [o.error for o in outs if not o.ok],
    }
    for name, arr in (("ttft", ttft), ("tpot", tpot), ("itl", itl), ("e2el", e2el)):
        ms = arr * 1e3
        res[f"mean_{name}_ms"] = float(ms.mean()) if len(ms) else 0.0
        res[f"median_{name}_ms"] = float(np.median(ms)) if len(ms) else 0.0
        res[f"std_{name}_ms"] = float(ms.std()) if len(ms) else 0.0
        for p in a.metric_percentiles:
            res[f"p{p:g}_{name}_ms"] = float(np.percentile(ms, p)) if len(ms) else 0.0
    return res


def report(res: dict[str, Any], a: BenchArgs) -> str:
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
    for m in a.percentile_metrics:
        lines.append("{s:{c}^{n}}".format(s=names[m], n=50, c="-"))
        row(f"Mean {m.upper()} (ms):", res[f"mean_{m}_ms"])
        row(f"Median {m.upper()} (ms):", res[f"median_{m}_ms"])
        for p in a.metric_percentiles:
            row(f"P{p:g} {m.upper()} (ms):", res[f"p{p:g}_{m}_ms"])
    lines.append("=" * 50)
    return "\n".join(lines)


def save(res: dict[str, Any], a: BenchArgs, result_dir: str | None, filename: str | None) -> Path:
    d = Path(result_dir or ".")
    d.mkdir(parents=True, exist_ok=True)
    rate = res["request_rate"]
    name = filename or f"openai-{rate}qps-{a.model or 'model'}-{res['date']}.json"
    p = d / name
    tmp = p.with_suffix(p.suffix + ".partial")
    tmp.write_text(json.dumps(res, indent=2) + "\n")
    tmp.replace(p)
    return p
