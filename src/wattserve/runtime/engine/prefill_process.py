"""The prefill side of RAPID-Serve ("RAPID-Serve: Resource-efficient and Accelerated P/D Intra-GPU
Disaggregation", arXiv 2601.11822): a `ModelRunner` over the decode side's model and KV tensors that
prefills whole prompts into the blocks it is given and sends back each prompt's first token. It runs
as a spawned process over tensors in shared memory (CPU: cores are divided per process) or as a thread
of the decode process on its own CUDA stream (`thread_main`; a GPU's partitions are streams). What
crosses the pipes is plain data (the job and result records below); `ConcurrentEngine`
(concurrent.py) is the other end."""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import torch

from wattserve.runtime.engine.compute_split import ComputeSplit, Part
from wattserve.runtime.engine.core_share import affinity
from wattserve.runtime.engine.kv_cache import KVCache
from wattserve.runtime.engine.model_runner import ModelRunner
from wattserve.runtime.engine.sampler import TokenLogprob
from wattserve.runtime.engine.sequence import SamplingParams, Sequence
from wattserve.runtime.models.llama import LlamaForCausalLM


@dataclass(frozen=True)
class ChildInfo:
    """What the prefill process reports about itself (at start and when probed)."""

    pid: int
    threads: int
    """`torch.get_num_threads()` where the prefill side runs."""
    units: tuple[int, ...]
    """The units it runs on: its cores as `os.sched_getaffinity` reports them (CPU), or its part of
    the split (a GPU's SM groups)."""
    pinned: bool
    """Whether entering its part worked (False: on a CPU, the share is a thread count only)."""
    weights_shared: bool
    """Every model parameter is the decode side's own storage (in shared memory, or the same process)."""
    kv_shared: bool
    """Every KV cache tensor is the decode side's own storage."""
    k_row: list[list[float]] | None = None
    """Layer 0's K at the probed cache slot, as the prefill process reads it."""


@dataclass(frozen=True)
class ChildSpec:
    model: LlamaForCausalLM
    k: list[torch.Tensor]
    v: list[torch.Tensor]
    num_blocks: int
    block_size: int
    max_num_seqs: int
    max_batched_tokens: int
    split: ComputeSplit
    part: Part
    """The prefill side's units at start."""


@dataclass(frozen=True)
class PrefillJob:
    seq_id: str
    token_ids: list[int]
    prompt_len: int
    params: SamplingParams
    block_table: list[int]
    gen_state: bytes | None


@dataclass(frozen=True)
class PrefillResult:
    seq_id: str
    token: int
    logprob: TokenLogprob | None
    gen_state: bytes | None


def gen_state(gen: torch.Generator | None) -> bytes | None:
    return None if gen is None else gen.get_state().numpy().tobytes()


def set_gen_state(gen: torch.Generator, state: bytes) -> None:
    gen.set_state(torch.frombuffer(bytearray(state), dtype=torch.uint8))


