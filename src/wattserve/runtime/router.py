"""The router: picks prefill and decode workers for each request, moves it between them, and keeps
serving when a worker dies.

A request's life: dispatched to a prefill-capable worker (colocated: it runs to the end there;
prefill: it stops after the first token and its KV is handed to a decode worker picked then). A
worker changing role hands back queued prompts (requeue), and migrates decoding requests with their
KV (migrated); the router places them elsewhere. Routing policies are the simulator's
(`wattserve.routing`: round_robin and least_loaded), applied to each worker's `LoadView`: prompt
tokens and decoding sequences from the router's own placements (exact and current), KV blocks from
the worker's latest stats.

Faults (vLLM's promise: an engine failure never hangs other requests). A worker is down when its
socket closes or its process exits (both seen at once on a kill -9). Its requests that had produced
no token are placed again on a live peer; those that had streamed tokens fail with a clear error
(their KV died with the worker). Routing skips dead workers; a phase with no live worker makes new
requests fail at once with 503 (`Unavailable`).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from wattserve.errors import UsageError
from wattserve.routing import ROUTERS, make_policy
from wattserve.runtime import wire
from wattserve.runtime.engine.sequence import SamplingParams
from wattserve.runtime.metrics import ServerMetrics
from wattserve.runtime.request_state import Failure, RequestState, Unavailable
from wattserve.runtime.transport import transport_for
from wattserve.runtime.worker_client import WorkerClient
from wattserve.seam import check_role_change
from wattserve.seam.roles import DECODE_SIDE, SWITCHABLE, instant_switch

ROUTING = ROUTERS
MAX_RETRIES = 2
"""Placements a request gets after the first when workers holding it die before its first token."""


class Router:
    def __init__(self, workers: list[WorkerClient], model: str, routing: str = "least_loaded",
                 on_down: Callable[[WorkerClient], None] | None = None) -> None:
        self.policy = make_policy(routing)
        self.workers = workers
        self.model = model
        self.routing = routing
        self.on_down = on_down
        """Called once per worker that dies, after its requests were placed again or failed."""
        self.on_power: Callable[[int, dict[str, Any]], None] | None = None
        """Called with each worker's {"ev": "power"} answers to power ops (runtime.power.remote)."""
        self.requests: dict[str, RequestState] = {}
        self.metrics = ServerMetrics(model)
        self._ids = itertools.count()
        self._tasks: list[asyncio.Task] = []
        self.recent: deque[tuple[float, str, int, float]] = deque(maxlen=4096)
        self.finished: deque[tuple[float, int, int]] = deque(maxlen=200_000)
        """(arrival monotonic s, prompt tokens, output tokens) of finished requests, newest last."""
        """(time, "ttft" | "tpot", worker, seconds): a TTFT when a first token arrives (the worker that
        produced it), a TPOT when a request finishes (the worker that produced its last token)."""

    async def start(self, stats_period_s: float = 0.25) -> None:
        loop = asyncio.get_running_loop()
        for w in self.workers:
            await w.connect()
            self._tasks.append(asyncio.create_task(self._read(w)))
            sentinel = getattr(w.proc, "sentinel", None)
            if sentinel is not None:
                loop.add_reader(sentinel, self._exited, w)
        self._tasks.append(asyncio.create_task(self._poll(stats_period_s)))
        await asyncio.wait_for(asyncio.gather(*(w.stats_ready.wait() for w in self.workers)), 60)

    async def replace(self, new: WorkerClient, timeout_s: float = 60.0) -> None:
        """Put a restarted worker in the place of a dead one (same id), once it has reported stats."""
        old = self.workers[new.wid]
        if old.alive:
            raise ValueError(f"worker {new.wid} is alive; only a dead worker is replaced")
        await new.connect()
        self.workers[new.wid] = new
        self._tasks.append(asyncio.create_task(self._read(new)))
        sentinel = getattr(new.proc, "sentinel", None)
        if sentinel is not None:
            asyncio.get_running_loop().add_reader(sentinel, self._exited, new)
        new.send({"op": "stats"})
        await asyncio.wait_for(new.stats_ready.wait(), timeout_s)

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for w in self.workers:
            sentinel = getattr(w.proc, "sentinel", None)
            if sentinel is not None:
                loop.remove_reader(sentinel)
            if w.send({"op": "shutdown"}) and w.writer is not None:
                w.writer.close()
        for t in self._tasks:
            t.cancel()
        for w in self.workers:
            if w.proc is not None:
                await loop.run_in_executor(None, w.proc.join, 10)
                if w.proc.is_alive():
                    w.proc.kill()
                    await loop.run_in_executor(None, w.proc.join, 5)
        for st in list(self.requests.values()):
            self._fail(st, Failure("the server is shutting down"))

    async def _poll(self, period: float) -> None:
        while True:
            for w in self.workers:
                w.send({"op": "stats"})
            await asyncio.sleep(period)

    # ---- liveness ----
    def _exited(self, w: WorkerClient) -> None:
        asyncio.get_running_loop().remove_reader(w.proc.sentinel)
        w.proc.join(0)
        self._down(w, f"worker {w.wid} ({w.role}) exited: {w.exit_reason()}")

    def _down(self, w: WorkerClient, reason: str) -> None:
        if not w.mark_down(reason):
            return
        for st in [s for s in self.requests.values() if s.wid == w.wid]:
            self._recover(st, reason)
        if self.on_down is not None:
            self.on_down(w)

    def _recover(self, st: RequestState, reason: str) -> None:
        """A request whose worker died: placed again if it had produced nothing, else failed."""
        if st.n_tokens == 0 and st.retries < MAX_RETRIES:
            self._move(st, None, "queued")
            st.retries += 1
            try:
                self._dispatch(st)
            except Unavailable as e:
                self._fail(st, Failure(f"{reason}; {e}"))
            return
        self._fail(st, Failure(f"{reason}; the request had produced {st.n_tokens} token(s) there and cannot "
                               "continue elsewhere"))

    def dead(self) -> list[dict[str, Any]]:
        """The workers that are down: id, role and why."""
        return [{"worker": w.wid, "role": w.role, "reason": w.down_reason} for w in self.workers if not w.alive]

    def live_handles(self) -> list[dict[str, Any]]:
        """KV hand-off handles still in transit (a sweep of leftover segments must spare them)."""
        return [st.in_transit for st in self.requests.values() if st.in_transit is not None]

    # ---- placement ----
    def prefillers(self) -> list[WorkerClient]:
        return [w for w in self.workers
                if w.alive and w.role in ("prefill", "colocated", "concurrent") and w.switching_to is None]

    def decoders(self, exclude: int | None = None) -> list[WorkerClient]:
        return [w for w in self.workers
                if w.alive and w.role in DECODE_SIDE and w.switching_to is None and w.wid != exclude]

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
        """Place a new request; `Unavailable` at once when no live worker can prefill it."""
        rid = f"req-{next(self._ids)}"
        st = RequestState(rid, prompt_ids, params, time.monotonic())
        self._dispatch(st)
        self.requests[rid] = st
        return st

    def _dispatch(self, st: RequestState) -> None:
        cands = self.prefillers()
        if not cands:
            raise Unavailable(self._none_live("prefill"))
        w = self.policy.pick_prefill(cands, st)
        self._move(st, w, "prefill")
        w.send({"op": "add", "rid": st.rid, "token_ids": st.prompt_ids, "params": asdict(st.params),
                "prefill_only": w.role == "prefill"})

    def _none_live(self, phase: str) -> str:
        down = [f"worker {w.wid}" for w in self.workers if not w.alive]
        return f"no live {phase} worker" + (f" ({', '.join(down)} down)" if down else "")

    def _import(self, st: RequestState, token_ids: list[int], prompt_len: int, params: dict[str, Any],
                handle: dict[str, Any], payload: bytes, exclude: int | None) -> None:
        st.in_transit = handle
        cands = self.decoders(exclude)
        if not cands:
            self._fail(st, Failure(f"{self._none_live('decode')}; the request had produced {st.n_tokens} "
                                   "token(s)"))
            return
        w = self.policy.pick_decode(cands, st)
        self._move(st, w, "decode")
        w.send({"op": "import", "rid": st.rid, "token_ids": token_ids, "prompt_len": prompt_len, "params": params,
                "handle": handle}, payload)

    def _token(self, st: RequestState, tok: int, logprob: list | None = None) -> None:
        now = time.monotonic()
        if logprob is not None:
            st.logprobs.append(logprob)
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
        if st.stage == "decode":
            st.in_transit = None
        st.last_token_t = now
        st.n_tokens += 1
        st.queue.put_nowait(("token", tok))

    def _finish(self, st: RequestState, reason: str) -> None:
        st.finish_reason = reason
        if st.wid is not None:
            self.workers[st.wid].completed += 1
        self._move(st, None)
        self.requests.pop(st.rid, None)
        st.in_transit = None
        self.metrics.e2e.observe(time.monotonic() - st.created)
        self.metrics.finished(reason, len(st.prompt_ids), st.n_tokens)
        self.finished.append((st.created, len(st.prompt_ids), st.n_tokens))
        now = time.monotonic()
        if st.first_token_t is not None and st.workers and st.n_tokens > 1 and st.last_token_t is not None:
            tpot = (st.last_token_t - st.first_token_t) / (st.n_tokens - 1)
            self.recent.append((now, "tpot", st.workers[-1], tpot))
        st.queue.put_nowait(("done", reason))

    def _fail(self, st: RequestState, failure: Failure) -> None:
        """End a request with an error; its worker is told to drop it, its KV in transit is freed."""
        if self.requests.pop(st.rid, None) is None and st.stage == "done":
            return
        self._release(st, "error")
        self.metrics.failed(failure.status)
        st.queue.put_nowait(("error", failure))

    async def _read(self, w: WorkerClient) -> None:
        assert w.reader is not None
        try:
            while True:
                h, payload = await wire.read_frame(w.reader)
                self._event(w, h, payload)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        self._down(w, f"worker {w.wid} ({w.role}) closed its connection"
                      + (f": {w.exit_reason()}" if w.proc is not None and not w.proc.is_alive() else ""))

    def _event(self, w: WorkerClient, h: dict[str, Any], payload: bytes) -> None:
        ev = h["ev"]
        if ev == "stats":
            w.stats = h
            w.stats_ready.set()
            return
        if ev == "role_ready":
            if not h.get("instant"):
                w.role = h["role"]
                w.switching_to = None
            w.role_ready.set()
            return
        if ev == "power":
            if self.on_power is not None:
                self.on_power(w.wid, h)
            return
        if ev == "tokens":
            for rid, tok, finished, reason, logprob in h["items"]:
                st = self.requests.get(rid)
                if st is not None and st.wid == w.wid:
                    self._token(st, tok, logprob)
                    if finished:
                        self._finish(st, reason)
            return
        st = self.requests.get(h.get("rid") or "")
        if st is None or (st.wid is not None and st.wid != w.wid):
            if "handle" in h:
                transport_for(h["handle"]).discard(h["handle"])
            return
        if ev == "prefilled":
            self._token(st, h["token"], h.get("logprob"))
            st.stage = "transfer"
            self._import(st, [*st.prompt_ids, h["token"]], len(st.prompt_ids), asdict(st.params), h["handle"],
                         payload, None)
        elif ev == "migrated":
            self._import(st, h["token_ids"], h["prompt_len"], h["params"], h["handle"], payload, w.wid)
        elif ev == "requeue":
            self._move(st, None, "queued")
            try:
                self._dispatch(st)
            except Unavailable as e:
                self._fail(st, Failure(str(e)))
        elif ev == "error":
            self._fail(st, Failure(h["message"], int(h.get("status", 500)),
                                   "invalid_request_error" if int(h.get("status", 500)) == 400 else "server_error"))

    def abort(self, rid: str) -> None:
        st = self.requests.pop(rid, None)
        if st is not None:
            self._release(st, "abort")

    def _release(self, st: RequestState, reason: str) -> None:
        """Take an unfinished request off its worker (told to drop it) and free its KV in transit."""
        if st.wid is not None:
            self.workers[st.wid].send({"op": "abort", "rid": st.rid})
        if st.in_transit is not None:
            transport_for(st.in_transit).discard(st.in_transit)
            st.in_transit = None
        self._move(st, None)
        st.finish_reason = reason

    # ---- roles ----
    def set_role(self, wid: int, role: str) -> None:
        """Switch a worker's role (seam/roles.py): between prefill and decode it drains first; into or
        out of colocated the router routes by the new role at once and the worker finishes what it
        holds. Someone live keeps taking prompts and someone decoding (a dead worker counts for
        nothing)."""
        if not 0 <= wid < len(self.workers):
            raise UsageError(f"worker: {wid} does not exist; allowed: 0..{len(self.workers) - 1}")
        w = self.workers[wid]
        if not w.alive:
            raise UsageError(f"worker: {wid} is down ({w.down_reason})")
        others = [x.role for x in self.workers if x.alive and x.switching_to is None and x is not w]
        if not check_role_change(f"worker {wid}", w.role, w.switching_to, role, others, SWITCHABLE):
            return
        if instant_switch(w.role, role):
            w.role = role
            w.send({"op": "set_role", "role": role, "instant": True})
            return
        w.switching_to = role
        w.role_ready.clear()
        w.send({"op": "set_role", "role": role})

    def set_compute_share(self, wid: int, phase: str, fraction: float) -> None:
        """Pin a concurrent worker's core split (SetComputeShare): `phase` gets `fraction` of its
        cores, the other phase the rest, 1.0 both all of them. Refused for any other worker."""
        w = self.workers[wid]
        if w.role != "concurrent":
            raise UsageError(f"instance {wid} is {w.role}; allowed: concurrent workers (serve --concurrent N)",
                             "instance")
        if phase not in ("prefill", "decode") or not 0.0 < fraction <= 1.0:
            raise UsageError(f"compute share {phase} {fraction:g}; allowed: prefill or decode, 0 < fraction <= 1",
                             "fraction")
        w.send({"op": "set_share", "phase": phase, "fraction": float(fraction)})

    def set_step_target(self, wid: int, share: float) -> None:
        """Set a worker's step-governor target (SetStepTarget): the share of the TPOT SLO a decode
        step may take. The worker refuses it (an error event, in the log) when its governor takes
        none."""
        if not 0.0 <= share <= 1.0:
            raise UsageError(f"step target share {share:g}; allowed: 0 <= share <= 1", "share")
        self.workers[wid].send({"op": "set_step_target", "share": float(share)})

    def set_batch_limit(self, wid: int, n: int) -> None:
        self.workers[wid].send({"op": "set_batch_limit", "max_seqs": n})
