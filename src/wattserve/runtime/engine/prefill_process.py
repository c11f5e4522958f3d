"""The prefill side of RAPID-Serve on CPU ("RAPID-Serve: Resource-efficient and Accelerated P/D
Intra-GPU Disaggregation", arXiv 2601.11822): a spawned process that runs a `ModelRunner` over the
decode process's model and KV tensors in shared memory, prefills whole prompts into the blocks it is
given, and sends back each prompt's first token. What crosses the pipes is plain data (the job and
result records below); `ConcurrentEngine` (concurrent.py) is the other end."""

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

from wattserve.runtime.engine.core_share import affinity, apply_share
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
class ChildSpec:
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

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.model = spec.model.eval()
        self.cache = KVCache(self.model.cfg, spec.num_blocks, spec.block_size, torch.device("meta"), spec.k[0].dtype)
        self.cache.k, self.cache.v = spec.k, spec.v
        self.cache.device = torch.device("cpu")
        self.cache.free.clear()
        self.runner = ModelRunner(self.model, self.cache, torch.device("cpu"), spec.max_num_seqs, cuda_graphs=False)
        self.pinned = apply_share(spec.threads, spec.cores)

    def info(self, slot: int | None) -> ChildInfo:
        row = None if slot is None else self.cache.k[0][slot].tolist()
        return ChildInfo(os.getpid(), torch.get_num_threads(), affinity(), self.pinned,
                         all(p.is_shared() for p in self.model.parameters()),
                         all(t.is_shared() for t in [*self.cache.k, *self.cache.v]), row)

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
                    self.pinned = apply_share(msg[1], msg[2])
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
