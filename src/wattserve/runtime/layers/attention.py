"""Attention over a paged KV cache.

Each sequence's keys and values live in fixed-size blocks anywhere in one cache tensor; a block table
maps its positions to blocks (vLLM's PagedAttention, Kwon et al., SOSP 2023). New tokens' K/V are
scattered into their slots; attention then reads the cache a whole block at a time through the
block table, viewing each layer's cache as [num_blocks, block_size, kv_heads, head_dim] (as
nano-vllm hands block tables to flash-attn's `flash_attn_with_kvcache`; `index_select` of whole
blocks, which on CPU measured about 3x faster than advanced indexing), with PyTorch's
scaled_dot_product_attention doing the math.

Decode rows (one query each) come first in a step and are attended in one batched call. Grouped
query heads are folded into the query length (the `rep` query heads of one KV head become `rep`
query rows against that head's keys, as FlashInfer and vLLM pack GQA), so keys and values are never
repeated per query head. A prefill chunk at context offset c attends causally: query i sees keys
0..c+i; a first chunk (c = 0) attends to its own fresh K/V without reading the cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class PrefillSlice:
    q_start: int
    q_len: int
    context: int
    blocks: torch.Tensor | None
    """Blocks holding positions 0 .. context + q_len - 1 (None when context is 0)."""


@dataclass
class DecodeBatch:
    """The step's first `num` tokens are single-token queries: their block tables (padded to one
    width) and context lengths (the query's own position included)."""

    num: int
    block_tables: torch.Tensor
    context_lens: torch.Tensor


@dataclass
class AttnMetadata:
    positions: torch.Tensor
    slot_mapping: torch.Tensor
    prefills: list[PrefillSlice]
    """Prefill chunks (query tokens after the decode rows), attended one by one."""
    decode: DecodeBatch | None = None


@dataclass
class LayerInputs:
    """What every layer of one forward shares, computed once per forward: the step's metadata, its
    rotary cos/sin rows and the decode rows' additive key mask ([rows, 1, 1, keys]: 0 or -inf)."""

    meta: AttnMetadata
    cos: torch.Tensor
    sin: torch.Tensor
    decode_mask: torch.Tensor | None
    block_size: int


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE; x: [tokens, heads, head_dim], cos/sin: [tokens, 1, head_dim]."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin


class PagedAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, kv_heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.rep = heads // kv_heads
        self.q_proj = nn.Linear(hidden, heads * head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(heads * head_dim, hidden, bias=False)

    def forward(self, x: torch.Tensor, li: LayerInputs, k_cache: torch.Tensor, v_cache: torch.Tensor) -> torch.Tensor:
        t, meta = x.shape[0], li.meta
        q = rope(self.q_proj(x).view(t, self.heads, self.head_dim), li.cos, li.sin)
        k = rope(self.k_proj(x).view(t, self.kv_heads, self.head_dim), li.cos, li.sin)
        v = self.v_proj(x).view(t, self.kv_heads, self.head_dim)
        k_cache[meta.slot_mapping] = k.to(k_cache.dtype)
        v_cache[meta.slot_mapping] = v.to(v_cache.dtype)
        kb = k_cache.view(-1, li.block_size, self.kv_heads, self.head_dim)
        vb = v_cache.view(-1, li.block_size, self.kv_heads, self.head_dim)
        d = meta.decode
        if d is not None and not meta.prefills:
            return self.o_proj(self._decode(q, kb, vb, d, li.decode_mask).reshape(t, -1))
        out = torch.empty_like(q)
        if d is not None:
            out[:d.num] = self._decode(q, kb, vb, d, li.decode_mask)
        for s in meta.prefills:
            out[s.q_start:s.q_start + s.q_len] = self._prefill(q, k, v, kb, vb, s)
        return self.o_proj(out.reshape(t, -1))

    def _decode(self, q: torch.Tensor, kb: torch.Tensor, vb: torch.Tensor, d: DecodeBatch,
                mask: torch.Tensor | None) -> torch.Tensor:
        n, blocks = d.num, d.block_tables.reshape(-1)
        keys = kb.index_select(0, blocks).view(n, -1, self.kv_heads, self.head_dim).transpose(1, 2).to(q.dtype)
        vals = vb.index_select(0, blocks).view(n, -1, self.kv_heads, self.head_dim).transpose(1, 2).to(q.dtype)
        qd = q[:n].view(n, self.kv_heads, self.rep, self.head_dim)
        o = F.scaled_dot_product_attention(qd, keys, vals, attn_mask=mask)
        return o.reshape(n, self.heads, self.head_dim)

    def _prefill(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kb: torch.Tensor, vb: torch.Tensor,
                 s: PrefillSlice) -> torch.Tensor:
        n, rows = s.q_len, slice(s.q_start, s.q_start + s.q_len)
        if s.blocks is None:
            o = F.scaled_dot_product_attention(q[rows].transpose(0, 1), k[rows].transpose(0, 1), v[rows].transpose(0, 1),
                                               is_causal=True, enable_gqa=self.rep > 1)
            return o.transpose(0, 1)
        total = s.context + n
        keys = kb.index_select(0, s.blocks).flatten(0, 1)[:total].transpose(0, 1).to(q.dtype)
        vals = vb.index_select(0, s.blocks).flatten(0, 1)[:total].transpose(0, 1).to(q.dtype)
        qf = q[rows].view(n, self.kv_heads, self.rep, self.head_dim).permute(1, 2, 0, 3).reshape(
            self.kv_heads, self.rep * n, self.head_dim)
        kpos = torch.arange(total, device=q.device)
        qpos = torch.arange(s.context, total, device=q.device)
        mask = (kpos.unsqueeze(0) <= qpos.unsqueeze(1)).repeat(self.rep, 1)
        o = F.scaled_dot_product_attention(qf, keys, vals, attn_mask=mask)
        return o.view(self.kv_heads, self.rep, n, self.head_dim).permute(2, 0, 1, 3).reshape(n, self.heads, self.head_dim)
