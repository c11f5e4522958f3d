"""Attention over a paged KV cache.

Each sequence's keys and values live in fixed-size blocks anywhere in one cache tensor; a block table
maps its positions to slots (as in vLLM's PagedAttention, Kwon et al., SOSP 2023). New tokens' K/V
are scattered into their slots, then each sequence attends to its own gathered context with
PyTorch's scaled_dot_product_attention (FlashAttention or memory-efficient kernels on CUDA).
A chunk of queries at context offset c attends causally: query i sees keys 0..c+i.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from wattserve.runtime.layers.rotary import Rotary


@dataclass
class SeqSlice:
    q_start: int
    q_len: int
    context: int
    slots: torch.Tensor
    """Cache slots of positions 0 .. context + q_len - 1."""


@dataclass
class DecodeBatch:
    """Single-token queries, attended in one batched call: their row in the step's tokens, their
    context's cache slots padded to the longest, and which padded keys are real."""

    rows: torch.Tensor
    slots: torch.Tensor
    valid: torch.Tensor


@dataclass
class AttnMetadata:
    positions: torch.Tensor
    slot_mapping: torch.Tensor
    seqs: list[SeqSlice]
    """Sequences with more than one query token (prefill chunks), attended one by one."""
    decode: DecodeBatch | None = None


class PagedAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, kv_heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.q_proj = nn.Linear(hidden, heads * head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(heads * head_dim, hidden, bias=False)

    def forward(self, x: torch.Tensor, meta: AttnMetadata, rotary: Rotary, k_cache: torch.Tensor,
                v_cache: torch.Tensor) -> torch.Tensor:
        t = x.shape[0]
        q = rotary.apply(self.q_proj(x).view(t, self.heads, self.head_dim), meta.positions)
        k = rotary.apply(self.k_proj(x).view(t, self.kv_heads, self.head_dim), meta.positions)
        v = self.v_proj(x).view(t, self.kv_heads, self.head_dim)
        k_cache[meta.slot_mapping] = k.to(k_cache.dtype)
        v_cache[meta.slot_mapping] = v.to(v_cache.dtype)
        gqa = self.heads != self.kv_heads
        out = torch.empty_like(q)
        for s in meta.seqs:
            keys = k_cache[s.slots].to(q.dtype).transpose(0, 1)
            vals = v_cache[s.slots].to(q.dtype).transpose(0, 1)
            qs = q[s.q_start:s.q_start + s.q_len].transpose(0, 1)
            kpos = torch.arange(s.context + s.q_len, device=x.device)
            qpos = torch.arange(s.context, s.context + s.q_len, device=x.device)
            mask = kpos.unsqueeze(0) <= qpos.unsqueeze(1)
            o = F.scaled_dot_product_attention(qs, keys, vals, attn_mask=mask, enable_gqa=gqa)
            out[s.q_start:s.q_start + s.q_len] = o.transpose(0, 1)
        d = meta.decode
        if d is not None:
            keys = k_cache[d.slots].to(q.dtype).transpose(1, 2)
            vals = v_cache[d.slots].to(q.dtype).transpose(1, 2)
            qd = q[d.rows].unsqueeze(2)
            o = F.scaled_dot_product_attention(qd, keys, vals, attn_mask=d.valid[:, None, None, :], enable_gqa=gqa)
            out[d.rows] = o.squeeze(2)
        return self.o_proj(out.reshape(t, self.heads * self.head_dim))
