"""Analytic and reference checks of the simulator's timing."""

from __future__ import annotations

import numpy as np
import pytest

from wattserve.catalog import get_gpu, get_model
from wattserve.catalog.models import BatchShape
from wattserve.perf import RooflineLatencyModel, UtilizationPowerModel, operating_point
from wattserve.schema.cluster import ClusterConfig, EngineConfig
from wattserve.workload import LengthDist

from simutil import run_sim


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_prefill_queue_matches_md1(rho: float) -> None:
    """One prefill-only instance, fixed prompts, one prompt per iteration, Poisson arrivals:
    an M/D/1 queue, whose mean wait is rho * D / (2 * (1 - rho))."""
    prompt = 1024
    gpu, model = get_gpu("h100"), get_model("llama-3.1-8b")
    lat = RooflineLatencyModel(gpu, model, 1)
    d = operating_point(gpu, lat, UtilizationPowerModel.for_gpu(gpu), BatchShape.prefill(prompt), 700).cost.time_s
    spec = ClusterConfig(prefill=1, decode=1, engine=EngineConfig(prefill_token_budget=prompt))
    n = 60_000
    res = run_sim(spec, rate=rho / d, n=n, prompt=LengthDist("fixed", value=prompt),
                  output=LengthDist("fixed", value=1), seed=11)
    wait = res.records.ttft[n // 10:] - d
    expected = rho * d / (2 * (1 - rho))
    assert np.all(res.records.ttft >= d * (1 - 1e-9))
    assert wait.mean() == pytest.approx(expected, rel=0.05)


@pytest.mark.parametrize("colocated", [False, True])
def test_closed_form_runs_match_stepping_every_iteration(colocated: bool) -> None:
    kw = dict(rate=12, n=250, prompt=LengthDist("uniform", low=50, high=3000),
              output=LengthDist("uniform", low=1, high=400), seed=5)
    eng = EngineConfig(max_seqs=32, colocated_token_budget=512)
    base = dict(prefill=0, decode=0, colocated=2) if colocated else dict(prefill=1, decode=2)
    jump = run_sim(ClusterConfig(engine=eng, **base), **kw)
    step = run_sim(ClusterConfig(engine=eng, max_run_iters=1, **base), **kw)
    assert jump.events < step.events / 3
    np.testing.assert_allclose(jump.records.finish, step.records.finish, rtol=1e-6)
    np.testing.assert_allclose(jump.records.ttft, step.records.ttft, rtol=1e-6)
    np.testing.assert_allclose(jump.records.max_itl, step.records.max_itl, rtol=1e-6)
    e_jump = sum(g.energy_j for g in jump.gpus)
    e_step = sum(g.energy_j for g in step.gpus)
    assert e_jump == pytest.approx(e_step, rel=0.01)
    assert jump.itl_hist.mean == pytest.approx(step.itl_hist.mean, rel=1e-6)
    assert jump.itl_hist.quantile(0.99) == pytest.approx(step.itl_hist.quantile(0.99), rel=0.02)


def test_itl_and_tpot_agree_with_batch_iteration_time() -> None:
    """A single decode sequence alone: every gap is one decode iteration."""
    res = run_sim(ClusterConfig(prefill=1, decode=1), rate=0.01, n=5, prompt=LengthDist("fixed", value=1000),
                  output=LengthDist("fixed", value=101))
    gpu, model = get_gpu("h100"), get_model("llama-3.1-8b")
    lat = RooflineLatencyModel(gpu, model, 1)
    per_iter = lat.iteration(BatchShape.decode(1, 1050), gpu.clock_max_mhz).time_s
    assert np.nanmedian(res.records.tpot) == pytest.approx(per_iter, rel=0.05)


def test_kv_transfer_uses_link_bandwidth() -> None:
    """Cross-node hand-off (network) is slower than in-node (NVLink) for long prompts."""
    kw = dict(rate=0.5, n=20, prompt=LengthDist("fixed", value=8000), output=LengthDist("fixed", value=3))
    same = run_sim(ClusterConfig(prefill=1, decode=1), **kw)
    cross = run_sim(ClusterConfig(prefill=1, decode=1, gpus_per_node=1), **kw)
    kv = get_model("llama-3.1-8b").kv_bytes_per_token * 8000
    gap_same = np.nanmedian(same.records.max_itl)
    gap_cross = np.nanmedian(cross.records.max_itl)
    assert gap_cross - gap_same == pytest.approx(kv / 50e9 - kv / 450e9, rel=0.1)
    assert same.links[0].bytes_moved == pytest.approx(20 * kv)
