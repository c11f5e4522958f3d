"""The catalog's derived quantities behave as the hardware and architectures they describe do.

Each test checks a property that follows from how transformers and GPUs work (roofline regimes,
GQA, tensor parallelism, top-k MoE routing), not a restatement of a table entry, so a wrong field
in the tables or a wrong formula fails one of them. Published parameter counts are the one external
figure checked directly.
"""

from dataclasses import replace

import pytest

from wattserve.catalog import GPUS, MODELS, get_gpu, get_model
from wattserve.catalog.models import BatchShape
from wattserve.errors import UsageError

H100 = get_gpu("h100")


@pytest.mark.parametrize(("key", "total_b", "active_b"), [
    ("llama-3.1-8b", 8.03, 7.5), ("llama-3.1-70b", 70.55, 69.5), ("llama-2-70b", 68.98, 68.7),
    ("mixtral-8x7b", 46.7, 12.7), ("qwen3-30b-a3b", 30.5, 3.0),
])
def test_parameter_counts_match_published_sizes(key: str, total_b: float, active_b: float) -> None:
    m = get_model(key)
    assert m.total_params / 1e9 == pytest.approx(total_b, rel=0.01)
    assert m.active_params_per_token / 1e9 == pytest.approx(active_b, rel=0.03)


def intensity(m_key: str, shape: BatchShape) -> float:
    """FLOPs per byte moved of one iteration on one GPU."""
    w = get_model(m_key).work(shape, 1)
    return (w.linear_flops + w.attn_flops) / (w.weight_bytes + w.kv_bytes + w.elementwise_bytes)


@pytest.mark.parametrize("key", ["llama-3.1-8b", "mixtral-8x7b"])
def test_decode_is_memory_bound_and_prefill_compute_bound(key: str) -> None:
    ridge = H100.peak_flops / H100.hbm_bytes_s
    assert intensity(key, BatchShape.decode(8, 1000)) < ridge / 10
    assert intensity(key, BatchShape.prefill(4096)) > ridge


def test_linear_flops_are_two_per_active_parameter_and_logits_once_per_sequence() -> None:
    m = get_model("llama-3.1-8b")
    head = m.vocab * m.hidden
    one = m.work(BatchShape.decode(1, 100), 1).linear_flops
    assert one == pytest.approx(2 * m.active_params_per_token)
    prompt = m.work(BatchShape.prefill(1000), 1).linear_flops
    assert prompt == pytest.approx(2 * (m.active_params_per_token - head) * 1000 + 2 * head)


def test_gqa_divides_kv_bytes_by_the_query_groups() -> None:
    m = get_model("llama-3.1-8b")
    mha = replace(m, kv_heads=m.heads)
    assert mha.kv_bytes_per_token / m.kv_bytes_per_token == m.heads // m.kv_heads


def test_kv_capacity_shrinks_as_tp_falls() -> None:
    m = get_model("llama-3.1-70b")
    caps = [m.kv_capacity_tokens(H100.hbm_bytes, tp) for tp in (8, 4, 2, 1)]
    assert caps == sorted(caps, reverse=True) and caps[0] > caps[1] > caps[2]
    assert caps[3] == 0, "70B in BF16 (141 GB) cannot fit on one 80 GB GPU"
    small = get_model("llama-3.1-8b").kv_capacity_tokens(H100.hbm_bytes, 1)
    assert small > 0
    assert get_model("llama-3.1-8b").kv_capacity_tokens(get_gpu("h200").hbm_bytes, 1) > small


def test_tp_shards_work_and_kv_heads_replicate_past_their_count() -> None:
    m = get_model("llama-3.1-70b")
    shape = BatchShape.decode(16, 1000)
    w1, w4 = m.work(shape, 1), m.work(shape, 4)
    assert w4.linear_flops == pytest.approx(w1.linear_flops / 4)
    assert w4.weight_bytes == pytest.approx(w1.weight_bytes / 4)
    assert w1.allreduce_calls == 0 and w4.allreduce_calls == 2 * m.layers
    assert m.kv_bytes_per_token_per_rank(8) == m.kv_bytes_per_token / 8
    q = get_model("qwen3-30b-a3b")
    assert q.kv_bytes_per_token_per_rank(8) == q.kv_bytes_per_token_per_rank(4) == q.kv_bytes_per_token / 4


@pytest.mark.parametrize("key", ["mixtral-8x7b", "qwen3-30b-a3b"])
def test_moe_reads_fewer_expert_bytes_per_token_at_small_batch(key: str) -> None:
    m = get_model(key)
    dense_part = m.work_coeffs(1).dense_weight_bytes
    per_token = [(m.work(BatchShape.decode(b, 100), 1).weight_bytes - dense_part) / b for b in (1, 4, 64)]
    assert per_token == sorted(per_token, reverse=True) and per_token[0] > 2 * per_token[-1]
    assert m.experts_touched(1) == pytest.approx(m.experts_per_token)
    assert m.work(BatchShape.decode(4096, 100), 1).weight_bytes == pytest.approx(m.weight_bytes, rel=0.01)
    assert m.work(BatchShape.decode(1, 100), 1).weight_bytes < 0.5 * m.weight_bytes


def test_prefill_attention_is_causal() -> None:
    m = get_model("llama-3.1-8b")
    a = m.work(BatchShape.prefill(4096), 1).attn_flops
    b = m.work(BatchShape.prefill(2048), 1).attn_flops
    assert a / b == pytest.approx(4.0, rel=0.01)
    chunked = m.work(BatchShape.prefill(2048, context_before=2048), 1).attn_flops
    assert b + chunked == pytest.approx(a), "two chunks of a prompt cost what the whole prompt costs"


@pytest.mark.parametrize("key", sorted(GPUS))
def test_gpu_limits_are_ordered_and_clock_steps_cover_the_range(key: str) -> None:
    g = get_gpu(key)
    assert 0 < g.idle_w < g.cap_min_w < g.cap_max_w
    assert g.cap_min_w < g.tdp_w <= g.cap_max_w
    clocks = g.clocks
    assert clocks[0] == g.clock_min_mhz and clocks[-1] == g.clock_max_mhz
    assert {b - a for a, b in zip(clocks, clocks[1:])} == {g.clock_step_mhz}


def test_h200_is_an_h100_with_more_and_faster_memory() -> None:
    h200 = get_gpu("h200")
    assert h200.peak_flops == H100.peak_flops
    assert h200.hbm_bytes_s > H100.hbm_bytes_s and h200.hbm_bytes > H100.hbm_bytes


def test_every_catalog_name_and_alias_resolves() -> None:
    for key in GPUS:
        assert get_gpu(key.upper()) is GPUS[key]
    for key in MODELS:
        assert get_model(key) is MODELS[key]
    assert get_model("llama3-8b") is get_model("llama-3.1-8b")
    assert get_gpu("h100-sxm") is H100


def test_unknown_names_list_allowed_values() -> None:
    with pytest.raises(UsageError, match="allowed: .*llama-3.1-8b"):
        get_model("gpt-5")
    with pytest.raises(UsageError, match="allowed: " + ", ".join(sorted(GPUS))):
        get_gpu("b200")
