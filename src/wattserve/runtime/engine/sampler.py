"""Greedy, temperature and nucleus (top-p, Holtzman et al., 2020) sampling, seeded per request."""

from __future__ import annotations

import torch

from wattserve.runtime.engine.sequence import SamplingParams


def sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """logits: [vocab] float32."""
    if params.temperature <= 0.0:
        return int(torch.argmax(logits).item())
    probs = torch.softmax(logits / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_p, idx = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_p, dim=-1) - sorted_p < params.top_p
        sorted_p = torch.where(keep, sorted_p, torch.zeros_like(sorted_p))
        choice = torch.multinomial(sorted_p.cpu() / sorted_p.sum().cpu(), 1, generator=generator)
        return int(idx[choice.to(idx.device)].item())
    return int(torch.multinomial(probs.cpu(), 1, generator=generator).item())
