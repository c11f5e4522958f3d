"""The paged KV cache: per-layer K and V tensors of num_blocks * block_size slots, and a free list.

One more block than `num_blocks` is allocated and never handed out: `scratch_slot` is where padded
rows of a CUDA-graph decode batch write their K/V (nano-vllm's graphs skip slot -1 inside flash-attn's
store kernel; an index_put has no such skip)."""

from __future__ import annotations

from collections import deque

import torch

from wattserve.runtime.engine.config import ModelConfig


class KVCache:
    def __init__(self, cfg: ModelConfig, num_blocks: int, block_size: int, device: torch.device,
                 dtype: torch.dtype) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        slots = (num_blocks + 1) * block_size
        self.scratch_slot = num_blocks * block_size
        self.k = [torch.zeros(slots, cfg.kv_heads, cfg.head_dim, device=device, dtype=dtype) for _ in range(cfg.layers)]
        self.v = [torch.zeros(slots, cfg.kv_heads, cfg.head_dim, device=device, dtype=dtype) for _ in range(cfg.layers)]
        self.free: deque[int] = deque(range(num_blocks))
        self.device = device

    @property
    def used_blocks(self) -> int:
        return self.num_blocks - len(self.free)

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def can_grow(self, table: list[int], tokens: int) -> bool:
        return self.blocks_for(tokens) - len(table) <= len(self.free)

    def grow(self, table: list[int], tokens: int) -> None:
        """Extend a block table so it holds `tokens` positions (caller checked can_grow)."""
        need = self.blocks_for(tokens) - len(table)
        for _ in range(need):
            table.append(self.free.popleft())

    def release(self, table: list[int]) -> None:
        self.free.extend(table)
        table.clear()

    def slots(self, table: list[int], start: int, end: int) -> torch.Tensor:
        """Cache slots of positions start .. end - 1."""
        pos = torch.arange(start, end)
        blocks = torch.tensor(table, dtype=torch.long)[pos // self.block_size]
        return (blocks * self.block_size + pos % self.block_size).to(self.device)

    def export(self, table: list[int], tokens: int) -> torch.Tensor:
        """K and V of positions 0 .. tokens - 1, as one [layers, 2, tokens, kv_heads, head_dim] CPU tensor."""
        s = self.slots(table, 0, tokens)
        return torch.stack([torch.stack([k[s], v[s]]) for k, v in zip(self.k, self.v)]).cpu()

    def load(self, table: list[int], kv: torch.Tensor) -> None:
        s = self.slots(table, 0, kv.shape[2])
        for layer, (k, v) in enumerate(zip(self.k, self.v)):
            k[s] = kv[layer, 0].to(k.device, k.dtype)
            v[s] = kv[layer, 1].to(v.device, v.dtype)
