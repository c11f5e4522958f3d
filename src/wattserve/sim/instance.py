"""One serving instance (a TP group of GPUs): the scheduler that forms batches, as vLLM's does.

Roles: `colocated` (Sarathi-style hybrid batches: every running decode plus prefill chunks up to a
token budget), `prefill` (prompt batches up to a token budget; the KV is handed to a decode instance
after the first token) and `decode` (continuous batching of hand-offs; it also recomputes the prompts
of requests it preempted).

The instance schedules; its parts count. `KvLedger` holds the KV blocks, `DecodeRun` the closed-form
state of the step in flight (a run of k decode iterations is one event, split when anything pokes
it), `StepClock` the clock, time and power a step runs at. Before every step the instance asks its
`StepGovernor`, showing it an `InstanceView`; the answer holds for `hold_iters` iterations (a run
planned iteration by iteration when that is shorter than the run: `governed_plan`).
Everything outside the instance (routing, hand-off links, completion) goes through its `Host`.
"""

from __future__ import annotations

import heapq
from collections import deque

from wattserve.catalog.models import BatchShape
from wattserve.perf.latency import LatencyModel
from wattserve.perf.power import PowerModel
from wattserve.results.histogram import LogHistogram
from wattserve.results.suffix_max import SuffixMax
from wattserve.seam.governor import StepDecision, StepGovernor
from wattserve.sim.decode_run import DecodeRun
from wattserve.sim.events import EventLoop
from wattserve.sim.governed_plan import plan_table
from wattserve.sim.gpu import SimGpu
from wattserve.sim.host import Host
from wattserve.sim.kv_ledger import KvLedger
from wattserve.sim.request import DECODE, DONE, PREFILL, QUEUED, TRANSFER, SimRequest
from wattserve.sim.step_clock import DECODE as _DECODE
from wattserve.sim.step_clock import MIXED as _MIXED
from wattserve.sim.step_clock import StepClock
from wattserve.sim.step_view import InstanceView

ROLES = ("prefill", "decode", "colocated", "concurrent")
PROMPT_ROLES = ("prefill", "colocated", "concurrent")
"""Roles the router sends new prompts to."""
RECENT_SAMPLES = 65536
"""Most TTFT/TPOT samples an instance keeps for its governor (far more than one instance finishes in
the view's few-second window), so memory stays flat over a long trace."""
PLAN_AHEAD = 64
"""Most iterations a governed run plans at once; pokes cut runs short, and planning far past them
would ask the governor about iterations that never run."""


