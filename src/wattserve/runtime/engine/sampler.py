"""Greedy, temperature and nucleus (top-p, Holtzman et al., 2020) sampling, seeded per request, with
OpenAI's presence and frequency penalties and log-probabilities.

A step samples all its rows together and reads the result back once (`sample_batch` ends in a
single `.tolist()`), as nano-vllm's Sampler does: one host sync per step, not one per sequence; a
step in which some request asked for logprobs reads those back in a second one.

Penalties follow OpenAI's definition (platform.openai.com/docs/advanced-usage, "Frequency and
presence penalties"): logit[j] -= count[j] * frequency_penalty + (count[j] > 0) * presence_penalty,
counting token j among the tokens generated so far. Log-probabilities are those of the model's own
distribution (log-softmax of the raw logits, before penalties and temperature), as vLLM returns by
default: they describe the model, not the sampling settings."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from wattserve.runtime.engine.sequence import SamplingParams


@dataclass(frozen=True)
class TokenLogprob:
    logprob: float
    """Log-probability of the chosen token."""
    top: tuple[tuple[int, float], ...]
    """The most likely tokens and their log-probabilities, most likely first (as many as asked)."""


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


def _penalize(logits: torch.Tensor, params: list[SamplingParams], outputs: list[list[int]] | None) -> torch.Tensor:
    rows = [i for i, p in enumerate(params) if p.presence_penalty or p.frequency_penalty]
    if not rows or outputs is None:
        return logits
    logits = logits.clone()
    for i in rows:
        if not outputs[i]:
            continue
        counts = torch.bincount(torch.tensor(outputs[i], device=logits.device), minlength=logits.shape[-1])
        counts = counts[:logits.shape[-1]].to(logits.dtype)
        p = params[i]
        logits[i] -= counts * p.frequency_penalty + (counts > 0).to(logits.dtype) * p.presence_penalty
    return logits


def sample_step(logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator | None],
                outputs: list[list[int]] | None = None) -> tuple[list[int], list[TokenLogprob | None]]:
    """logits: [rows, vocab] float32; generators live on the logits' device; `outputs` are the
    tokens each row's sequence generated so far (for penalties). Returns the tokens and, for rows
    whose params ask for logprobs, their TokenLogprob."""
    raw = logits
    logits = _penalize(logits, params, outputs)
    tokens = torch.argmax(logits, dim=-1)
    drawn = [i for i, p in enumerate(params) if p.temperature > 0.0]
    if drawn:
        tokens[drawn] = torch.stack([_draw(logits[i], params[i], generators[i]) for i in drawn])
    ids = tokens.tolist()
    wanted = [i for i, p in enumerate(params) if p.logprobs is not None]
    lps: list[TokenLogprob | None] = [None] * len(params)
    if wanted:
        k = max(int(params[i].logprobs or 0) for i in wanted)
        lp = torch.log_softmax(raw[wanted].float(), dim=-1)
        chosen = lp.gather(1, tokens[wanted].unsqueeze(1)).squeeze(1)
        top_v, top_i = torch.topk(lp, max(1, k), dim=-1)
        chosen_l, top_vl, top_il = chosen.tolist(), top_v.tolist(), top_i.tolist()
        for j, i in enumerate(wanted):
            n = int(params[i].logprobs or 0)
            lps[i] = TokenLogprob(chosen_l[j], tuple(zip(top_il[j][:n], top_vl[j][:n])))
    return ids, lps


def sample_batch(logits: torch.Tensor, params: list[SamplingParams],
                 generators: list[torch.Generator | None]) -> list[int]:
    """The tokens of `sample_step`, without penalties' history or logprobs."""
    return sample_step(logits, params, generators)[0]


def sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """One row (offline use); logits: [vocab] float32."""
    return sample_batch(logits.unsqueeze(0), [params], [generator])[0]
