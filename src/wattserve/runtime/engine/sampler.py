"""Greedy, temperature and nucleus (top-p, Holtzman et al., 2020) sampling, seeded per request.

A step samples all its rows together and reads the result back once (`sample_batch` ends in a
single `.tolist()`), as nano-vllm's Sampler does: one host sync per step, not one per sequence."""

from __future__ import annotations

import torch

from wattserve.runtime.engine.sequence import SamplingParams


def _draw(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> torch.Tensor:
    """One sampled id (a 0-d tensor on the logits' device, no sync); logits: [vocab] float32."""
    probs = torch.softmax(logits / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_p, idx = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_p, dim=-1) - sorted_p < params.top_p
        sorted_p = torch.where(keep, sorted_p, torch.zeros_like(sorted_p))
        choice = torch.multinomial(sorted_p / sorted_p.sum(), 1, generator=generator)
        return idx[choice][0]
    return torch.multinomial(probs, 1, generator=generator)[0]


def sample_batch(logits: torch.Tensor, params: list[SamplingParams],
                 generators: list[torch.Generator | None]) -> list[int]:
    """logits: [rows, vocab] float32; generators live on the logits' device."""
    tokens = torch.argmax(logits, dim=-1)
    drawn = [i for i, p in enumerate(params) if p.temperature > 0.0]
    if drawn:
        tokens[drawn] = torch.stack([_draw(logits[i], params[i], generators[i]) for i in drawn])
    return tokens.tolist()


def sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """One row (offline use); logits: [vocab] float32."""
    return sample_batch(logits.unsqueeze(0), [params], [generator])[0]
