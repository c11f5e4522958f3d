"""Perf profiles (issue 12): shipped and user profiles, the latency terms they add, where they reach
the simulator, and the loud mark of an uncalibrated GPU."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from wattserve.catalog import get_gpu, get_model
from wattserve.catalog.models import BatchShape
from wattserve.errors import UsageError
from wattserve.perf import RooflineLatencyModel, UtilizationPowerModel
from wattserve.perf.perf_profile import load_profile, shipped, write_profile
from wattserve.schema.cluster import ClusterConfig
from wattserve.sim.cluster import Cluster
from wattserve.workload.workload import Workload

from refusal import assert_refused, run_in_process

H100 = get_gpu("h100")
L8 = get_model("llama-3.1-8b")
SHAPES = (BatchShape.prefill(2048), BatchShape.decode(64, 1500), BatchShape(300, 1, 300 * 150.5, 0, 16, 16 * 800))


def test_default_profile_is_the_models_constants() -> None:
    """The default profile reproduces the latency and power models as they were before profiles, so
    every published figure stands."""
    p = load_profile("default")
    assert shipped()[0] == "default"
    for tp in (1, 4):
        old, new = RooflineLatencyModel(H100, L8, tp), p.latency_model(H100, L8, tp)
        for s in SHAPES:
            assert new.iteration(s, 1500).time_s == old.iteration(s, 1500).time_s
    cost = RooflineLatencyModel(H100, L8).iteration(SHAPES[1], 1980)
    for g in ("h100", "a100", "mi300x"):
        gpu = get_gpu(g)
        assert p.power_model(gpu).busy_power(cost, 1500) == pytest.approx(
            UtilizationPowerModel.for_gpu(gpu).busy_power(cost, 1500))


def test_every_shipped_profile_loads_and_names_its_source() -> None:
    for name in shipped():
        p = load_profile(name)
        assert p.name == name and p.source and p.fitted_on
        assert "held_out_median_abs" in p.fit_error or name == "default"


def test_each_added_term_costs_what_it_says() -> None:
    base = load_profile("default")
    shape = BatchShape(prefill_tokens=100, prefill_seqs=2, prefill_attn_pairs=2 * 50 * 25.5, decode_seqs=30,
                       decode_ctx=30 * 400)

    def t(**k: float) -> float:
        return base.with_latency(**k).latency_model(H100, L8, 4).iteration(shape, 1980).time_s

    t0 = t()
    assert t(seq_overhead_s=1e-4) - t0 == pytest.approx(32 * 1e-4)
    assert t(layer_overhead_s=1e-5) - t0 == pytest.approx(L8.layers * 1e-5)
    assert t(comm_overhead_s=1e-5) - t0 == pytest.approx(2 * L8.layers * 1e-5)
    assert base.with_latency(comm_overhead_s=1e-5).latency_model(H100, L8, 1).iteration(shape, 1980).time_s == \
        pytest.approx(base.latency_model(H100, L8, 1).iteration(shape, 1980).time_s)


def test_kv_read_efficiency_slows_only_kv_bound_steps() -> None:
    base, slow = load_profile("default"), load_profile("default").with_latency(eff_kv=0.3)
    decode = BatchShape.decode(128, 4000)
    prefill = BatchShape.prefill(4096)
    assert slow.latency_model(H100, L8).iteration(decode, 1980).time_s > \
        1.5 * base.latency_model(H100, L8).iteration(decode, 1980).time_s
    assert slow.latency_model(H100, L8).iteration(prefill, 1980).time_s == pytest.approx(
        base.latency_model(H100, L8).iteration(prefill, 1980).time_s, rel=0.02)


def test_a_profile_file_round_trips_and_reaches_the_simulator(tmp_path: Path) -> None:
    slow = replace(load_profile("default").with_latency(step_overhead_s=0.02), name="slow")
    path = tmp_path / "slow.json"
    write_profile(slow, path)
    assert load_profile(str(path)) == slow
    wl = Workload(np.array([0.0, 5.0]), np.array([100, 100]), np.array([50, 50]))
    fast = Cluster(ClusterConfig(colocated=1, prefill=0, decode=0), wl).run().records
    slowed = Cluster(ClusterConfig(colocated=1, prefill=0, decode=0, perf_profile=str(path)), wl).run().records
    assert np.nanmean(slowed.tpot) > np.nanmean(fast.tpot) + 0.019


def test_request_overhead_adds_to_every_ttft_and_handoff_to_the_second_token(tmp_path: Path) -> None:
    base = load_profile("default")
    wl = Workload(np.array([0.0, 3.0, 6.0]), np.array([200, 300, 400]), np.array([20, 20, 20]))

    def run(**k: float) -> object:
        path = tmp_path / f"p{len(k)}{sorted(k)}.json"
        write_profile(base.with_latency(**k), path)
        return Cluster(ClusterConfig(prefill=1, decode=1, perf_profile=str(path)), wl).run().records

    r0, r1, r2 = run(), run(request_overhead_s=0.05), run(handoff_overhead_s=0.04)
    np.testing.assert_allclose(r1.ttft - r0.ttft, 0.05, atol=1e-9)
    np.testing.assert_allclose(r2.ttft, r0.ttft, atol=1e-9)
    np.testing.assert_allclose(r2.e2el - r0.e2el, 0.04, atol=1e-9)


def test_unknown_or_broken_profiles_are_refused_with_the_field(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="allowed: default"):
        load_profile("nope")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x", "latency": {"eff_gemm": -1}}))
    with pytest.raises(UsageError, match="eff_gemm"):
        load_profile(str(bad))
    bad.write_text(json.dumps({"name": "x", "latency": {"warp_factor": 9}}))
    with pytest.raises(UsageError, match="warp_factor"):
        load_profile(str(bad))
    bad.write_text("{not json")
    with pytest.raises(UsageError) as e:
        load_profile(str(bad))
    assert e.value.field == "perf_profile"


def test_cli_refuses_a_bad_profile(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for argv in (["simulate", "--perf-profile", "nope", "--num-requests", "5"],
                 ["estimate", "--perf-profile", "nope", "--decode-batch", "4", "--context", "100"],
                 ["compare", "--scenario", "rapid-h100", "--perf-profile", "nope", "--out", str(tmp_path / "c")]):
        assert_refused(*run_in_process(argv, capsys), "--perf-profile: unknown perf profile 'nope'")
    assert not (tmp_path / "c").exists()


def test_uncalibrated_gpus_are_marked_in_every_output(capsys: pytest.CaptureFixture[str]) -> None:
    p = load_profile("default")
    assert p.warning("h100") is None and p.warning("H100-SXM") is None
    for g in ("mi300x", "a100", "h200"):
        assert "UNCALIBRATED" in (p.warning(g) or "")
    assert load_profile("mlenergy-v2-vllm").warning("a100-40gb") is None
    code, out, err = run_in_process(["simulate", "--gpu", "mi300x", "--num-requests", "20", "--json"], capsys)
    assert code == 0
    assert "UNCALIBRATED" in err
    summary = json.loads(out)
    assert summary["perf_profile"] == "default" and "mi300x" in summary["calibration_warning"]
    code, out, err = run_in_process(["estimate", "--gpu", "h100", "--decode-batch", "4", "--context", "100",
                                     "--json"], capsys)
    assert json.loads(out)["calibration_warning"] is None and err == ""


def test_new_catalog_entries() -> None:
    a40, a80 = get_gpu("a100-40gb"), get_gpu("a100")
    assert a40.hbm_tb_s == 1.555 and a40.hbm_gb == 40 and a40.bf16_tflops == a80.bf16_tflops
    assert get_gpu("A100-SXM-40GB") is a40
    assert get_gpu("h100-pcie").tdp_w == 350
    from wattserve.runtime.engine.config import get_config

    for name in ("tiny", "tiny-moe", "small"):
        spec, cfg = get_model(name), get_config(name)
        assert (spec.layers, spec.hidden, spec.heads, spec.kv_heads, spec.head_dim, spec.ffn, spec.vocab,
                spec.experts) == (cfg.layers, cfg.hidden, cfg.heads, cfg.kv_heads, cfg.head_dim, cfg.ffn, cfg.vocab,
                                  cfg.experts)


def test_each_phase_may_have_its_own_profile(tmp_path: Path) -> None:
    """A disaggregated cluster prices prefill and decode instances with their own profiles; a role
    change between them is refused, as between TP degrees."""
    slow = tmp_path / "slow.json"
    write_profile(replace(load_profile("default").with_latency(step_overhead_s=0.05), name="slow"), slow)
    wl = Workload(np.array([0.0, 5.0]), np.array([100, 100]), np.array([20, 20]))
    base = Cluster(ClusterConfig(prefill=1, decode=1), wl).run().records
    pre = Cluster(ClusterConfig(prefill=1, decode=1, prefill_perf_profile=str(slow)), wl).run().records
    dec = Cluster(ClusterConfig(prefill=1, decode=1, decode_perf_profile=str(slow)), wl).run().records
    np.testing.assert_allclose(pre.ttft - base.ttft, 0.05 - load_profile("default").latency.step_overhead_s,
                               rtol=1e-6)
    np.testing.assert_allclose(pre.tpot, base.tpot, rtol=1e-6)
    np.testing.assert_allclose(dec.ttft, base.ttft, rtol=1e-6)
    assert np.all(dec.tpot > base.tpot + 0.049)
    assert np.all(dec.tpot < base.tpot + 0.05)
    c = Cluster(ClusterConfig(prefill=2, decode=2, prefill_perf_profile=str(slow)), wl)
    with pytest.raises(UsageError, match="different perf profiles"):
        c.set_role(0, "decode")
