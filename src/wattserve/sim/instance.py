"""One serving instance (a TP group of GPUs) running continuous batching, as vLLM does.

Roles: `colocated` (Sarathi-style hybrid batches: every running decode plus prefill chunks up to a
token budget), `prefill` (prompt batches up to a token budget; the KV is handed to a decode instance
after the first token) and `decode` (continuous batching of hand-offs; it also recomputes the prompts
of requests it preempted).

Cost grows with scheduling decisions, not tokens. While the decode batch does not change, iteration
i takes alpha + beta * (C0 + i * B) seconds (B sequences, total context C0 at the first iteration),
so a run of k iterations is planned in closed form up to the next event that changes the batch: the
earliest completion, KV exhaustion, or an external poke (a new request, a hand-off, a clock change),
which splits the run at the next iteration boundary.

KV accounting is in tokens with a block-rounding bound: n sequences holding T tokens use at most
(T + n * (block - 1)) // block blocks, which is what the scheduler checks against capacity.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from typing import TYPE_CHECKING

from wattserve.catalog.gpus import GpuSpec
from wattserve.catalog.models import BatchShape, ModelSpec
from wattserve.metrics.suffix_max import SuffixMax
from wattserve.perf.latency import LatencyModel
from wattserve.perf.operating_point import OperatingPoint, operating_point
from wattserve.perf.power import PowerModel
from wattserve.sim.gpu import SimGpu
from wattserve.sim.request import DECODE, DONE, FAILED, PREFILL, QUEUED, TRANSFER, SimRequest

if TYPE_CHECKING:
    from wattserve.sim.cluster import Cluster

ROLES = ("colocated", "prefill", "decode")
_MIXED, _DECODE = 0, 1


class Instance:
    def __init__(self, iid: int, role: str, gpus: list[SimGpu], cluster: Cluster, model: ModelSpec,
                 latency: LatencyModel, power: PowerModel, kv_capacity_tokens: int, block_size: int,
                 max_seqs: int, token_budget: int) -> None:
        self.iid = iid
        self.role = role
        self.gpus = gpus
        self.spec: GpuSpec = gpus[0].spec
        self.cluster = cluster
        self.loop = cluster.loop
        self.model = model
        self.latency = latency
        self.power = power
        self.block_size = block_size
        self.kv_blocks = kv_capacity_tokens // block_size
        self.max_seqs = max_seqs
        self.token_budget = token_budget
        self.kv_bytes_per_token_rank = model.kv_bytes_per_token_per_rank(len(gpus))
        self._clocks = self.spec.clocks
        self._hint: list[int | None] = [None, None]
        self.cap_w = 0.0
        self.lock_mhz: int | None = None
        self.refresh_limits()

        self.waiting: deque[SimRequest] = deque()
        self.active: list[SimRequest] = []
        self.running: dict[SimRequest, None] = {}
        self.fin_heap: list[tuple[int, int, SimRequest]] = []
        self.pending_join: deque[SimRequest] = deque()
        self.incoming: deque[tuple[SimRequest, Instance]] = deque()
        self.t_run = 0
        self.kv_other = 0
        self.kv_seqs = 0
        self.kv_peak_blocks = 0
        self.g = 0
        self.version = 0
        self.busy = False
        self.pending_prefill_tokens = 0
        self.runmax = SuffixMax()
        self.iterations = 0
        self.busy_s = 0.0
        self.preemptions = 0
        self.max_run: int | None = None
        self.switching_to: str | None = None
        self.migrate_on_switch = True
        self.reconfig_s = 0.0
        self._reconfiguring = False
        self.role_changes = 0
        self.throttled = False
        self.recent_ttft: deque[tuple[float, float]] = deque()
        self.recent_tpot: deque[tuple[float, float]] = deque()

        self.st_t0 = 0.0
        self.st_k = 0
        self.st_b = 0
        self.st_c0 = 0
        self.st_alpha = 0.0
        self.st_beta = 0.0
        self.st_d0 = 0.0
        self.st_first_scale = 1.0
        self.st_first_start = 0.0
        self.st_chunks: list[tuple[SimRequest, int]] = []
        self.st_shape: BatchShape | None = None
        self.st_joiners: list[SimRequest] = []
        self.st_end = 0.0

    # ---- load, as routers see it ----
    @property
    def decode_load(self) -> int:
        return len(self.running) + len(self.pending_join) + len(self.incoming)

    @property
    def kv_used_blocks(self) -> int:
        return (self.kv_other + self.t_run + self.kv_seqs * (self.block_size - 1)) // self.block_size

    @property
    def kv_live_blocks(self) -> int:
        """KV in use now, counting the decode iterations of the current run completed so far."""
        t_run = self.t_run
        if self.busy and self.st_shape is None and self.st_k > 1:
            t_run += self.st_b * self._iters_done(self.loop.now - self.st_t0)
        return (self.kv_other + t_run + self.kv_seqs * (self.block_size - 1)) // self.block_size

    def _fits(self, tokens: int, extra_seqs: int = 1) -> bool:
        blocks = (self.kv_other + self.t_run + tokens + (self.kv_seqs + extra_seqs) * (self.block_size - 1)) \
            // self.block_size
        return blocks + len(self.running) <= self.kv_blocks

    def _note_kv(self) -> None:
        used = self.kv_used_blocks
        if used > self.kv_peak_blocks:
            self.kv_peak_blocks = used

    # ---- entry points ----
    def enqueue_prefill(self, req: SimRequest) -> None:
        req.prefill_inst = self.iid
        self.waiting.append(req)
        self.pending_prefill_tokens += req.target
        self.poke()

    def accept_handoff(self, req: SimRequest, src: Instance) -> None:
        """Queue a hand-off; the scheduler reserves KV for it and starts the pull at the next
        iteration boundary, when its own KV count is exact."""
        req.decode_inst = self.iid
        self.incoming.append((req, src))
        self.poke()

    def _start_transfers(self) -> None:
        now = self.loop.now
        while self.incoming:
            req, src = self.incoming[0]
            need = req.kv_held
            if not self._fits(need):
                if self.kv_seqs == 0:
                    self.incoming.popleft()
                    src.release_handoff(req)
                    self.cluster.fail(req, "kv_capacity")
                    continue
                break
            self.incoming.popleft()
            self.kv_other += need
            self.kv_seqs += 1
            self._note_kv()
            link = self.cluster.link_between(src, self)
            done = link.submit(now, need * self.kv_bytes_per_token_rank)
            self.loop.at(done, self._transfer_done, (req, src))

    def _transfer_done(self, arg: tuple[SimRequest, Instance]) -> None:
        req, src = arg
        src.release_handoff(req)
        req.state = DECODE
        self.pending_join.append(req)
        self.poke()

    def release_handoff(self, req: SimRequest) -> None:
        self.kv_other -= req.kv_held
        self.kv_seqs -= 1
        self.poke()

    def poke(self) -> None:
        """Something changed that the scheduler should see at the next iteration boundary."""
        if not self.busy:
            self.plan()
        elif self.st_k > 1:
            self._split(None)

    def on_clock_change(self) -> None:
        """A cap settled or a clock lock changed: the in-flight iteration finishes at the new clock."""
        self.refresh_limits()
        if self.busy:
            self._split(self._current_shape())

    # ---- scheduling ----
    def plan(self) -> None:
        loop = self.loop
        now = loop.now
        running = self.running
        switching = self.switching_to is not None
        if switching:
            self._evacuate()
        elif self.incoming:
            self._start_transfers()
        joiners: list[SimRequest] = []
        while not switching and self.pending_join and len(running) < self.max_seqs:
            req = self.pending_join.popleft()
            self.kv_other -= req.kv_held
            self._join(req)
            joiners.append(req)
        while not switching and self.waiting and len(running) + len(self.active) < self.max_seqs:
            req = self.waiting[0]
            if not self._fits(req.target):
                if self.kv_seqs == 0:
                    self.waiting.popleft()
                    self.pending_prefill_tokens -= req.target
                    self.cluster.fail(req, "kv_capacity")
                    continue
                break
            self.waiting.popleft()
            self.active.append(req)
            self.kv_other += req.target
            self.kv_seqs += 1
            req.kv_held = req.target
            req.state = PREFILL
            if req.t_scheduled < 0:
                req.t_scheduled = now
        self._note_kv()
        self.st_joiners = joiners
        self.st_first_scale = 1.0
        self.st_first_start = now
        self.st_t0 = now
        if self.active:
            budget = self.token_budget - len(running)
            if budget > 0 and self._room_for_one_iteration():
                self._start_mixed(budget)
                return
        if running:
            self._start_run()
            return
        self.busy = False
        self.st_k = 0
        for g in self.gpus:
            g.set_power(now, self.power.idle_w)
        if switching and not self._reconfiguring and self.kv_seqs == 0 and not self.active:
            self._reconfiguring = True
            loop.at(now + self.reconfig_s, self._finish_switch, None)

    # ---- role changes ----
    def begin_switch(self, role: str, reconfig_s: float, migrate: bool) -> None:
        """Stop taking new work, hand queued work to peers, drain (or migrate) what runs here,
        then pay the reconfiguration time. Weights stay loaded; only the role changes."""
        self.switching_to = role
        self.reconfig_s = reconfig_s
        self.migrate_on_switch = migrate
        self.poke()

    def _evacuate(self) -> None:
        cluster = self.cluster
        while self.waiting:
            req = self.waiting.popleft()
            self.pending_prefill_tokens -= req.target
            cluster.route_prefill(req)
        while self.incoming:
            req, src = self.incoming.popleft()
            cluster.handoff(req, src)
        if not self.migrate_on_switch or self.busy:
            return
        while self.pending_join:
            req = self.pending_join.popleft()
            req.state = TRANSFER
            cluster.handoff(req, self)
        for req in list(self.running):
            del self.running[req]
            generated = req.output - (req.fin - self.g)
            kv = req.prompt + generated - 1
            self.t_run -= kv
            self.kv_other += kv
            req.kv_held = kv
            req.generated = generated
            rm = self.runmax.query(req.g_join)
            if rm > req.max_itl:
                req.max_itl = rm
            req.state = TRANSFER
            cluster.handoff(req, self)
        self.fin_heap.clear()

    def _finish_switch(self, _: object) -> None:
        self.role = self.switching_to or self.role
        self.switching_to = None
        self._reconfiguring = False
        self.role_changes += 1
        self.cluster.role_events.append((self.loop.now, self.iid, self.role))
        self._hint = [None, None]
        self.token_budget = self.cluster.token_budget(self.role)
        self.cluster.refresh_routing()
        self.poke()

    def _room_for_one_iteration(self) -> bool:
        """Preempt the newest decodes until one more iteration's KV growth fits."""
        bs = self.block_size
        while self.running:
            grow = len(self.running)
            if (self.kv_other + self.t_run + grow + self.kv_seqs * (bs - 1)) // bs <= self.kv_blocks:
                return True
            self._preempt_newest()
        return True

    def _join(self, req: SimRequest) -> None:
        req.state = DECODE
        req.kv_held = req.prompt + req.generated - 1
        self.t_run += req.kv_held
        req.g_join = self.g
        req.fin = self.g + (req.output - req.generated)
        self.running[req] = None
        heapq.heappush(self.fin_heap, (req.fin, req.rid, req))

    def refresh_limits(self) -> None:
        """Re-read the caps in force and clock locks of this instance's GPUs. TP ranks run in
        lockstep, so the tightest cap and lowest lock set the clock for all of them."""
        self.cap_w = min(g.cap_w for g in self.gpus)
        locks = [g.locked_clock_mhz for g in self.gpus if g.locked_clock_mhz is not None]
        self.lock_mhz = min(locks) if locks else None
        top = len(self._clocks) - 1
        while top > 0 and self.lock_mhz is not None and self._clocks[top] > self.lock_mhz:
            top -= 1
        self._top = top

    def _op(self, shape: BatchShape, kind: int) -> OperatingPoint:
        op = operating_point(self.spec, self.latency, self.power, shape, self.cap_w, self.lock_mhz,
                             self._hint[kind], self._clocks)
        self._hint[kind] = op.index
        self.throttled = op.index < self._top
        return op

    def _apply_power(self, op: OperatingPoint) -> None:
        now = self.loop.now
        for g in self.gpus:
            g.set_power(now, op.power_w)
            g.clock_mhz = op.clock_mhz

    def _start_mixed(self, budget: int) -> None:
        chunks: list[tuple[SimRequest, int]] = []
        pt = seqs = pctx = 0
        pairs = 0.0
        for req in self.active:
            n = req.target - req.prefilled
            if n > budget:
                n = budget
            chunks.append((req, n))
            pt += n
            pairs += n * (req.prefilled + (n + 1) / 2)
            pctx += req.prefilled
            if req.prefilled + n >= req.target:
                seqs += 1
            budget -= n
            if budget <= 0:
                break
        b = len(self.running)
        shape = BatchShape(prefill_tokens=pt, prefill_seqs=seqs, prefill_attn_pairs=pairs, prefill_ctx=pctx,
                           decode_seqs=b, decode_ctx=self.t_run + b)
        op = self._op(shape, _MIXED)
        self.st_chunks = chunks
        self.st_shape = shape
        self.st_k = 1
        self.st_b = b
        self.st_c0 = self.t_run + b
        self.st_d0 = op.cost.time_s
        self._launch(op, op.cost.time_s)

    def _start_run(self) -> None:
        while True:
            b = len(self.running)
            if b == 0:
                self.plan()
                return
            heap = self.fin_heap
            while heap and (heap[0][2] not in self.running or heap[0][2].fin != heap[0][0]):
                heapq.heappop(heap)
            k = heap[0][0] - self.g
            bs = self.block_size
            k_kv = ((self.kv_blocks + 1) * bs - 1 - self.kv_other - self.t_run - self.kv_seqs * (bs - 1)) // b
            if k_kv >= 1:
                break
            self._preempt_newest()
        if k_kv < k:
            k = k_kv
        if self.max_run is not None and k > self.max_run:
            k = self.max_run
        c0 = self.t_run + b
        op = self._op(BatchShape(decode_seqs=b, decode_ctx=int(c0 + b * (k - 1) / 2)), _DECODE)
        alpha, beta = self.latency.decode_coeffs(b, op.clock_mhz)
        self.st_chunks = []
        self.st_shape = None
        self.st_k = k
        self.st_b = b
        self.st_c0 = c0
        self.st_alpha = alpha
        self.st_beta = beta
        self.st_d0 = alpha + beta * c0
        self._launch(op, self._run_time(k))

    def _run_time(self, k: int) -> float:
        """Time from st_t0 to the end of iteration k of the current run."""
        a, bt, c0, b = self.st_alpha, self.st_beta, self.st_c0, self.st_b
        full = k * (a + bt * c0) + bt * b * k * (k - 1) / 2.0
        return full - (1.0 - self.st_first_scale) * self.st_d0

    def _launch(self, op: OperatingPoint, duration: float) -> None:
        self._apply_power(op)
        self.busy = True
        self.version += 1
        self.st_end = self.st_t0 + duration
        self.loop.at(self.st_end, self._on_step_end, self.version)

    def _current_shape(self) -> BatchShape:
        if self.st_shape is not None:
            return self.st_shape
        return BatchShape(decode_seqs=self.st_b, decode_ctx=self.st_c0)

    def _split(self, new_shape: BatchShape | None) -> None:
        """End the current step at the iteration in flight. With new_shape, the rest of that iteration
        runs at the operating point the new caps allow."""
        now = self.loop.now
        if self.st_k > 1:
            tau = now - self.st_t0
            j = self._iters_done(tau)
            if j + 1 < self.st_k or new_shape is not None:
                if j > 0:
                    t_j = self.st_t0 + self._run_time(j)
                    self._book_decode(j, t_j)
                    self.st_c0 += j * self.st_b
                    self.st_t0 = t_j
                    self.st_first_start = t_j
                    self.st_first_scale = 1.0
                    self.st_d0 = self.st_alpha + self.st_beta * self.st_c0
                    self.st_joiners = []
                self.st_k = 1
        if new_shape is None:
            if self.st_end != self.st_t0 + self._step_time():
                self.version += 1
                self.st_end = self.st_t0 + self._step_time()
                self.loop.at(self.st_end, self._on_step_end, self.version)
            return
        in_flight_end = self.st_t0 + self._step_time()
        remaining = max(0.0, (in_flight_end - now) / self.st_d0) if self.st_d0 > 0 else 0.0
        if self.st_k == 1 and self.st_shape is None:
            new_shape = BatchShape(decode_seqs=self.st_b, decode_ctx=self.st_c0)
        op = self._op(new_shape, _DECODE if self.st_shape is None else _MIXED)
        if self.st_shape is None:
            self.st_alpha, self.st_beta = self.latency.decode_coeffs(self.st_b, op.clock_mhz)
            d_new = self.st_alpha + self.st_beta * self.st_c0
        else:
            d_new = op.cost.time_s
        self.st_t0 = now
        self.st_d0 = d_new
        self.st_first_scale = remaining
        self._launch(op, remaining * d_new)

    def _step_time(self) -> float:
        if self.st_shape is not None:
            return self.st_first_scale * self.st_d0
        return self._run_time(self.st_k)

    def _iters_done(self, tau: float) -> int:
        """Completed iterations of the current run by tau seconds after st_t0."""
        first = self.st_first_scale * self.st_d0
        if tau < first:
            return 0
        a = self.st_beta * self.st_b / 2.0
        b = self.st_d0 - a
        c = -(tau + (1.0 - self.st_first_scale) * self.st_d0)
        j = int((-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)) if a > 0 else int(-c / b)
        j = max(0, min(j, self.st_k))
        while j > 0 and self._run_time(j) > tau:
            j -= 1
        while j < self.st_k and self._run_time(j + 1) <= tau:
            j += 1
        return j

    def _book_decode(self, k: int, t_end: float) -> None:
        """Account k completed iterations of the decode batch, the last ending at t_end."""
        b = self.st_b
        if b == 0 or k == 0:
            return
        hist = self.cluster.itl_hist
        t_first_end = self.st_t0 + self.st_first_scale * self.st_d0 if self.st_shape is None else t_end
        it_first = t_first_end - self.st_first_start
        joiners = [r for r in self.st_joiners if r.state == DECODE and r in self.running]
        for req in joiners:
            gap = t_first_end - req.t_last_token
            hist.add(gap)
            if gap > req.max_itl:
                req.max_itl = gap
        if b > len(joiners):
            hist.add(it_first, b - len(joiners))
        last = it_first
        if k > 1:
            d1 = self.st_alpha + self.st_beta * (self.st_c0 + b)
            last = self.st_alpha + self.st_beta * (self.st_c0 + (k - 1) * b)
            hist.add_linear(d1, last, k - 1, b)
        self.g += k
        self.t_run += b * k
        self.iterations += k
        self.runmax.append(self.g, max(it_first, last))
        self._note_kv()
        heap = self.fin_heap
        while heap and heap[0][0] <= self.g:
            fin, _, req = heapq.heappop(heap)
            if req in self.running and req.fin == fin:
                self._finish_decode(req, t_end)

    def _finish_decode(self, req: SimRequest, t: float) -> None:
        del self.running[req]
        self.t_run -= req.prompt + req.output - 1
        self.kv_seqs -= 1
        req.generated = req.output
        rm = self.runmax.query(req.g_join)
        if rm > req.max_itl:
            req.max_itl = rm
        req.t_last_token = t
        req.state = DONE
        if req.output > 1:
            self.recent_tpot.append((t, (t - req.t_first_token) / (req.output - 1)))
        self.cluster.complete(req, t)

    def _preempt_newest(self) -> None:
        req = next(reversed(self.running))
        del self.running[req]
        generated = req.output - (req.fin - self.g)
        self.t_run -= req.prompt + generated - 1
        self.kv_seqs -= 1
        req.generated = generated
        rm = self.runmax.query(req.g_join)
        if rm > req.max_itl:
            req.max_itl = rm
        req.target = req.prompt + generated
        req.prefilled = 0
        req.preemptions += 1
        req.state = QUEUED
        self.preemptions += 1
        self.waiting.appendleft(req)
        self.pending_prefill_tokens += req.target

    def _on_step_end(self, version: int) -> None:
        if version != self.version:
            return
        now = self.loop.now
        self.busy_s += now - self.st_t0
        if self.st_shape is not None:
            self.iterations += 1 if self.st_b == 0 else 0
            self._book_decode(1, now)
            for req, n in self.st_chunks:
                req.prefilled += n
                self.pending_prefill_tokens -= n
                if req.prefilled >= req.target:
                    self._prefill_done(req, now)
        else:
            self._book_decode(self.st_k, now)
        self.busy = False
        self.plan()

    def _prefill_done(self, req: SimRequest, t: float) -> None:
        self.active.remove(req)
        req.generated += 1
        if req.t_first_token < 0:
            req.t_first_token = t
            self.recent_ttft.append((t, t - req.arrival))
        else:
            gap = t - req.t_last_token
            self.cluster.itl_hist.add(gap)
            if gap > req.max_itl:
                req.max_itl = gap
        req.t_last_token = t
        if req.generated >= req.output:
            self.kv_other -= req.kv_held
            self.kv_seqs -= 1
            req.state = DONE
            self.cluster.complete(req, t)
        elif self.role == "prefill":
            req.state = TRANSFER
            self.cluster.handoff(req, self)
        else:
            self.pending_join.append(req)


__all__ = ["DONE", "FAILED", "Instance", "ROLES"]
