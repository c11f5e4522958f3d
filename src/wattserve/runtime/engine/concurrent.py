"""Concurrent prefill and decode in two CPU processes over one shared model and KV cache, after
RAPID-Serve ("RAPID-Serve: Resource-efficient and Accelerated P/D Intra-GPU Disaggregation",
Masood, Gaur, Jayasena, arXiv 2601.11822).

RAPID-Serve keeps prefill and decode on the same device but in separate processes, so a long
prompt never stalls the decode batch (as chunked prefill would have to) and no KV cache moves (as
disaggregation across devices would have to). Both processes map the same model weights and the
same paged KV cache. The decode process owns block allocation, so the two never contend for the free
list and need no locks: it hands a new prompt its blocks, the prefill process runs the whole prompt
(no chunking) and writes K/V straight into those blocks, then sends back the first token. A
resource manager sets each process's share of the compute units at step boundaries; on a CPU a
share is a set of cores (`os.sched_setaffinity`) and a matching `torch.set_num_threads`.

Here the decode process is the caller's (`ConcurrentEngine`, an `LLMEngine` whose scheduler never
admits a prompt itself) and the prefill process is one spawned child (`_prefill_main`).
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any

import torch
import torch.multiprocessing as torch_mp

from wattserve.errors import UsageError
from wattserve.runtime.engine.engine import EngineArgs, LLMEngine, StepOutput
from wattserve.runtime.engine.kv_cache import KVCache
from wattserve.runtime.engine.model_runner import ModelRunner
from wattserve.runtime.engine.sampler import TokenLogprob
from wattserve.runtime.engine.sequence import SamplingParams, Sequence, Status
from wattserve.runtime.engine.step_view import PowerProfile
from wattserve.runtime.models.llama import LlamaForCausalLM
from wattserve.seam.governor import StepDecision, StepGovernor

Share = int | float | None
"""A decode share: an int is a number of cores, a float in (0, 1] a fraction of them, None all of
them for both processes (RAPID-Serve's "overallocation")."""


@dataclass(frozen=True)
class ChildInfo:
    """What the prefill process reports about itself (at start and when probed)."""

    pid: int
    threads: int
    """`torch.get_num_threads()` in the prefill process."""
    cores: tuple[int, ...]
    """The cores its threads may run on (`os.sched_getaffinity`)."""
    pinned: bool
    """Whether setting the affinity worked (False: the share is a thread count only)."""
    weights_shared: bool
    """Every model parameter lives in shared memory (mapped, not copied)."""
    kv_shared: bool
    """Every KV cache tensor lives in shared memory."""
    k_row: list[list[float]] | None = None
    """Layer 0's K at the probed cache slot, as the prefill process reads it."""


@dataclass(frozen=True)
class _ChildSpec:
    model: LlamaForCausalLM
    k: list[torch.Tensor]
    v: list[torch.Tensor]
    num_blocks: int
    block_size: int
    max_num_seqs: int
    max_batched_tokens: int
    threads: int
    cores: tuple[int, ...]


@dataclass(frozen=True)
class _PrefillJob:
    seq_id: str
    token_ids: list[int]
    prompt_len: int
    params: SamplingParams
    block_table: list[int]
    gen_state: bytes | None


@dataclass(frozen=True)
class _PrefillResult:
    seq_id: str
    token: int
    logprob: TokenLogprob | None
    gen_state: bytes | None


def _pin(cores: tuple[int, ...]) -> bool:
    """Restrict every thread of this process to `cores`: `os.sched_setaffinity(0, ...)` moves only the
    calling thread, and torch's worker threads already exist. False when the OS refuses."""
    if not hasattr(os, "sched_setaffinity"):
        return False
    try:
        os.sched_setaffinity(0, cores)
    except (OSError, ValueError):
        return False
    with contextlib.suppress(OSError):
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError, ValueError):
                os.sched_setaffinity(int(tid), cores)
    return True


def _apply_share(threads: int, cores: tuple[int, ...]) -> bool:
    """One process's compute share on a CPU (RAPID-Serve's CU mask, arXiv 2601.11822): its cores,
    then as many intra-op threads as cores, so new threads start inside the mask."""
    pinned = _pin(cores)
    torch.set_num_threads(max(1, threads))
    return pinned


