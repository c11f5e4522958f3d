"""rope_scaling from HF configs: the engine's inverse frequencies against Meta's reference loop
(llama-models `apply_scaling`), and against HF transformers when it is installed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from wattserve.errors import UsageError  # noqa: E402
from wattserve.runtime.engine.config import (  # noqa: E402
    LLAMA31_ROPE,
    config_from_hf,  # noqa: E402
    get_config,
)
from wattserve.runtime.layers.rotary import RopeScaling, Rotary, inverse_frequencies  # noqa: E402

LLAMA31 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
           "original_max_position_embeddings": 8192}


def meta_reference(head_dim: int, theta: float, factor: float, low: float, high: float, old: int) -> list[float]:
    """Meta's llama-models apply_scaling, one frequency at a time in float64."""
    out = []
    for i in range(0, head_dim, 2):
        freq = 1.0 / theta ** (i / head_dim)
        wavelen = 2 * math.pi / freq
        if wavelen < old / high:
            out.append(freq)
        elif wavelen > old / low:
            out.append(freq / factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append((1 - smooth) * freq / factor + smooth * freq)
    return out


@pytest.mark.parametrize("head_dim,theta,factor,low,high,old", [
    (128, 500000.0, 8.0, 1.0, 4.0, 8192), (64, 500000.0, 32.0, 1.0, 4.0, 8192), (128, 10000.0, 4.0, 2.0, 8.0, 2048)])
def test_llama3_scaling_matches_meta_reference(head_dim: int, theta: float, factor: float, low: float, high: float,
                                               old: int) -> None:
    got = inverse_frequencies(head_dim, theta, RopeScaling("llama3", factor, low, high, old))
    ref = torch.tensor(meta_reference(head_dim, theta, factor, low, high, old), dtype=torch.float64)
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=0.0)
    plain = inverse_frequencies(head_dim, theta)
    assert (got < plain).any() and (got == plain).any()


def test_linear_and_default() -> None:
    plain = inverse_frequencies(64, 10000.0)
    torch.testing.assert_close(inverse_frequencies(64, 10000.0, RopeScaling.from_hf({"type": "linear", "factor": 2.0})),
                               plain / 2)
    assert RopeScaling.from_hf(None) is None and RopeScaling.from_hf({"rope_type": "default"}) is None
    with pytest.raises(UsageError, match="yarn"):
        RopeScaling.from_hf({"rope_type": "yarn", "factor": 4.0})


def test_config_json_rope_scaling_reaches_the_model(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"rope_theta": 500000.0, "rope_scaling": LLAMA31}))
    cfg = config_from_hf(tmp_path, get_config("tiny"))
    assert cfg.rope_scaling == LLAMA31_ROPE
    rot = Rotary(cfg.head_dim, cfg.rope_theta, 16, torch.device("cpu"), cfg.rope_scaling)
    inv = inverse_frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
    torch.testing.assert_close(rot.cos[5, : cfg.head_dim // 2], torch.cos(5 * inv))
    assert get_config("llama-3.1-8b").rope_scaling == LLAMA31_ROPE and get_config("tiny").rope_scaling is None


def test_matches_hf_transformers_when_installed() -> None:
    pytest.importorskip("transformers")
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    try:
        cfg = LlamaConfig(head_dim=128, hidden_size=4096, num_attention_heads=32,
                          rope_parameters={**LLAMA31, "rope_theta": 500000.0})
    except TypeError:
        cfg = LlamaConfig(head_dim=128, hidden_size=4096, num_attention_heads=32, rope_theta=500000.0,
                          rope_scaling=LLAMA31)
    hf_inv, scale = ROPE_INIT_FUNCTIONS["llama3"](cfg, "cpu")
    assert scale == 1.0
    torch.testing.assert_close(inverse_frequencies(128, 500000.0, LLAMA31_ROPE), hf_inv.float())
