import pytest

from wattserve.catalog import GPUS, MODELS, get_gpu, get_model
from wattserve.catalog.models import BatchShape
from wattserve.errors import UsageError


@pytest.mark.parametrize(("key", "total_b", "active_b"), [
    ("llama-3.1-8b", 8.03, 7.5), ("llama-3.1-70b", 70.55, 69.5), ("llama-2-70b", 68.98, 68.7),
    ("mixtral-8x7b", 46.7, 12.7), ("qwen3-30b-a3b", 30.5, 3.0),
])
def test_parameter_counts_match_published_sizes(key: str, total_b: float, active_b: float) -> None:
    m = get_model(key)
    assert m.total_params / 1e9 == pytest.approx(total_b, rel=0.01)
    assert m.active_params_per_token / 1e9 == pytest.approx(active_b, rel=0.03)


def test_kv_bytes_per_token() -> None:
    assert get_model("llama-3.1-8b").kv_bytes_per_token == 131072
    assert get_model("llama-3.1-70b").kv_bytes_per_token == 327680
    assert get_model("qwen3-30b-a3b").kv_bytes_per_token == 2 * 48 * 4 * 128 * 2


def test_tp_shards_work_and_kv_heads_replicate_past_their_count() -> None:
    m = get_model("llama-3.1-70b")
    shape = BatchShape.decode(16, 1000)
    w1, w4 = m.work(shape, 1), m.work(shape, 4)
    assert w4.linear_flops == pytest.approx(w1.linear_flops / 4)
    assert w4.weight_bytes == pytest.approx(w1.weight_bytes / 4)
    assert w1.allreduce_calls == 0 and w4.allreduce_calls == 2 * m.layers
    assert m.kv_bytes_per_token_per_rank(8) == m.kv_bytes_per_token / 8
    assert get_model("qwen3-30b-a3b").kv_bytes_per_token_per_rank(8) == get_model("qwen3-30b-a3b").kv_bytes_per_token / 4


def test_moe_reads_only_touched_experts() -> None:
    m = get_model("mixtral-8x7b")
    one = m.work(BatchShape.decode(1, 100), 1).weight_bytes
    many = m.work(BatchShape.decode(256, 100), 1).weight_bytes
    assert m.experts_touched(1) == pytest.approx(2.0)
    assert many > one * 2
    assert many == pytest.approx(m.weight_bytes, rel=0.01)


def test_prefill_flops_count_causal_attention() -> None:
    m = get_model("llama-3.1-8b")
    a = m.work(BatchShape.prefill(4096), 1).attn_flops
    b = m.work(BatchShape.prefill(2048), 1).attn_flops
    assert a / b == pytest.approx(4.0, rel=0.01)


def test_gpu_specs() -> None:
    h = get_gpu("H100")
    assert (h.tdp_w, h.cap_min_w, h.idle_w, h.clock_max_mhz) == (700, 200, 75, 1980)
    assert set(GPUS) == {"h100", "h200", "a100", "mi300x"}
    assert get_gpu("mi300x").tdp_w == 750
    assert h.clocks[0] == h.clock_min_mhz and h.clocks[-1] == h.clock_max_mhz


def test_unknown_names_list_allowed_values() -> None:
    with pytest.raises(UsageError, match="allowed: .*llama-3.1-8b"):
        get_model("gpt-5")
    with pytest.raises(UsageError, match="allowed: a100, h100, h200, mi300x"):
        get_gpu("b200")
    assert len(MODELS) == 5
