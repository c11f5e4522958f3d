"""The latency and power models against the issue's calibration targets."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wattserve.catalog import get_gpu, get_model
from wattserve.catalog.models import BatchShape
from wattserve.perf import RooflineLatencyModel, UtilizationPowerModel, operating_point
from wattserve.perf.calibration import (
    median_abs_error,
    mlenergy_points,
    splitwise_points,
    steady_state_shape,
    vidur_points,
)

H100 = get_gpu("h100")
L8 = RooflineLatencyModel(H100, get_model("llama-3.1-8b"), 1)
P = UtilizationPowerModel.for_gpu(H100)


def op(shape: BatchShape, cap: float = 700, clock: int | None = None, lat: RooflineLatencyModel = L8):
    return operating_point(H100, lat, P, shape, cap, clock)


def test_compute_time_scales_with_clock_memory_time_does_not() -> None:
    prefill = BatchShape.prefill(4096)
    decode = BatchShape.decode(8, 1000)
    half = H100.clock_max_mhz / 2
    p_full, p_half = L8.iteration(prefill, H100.clock_max_mhz), L8.iteration(prefill, half)
    d_full, d_half = L8.iteration(decode, H100.clock_max_mhz), L8.iteration(decode, half)
    assert p_half.time_s / p_full.time_s > 1.8
    assert d_half.time_s / d_full.time_s < 1.15
    assert p_half.compute_s == pytest.approx(2 * p_full.compute_s)
    assert d_half.memory_s == pytest.approx(d_full.memory_s)


def test_decode_coeffs_match_iteration() -> None:
    for b, ctx in ((1, 100), (32, 2000), (256, 900)):
        a, beta = L8.decode_coeffs(b, 1500)
        t = L8.iteration(BatchShape(decode_seqs=b, decode_ctx=b * ctx), 1500).time_s
        assert a + beta * b * ctx == pytest.approx(t, rel=1e-9)


def test_idle_prefill_and_decode_power_targets() -> None:
    assert P.idle_w == 75
    pre = op(BatchShape.prefill(4096))
    assert 650 <= pre.power_w <= 700
    assert op(BatchShape.prefill(4096), cap=1e9).power_w > 700
    decode = [op(BatchShape.decode(b, 1000)).power_w for b in (1, 8, 32, 128, 256)]
    assert decode == sorted(decode)
    assert decode[0] >= 380 and decode[-1] <= 690
    serving = op(steady_state_shape(256, 500, 400)).power_w
    assert serving == pytest.approx(690, rel=0.1)


def test_cap_gives_highest_clock_that_fits() -> None:
    shape = BatchShape.prefill(2048)
    for cap in (250, 350, 450, 600):
        o = op(shape, cap)
        assert o.power_w <= cap + 1e-9
        nxt = H100.clocks[H100.clocks.index(o.clock_mhz) + 1]
        assert P.busy_power(L8.iteration(shape, nxt), nxt) > cap
    clocks = [op(shape, cap).clock_mhz for cap in range(250, 701, 50)]
    assert clocks == sorted(clocks)


def test_locked_clock_runs_at_the_lock_when_the_cap_allows() -> None:
    """A lock is a ceiling the GPU reaches, not merely one it stays under: at 1200 MHz with room
    under the cap the iteration runs at exactly 1200 MHz, slower than unlocked and faster than at
    the minimum clock (a model that dropped to the minimum clock would pass `<= 1200`)."""
    shape = BatchShape.prefill(2048)
    free, lo = op(shape), op(shape, clock=H100.clock_min_mhz)
    locked = op(shape, clock=1200)
    assert locked.clock_mhz == 1200
    assert free.clock_mhz > 1200 > lo.clock_mhz
    assert free.cost.time_s < locked.cost.time_s < lo.cost.time_s
    assert locked.power_w < free.power_w
    assert op(shape, clock=1209).clock_mhz == 1200, "a lock between steps runs at the step below it"


def test_cap_below_the_locked_clock_power_wins() -> None:
    shape = BatchShape.prefill(2048)
    capped = op(shape, cap=300)
    both = op(shape, cap=300, clock=1800)
    assert both.clock_mhz == capped.clock_mhz < 1800
    assert both.power_w <= 300 + 1e-9


def test_splitwise_cap_sensitivity() -> None:
    pts = {p.quantity: p for p in splitwise_points()}
    assert pts["prompt_slowdown_350w"].predicted == pytest.approx(1.3, abs=0.07)
    assert pts["token_slowdown_350w"].predicted < 1.05
    assert pts["prompt_power_w"].predicted == pytest.approx(700, rel=0.05)


def test_mlenergy_calibration_error(data_dir) -> None:
    pts = mlenergy_points(data_dir)
    assert len([p for p in pts if p.quantity == "itl_ms"]) >= 25
    assert median_abs_error(pts, "itl_ms") <= 0.15
    assert median_abs_error(pts, "power_w") <= 0.15


def test_vidur_layer_error(data_dir) -> None:
    pts = vidur_points(data_dir)
    assert len(pts) >= 10
    assert median_abs_error(pts, "layer_ms") <= 0.15


def test_masked_pairs_are_priced_as_attention_at_the_engines_share() -> None:
    """A 512-token prompt has 512 * 511 / 2 pairs above its causal diagonal; an engine that computes
    a share of them pays that share of their attention FLOPs on top of the causal pairs, and a
    decode step has none to pay."""
    gpu, model = get_gpu("h100"), get_model("llama-3.1-8b")
    shape = BatchShape.prefill(512)
    assert shape.prefill_masked_pairs == 512 * 511 / 2
    skip = RooflineLatencyModel(gpu, model)
    half = RooflineLatencyModel(gpu, model, attn_masked_share=0.5)
    full = RooflineLatencyModel(gpu, model, attn_masked_share=1.0)
    t_pair = model.work_coeffs(1).attn_flops_per_pair / (gpu.peak_flops * skip.eff_attn)
    extra = full.iteration(shape, gpu.clock_max_mhz).time_s - skip.iteration(shape, gpu.clock_max_mhz).time_s
    assert extra == pytest.approx(t_pair * shape.prefill_masked_pairs, rel=1e-9)
    assert half.iteration(shape, gpu.clock_max_mhz).time_s == pytest.approx(
        skip.iteration(shape, gpu.clock_max_mhz).time_s + extra / 2, rel=1e-9)
    decode = BatchShape.decode(32, 1024)
    assert full.iteration(decode, 1000).time_s == skip.iteration(decode, 1000).time_s


def test_the_mixed_overhead_is_paid_by_mixed_steps_only() -> None:
    gpu, model = get_gpu("h100"), get_model("llama-3.1-8b")
    plain = RooflineLatencyModel(gpu, model)
    mixed = RooflineLatencyModel(gpu, model, mixed_overhead_s=2e-4)
    pre, dec = BatchShape.prefill(256), BatchShape.decode(8, 512)
    both = BatchShape(pre.prefill_tokens, pre.prefill_seqs, pre.prefill_attn_pairs, 0, dec.decode_seqs,
                      dec.decode_ctx, pre.prefill_masked_pairs)
    clock = gpu.clock_max_mhz
    for alone in (pre, dec):
        assert mixed.iteration(alone, clock).time_s == plain.iteration(alone, clock).time_s
    assert mixed.iteration(both, clock).time_s == pytest.approx(plain.iteration(both, clock).time_s + 2e-4, rel=1e-9)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, len(H100.clocks) - 1), st.floats(200, 700), st.integers(1, 256), st.integers(0, 8192))
def test_the_operating_point_from_any_hint_is_the_highest_clock_that_fits(hint: int, cap: float, seqs: int,
                                                                          prompt: int) -> None:
    """The search gallops from its hint and bisects; it must land where a scan from the top does."""
    shape = BatchShape(decode_seqs=seqs, decode_ctx=seqs * 900, prefill_tokens=prompt, prefill_seqs=int(prompt > 0))
    fits = [i for i, c in enumerate(H100.clocks) if P.busy_power(L8.iteration(shape, c), c) <= cap]
    got = operating_point(H100, L8, P, shape, cap, None, hint)
    assert got.index == (max(fits) if fits else 0)
