"""Continuous batching with chunked prefill, as vLLM's V1 scheduler does it.

Each step has a token budget. Running sequences go first (a decode costs one token, an unfinished
prefill continues with a chunk), then waiting sequences are admitted while the budget, the
sequence limit and free KV blocks allow. When a running sequence cannot get a block, the newest
running sequence is preempted: its blocks are freed and it is recomputed later (vLLM's recompute
preemption).
"""

from __future__ import annotations

from collections import deque

from wattserve.runtime.engine.kv_cache import KVCache
from wattserve.runtime.engine.sequence import Sequence, Status


class Scheduler:
    def __init__(self, cache: KVCache, max_num_seqs: int, max_batched_tokens: int) -> None:
        self.cache = cache
        self.max_num_seqs = max_num_seqs
        self.max_batched_tokens = max_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.preemptions = 0

    def preempt(self, seq: Sequence) -> None:
        """Recompute preemption, as vLLM: free the sequence's blocks and queue it first to be
        prefilled again (prompt plus what it generated)."""
        self.running.remove(seq)
        self.cache.release(seq.block_table)
        seq.num_computed = 0
        seq.status = Status.WAITING
        seq.preemptions += 1
        self.preemptions += 1
        self.waiting.appendleft(seq)

    def schedule(self) -> list[tuple[Sequence, int]]:
        budget = self.max_batched_tokens
        batch: list[tuple[Sequence, int]] = []
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            n = min(seq.uncomputed, budget)
            if n <= 0:
                i += 1
                continue
            while not self.cache.can_grow(seq.block_table, seq.num_computed + n):
                victim = self.running[-1]
                self.preempt(victim)
                if victim is seq:
                    break
            if seq.status is Status.WAITING:
                continue
            self.cache.grow(seq.block_table, seq.num_computed + n)
            batch.append((seq, n))
            budget -= n
            i += 1
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            n = min(seq.uncomputed, budget)
            headroom = len(self.running)
            if self.cache.blocks_for(seq.num_computed + n) - len(seq.block_table) + headroom > len(self.cache.free):
                break
            self.waiting.popleft()
            seq.status = Status.RUNNING
            self.running.append(seq)
            self.cache.grow(seq.block_table, seq.num_computed + n)
            batch.append((seq, n))
            budget -= n
        return batch

    def remove(self, seq: Sequence) -> None:
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.cache.release(seq.block_table)
