from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SwiGLU(nn.Module):
    """Llama's gated MLP: down(silu(gate(x)) * up(x))."""

    def __init__(self, hidden: int, ffn: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden, ffn, bias=False)
        self.up_proj = nn.Linear(hidden, ffn, bias=False)
        self.down_proj = nn.Linear(ffn, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class MixtralExpert(nn.Module):
    """One Mixtral expert, with the checkpoint's w1 (gate), w3 (up), w2 (down) names."""

    def __init__(self, hidden: int, ffn: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(hidden, ffn, bias=False)
        self.w3 = nn.Linear(hidden, ffn, bias=False)
        self.w2 = nn.Linear(ffn, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class SparseMoE(nn.Module):
    """Top-k routed experts (Mixtral: softmax over the top-k router logits). Tokens are grouped per
    expert, so each expert runs one matmul over the tokens routed to it.

    With `ep` > 1 the experts are held in `ep` contiguous shards (shard r: experts r*E/ep to
    (r+1)*E/ep - 1), the layout of expert parallelism. The forward then takes the routing shape of an
    expert-parallel step in one process: the (token, expert) assignments are sorted by the shard that
    holds their expert and their hidden states gathered into one send buffer (the dispatch
    all-to-all), each shard runs its own experts over its slice, and the weighted outputs are added
    back to their tokens (the combine). No GPU-to-GPU transfer happens; the output equals ep = 1's."""

    def __init__(self, hidden: int, ffn: int, experts: int, top_k: int, ep: int = 1) -> None:
        super().__init__()
        if ep < 1 or experts % ep:
            raise ValueError(f"ep={ep} must divide the {experts} experts")
        self.top_k = top_k
        self.ep = ep
        self.gate = nn.Linear(hidden, experts, bias=False)
        self.experts = nn.ModuleList([MixtralExpert(hidden, ffn) for _ in range(experts)])

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(weights, chosen experts), both tokens x top_k."""
        logits = self.gate(x)
        weights, chosen = torch.topk(logits, self.top_k, dim=-1)
        return torch.softmax(weights.float(), dim=-1).to(x.dtype), chosen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights, chosen = self.route(x)
        if self.ep > 1:
            return self._expert_parallel(x, weights, chosen)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            token_idx, slot = torch.nonzero(chosen == e, as_tuple=True)
            if token_idx.numel() == 0:
                continue
            out.index_add_(0, token_idx, expert(x[token_idx]) * weights[token_idx, slot].unsqueeze(-1))
        return out

    def _expert_parallel(self, x: torch.Tensor, weights: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        per_shard = len(self.experts) // self.ep
        expert = chosen.reshape(-1)
        token = torch.arange(x.shape[0], device=x.device).repeat_interleave(self.top_k)
        order = torch.argsort(torch.div(expert, per_shard, rounding_mode="floor"), stable=True)
        expert, token, weight = expert[order], token[order], weights.reshape(-1)[order]
        sent = x[token]
        received = torch.empty_like(sent)
        counts = torch.bincount(expert, minlength=len(self.experts)).tolist()
        start = 0
        for shard in range(self.ep):
            end = start + sum(counts[shard * per_shard:(shard + 1) * per_shard])
            self._run_shard(shard * per_shard, per_shard, sent[start:end], expert[start:end], received[start:end])
            start = end
        out = torch.zeros_like(x)
        out.index_add_(0, token, received * weight.unsqueeze(-1))
        return out

    def _run_shard(self, first: int, count: int, xs: torch.Tensor, experts: torch.Tensor, out: torch.Tensor) -> None:
        """One shard's experts over the rows dispatched to it, written into its slice of the combine buffer."""
        for e in range(first, first + count):
            rows = torch.nonzero(experts == e, as_tuple=True)[0]
            if rows.numel():
                out[rows] = self.experts[e](xs[rows])
