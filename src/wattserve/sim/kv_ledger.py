"""The KV ledger of one instance: how many blocks its sequences hold, and whether more fit.

Counting is in tokens with a block-rounding bound, as vLLM's block manager allocates: n sequences
holding T tokens use at most (T + n * (block - 1)) // block blocks. Tokens sit in two pools:
`other` (prompts being prefilled, hand-offs being pulled or waiting to join the batch) and `run`
(the running decode batch, exact at iteration boundaries). The ledger only counts; which request
to admit or preempt is the scheduler's decision.
"""

from __future__ import annotations


class KvLedger:
    __slots__ = ("block_size", "blocks", "other", "run", "seqs", "peak")

    def __init__(self, capacity_tokens: int, block_size: int) -> None:
        self.block_size = block_size
        self.blocks = capacity_tokens // block_size
        self.other = 0
        self.run = 0
        self.seqs = 0
        self.peak = 0

    def used_blocks(self, extra_run_tokens: int = 0) -> int:
        return (self.other + self.run + extra_run_tokens + self.seqs * (self.block_size - 1)) // self.block_size

    def fits(self, tokens: int, running: int) -> bool:
        """Would one more sequence of `tokens` fit, keeping one block of growth for each running decode?"""
        bs = self.block_size
        return (self.other + self.run + tokens + (self.seqs + 1) * (bs - 1)) // bs + running <= self.blocks

    def growth_fits(self, grow: int) -> bool:
        """Does one more iteration, adding `grow` tokens to the running batch, fit?"""
        return self.used_blocks(grow) <= self.blocks

    def iterations_left(self, batch: int) -> int:
        """Decode iterations of a batch of `batch` sequences until the blocks run out."""
        bs = self.block_size
        return ((self.blocks + 1) * bs - 1 - self.other - self.run - self.seqs * (bs - 1)) // batch

    def reserve(self, tokens: int) -> None:
        """A new sequence (an admitted prompt or an incoming hand-off) holds `tokens`."""
        self.other += tokens
        self.seqs += 1
        self.note()

    def release(self, tokens: int) -> None:
        """A sequence outside the running batch frees its `tokens`."""
        self.other -= tokens
        self.seqs -= 1

    def note(self) -> None:
        used = self.used_blocks()
        if used > self.peak:
            self.peak = used