class PrefillWorker:
    """The prefill process's state: the shared model and cache, and a `ModelRunner` over them. It
    never allocates a block (RAPID-Serve's decode side owns the free list), so its cache's free
    list is empty."""

    def __init__(self, spec: ChildSpec, in_process: bool = False) -> None:
        self.spec = spec
        self.in_process = in_process
        self.model = spec.model.eval()
        device = spec.k[0].device
        self.cache = KVCache(self.model.cfg, spec.num_blocks, spec.block_size, torch.device("meta"), spec.k[0].dtype)
        self.cache.k, self.cache.v = spec.k, spec.v
        self.cache.device = device
        self.cache.free.clear()
        self.runner = ModelRunner(self.model, self.cache, device, spec.max_num_seqs, cuda_graphs=False)
        self.part = spec.part
        self.pinned = spec.split.enter("prefill", spec.part)

    def info(self, slot: int | None) -> ChildInfo:
        row = None if slot is None else self.cache.k[0][slot].tolist()
        units = affinity() if self.spec.split.kind == "cores" else self.part
        weights = self.in_process or all(p.is_shared() for p in self.model.parameters())
        kv = self.in_process or all(t.is_shared() for t in [*self.cache.k, *self.cache.v])
        return ChildInfo(os.getpid(), torch.get_num_threads(), units, self.pinned, weights, kv, row)

    def prefill(self, jobs: list[PrefillJob]) -> tuple[Any, ...]:
        """Whole prompts in one forward (RAPID-Serve does not chunk prefill), K/V written into the
        blocks the decode process gave them, and each prompt's first token."""
        t0 = time.perf_counter()
        seqs = []
        for j in jobs:
            gen = None
            if j.gen_state is not None:
                gen = torch.Generator(device="cpu")
                set_gen_state(gen, j.gen_state)
            seqs.append(Sequence(j.seq_id, list(j.token_ids), j.prompt_len, j.params,
                                 block_table=list(j.block_table), generator=gen))
        try:
            sampled = self.runner.run([(s, len(s.token_ids)) for s in seqs])
        except Exception as e:
            return ("failed", os.getpid(), [j.seq_id for j in jobs], f"{type(e).__name__}: {e}")
        out = [PrefillResult(s.seq_id, tok, lp, gen_state(s.generator)) for s, tok, lp in sampled]
        return ("done", os.getpid(), out, time.perf_counter() - t0)

    def serve(self, inbox: queue.Queue[tuple[Any, ...] | None], results: Connection) -> None:
        """Step boundaries are between prefill batches: share changes and probes queued during a
        batch take effect after it, as RAPID-Serve changes CU masks only between kernels' steps."""
        pending: list[PrefillJob] = []
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
                    self.part = msg[1]
                    self.pinned = self.spec.split.enter("prefill", self.part)
                elif msg[0] == "probe":
                    results.send(("probe", self.info(msg[1])))
            if pending:
                batch, tokens = [], 0
                while pending and (not batch or tokens + len(pending[0].token_ids) <= self.spec.max_batched_tokens):
                    job = pending.pop(0)
                    batch.append(job)
                    tokens += len(job.token_ids)
                results.send(self.prefill(batch))


def pump(conn: Connection, inbox: queue.Queue[tuple[Any, ...] | None]) -> None:
    """Always drain the decode process's messages, so its sends never block on a busy prefill; EOF
    (the decode process closed the pipe or died) ends the prefill process."""
    try:
        while True:
            inbox.put(conn.recv())
    except (EOFError, OSError):
        inbox.put(None)


def prefill_main(spec: ChildSpec, jobs: Connection, results: Connection) -> None:
    """Entry point of the prefill process: rebuild nothing but a runner around the shared model and
    KV tensors, report, then prefill until told to stop or the decode process goes away. It then
    exits without interpreter teardown, which takes seconds with torch loaded and has nothing left
    to do: the pipes are closed and the shared tensors belong to the decode process."""
    inbox: queue.Queue[tuple[Any, ...] | None] = queue.Queue()
    threading.Thread(target=pump, args=(jobs, inbox), daemon=True, name="prefill-inbox").start()
    worker = PrefillWorker(spec)
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


def thread_main(spec: ChildSpec, jobs: Connection, results: Connection) -> None:
    """Entry point of a prefill thread inside the decode process (a GPU: both sides share one CUDA
    context, each on its own stream): the same loop as `prefill_main` over the very same tensors; it
    returns when told to stop or when the decode side closes its end. Its end of the job pipe stays
    open: the inbox pump reads it until the decode side closes the other end."""
    inbox: queue.Queue[tuple[Any, ...] | None] = queue.Queue()
    threading.Thread(target=pump, args=(jobs, inbox), daemon=True, name="prefill-inbox").start()
    try:
        worker = PrefillWorker(spec, in_process=True)
        results.send(("ready", worker.info(None)))
        worker.serve(inbox, results)
    except (BrokenPipeError, ConnectionResetError, EOFError):
        pass
    finally:
        spec.split.restore()
        results.close()
