"""Router throughput, tokens/s through one router with 4 workers: one frame per engine step (what
workers send) against one frame per token (what they sent before), side by side in one run.

The workers here are stand-ins that speak the real wire protocol (wattserve.runtime.wire) in their
own processes and produce tokens as fast as the router takes them (a step = one token for each of
their running requests), so the figure is the router's and the framing's, not a model's. The
router is the real one (wattserve.runtime.router.Router) with its real event handling, queues and
metrics; every token is consumed from its request's queue as the API would.

Usage: python bench/router_frames.py [--requests 256] [--tokens 128] [--repeats 3]
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import statistics
import time
from typing import Any

from wattserve.runtime import wire
from wattserve.runtime.engine.sequence import SamplingParams
from wattserve.runtime.router import Router, WorkerClient

WORKERS = 4


async def _stand_in(wid: int, per_step: bool, ready: Any) -> None:
    """A worker that answers `add` with max_tokens tokens, one step at a time, and `stats` at once."""
    active: dict[str, int] = {}
    wake = asyncio.Event()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def steps() -> None:
            while True:
                if not active:
                    wake.clear()
                    await wake.wait()
                items = []
                for rid in list(active):
                    active[rid] -= 1
                    done = active[rid] == 0
                    items.append([rid, 7, done, "length" if done else None, None])
                    if done:
                        del active[rid]
                if per_step:
                    writer.write(wire.encode({"ev": "tokens", "items": items}))
                else:
                    for it in items:
                        writer.write(wire.encode({"ev": "tokens", "items": [it]}))
                await writer.drain()

        task = asyncio.create_task(steps())
        try:
            while True:
                h, _ = await wire.read_frame(reader)
                if h["op"] == "add":
                    active[h["rid"]] = h["params"]["max_tokens"]
                    wake.set()
                elif h["op"] == "stats":
                    writer.write(wire.encode({"ev": "stats", "wid": wid, "role": "colocated", "running": len(active),
                                              "waiting": 0, "kv_blocks_used": 0, "kv_blocks": 1}))
                elif h["op"] == "shutdown":
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            task.cancel()
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    ready.send(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


def _stand_in_main(wid: int, per_step: bool, ready: Any) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_stand_in(wid, per_step, ready))


async def _through_router(ports: list[int], requests: int, tokens: int) -> float:
    router = Router([WorkerClient(i, "colocated", "127.0.0.1", p) for i, p in enumerate(ports)], "bench")
    await router.start()
    params = SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=True)

    async def drain(st: Any) -> int:
        n = 0
        while True:
            kind, _ = await st.queue.get()
            if kind != "token":
                return n
            n += 1

    t = time.perf_counter()
    got = await asyncio.gather(*(drain(router.submit([1, 2, 3], params)) for _ in range(requests)))
    wall = time.perf_counter() - t
    assert sum(got) == requests * tokens
    await router.close()
    return requests * tokens / wall


def measure(per_step: bool, requests: int, tokens: int) -> float:
    ctx = mp.get_context("spawn")
    procs, ports = [], []
    for wid in range(WORKERS):
        parent, child = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_stand_in_main, args=(wid, per_step, child), daemon=True)
        p.start()
        ports.append(parent.recv())
        procs.append(p)
    try:
        return asyncio.run(_through_router(ports, requests, tokens))
    finally:
        for p in procs:
            p.kill()
            p.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    per_token, per_step = [], []
    for _ in range(a.repeats):
        per_token.append(measure(False, a.requests, a.tokens))
        per_step.append(measure(True, a.requests, a.tokens))
    out = {"workers": WORKERS, "requests": a.requests, "tokens_per_request": a.tokens,
           "frame_per_token_tokens_per_s": statistics.median(per_token),
           "frame_per_step_tokens_per_s": statistics.median(per_step),
           "ratio": statistics.median(s / t for s, t in zip(per_step, per_token))}
    print(f"frame per token: {out['frame_per_token_tokens_per_s']:,.0f} tok/s; frame per step: "
          f"{out['frame_per_step_tokens_per_s']:,.0f} tok/s ({out['ratio']:.1f}x), {WORKERS} workers, "
          f"{a.requests} requests x {a.tokens} tokens, median of {a.repeats} paired runs")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
