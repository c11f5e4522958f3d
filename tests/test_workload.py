import json
from pathlib import Path

import numpy as np
import pytest

from wattserve.errors import UsageError
from wattserve.workload import AZURE_CONV, LengthDist, SyntheticSpec, generate, load_trace


def test_azure_trace_loads(data_dir: Path) -> None:
    w = load_trace(data_dir / "traces/azure_llm_2023/AzureLLMInferenceTrace_conv.csv")
    assert len(w) == 19366
    assert w.arrival_s[0] == 0 and np.all(np.diff(w.arrival_s) >= 0)
    assert w.rate == pytest.approx(5.53, rel=0.01)
    assert int(w.prompt_tokens[0]) == 374 and int(w.output_tokens[0]) == 44


def test_mooncake_trace_loads(data_dir: Path) -> None:
    w = load_trace(data_dir / "traces/mooncake_fast25/conversation_trace.jsonl")
    assert len(w) == 12031
    assert w.prompt_tokens.mean() == pytest.approx(12035, rel=0.01)


@pytest.mark.parametrize(("text", "match"), [
    ("TIMESTAMP,Context\n2023-11-16 18:15:46.1,5\n", "missing column.*ContextTokens"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.1,abc,3\n", "line 2: ContextTokens 'abc'"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,4,3\n", "line 2: TIMESTAMP"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.1,4,0\n", "GeneratedTokens 0 must be >= 1"),
    ("", "empty"),
])
def test_malformed_azure_csv(tmp_path: Path, text: str, match: str) -> None:
    p = tmp_path / "t.csv"
    p.write_text(text)
    with pytest.raises(UsageError, match=match):
        load_trace(p)


def test_malformed_mooncake(tmp_path: Path) -> None:
    p = tmp_path / "t.jsonl"
    p.write_text(json.dumps({"timestamp": 0, "input_length": 5, "output_length": 2}) + "\n{not json\n")
    with pytest.raises(UsageError, match="line 2: not valid JSON"):
        load_trace(p)
    p.write_text(json.dumps({"timestamp": 0, "input_length": 5}) + "\n")
    with pytest.raises(UsageError, match="missing field 'output_length'"):
        load_trace(p)


def test_unknown_extension_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("x")
    with pytest.raises(UsageError, match="allowed|azure, mooncake"):
        load_trace(tmp_path / "t.txt")
    with pytest.raises(UsageError, match="does not exist"):
        load_trace(tmp_path / "nope.csv")


def test_rescale_window_repeat(data_dir: Path) -> None:
    w = load_trace(data_dir / "traces/azure_llm_2023/AzureLLMInferenceTrace_conv.csv")
    r = w.rescale(20.0)
    assert r.rate == pytest.approx(20.0, rel=1e-6)
    cut = w.window(600, 1200)
    assert cut.arrival_s.min() >= 0 and cut.arrival_s.max() < 600
    assert 0.8 * 600 * 5.53 < len(cut) < 1.2 * 600 * 5.53
    rep = w.repeat(3)
    assert len(rep) == 3 * len(w) and np.all(np.diff(rep.arrival_s) >= 0)
    with pytest.raises(UsageError, match="no request arrives"):
        w.window(1e6, 2e6)


def test_synthetic_matches_requested_distribution() -> None:
    w = generate(SyntheticSpec(rate=50, num_requests=40000, duration_s=None, arrival="gamma", burstiness=0.25,
                               prompt=LengthDist("lognormal", mu=6.0, sigma=0.5, low=1, high=10**6),
                               output=LengthDist("uniform", low=10, high=20)), seed=3)
    gaps = np.diff(w.arrival_s)
    assert 1 / gaps.mean() == pytest.approx(50, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(2.0, rel=0.07)
    assert np.log(w.prompt_tokens).mean() == pytest.approx(6.0, abs=0.02)
    assert w.output_tokens.min() == 10 and w.output_tokens.max() == 20


def test_default_workload_is_azure_shaped() -> None:
    w = generate(AZURE_CONV, seed=0)
    assert w.arrival_s.max() < 600
    assert len(w) == pytest.approx(5.53 * 600, rel=0.1)
    assert np.median(w.prompt_tokens) == pytest.approx(1020, rel=0.1)
    assert w.prompt_tokens.mean() == pytest.approx(1155, rel=0.1)
    assert np.median(w.output_tokens) == pytest.approx(129, rel=0.1)


def test_generation_is_seeded() -> None:
    a, b = generate(AZURE_CONV, seed=7), generate(AZURE_CONV, seed=7)
    assert np.array_equal(a.arrival_s, b.arrival_s) and np.array_equal(a.prompt_tokens, b.prompt_tokens)