class Instance:
    mixes = True
    """Prompt chunks run in the same iteration as the decode batch (hybrid batching); a concurrent
    instance runs them on a stream of their own instead."""

    def __init__(self, iid: int, role: str, gpus: list[SimGpu], loop: EventLoop, host: Host,
                 latency: LatencyModel, power: PowerModel, governor: StepGovernor, itl_hist: LogHistogram,
                 kv_capacity_tokens: int, block_size: int, max_seqs: int, token_budgets: dict[str, int],
                 kv_bytes_per_token_rank: float, max_run: int | None = None,
                 slo_s: tuple[float | None, float | None] = (None, None)) -> None:
        self.iid = iid
        self.role = role
        self.gpus = gpus
        self.loop = loop
        self.host = host
        self.governor = governor
        self.itl_hist = itl_hist
        self.kv = KvLedger(kv_capacity_tokens, block_size)
        self.latency = latency
        """This instance's latency model alone (what its governor predicts with)."""
        self.clock = StepClock(gpus[0].spec, latency, power)
        self.clock.refresh(gpus)
        self.run = DecodeRun()
        self.max_seqs = max_seqs
        self.token_budgets = token_budgets
        self.token_budget = token_budgets[role]
        self.kv_bytes_per_token_rank = kv_bytes_per_token_rank
        self.max_run = max_run
        self.slo_ttft_s, self.slo_tpot_s = slo_s

        self.waiting: deque[SimRequest] = deque()
        self.active: list[SimRequest] = []
        self.running: dict[SimRequest, None] = {}
        self.fin_heap: list[tuple[int, int, SimRequest]] = []
        self.pending_join: deque[SimRequest] = deque()
        self.incoming: deque[tuple[SimRequest, Instance]] = deque()
        self.g = 0
        self.t_booked = 0.0
        """End of the last decode iteration booked: the last token time of every running request."""
        self.version = 0
        self.busy = False
        self.pending_prefill_tokens = 0
        self.runmax = SuffixMax()
        self.iterations = 0
        self.busy_s = 0.0
        self.preemptions = 0
        self.switching_to: str | None = None
        self.migrate_on_switch = True
        self.reconfig_s = 0.0
        self._reconfiguring = False
        self.role_changes = 0
        self.recent_ttft: deque[tuple[float, float]] = deque(maxlen=RECENT_SAMPLES)
        self.recent_tpot: deque[tuple[float, float]] = deque(maxlen=RECENT_SAMPLES)
        self.prompt_tokens = 0
        """Prompt tokens prefilled here, recomputation after preemption included (monotonic)."""
        self.output_tokens = 0
        """Output tokens generated here (monotonic)."""
        self.completed = 0
        """Requests that finished here (monotonic)."""
        self._decision: StepDecision | None = None
        self.view = InstanceView(self)

    # ---- load, as routers see it ----
    @property
    def decode_load(self) -> int:
        return len(self.running) + len(self.pending_join) + len(self.incoming)

    @property
    def kv_blocks(self) -> int:
        return self.kv.blocks

    @property
    def kv_live_blocks(self) -> int:
        """KV in use now, counting the decode iterations of the current run completed so far."""
        run = self.run
        if self.busy and run.shape is None and run.k > 1:
            return self.kv.used_blocks(run.b * run.iters_done(self.loop.now - run.t0))
        return self.kv.used_blocks()

    def output_tokens_at(self, now: float) -> int:
        """Output tokens generated here by `now`, counting the iterations of the decode run in flight
        that have ended (a run's tokens are booked when it ends or splits)."""
        run = self.run
        if self.busy and run.shape is None and run.k > 1:
            return self.output_tokens + run.b * run.iters_done(now - run.t0)
        return self.output_tokens

    @property
    def throttled(self) -> bool:
        return self.clock.throttled

    # ---- entry points ----
    def enqueue_prefill(self, req: SimRequest, wake: bool = True) -> None:
        req.prefill_inst = self.iid
        self.waiting.append(req)
        self.pending_prefill_tokens += req.target
        if wake:
            self.poke()

    def accept_handoff(self, req: SimRequest, src: Instance) -> None:
        """Queue a hand-off; the scheduler reserves KV for it and starts the pull at the next
        iteration boundary, when its own KV count is exact."""
        req.decode_inst = self.iid
        self.incoming.append((req, src))
        self.poke()

    def _start_transfers(self) -> None:
        kv = self.kv
        while self.incoming:
            req, src = self.incoming[0]
            need = req.kv_held
            if not kv.fits(need, len(self.running)):
                if kv.seqs == 0:
                    self.incoming.popleft()
                    src.release_handoff(req)
                    self.host.fail(req, "kv_capacity")
                    continue
                break
            self.incoming.popleft()
            kv.reserve(need)
            done = self.host.transfer(src, self, need * self.kv_bytes_per_token_rank)
            self.loop.at(done, self._transfer_done, (req, src))

    def _transfer_done(self, arg: tuple[SimRequest, Instance]) -> None:
        req, src = arg
        src.release_handoff(req)
        req.state = DECODE
        self.pending_join.append(req)
        self.poke()

    def release_handoff(self, req: SimRequest) -> None:
        self.kv.release(req.kv_held)
        self.poke()

    def poke(self) -> None:
        """Something changed that the scheduler should see at the next iteration boundary."""
        if not self.busy:
            self.plan()
        elif self.run.k > 1:
            self._split(None)

    def on_clock_change(self) -> None:
        """A cap settled or a clock lock changed: the in-flight iteration finishes at the new clock."""
        self.clock.refresh(self.gpus)
        if self.busy:
            self._split(self.run.current_shape())

    # ---- scheduling ----
    def plan(self) -> None:
        now = self.loop.now
        running = self.running
        kv = self.kv
        switching = self.switching_to is not None
        if switching:
            self._evacuate()
        elif self.incoming:
            self._start_transfers()
        joiners: list[SimRequest] = []
        while (not switching or not self.migrate_on_switch) and self.pending_join and len(running) < self.max_seqs:
            req = self.pending_join.popleft()
            kv.other -= req.kv_held
            self._join(req)
            joiners.append(req)
        if not switching and self.waiting and self.mixes:
            self._admit(now, self.max_seqs - len(running) - len(self.active), None)
        kv.note()
        self.run.joiners = joiners
        self.run.begin(now)
        if self.active and self.mixes:
            budget = self.token_budget - len(running)
            if budget > 0 and self._room_for_one_iteration():
                self._start_mixed(budget)
                return
        if running:
            self._start_run()
            return
        self.busy = False
        self.run.k = 0
        self._went_idle(now)
        if switching and not self._reconfiguring and kv.seqs == 0 and not self.active:
            self._reconfiguring = True
            self.loop.at(now + self.reconfig_s, self._finish_switch, None)

    def _admit(self, now: float, seats: int, tokens: int | None) -> None:
        """Move waiting prompts into `active` while seats remain and their KV fits (at most `tokens`
        prompt tokens when given, but always at least one prompt); a prompt that could never fit
        fails."""
        kv = self.kv
        running = len(self.running)
        taken = 0
        while self.waiting and seats > 0:
            req = self.waiting[0]
            if not kv.fits(req.target, running):
                if kv.seqs == 0:
                    self.waiting.popleft()
                    self.pending_prefill_tokens -= req.target
                    self.host.fail(req, "kv_capacity")
                    continue
                break
            if tokens is not None and taken and taken + req.target > tokens:
                break
            self.waiting.popleft()
            self.active.append(req)
            kv.other += req.target
            kv.seqs += 1
            req.kv_held = req.target
            req.state = PREFILL
            if req.t_scheduled < 0:
                req.t_scheduled = now
            seats -= 1
            taken += req.target

    def _went_idle(self, now: float) -> None:
        """Nothing runs on the instance's decode path: its GPUs draw idle power."""
        for g in self.gpus:
            g.set_power(now, self.clock.power.idle_w)

    def _decide(self) -> StepDecision:
        self._decision = decision = self.governor.decide(self.view)
        return decision

    def _room_for_one_iteration(self) -> bool:
        """Preempt the newest decodes until one more iteration's KV growth fits."""
        while self.running and not self.kv.growth_fits(len(self.running)):
            self._preempt_newest()
        return True

    def _join(self, req: SimRequest) -> None:
        req.state = DECODE
        req.kv_held = req.prompt + req.generated - 1
        self.kv.run += req.kv_held
        req.g_join = self.g
        req.fin = self.g + (req.output - req.generated)
        self.running[req] = None
        heapq.heappush(self.fin_heap, (req.fin, req.rid, req))

    def _start_mixed(self, budget: int) -> None:
        chunks: list[tuple[SimRequest, int]] = []
        pt = seqs = pctx = 0
        pairs = masked = 0.0
        for req in self.active:
            n = req.target - req.prefilled
            if n > budget:
                n = budget
            chunks.append((req, n))
            pt += n
            pairs += n * (req.prefilled + (n + 1) / 2)
            masked += n * (n - 1) / 2
            pctx += req.prefilled
            if req.prefilled + n >= req.target:
                seqs += 1
            budget -= n
            if budget <= 0:
                break
        b = len(self.running)
        t_run = self.kv.run
        shape = BatchShape(prefill_tokens=pt, prefill_seqs=seqs, prefill_attn_pairs=pairs, prefill_ctx=pctx,
                           decode_seqs=b, decode_ctx=t_run + b, prefill_masked_pairs=masked)
        run = self.run
        run.mixed(shape, chunks, b, t_run + b, 0.0)
        self.view.phase = "mixed" if b else "prefill"
        decision = self._decide()
        op = self.clock.choose(shape, _MIXED, decision.clock_mhz)
        run.d0 = op.cost.time_s
        self._launch(op.clock_mhz, op.power_w, op.cost.time_s, self.clock.prefill_share(shape, op.clock_mhz))

    def _start_run(self) -> None:
        kv = self.kv
        while True:
            b = len(self.running)
            if b == 0:
                self.plan()
                return
            heap = self.fin_heap
            while heap and (heap[0][2] not in self.running or heap[0][2].fin != heap[0][0]):
                heapq.heappop(heap)
            k = heap[0][0] - self.g
            k_kv = kv.iterations_left(b)
            if k_kv >= 1:
                break
            self._preempt_newest()
        if k_kv < k:
            k = k_kv
        if self.max_run is not None and k > self.max_run:
            k = self.max_run
        c0 = kv.run + b
        run = self.run
        run.decode(k, b, c0, 0.0, 0.0)
        self.view.phase = "decode"
        decision = self._decide()
        if decision.hold_iters < k:
            self._start_table_run(k if k < PLAN_AHEAD else PLAN_AHEAD, b, c0, decision)
            return
        op = self.clock.choose(BatchShape(decode_seqs=b, decode_ctx=int(c0 + b * (k - 1) / 2)), _DECODE,
                               decision.clock_mhz)
        run.alpha, run.beta = alpha, beta = self.clock.latency.decode_coeffs(b, op.clock_mhz)
        run.k = k
        run.d0 = alpha + beta * c0
        self._launch(op.clock_mhz, op.power_w, run.run_time(k), 0.0)

    def _start_table_run(self, k: int, b: int, c0: int, decision: StepDecision) -> None:
        run = self.run
        cum, req, points = plan_table(self.governor, self.view, self.clock, decision, k, b, c0, run.t0)
        run.k = k
        run.table(cum, req, points)
        first = points[req[0]]
        self._launch(first[0], first[1], cum[-1], 0.0)

    def _launch(self, clock_mhz: int, power_w: float, duration: float, prefill_share: float) -> None:
        now = self.loop.now
        for g in self.gpus:
            g.set_power(now, power_w, prefill_share)
            if g.clock_mhz != clock_mhz:
                g.set_clock(now, clock_mhz)
        self.busy = True
        self.version += 1
        self.run.end = self.run.t0 + duration
        self.loop.at(self.run.end, self._on_step_end, self.version)

    def _split(self, new_shape: BatchShape | None) -> None:
        """End the current step at the iteration in flight. With new_shape, the rest of that iteration
        runs at the operating point the new caps allow."""
        now = self.loop.now
        run = self.run
        if run.k > 1:
            j = run.iters_done(now - run.t0)
            if j + 1 < run.k or new_shape is not None:
                if j > 0:
                    t_j = run.t0 + run.run_time(j)
                    self._book_decode(j, t_j)
                    run.rebase(j, t_j)
                    if run.cum is not None:
                        p = run.points[run.req[run.off]]
                        for g in self.gpus:
                            g.set_power(t_j, p[1], 0.0)
                            g.set_clock(t_j, p[0])
                run.k = 1
        if new_shape is None:
            end = run.t0 + run.step_time()
            if run.end != end:
                self.version += 1
                run.end = end
                self.loop.at(end, self._on_step_end, self.version)
            return
        in_flight_end = run.t0 + run.step_time()
        remaining = max(0.0, (in_flight_end - now) / run.d0) if run.d0 > 0 else 0.0
        decode = run.shape is None
        if run.k == 1 and decode:
            new_shape = BatchShape(decode_seqs=run.b, decode_ctx=run.c0)
        if run.cum is not None:
            requested = run.req[run.off]
        else:
            requested = self._decision.clock_mhz if self._decision is not None else None
        op = self.clock.choose(new_shape, _DECODE if decode else _MIXED, requested)
        if decode:
            run.alpha, run.beta = self.clock.latency.decode_coeffs(run.b, op.clock_mhz)
            d_new = run.alpha + run.beta * run.c0
            share = 0.0
        else:
            d_new = op.cost.time_s
            share = self.clock.prefill_share(new_shape, op.clock_mhz)
        run.rescale(now, d_new, remaining)
        self._launch(op.clock_mhz, op.power_w, remaining * d_new, share)

    def _book_decode(self, k: int, t_end: float) -> None:
        """Account k completed iterations of the decode batch, the last ending at t_end."""
        run = self.run
        b = run.b
        if b == 0 or k == 0:
            return
        hist = self.itl_hist
        t_first_end = run.t0 + run.first_scale * run.d0 if run.shape is None else t_end
        it_first = t_first_end - run.first_start
        joiners = [r for r in run.joiners if r.state == DECODE and r in self.running]
        for req in joiners:
            gap = t_first_end - req.t_last_token
            hist.add(gap)
            if gap > req.max_itl:
                req.max_itl = gap
        if b > len(joiners):
            hist.add(it_first, b - len(joiners))
        last = it_first
        if k > 1 and run.cum is not None:
            last = self._book_table(k, b)
        elif k > 1:
            d1 = run.alpha + run.beta * (run.c0 + b)
            last = run.alpha + run.beta * (run.c0 + (k - 1) * b)
            hist.add_linear(d1, last, k - 1, b)
        self.g += k
        self.t_booked = t_end
        self.kv.run += b * k
        self.iterations += k
        self.output_tokens += b * k
        self.runmax.append(self.g, max(it_first, last))
        self.kv.note()
        heap = self.fin_heap
        while heap and heap[0][0] <= self.g:
            fin, _, req = heapq.heappop(heap)
            if req in self.running and req.fin == fin:
                self._finish_decode(req, t_end)

    def _book_table(self, k: int, b: int) -> float:
        """Iterations 2..k of a table run: their gaps, and each one's power and clock from its start.
        Returns the longest gap among them."""
        gaps, starts, watts, clocks = self.run.table_steps(k)
        self.itl_hist.add_each(gaps, b)
        for g in self.gpus:
            g.decode_steps(starts, watts, clocks)
        return max(gaps)

    def _detach(self, req: SimRequest) -> int:
        """Take a decoding request out of the running batch with its KV and its last token time
        accounted up to the last completed iteration (so the next gap, after migration or
        recomputation, starts there); returns the KV tokens it holds (prompt + generated - 1)."""
        del self.running[req]
        generated = req.output - (req.fin - self.g)
        kv = req.prompt + generated - 1
        self.kv.run -= kv
        req.generated = generated
        if self.g > req.g_join:
            req.t_last_token = self.t_booked
        rm = self.runmax.query(req.g_join)
        if rm > req.max_itl:
            req.max_itl = rm
        return kv

    def _finish_decode(self, req: SimRequest, t: float) -> None:
        self._detach(req)
        self.kv.seqs -= 1
        req.t_last_token = t
        req.state = DONE
        if req.output > 1:
            self.recent_tpot.append((t, (t - req.t_first_token) / (req.output - 1)))
        self.completed += 1
        self.host.complete(req, t)

    def _preempt_newest(self) -> None:
        req = next(reversed(self.running))
        self._detach(req)
        self.kv.seqs -= 1
        req.target = req.prompt + req.generated
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
        run = self.run
        self.busy_s += now - run.t0
        if run.shape is not None:
            self.iterations += 1 if run.b == 0 else 0
            self._book_decode(1, now)
            for req, n in run.chunks:
                req.prefilled += n
                self.pending_prefill_tokens -= n
                self.prompt_tokens += n
                if req.prefilled >= req.target:
                    self._prefill_done(req, now)
        else:
            self._book_decode(run.k, now)
        self.busy = False
        self.plan()

    def _prefill_done(self, req: SimRequest, t: float) -> None:
        self.active.remove(req)
        req.generated += 1
        self.output_tokens += 1
        if req.t_first_token < 0:
            req.t_first_token = t
            self.recent_ttft.append((t, t - req.arrival))
        else:
            gap = t - req.t_last_token
            self.itl_hist.add(gap)
            if gap > req.max_itl:
                req.max_itl = gap
        req.t_last_token = t
        if req.generated >= req.output:
            self.kv.release(req.kv_held)
            req.state = DONE
            self.completed += 1
            self.host.complete(req, t)
        elif self.role == "prefill":
            req.state = TRANSFER
            self.host.hand_off(req, self)
        else:
            self.pending_join.append(req)

    # ---- role changes ----
    def begin_switch(self, role: str, reconfig_s: float, migrate: bool) -> None:
        """Stop taking new work, hand queued work to peers, drain (or migrate) what runs here,
        then pay the reconfiguration time. Weights stay loaded; only the role changes. The host
        pokes it once its routing no longer sends work here (an idle instance evacuates at once, and
        would otherwise hand its work back to itself)."""
        self.switching_to = role
        self.reconfig_s = reconfig_s
        self.migrate_on_switch = migrate

    def _evacuate(self) -> None:
        host = self.host
        while self.waiting:
            req = self.waiting.popleft()
            self.pending_prefill_tokens -= req.target
            host.route(req)
        while self.incoming:
            req, src = self.incoming.popleft()
            host.hand_off(req, src)
        if not self.migrate_on_switch or self.busy:
            return
        while self.pending_join:
            req = self.pending_join.popleft()
            req.state = TRANSFER
            host.hand_off(req, self)
        for req in list(self.running):
            kv = self._detach(req)
            self.kv.other += kv
            req.kv_held = kv
            req.state = TRANSFER
            host.hand_off(req, self)
        self.fin_heap.clear()

    def switch_now(self, role: str) -> None:
        """Take `role` from the next iteration on, with nothing drained (seam/roles.instant_switch):
        what this instance holds (queued prompts, prompts it is prefilling, sequences it runs)
        finishes here; only what the router sends it from now on follows the new role."""
        self.switching_to = role
        self._finish_switch(None)

    def _finish_switch(self, _: object) -> None:
        self.role = self.switching_to or self.role
        self.switching_to = None
        self._reconfiguring = False
        self.role_changes += 1
        self.clock.forget_hints()
        self.token_budget = self.token_budgets[self.role]
        self.host.role_changed(self)
        self.poke()


__all__ = ["DONE", "Instance", "PROMPT_ROLES", "ROLES"]
