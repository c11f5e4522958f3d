"""Log-probabilities in OpenAI's two shapes: the legacy completions object (parallel lists) and the
chat object (one entry per token with its UTF-8 bytes, since a token may hold part of a character).
Each entry in `lps` is [logprob, [[token id, logprob], ...]] as the worker sends it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Decode = Callable[[list[int]], str]


def completion_logprobs(ids: list[int], lps: list[list], decode: Decode, offset: int = 0) -> dict[str, Any]:
    """{"tokens", "token_logprobs", "top_logprobs", "text_offset"} for generated tokens `ids`."""
    tokens, offsets = [], []
    for t in ids:
        offsets.append(offset)
        text = decode([t])
        tokens.append(text)
        offset += len(text)
    return {"tokens": tokens, "token_logprobs": [lp[0] for lp in lps],
            "top_logprobs": [{decode([int(i)]): v for i, v in lp[1]} for lp in lps], "text_offset": offsets}


def chat_logprobs(ids: list[int], lps: list[list], decode: Decode) -> dict[str, Any]:
    """{"content": [{"token", "logprob", "bytes", "top_logprobs"}], "refusal": None}."""

    def entry(t: int, v: float) -> dict[str, Any]:
        text = decode([t])
        return {"token": text, "logprob": v, "bytes": list(text.encode())}

    return {"content": [{**entry(t, lp[0]), "top_logprobs": [entry(int(i), v) for i, v in lp[1]]}
                        for t, lp in zip(ids, lps)], "refusal": None}
