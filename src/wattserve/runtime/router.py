"""The router: picks prefill and decode workers for each request and moves it between them.

A request's life: dispatched to a prefill-capable worker (colocated: it runs to the end there;
prefill: it stops after the first token and its KV is handed to a decode worker picked then). A
worker changing role hands back queued prompts (requeue), and migrates decoding requests with their
KV (migrated); the router places them elsewhere. Routing policies are the simulator's
(`wattserve.routing`: round_robin and least_loaded), applied to each worker's `LoadView`: prompt
tokens and decoding sequences from the router's own placements (exact and current), KV blocks from
the worker's latest stats.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from wattserve.errors import UsageError
from wattserve.routing import ROUTERS, make_policy
from wattserve.runtime import wire
from wattserve.runtime.engine.sequence import SamplingParams
from wattserve.runtime.metrics import ServerMetrics
from wattserve.runtime.transport import transport_for
from wattserve.seam import check_role_change

ROUTING = ROUTERS


@dataclass
class RequestState:
    rid: str
    prompt_ids: list[int]
    params: SamplingParams
    created: float
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    wid: int | None = None
    stage: str = "queued"
    in_transit: tuple[dict[str, Any], bytes] | None = None
    first_token_t: float | None = None
    last_token_t: float | None = None
    n_tokens: int = 0
    finish_reason: str | None = None
    workers: list[int] = field(default_factory=list)


class WorkerClient:
    """The router's handle on one worker, and that worker's `LoadView` for the routing policy."""

    def __init__(self, wid: int, role: str, host: str, port: int, proc: Any = None) -> None:
        self.wid = wid
        self.role = role
        self.host = host
        self.port = port
        self.proc = proc
        self.switching_to: str | None = None
        self.stats: dict[str, Any] = {"wid": wid, "role": role, "running": 0, "waiting": 0, "kv_usage": 0.0,
                                      "kv_blocks_used": 0, "kv_blocks": 0, "busy_s": 0.0}
        self.inflight = 0
        self.prefill_queue: dict[str, int] = {}
        """Prompt tokens of each request placed here that has not produced its first token."""
        self.decoding: set[str] = set()
        """Requests placed here past their first token (decoding, joining or arriving with KV)."""
        self.output_tokens = 0
        """Tokens this worker produced, counted as their events arrive (monotonic)."""
        self.completed = 0
        """Requests whose last token this worker produced (monotonic)."""
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.role_ready = asyncio.Event()
        self.stats_ready = asyncio.Event()
        """Set once the worker has reported its stats: until then `stats` holds placeholders."""

    @property
    def pending_prefill_tokens(self) -> int:
        return sum(self.prefill_queue.values())

    @property
    def decode_load(self) -> int:
        return len(self.decoding)

    @property
    def kv_live_blocks(self) -> int:
        return int(self.stats.get("kv_blocks_used", 0))

    @property
    def kv_blocks(self) -> int:
        return int(self.stats.get("kv_blocks", 0))

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def send(self, header: dict[str, Any], payload: bytes = b"") -> None:
        assert self.writer is not None
        self.writer.write(wire.encode(header, payload))


class Router:
    def __init__(self, workers: list[WorkerClient], model: str, routing: str = "least_loaded") -> None:
        self.policy = make_policy(routing)
        self.workers = workers
        self.model = model
        self.routing = routing
        self.requests: dict[str, RequestState] = {}
        self.metrics = ServerMetrics(model)
        self._ids = itertools.count()
        self._tasks: list[asyncio.Task] = []
        self.recent: deque[tuple[float, str, int, float]] = deque(maxlen=4096)
        """(time, "ttft" | "tpot", worker, seconds): a TTFT when a first token arrives (the worker that
        produced it), a TPOT when a request finishes (the worker that produced its last token)."""

    async def start(self, stats_period_s: float = 0.25) -> None:
        for w in self.workers:
            await w.connect()
            self._tasks.append(asyncio.create_task(self._read(w)))
        self._tasks.append(asyncio.create_task(self._poll(stats_period_s)))
        await asyncio.wait_for(asyncio.gather(*(w.stats_ready.wait() for w in self.workers)), 60)

    async def close(self) -> None:
        for w in self.workers:
            if w.writer is not None and not w.writer.is_closing():
                w.send({"op": "shutdown"})
                w.writer.close()
        for t in self._tasks:
            t.cancel()
        for w in self.workers:
            if w.proc is not None:
                await asyncio.get_running_loop().run_in_executor(None, w.proc.join, 10)
                if w.proc.is_alive():
                    w.proc.kill()

    async def _poll(self, period: float) -> None:
        while True:
            for w in self.workers:
                if w.writer is not None and not w.writer.is_closing():
                    w.send({"op": "stats"})
            await asyncio.sleep(period)

    # ---- placement ----
    def prefillers(self) -> list[WorkerClient]:
        return [w for w in self.workers if w.role in ("prefill", "colocated") and w.switching_to is None]

    def decoders(self, exclude: int | None = None) -> list[WorkerClient]:
        return [w for w in self.workers if w.role == "decode" and w.switching_to is None and w.wid != exclude]

    def _move(self, st: RequestState, w: WorkerClient | None, stage: str = "done") -> None:
        """Place a request on a worker in a stage ('prefill' or 'decode'), or take it off (None)."""
        if st.wid is not None:
            old = self.workers[st.wid]
            old.inflight -= 1
            old.prefill_queue.pop(st.rid, None)
            old.decoding.discard(st.rid)
        st.wid = None if w is None else w.wid
        st.stage = stage
        if w is not None:
            w.inflight += 1
            st.workers.append(w.wid)
            if stage == "prefill":
                w.prefill_queue[st.rid] = len(st.prompt_ids)
            else:
                w.decoding.add(st.rid)

    def oldest_wait_s(self, w: WorkerClient, now: float) -> float:
        """Seconds since the oldest request placed on `w` and still without a first token arrived."""
        created = [self.requests[r].created for r in w.prefill_queue if r in self.requests]
        return now - min(created) if created else 0.0

    # ---- requests ----
    def submit(self, prompt_ids: list[int], params: SamplingParams) -> RequestState:
        rid = f"req-{next(self._ids)}"
        st = RequestState(rid, prompt_ids, params, time.monotonic())
        self.requests[rid] = st
        self._dispatch(st)
        return st

    def _dispatch(self, st: RequestState) -> None:
        cands = self.prefillers()
        if not cands:
            raise RuntimeError("no worker available for prefill")
        w = self.policy.pick_prefill(cands, st)
        self._move(st, w, "prefill")
        w.send({"op": "add", "rid": st.rid, "token_ids": st.prompt_ids, "params": asdict(st.params),
                "prefill_only": w.role == "prefill"})

    def _import(self, st: RequestState, token_ids: list[int], prompt_len: int, params: dict[str, Any],
                handle: dict[str, Any], payload: bytes, exclude: int | None) -> None:
        cands = self.decoders(exclude)
        if not cands:
            raise RuntimeError("no worker available for decode")
        w = self.policy.pick_decode(cands, st)
        self._move(st, w, "decode")
        st.in_transit = None
        w.send({"op": "import", "rid": st.rid, "token_ids": token_ids, "prompt_len": prompt_len, "params": params,
                "handle": handle}, payload)

    def _token(self, st: RequestState, tok: int) -> None:
        now = time.monotonic()
        if st.wid is not None:
            self.workers[st.wid].output_tokens += 1
        if st.first_token_t is None:
            st.first_token_t = now
            self.metrics.ttft.observe(now - st.created)
            if st.wid is not None:
                w = self.workers[st.wid]
                w.prefill_queue.pop(st.rid, None)
                w.decoding.add(st.rid)
                self.recent.append((now, "ttft", st.wid, now - st.created))
        elif st.last_token_t is not None:
            self.metrics.itl.observe(now - st.last_token_t)
        st.last_token_t = now
        st.n_tokens += 1
        st.queue.put_nowait(("token", tok))

    def _finish(self, st: RequestState, reason: str) -> None:
        st.finish_reason = reason
        if st.wid is not None:
            self.workers[st.wid].completed += 1
        self._move(st, None)
        self.requests.pop(st.rid, None)
        self.metrics.e2e.observe(time.monotonic() - st.created)
        self.metrics.success[reason] = self.metrics.success.get(reason, 0) + 1
        self.metrics.prompt_tokens += len(st.prompt_ids)
        self.metrics.generation_tokens += st.n_tokens
        now = time.monotonic()
        if st.first_token_t is not None and st.workers and st.n_tokens > 1 and st.last_token_t is not None:
            tpot = (st.last_token_t - st.first_token_t) / (st.n_tokens - 1)
            self.recent.append((now, "tpot", st.workers[-1], tpot))
        st.queue.put_nowait(("done", reason))

    async def _read(self, w: WorkerClient) -> None:
        assert w.reader is not None
        try:
            while True:
                h, payload = await wire.read_frame(w.reader)
                self._event(w, h, payload)
        except (asyncio.IncompleteReadError, ConnectionError):
            for st in [s for s in self.requests.values() if s.wid == w.wid]:
                self.requests.pop(st.rid, None)
                st.queue.put_nowait(("error", f"worker {w.wid} exited"))

    def _event(self, w: WorkerClient, h: dict[str, Any], payload: bytes) -> None:
        ev = h["ev"]
        if ev == "stats":
            w.stats = h
            w.stats_ready.set()
            return
        if ev == "role_ready":
            w.role = h["role"]
            w.switching_to = None
            w.role_ready.set()
            return
        st = self.requests.get(h.get("rid") or "")
        if st is None:
            if "handle" in h:
                transport_for(h["handle"]).discard(h["handle"])
            return
        if ev == "token":
            self._token(st, h["token"])
            if h["finished"]:
                self._finish(st, h["reason"])
        elif ev == "prefilled":
            self._token(st, h["token"])
            p = st.params
            if p.max_tokens <= 1 or (not p.ignore_eos and h["token"] == self._eos()):
                transport_for(h["handle"]).discard(h["handle"])
                self._finish(st, "length" if p.max_tokens <= 1 else "stop")
                return
            st.stage = "transfer"
            st.in_transit = (h["handle"], payload)
            self._import(st, [*st.prompt_ids, h["token"]], len(st.prompt_ids), asdict(p), h["handle"], payload, None)
        elif ev == "migrated":
            st.in_transit = (h["handle"], payload)
            self._import(st, h["token_ids"], h["prompt_len"], h["params"], h["handle"], payload, w.wid)
        elif ev == "requeue":
            self._dispatch(st)
        elif ev == "error":
            self.requests.pop(st.rid, None)
            self._move(st, None)
            st.queue.put_nowait(("error", h["message"]))

    def _eos(self) -> int:
        from wattserve.runtime.engine.config import EOS_ID

        return EOS_ID

    def abort(self, rid: str) -> None:
        st = self.requests.pop(rid, None)
        if st is None:
            return
        if st.wid is not None:
            self.workers[st.wid].send({"op": "abort", "rid": rid})
        if st.in_transit is not None:
            transport_for(st.in_transit[0]).discard(st.in_transit[0])
        self._move(st, None)
        st.finish_reason = "abort"

    # ---- roles ----
    def set_role(self, wid: int, role: str) -> None:
        if not 0 <= wid < len(self.workers):
            raise UsageError(f"worker: {wid} does not exist; allowed: 0..{len(self.workers) - 1}")
        w = self.workers[wid]
        peers = sum(1 for x in self.workers if x.role == w.role and x.switching_to is None and x is not w)
        if not check_role_change(f"worker {wid}", w.role, w.switching_to, role, peers):
            return
        w.switching_to = role
        w.role_ready.clear()
        w.send({"op": "set_role", "role": role})

    def set_batch_limit(self, wid: int, n: int) -> None:
        self.workers[wid].send({"op": "set_batch_limit", "max_seqs": n})

    def set_limits(self, wid: int, cap_w: float, locked_clock_mhz: int | None) -> None:
        """Tell a worker the cap in force and the clock lock on its GPU, for its step governor."""
        w = self.workers[wid]
        if w.writer is not None and not w.writer.is_closing():
            w.send({"op": "limits", "cap_w": cap_w, "locked_clock_mhz": locked_clock_mhz})