def _affinity() -> tuple[int, ...]:
    if hasattr(os, "sched_getaffinity"):
        return tuple(sorted(os.sched_getaffinity(0)))
    return tuple(range(os.cpu_count() or 1))


def _gen_state(gen: torch.Generator | None) -> bytes | None:
    return None if gen is None else gen.get_state().numpy().tobytes()


def _set_gen_state(gen: torch.Generator, state: bytes) -> None:
    gen.set_state(torch.frombuffer(bytearray(state), dtype=torch.uint8))


class _PrefillWorker:
    """The prefill process's state: the shared model and cache, and a `ModelRunner` over them. It
    never allocates a block (RAPID-Serve's decode side owns the free list), so its cache's free
    list is empty."""

    def __init__(self, spec: _ChildSpec) -> None:
        self.spec = spec
        self.model = spec.model.eval()
        self.cache = KVCache(self.model.cfg, spec.num_blocks, spec.block_size, torch.device("meta"), spec.k[0].dtype)
        self.cache.k, self.cache.v = spec.k, spec.v
        self.cache.device = torch.device("cpu")
        self.cache.free.clear()
        self.runner = ModelRunner(self.model, self.cache, torch.device("cpu"), spec.max_num_seqs, cuda_graphs=False)
        self.pinned = _apply_share(spec.threads, spec.cores)

    def info(self, slot: int | None) -> ChildInfo:
        row = None if slot is None else self.cache.k[0][slot].tolist()
        return ChildInfo(os.getpid(), torch.get_num_threads(), _affinity(), self.pinned,
                         all(p.is_shared() for p in self.model.parameters()),
                         all(t.is_shared() for t in [*self.cache.k, *self.cache.v]), row)

    def prefill(self, jobs: list[_PrefillJob]) -> tuple[Any, ...]:
        """Whole prompts in one forward (RAPID-Serve does not chunk prefill), K/V written into the
        blocks the decode process gave them, and each prompt's first token."""
        t0 = time.perf_counter()
        seqs = []
        for j in jobs:
            gen = None
            if j.gen_state is not None:
                gen = torch.Generator(device="cpu")
                _set_gen_state(gen, j.gen_state)
            seqs.append(Sequence(j.seq_id, list(j.token_ids), j.prompt_len, j.params,
                                 block_table=list(j.block_table), generator=gen))
        try:
            sampled = self.runner.run([(s, len(s.token_ids)) for s in seqs])
        except Exception as e:
            return ("failed", os.getpid(), [j.seq_id for j in jobs], f"{type(e).__name__}: {e}")
        out = [_PrefillResult(s.seq_id, tok, lp, _gen_state(s.generator)) for s, tok, lp in sampled]
        return ("done", os.getpid(), out, time.perf_counter() - t0)

    def serve(self, inbox: queue.Queue[tuple[Any, ...] | None], results: Connection) -> None:
        """Step boundaries are between prefill batches: share changes and probes queued during a
        batch take effect after it, as RAPID-Serve changes CU masks only between kernels' steps."""
        pending: list[_PrefillJob] = []
        while True:
            msgs = [] if pending else [inbox.get()]
            with contextlib.suppress(queue.Empty):
                while True:
                    msgs.append(inbox.get_nowait())
            for msg in msgs:
                if msg is None or msg[0] == "stop":
                    return
                if msg[0] == "prefill":
                    pending.append(msg[1])
                elif msg[0] == "share":
                    self.pinned = _apply_share(msg[1], msg[2])
                elif msg[0] == "probe":
                    results.send(("probe", self.info(msg[1])))
            if pending:
                batch, tokens = [], 0
                while pending and (not batch or tokens + len(pending[0].token_ids) <= self.spec.max_batched_tokens):
                    job = pending.pop(0)
                    batch.append(job)
                    tokens += len(job.token_ids)
                results.send(self.prefill(batch))


