"""The sampler's penalties and log-probabilities, against OpenAI's definitions computed by hand."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from wattserve.runtime.engine.sampler import sample_step  # noqa: E402
from wattserve.runtime.engine.sequence import SamplingParams  # noqa: E402


def test_penalties_follow_openais_formula() -> None:
    logits = torch.zeros(1, 8)
    logits[0, 5] = 1.8
    logits[0, 7] = 1.4
    p = SamplingParams(temperature=0.0, frequency_penalty=0.5, presence_penalty=1.0)
    # token 5: 1.8 - (2 * 0.5 + 1) = -0.2; token 7: 1.4 - (0.5 + 1) = -0.1; the rest 0
    ids, _ = sample_step(logits, [p], [None], [[5, 5, 7]])
    assert ids == [0]
    unpenalized, _ = sample_step(logits, [SamplingParams(temperature=0.0)], [None], [[5, 5, 7]])
    assert unpenalized == [5]
    lighter = SamplingParams(temperature=0.0, frequency_penalty=0.1, presence_penalty=0.0)
    assert sample_step(logits, [lighter], [None], [[5, 5, 7]])[0] == [5]


def test_logprobs_are_the_models_own_distribution() -> None:
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    ids, lps = sample_step(logits, [SamplingParams(temperature=0.0, logprobs=2, presence_penalty=2.0)], [None],
                           [[3]])
    z = math.log(sum(math.exp(v) for v in (0.0, 1.0, 2.0, 3.0)))
    assert ids == [2]
    lp = lps[0]
    assert lp is not None and lp.logprob == pytest.approx(2.0 - z, abs=1e-6)
    assert [t for t, _ in lp.top] == [3, 2] and lp.top[0][1] == pytest.approx(3.0 - z, abs=1e-6)


def test_rows_without_logprobs_get_none() -> None:
    ids, lps = sample_step(torch.zeros(2, 4), [SamplingParams(temperature=0.0), SamplingParams(temperature=0.0,
                                                                                               logprobs=0)],
                           [None, None])
    assert lps[0] is None and lps[1] is not None and lps[1].top == ()
