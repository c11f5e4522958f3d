"""Concurrent prefill and decode over one model and one KV cache, after RAPID-Serve ("RAPID-Serve:
Resource-efficient and Accelerated P/D Intra-GPU Disaggregation", Masood, Gaur, Jayasena, arXiv
2601.11822).

RAPID-Serve keeps prefill and decode on the same device but on separate streams of work, so a long
prompt never stalls the decode batch (as chunked prefill would have to) and no KV cache moves (as
disaggregation across devices would have to). Both sides use the same model weights and the same
paged KV cache. The decode side owns block allocation, so the two never contend for the free list and
need no locks: it hands a new prompt its blocks, the prefill side runs the whole prompt (no chunking)
and writes K/V straight into those blocks, then sends back the first token. A resource manager sets
each side's share of the compute units at step boundaries.

Here the decode side is the caller's (`ConcurrentEngine`, an `LLMEngine` whose scheduler never admits
a prompt itself). Where the prefill side runs is prefill_side.py: on a CPU a spawned process over
shared memory, a share being a set of cores (compute_split.CoreSplit); on a GPU a thread of this
process on its own CUDA stream, a share being an SM partition (sm_split.GreenContextSplit) or, without
green contexts, the whole GPU for both (compute_split.SharedUnits).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Literal

import torch

from wattserve.errors import UsageError
from wattserve.runtime.engine.compute_split import (
    ComputeSplit,
    CoreSplit,
    Part,
    Share,
    SharedUnits,
    split_units,
)
from wattserve.runtime.engine.engine import EngineArgs, LLMEngine, StepOutput
from wattserve.runtime.engine.prefill_process import (
    ChildInfo,
    ChildSpec,
    PrefillJob,
    PrefillResult,
    gen_state,
    set_gen_state,
)
from wattserve.runtime.engine.prefill_side import PrefillSide, ProcessSide, ThreadSide
from wattserve.runtime.engine.sequence import SamplingParams, Sequence, Status
from wattserve.runtime.engine.step_view import PowerProfile
from wattserve.seam.governor import StepDecision, StepGovernor


class ConcurrentEngine(LLMEngine):
    """An `LLMEngine` whose prompts are prefilled by a second process or thread while this one decodes
    (RAPID-Serve, arXiv 2601.11822).

    This side is the decode side: it owns the scheduler's running batch and every KV block. `add`
    queues a prompt; at the next step boundary it gets its blocks and goes to the prefill side, which
    writes its K/V into the shared cache and returns its first token; the sequence then joins the
    decode batch with its whole prompt computed. `step()` runs one decode iteration and collects
    finished prefills without waiting for them (it waits up to `idle_wait_s` only when there is
    nothing to decode). `set_decode_share` or a governor's `StepDecision.decode_share` splits the
    compute units between the two sides; whichever changed the share last wins.

    `side` is where the prefill side runs: "process" (the CPU's default; cores are divided per
    process) or "thread" (the GPU's; on a CPU it can only overallocate, as threads of one process
    share its cores). `compute` is how the units are split (default: `CoreSplit` for a process on
    a CPU, the best `sm_split.for_device` offers on a GPU, `SharedUnits` otherwise);
    `split_note` says why a GPU's split is not green contexts.

    If the prefill side dies, its pending prompts finish with finish_reason "error" (the cause is in
    `prefill_error`), new prompts are refused, and decoding what is running goes on. `close()` (or
    leaving a `with` block) stops it; a prefill process also exits when this process closes the pipe
    or dies.

    A prefill process is started with multiprocessing's spawn method, so a script that builds this
    engine on a CPU needs the `if __name__ == "__main__":` guard, and a daemonic process (a
    multiprocessing worker started with daemon=True) cannot build one."""

    def __init__(self, args: EngineArgs, governor: StepGovernor | None = None, profile: PowerProfile | None = None,
                 slo_ttft_s: float | None = None, slo_tpot_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic, decode_share: Share = None,
                 idle_wait_s: float = 0.05, start_timeout_s: float = 120.0,
                 side: Literal["process", "thread"] | None = None, compute: ComputeSplit | None = None) -> None:
        device = torch.device(args.device)
        side = side or ("process" if device.type == "cpu" else "thread")
        if side not in ("process", "thread"):
            raise UsageError(f"prefill side {side!r}; allowed: process, thread", "side")
        if side == "process" and device.type != "cpu":
            raise UsageError(f"{args.device!r}: a prefill process would need the KV cache over CUDA IPC, which is "
                             "not built; on a GPU the prefill side is a thread on its own stream; allowed: thread",
                             "side")
        if side == "thread" and isinstance(compute, CoreSplit):
            raise UsageError("a core split needs two processes (affinity and threads are per process); allowed "
                             "with a prefill thread: a GPU's SM split, or the shared split", "side")
        super().__init__(args, governor, profile, slo_ttft_s, slo_tpot_s, clock)
        self.idle_wait_s = idle_wait_s
        self.split_note: str | None = None
        """Why the GPU's units are not split into partitions (None when they are, or on a CPU)."""
        if compute is None:
            if device.type == "cuda":
                from wattserve.runtime.engine.sm_split import for_device

                compute, self.split_note = for_device(self.device)
            else:
                compute = CoreSplit() if side == "process" else SharedUnits(device)
        self.compute = compute
        self._inflight: dict[str, Sequence] = {}
        self._aborted: set[str] = set()
        self._outbox: list[StepOutput] = []
        self._probe: ChildInfo | None = None
        self._governed_share: float | None = None
        self.share_pinned = False
        """The control plane pinned the split (SetComputeShare): the governor's shares are ignored."""
        self._prefill_epoch = 0
        self._decided_epoch = 0
        self.prefill_error: str | None = None
        """Why the latest prefill failed, or why the prefill process is gone."""
        self.dead = False
        """The prefill process is gone (died or closed): prompts can no longer start."""
        self.prefill_pid: int | None = None
        """The pid that ran the latest prefill, as that process reported it."""
        self.prefills = 0
        self.prefill_busy_s = 0.0
        self.closed = False
        if side == "process":
            self.model.share_memory()
            for t in (self.model.rotary.cos, self.model.rotary.sin, *self.cache.k, *self.cache.v):
                t.share_memory_()
        self.decode_units, self.prefill_units = self.split(decode_share)
        self.pinned = compute.enter("decode", self.decode_units)
        job_r, self._jobs = multiprocessing.Pipe(duplex=False)
        self._results, result_w = multiprocessing.Pipe(duplex=False)
        spec = ChildSpec(self.model, self.cache.k, self.cache.v, self.cache.num_blocks, self.cache.block_size,
                          args.max_num_seqs, args.max_batched_tokens, compute, self.prefill_units)
        self._side: PrefillSide = (ProcessSide if side == "process" else ThreadSide)(spec, job_r, result_w)
        self.child = self._await_ready(start_timeout_s)
        """What the prefill side reported when it started."""

    # ---- the prefill process ----
    def _await_ready(self, timeout_s: float) -> ChildInfo:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if self._results.poll(0.2):
                    msg = self._results.recv()
                    if msg[0] == "ready":
                        return msg[1]
            except (EOFError, OSError):
                break
            if not self._side.alive():
                break
        code = self._stop_child()
        self._release_compute()
        raise RuntimeError(f"the prefill {self._side.kind} did not start (exit code {code})")

    @property
    def units(self) -> Part:
        """The units both sides divide (cores: this process's affinity when the engine started)."""
        return self.compute.units

    @property
    def side(self) -> str:
        """Where the prefill side runs: "process" or "thread"."""
        return self._side.kind

    @property
    def child_pid(self) -> int | None:
        return self._side.pid

    def child_alive(self) -> bool:
        return self._side.alive()

    def _send(self, msg: tuple[Any, ...]) -> bool:
        if self.dead:
            return False
        try:
            self._jobs.send(msg)
        except OSError:
            self._child_died()
            return False
        return True

    def _poll(self, timeout: float) -> bool:
        """Handle every message the prefill process has sent, waiting up to `timeout` for the
        first; a closed pipe or a dead process fails its pending prompts. True if anything came."""
        if self.dead:
            return False
        got = False
        try:
            while self._results.poll(timeout):
                self._handle(self._results.recv())
                got = True
                timeout = 0
        except (EOFError, OSError):
            self._child_died()
            return True
        if not got and not self._side.alive():
            self._child_died()
            return True
        return got

    def _handle(self, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "probe":
            self._probe = msg[1]
            return
        self._prefill_epoch += 1
        if kind == "failed":
            _, pid, ids, why = msg
            self.prefill_error = f"prefill in process {pid} failed: {why}"
            for seq_id in ids:
                seq = self._inflight.pop(seq_id, None)
                if seq is not None:
                    self._fail(seq)
            return
        _, pid, results, busy = msg
        self.prefill_pid = pid
        self.prefill_busy_s += busy
        for r in results:
            seq = self._inflight.pop(r.seq_id, None)
            if seq is None:
                continue
            self.prefills += 1
            if r.seq_id in self._aborted:
                self._aborted.discard(r.seq_id)
                self.cache.release(seq.block_table)
                continue
            self._first_token(seq, r)

    def _first_token(self, seq: Sequence, r: PrefillResult) -> None:
        seq.num_computed = len(seq.token_ids)
        self.tokens_computed += seq.num_computed
        seq.token_ids.append(r.token)
        if r.gen_state is not None and seq.generator is not None:
            set_gen_state(seq.generator, r.gen_state)
        out = self._after_token(seq, r.token)
        out.logprob = r.logprob
        if not out.finished:
            seq.status = Status.RUNNING
            self.scheduler.running.append(seq)
        self._outbox.append(out)

    def _fail(self, seq: Sequence) -> None:
        """End a prompt whose prefill cannot run; its blocks are free once no process writes them."""
        self.cache.release(seq.block_table)
        if seq.seq_id in self._aborted:
            self._aborted.discard(seq.seq_id)
            return
        self.seqs.pop(seq.seq_id, None)
        seq.status = Status.FINISHED
        seq.finish_reason = "error"
        self._outbox.append(StepOutput(seq.seq_id, None, True, "error", seq.num_generated))

    def _child_died(self) -> None:
        if self.dead:
            return
        self.dead = True
        self.prefill_error = self._side.describe()
        self._close_pipes()
        self._drop_pending()

    def _drop_pending(self) -> None:
        for seq in self._inflight.values():
            self._fail(seq)
        self._inflight.clear()
        self._aborted.clear()
        while self.scheduler.waiting:
            self._fail(self.scheduler.waiting.popleft())

    def _close_pipes(self) -> None:
        for conn in (self._jobs, self._results):
            with contextlib.suppress(OSError):
                conn.close()

    def _stop_child(self, timeout_s: float = 5.0) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            self._jobs.send(("stop",))
        self._close_pipes()
        return self._side.stop(timeout_s)

    def _release_compute(self) -> None:
        """This side gets the whole device back; a GPU's partition pool is destroyed."""
        self.compute.restore()
        close = getattr(self.compute, "close", None)
        if close is not None:
            close()

    def probe(self, slot: int | None = None, timeout_s: float = 30.0) -> ChildInfo:
        """Ask the prefill side for its pid, threads and units, as of its next step boundary (and
        layer 0's K at cache `slot`, as it reads it)."""
        self._probe = None
        if not self._send(("probe", slot)):
            raise RuntimeError(self.prefill_error)
        deadline = time.monotonic() + timeout_s
        while self._probe is None:
            if self.dead:
                raise RuntimeError(self.prefill_error)
            if time.monotonic() > deadline:
                raise TimeoutError(f"the prefill {self._side.kind} did not answer within {timeout_s} s")
            self._poll(0.1)
        return self._probe

    # ---- compute shares ----
    def split(self, share: Share) -> tuple[Part, Part]:
        """(decode units, prefill units) for a share (compute_split.split_units)."""
        return split_units(self.units, share)

    def set_decode_share(self, share: Share) -> None:
        """Give decode `share` of the units and prefill the rest (RAPID-Serve's resource manager):
        this side at once (it is between steps), the prefill side at its next step boundary."""
        self.decode_units, self.prefill_units = self.split(share)
        self.pinned = self.compute.enter("decode", self.decode_units)
        self._send(("share", self.prefill_units))

    def _govern(self, batch: list[tuple[Sequence, int]], fresh: bool = False) -> None:
        """LLMEngine's governor call, also asked again when a prefill starts or ends (a boundary of
        the other stream)."""
        super()._govern(batch, fresh or self._decided_epoch != self._prefill_epoch)

    def pin_share(self, share: Share) -> None:
        """The control plane's split (SetComputeShare), applied now and held over the governor's
        answers until the next pin, as the simulator's ConcurrentInstance.pin_share holds it."""
        self.share_pinned = True
        self.set_decode_share(share)

    def _decided(self, decision: StepDecision) -> None:
        """Apply the decision's `decode_share` whenever it changes, unless the control plane pinned
        one; in-flight prompts count as queued in the view (`_queued`)."""
        self._decided_epoch = self._prefill_epoch
        if self.share_pinned:
            return
        if decision.decode_share != self._governed_share:
            self._governed_share = decision.decode_share
            self.set_decode_share(None if decision.decode_share is None else float(decision.decode_share))

    def _queued(self) -> Iterable[Sequence]:
        return [*self.scheduler.waiting, *self._inflight.values()]

    # ---- requests ----
    def add(self, seq_id: str, token_ids: list[int], params: SamplingParams, prefill_only: bool = False) -> None:
        if self.dead:
            raise RuntimeError(f"cannot prefill {seq_id!r}: {self.prefill_error}")
        if seq_id in self._inflight:
            raise ValueError(f"request id {seq_id!r} is already in the engine")
        super().add(seq_id, token_ids, params, prefill_only)

    def abort(self, seq_id: str) -> bool:
        """An in-flight prompt keeps its blocks until the prefill process is done writing them."""
        seq = self._inflight.get(seq_id)
        if seq is None or seq_id in self._aborted:
            return super().abort(seq_id)
        self.seqs.pop(seq_id, None)
        seq.status = Status.FINISHED
        seq.finish_reason = "abort"
        self._aborted.add(seq_id)
        return True

    def take(self, seq_id: str) -> tuple[list[int], int, SamplingParams, torch.Tensor]:
        if seq_id in self._inflight:
            raise ValueError(f"request id {seq_id!r} is being prefilled; take it after its first token")
        return super().take(seq_id)

    def has_work(self) -> bool:
        return bool(self.scheduler.running or self.scheduler.waiting or self._inflight or self._outbox)

    @property
    def prefilling(self) -> int:
        """Prompts sent to the prefill process whose first token has not come back."""
        return len(self._inflight)

    # ---- one iteration ----
    def _dispatch(self) -> None:
        """Hand waiting prompts their blocks and send them to the prefill process, admitting as
        the scheduler does (a sequence slot, and one spare block per running sequence)."""
        waiting = self.scheduler.waiting
        if self.dead:
            while waiting:
                self._fail(waiting.popleft())
            return
        while waiting:
            seq = waiting[0]
            busy = len(self.scheduler.running) + len(self._inflight)
            n = len(seq.token_ids)
            if busy >= self.args.max_num_seqs:
                break
            if self.cache.blocks_for(n) - len(seq.block_table) + busy > len(self.cache.free):
                break
            waiting.popleft()
            self.cache.grow(seq.block_table, n)
            seq.status = Status.RUNNING
            self._inflight[seq.seq_id] = seq
            self._prefill_epoch += 1
            job = PrefillJob(seq.seq_id, list(seq.token_ids), seq.prompt_len, seq.params, list(seq.block_table),
                              gen_state(seq.generator))
            if not self._send(("prefill", job)):
                return

    def _decode_batch(self) -> list[tuple[Sequence, int]]:
        """One token for every running sequence, preempting the newest (recompute, as the
        scheduler does) when blocks run out; a preempted sequence is prefilled again by the prefill
        process, never here."""
        running = self.scheduler.running
        batch: list[tuple[Sequence, int]] = []
        for seq in list(running):
            if seq.status is not Status.RUNNING:
                continue
            while not self.cache.can_grow(seq.block_table, seq.num_computed + 1):
                victim = running[-1]
                self.scheduler.preempt(victim)
                if victim is seq:
                    break
            if seq.status is not Status.RUNNING:
                continue
            self.cache.grow(seq.block_table, seq.num_computed + 1)
            batch.append((seq, 1))
        return batch

    def _decode(self) -> list[StepOutput]:
        batch = self._decode_batch()
        return self._run_batch(batch) if batch else []

    def step(self) -> list[StepOutput]:
        """One decode iteration, with the prefill process working beside it: this iteration's
        decode tokens, then the first tokens of the prefills that finished meanwhile (their
        sequences decode from the next step on). With nothing to decode it waits up to
        `idle_wait_s` for a prefill, so a caller's loop does not spin."""
        if self.closed:
            raise RuntimeError("the engine is closed")
        self._dispatch()
        outputs, self._outbox = self._outbox, []
        outputs += self._decode()
        self._poll(self.idle_wait_s if not outputs and self._inflight else 0.0)
        outputs += self._outbox
        self._outbox = []
        self._dispatch()
        return outputs

    # ---- shutdown ----
    def close(self) -> None:
        """Stop the prefill side, free what it was prefilling, and give this side the whole device
        back."""
        if self.closed:
            return
        self.closed = True
        self.dead = True
        self._stop_child()
        if self.prefill_error is None:
            self.prefill_error = "the engine is closed"
        for seq in self._inflight.values():
            self.cache.release(seq.block_table)
        self._inflight.clear()
        self._aborted.clear()
        self._release_compute()

    def __enter__(self) -> ConcurrentEngine:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