def _pump(conn: Connection, inbox: queue.Queue[tuple[Any, ...] | None]) -> None:
    """Always drain the decode process's messages, so its sends never block on a busy prefill; EOF
    (the decode process closed the pipe or died) ends the prefill process."""
    try:
        while True:
            inbox.put(conn.recv())
    except (EOFError, OSError):
        inbox.put(None)


def _prefill_main(spec: _ChildSpec, jobs: Connection, results: Connection) -> None:
    """Entry point of the prefill process: rebuild nothing but a runner around the shared model and
    KV tensors, report, then prefill until told to stop or the decode process goes away. It then
    exits without interpreter teardown, which takes seconds with torch loaded and has nothing left
    to do: the pipes are closed and the shared tensors belong to the decode process."""
    inbox: queue.Queue[tuple[Any, ...] | None] = queue.Queue()
    threading.Thread(target=_pump, args=(jobs, inbox), daemon=True, name="prefill-inbox").start()
    worker = _PrefillWorker(spec)
    try:
        results.send(("ready", worker.info(None)))
        worker.serve(inbox, results)
    except (BrokenPipeError, ConnectionResetError, EOFError):
        pass
    finally:
        results.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


class ConcurrentEngine(LLMEngine):
    """An `LLMEngine` whose prompts are prefilled by a second process while this one decodes
    (RAPID-Serve, arXiv 2601.11822).

    This process is the decode side: it owns the scheduler's running batch and every KV block.
    `add` queues a prompt; at the next step boundary it gets its blocks and goes to the prefill
    process, which writes its K/V into the shared cache and returns its first token; the sequence
    then joins the decode batch with its whole prompt computed. `step()` runs one decode iteration
    and collects finished prefills without waiting for them (it waits up to `idle_wait_s` only when
    there is nothing to decode). `set_decode_share` or a governor's `StepDecision.decode_share`
    splits the cores between the two processes; whichever changed the share last wins.

    If the prefill process dies, its pending prompts finish with finish_reason "error" (the cause is
    in `prefill_error`), new prompts are refused, and decoding what is running goes on. `close()`
    (or leaving a `with` block) stops it; it also exits when this process closes the pipe or dies.

    The prefill process is started with multiprocessing's spawn method, so a script that builds
    this engine needs the `if __name__ == "__main__":` guard, and a daemonic process (a
    multiprocessing worker started with daemon=True) cannot build one."""

    def __init__(self, args: EngineArgs, governor: StepGovernor | None = None, profile: PowerProfile | None = None,
                 slo_ttft_s: float | None = None, slo_tpot_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic, decode_share: Share = None,
                 idle_wait_s: float = 0.05, start_timeout_s: float = 120.0) -> None:
        if torch.device(args.device).type != "cpu":
            raise UsageError(f"{args.device!r}: the concurrent engine shares cores between two processes and "
                             "runs on the CPU only; allowed: cpu", "device")
        super().__init__(args, governor, profile, slo_ttft_s, slo_tpot_s, clock)
        self.idle_wait_s = idle_wait_s
        self.cores = _affinity()
        """The cores both processes divide (this process's affinity when the engine started)."""
        self._orig_threads = torch.get_num_threads()
        self._inflight: dict[str, Sequence] = {}
        self._aborted: set[str] = set()
        self._outbox: list[StepOutput] = []
        self._probe: ChildInfo | None = None
        self._governed_share: float | None = None
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
        self.model.share_memory()
        for t in (self.model.rotary.cos, self.model.rotary.sin, *self.cache.k, *self.cache.v):
            t.share_memory_()
        self.decode_cores, self.prefill_cores = self.split(decode_share)
        self.pinned = _apply_share(len(self.decode_cores), self.decode_cores)
        ctx = torch_mp.get_context("spawn")
        job_r, self._jobs = ctx.Pipe(duplex=False)
        self._results, result_w = ctx.Pipe(duplex=False)
        spec = _ChildSpec(self.model, self.cache.k, self.cache.v, self.cache.num_blocks, self.cache.block_size,
                          args.max_num_seqs, args.max_batched_tokens, len(self.prefill_cores), self.prefill_cores)
        self._proc = ctx.Process(target=_prefill_main, args=(spec, job_r, result_w), daemon=True,
                                 name="wattserve-prefill")
        self._proc.start()
        job_r.close()
        result_w.close()
        self.child = self._await_ready(start_timeout_s)
        """What the prefill process reported when it started."""

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
            if not self._proc.is_alive():
                break
        code = self._stop_child()
        _apply_share(self._orig_threads, self.cores)
        raise RuntimeError(f"the prefill process did not start (exit code {code})")

    @property
    def child_pid(self) -> int | None:
        return self._proc.pid

    def child_alive(self) -> bool:
        return self._proc.is_alive()

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
        if not got and not self._proc.is_alive():
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

    def _first_token(self, seq: Sequence, r: _PrefillResult) -> None:
        seq.num_computed = len(seq.token_ids)
        self.tokens_computed += seq.num_computed
        seq.token_ids.append(r.token)
        if r.gen_state is not None and seq.generator is not None:
            _set_gen_state(seq.generator, r.gen_state)
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
        self._proc.join(1.0)
        self.prefill_error = f"the prefill process (pid {self._proc.pid}) died, exit code {self._proc.exitcode}"
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
        self._proc.join(timeout_s)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(timeout_s)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(timeout_s)
        return self._proc.exitcode

    def probe(self, slot: int | None = None, timeout_s: float = 30.0) -> ChildInfo:
        """Ask the prefill process for its pid, threads and cores, as of its next step boundary (and
        layer 0's K at cache `slot`, as it reads it)."""
        self._probe = None
        if not self._send(("probe", slot)):
            raise RuntimeError(self.prefill_error)
        deadline = time.monotonic() + timeout_s
        while self._probe is None:
            if self.dead:
                raise RuntimeError(self.prefill_error)
            if time.monotonic() > deadline:
                raise TimeoutError(f"the prefill process did not answer within {timeout_s} s")
            self._poll(0.1)
        return self._probe

    # ---- compute shares ----
    def split(self, share: Share) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(decode cores, prefill cores) for a share. Each side gets at least one core; with fewer
        cores than that, or None, they overlap (overallocation)."""
        cores = self.cores
        if share is None:
            return cores, cores
        if isinstance(share, bool) or not isinstance(share, int | float):
            raise TypeError(f"decode share: {share!r} is not a core count, a fraction or None")
        if isinstance(share, float):
            if not 0.0 < share <= 1.0:
                raise ValueError(f"decode share: fraction {share} is not in (0, 1]")
            n = max(1, round(share * len(cores)))
        else:
            if share < 1:
                raise ValueError(f"decode share: {share} cores; at least 1")
            n = share
        n = min(n, len(cores))
        return cores[:n], cores[n:] or cores[-1:]

    def set_decode_share(self, share: Share) -> None:
        """Give decode `share` of the cores and prefill the rest (RAPID-Serve's resource manager):
        this process at once (it is between steps), the prefill process at its next step
        boundary."""
        self.decode_cores, self.prefill_cores = self.split(share)
        self.pinned = _apply_share(len(self.decode_cores), self.decode_cores)
        self._send(("share", len(self.prefill_cores), self.prefill_cores))

    def _govern(self, batch: list[tuple[Sequence, int]], fresh: bool = False) -> None:
        """LLMEngine's governor call, also asked again when a prefill starts or ends (a boundary of
        the other stream)."""
        super()._govern(batch, fresh or self._decided_epoch != self._prefill_epoch)

    def _decided(self, decision: StepDecision) -> None:
        """Apply the decision's `decode_share` whenever it changes; in-flight prompts count as
        queued in the view (`_queued`)."""
        self._decided_epoch = self._prefill_epoch
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
            job = _PrefillJob(seq.seq_id, list(seq.token_ids), seq.prompt_len, seq.params, list(seq.block_table),
                              _gen_state(seq.generator))
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
        """Stop the prefill process, free what it was prefilling, and give this process its cores
        and threads back."""
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
        _apply_share(self._orig_threads, self.cores)

    def __enter__(self) -> ConcurrentEngine:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
