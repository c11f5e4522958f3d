"""BiScale tier 1 (placement and base clocks per window), per-phase TP and clocks in the cluster,
and the biscale-h100 scenario's result fields."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from wattserve.catalog.gpus import get_gpu
from wattserve.catalog.models import BatchShape, get_model
from wattserve.errors import UsageError
from wattserve.experiments.biscale_placement import (
    Evaluated,
    Placement,
    SearchSpace,
    WindowStats,
    candidates,
    choose,
    decode_options,
    prefill_options,
)
from wattserve.perf.latency import RooflineLatencyModel
from wattserve.schema.cluster import ClusterConfig
from wattserve.sim.cluster import Cluster
from wattserve.workload import LengthDist, SyntheticSpec, generate

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SPACE = SearchSpace("h100", "llama-3.1-70b", 16)


def _few():
    return generate(SyntheticSpec(rate=1, num_requests=2, duration_s=None, prompt=LengthDist("fixed", value=100),
                                  output=LengthDist("fixed", value=4)), 1)


def _stats(rate: float, prompt: int = 1000, output: int = 200, span: float = 300.0) -> WindowStats:
    return WindowStats(span, rate, np.full(16, float(prompt)), np.full(16, float(output)))


def test_per_phase_tp_and_clocks_build_the_gpus_each_phase_asks_for() -> None:
    cfg = ClusterConfig(model="llama-3.1-70b", prefill=2, decode=1, prefill_tp=4, decode_tp=8, decode_clock_mhz=1200)
    assert cfg.num_gpus == 16
    wl = generate(SyntheticSpec(rate=2, num_requests=40, duration_s=None, prompt=LengthDist("fixed", value=500),
                                output=LengthDist("fixed", value=20)), 1)
    res = Cluster(cfg, wl).run()
    assert [len(i.gpus) for i in res.instances] == [4, 4, 8]
    decode_gpus = res.instances[2].gpus
    assert all(len(res.gpus[g].clock_values) > 1 and res.gpus[g].clock_values[1:].max() <= 1200 for g in decode_gpus)
    assert res.records.status.min() >= 0 and res.gpus[0].clock_values.max() > 1200


def test_a_phase_tp_whose_weights_do_not_fit_is_refused_naming_the_phase_field() -> None:
    wl = _few()
    with pytest.raises(UsageError, match="cluster.prefill_tp"):
        Cluster(ClusterConfig(model="llama-3.1-70b", tp=4, prefill=1, decode=1, prefill_tp=1), wl)


def test_role_changes_are_refused_when_the_phases_have_different_tp() -> None:
    wl = _few()
    c = Cluster(ClusterConfig(model="llama-3.1-70b", prefill=2, decode=1, prefill_tp=4, decode_tp=8), wl)
    with pytest.raises(UsageError, match="different TP"):
        c.set_role(0, "decode")


def test_pruned_prefill_options_are_exactly_those_the_queue_model_rejects() -> None:
    st = _stats(12.0, prompt=2000)
    kept = {(o.count, o.tp, o.mhz) for o in prefill_options(SPACE, st)}
    spec, model = get_gpu("h100"), get_model("llama-3.1-70b")
    n_checked = 0
    for tp in (4, 8):
        lat = RooflineLatencyModel(spec, model, tp)
        for mhz in SPACE.clocks(spec):
            t = lat.iteration(BatchShape(prefill_tokens=2000, prefill_seqs=1, prefill_attn_pairs=2000 * 2001 / 2),
                              spec.clocks[-1] if mhz is None else mhz).time_s
            for n in range(1, 16 // tp + 1):
                rho = st.rate / n * t
                ok = rho < SPACE.rho_max and t + st.rate / n * t * t / (2 * (1 - rho)) <= SPACE.slo_ttft_s
                assert ((n, tp, mhz) in kept) == ok
                n_checked += 1
    assert n_checked > 20 and kept


def test_decode_options_respect_kv_capacity_and_the_tpot_margin() -> None:
    from dataclasses import replace

    st = _stats(10.0, prompt=3000, output=400)
    tight = {(o.count, o.tp, o.mhz) for o in decode_options(SPACE, st)}
    loose = {(o.count, o.tp, o.mhz) for o in decode_options(replace(SPACE, slo_tpot_s=0.2), st)}
    tighter = {(o.count, o.tp, o.mhz) for o in decode_options(replace(SPACE, slo_tpot_s=0.02), st)}
    assert tighter < tight <= loose
    assert any(o[2] is not None and o[2] < 600 for o in tight)
    assert not decode_options(SPACE, _stats(10.0, prompt=200_000, output=400))


def test_candidates_fit_the_gpus_and_more_load_never_needs_fewer_gpus() -> None:
    low, _ = candidates(SPACE, _stats(2.0))
    high, _ = candidates(SPACE, _stats(14.0))
    assert low and high and all(p.gpus <= 16 for p in low + high)
    assert min(p.gpus for p in high) >= min(p.gpus for p in low)


def _fake_eval(table: dict[Placement, tuple[float, float]]):
    def evaluate(cands):
        return [Evaluated(p, *table.get(p, (0.0, 1e9))) for p in cands]
    return evaluate


def test_choose_takes_least_energy_meeting_the_target_and_distserve_the_fewest_gpus() -> None:
    st = _stats(6.0)
    cands, _ = candidates(SPACE, st)
    table = {p: (0.99 if i % 2 else 0.5, 1000.0 - i) for i, p in enumerate(cands)}
    d = choose(SPACE, st, _fake_eval(table))
    meeting = [p for p, (a, _) in table.items() if a >= SPACE.attainment]
    assert d.placement == min(meeting, key=lambda p: table[p][1])
    ds_cands, _ = candidates(SPACE, st, max_clock_only=True)
    table2 = {p: (0.97, float(i)) for i, p in enumerate(ds_cands)}
    d2 = choose(SPACE, st, _fake_eval(table2), "gpus")
    assert d2.placement.gpus == min(p.gpus for p in ds_cands)
    assert d2.placement.prefill_mhz is None and d2.placement.decode_mhz is None


def test_choose_with_no_candidate_meeting_the_target_takes_the_highest_attainment() -> None:
    st = _stats(6.0)
    seen: list[Placement] = []

    def evaluate(cands):
        out = []
        for p in cands:
            seen.append(p)
            out.append(Evaluated(p, 0.5 + 0.001 * len(seen), 1.0))
        return out
    d = choose(SPACE, st, evaluate)
    assert d.attainment == pytest.approx(0.5 + 0.001 * len(seen))
    assert d.simulated == len(seen) > 8


@pytest.mark.skipif(not (DATA / "traces/azure_llm_2023").is_dir(), reason="needs ../shared/data")
def test_biscale_h100_cell_reports_the_issue_fields_and_energy_adds_up() -> None:
    from wattserve.experiments.biscale_scenario import BiScaleScenario, run_biscale_compare

    sc = BiScaleScenario(duration_s=120.0, window_s=60.0)
    res = run_biscale_compare(sc, str(DATA), {"azure-conv": [4.0]}, ["distserve", "place-only", "biscale"], 1)
    json.dumps(res)
    runs = {r["policy"]: r for r in res["runs"]}
    for r in runs.values():
        for key in ("policy", "workload", "rate", "slo_attainment", "prefill_energy_j", "decode_energy_j",
                    "idle_energy_j", "gpu_energy_j", "joules_per_output_token"):
            assert key in r
        assert math.isclose(r["gpu_energy_j"], r["prefill_energy_j"] + r["decode_energy_j"] + r["idle_energy_j"])
        assert len(r["placements"]) == 2 and all(p["gpus"] <= 16 for p in r["placements"])
    assert runs["place-only"]["placements"] == runs["biscale"]["placements"]
    assert all(p["prefill_mhz"] is None for p in runs["distserve"]["placements"])
    clocks = runs["biscale"]["clock_seconds"]["decode"]
    assert min(int(m) for m in clocks) < get_gpu("h100").clocks[-1]


@pytest.mark.skipif(not (DATA / "traces/azure_llm_2023").is_dir(), reason="needs ../shared/data")
def test_compare_biscale_h100_writes_fields_table_and_plots(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "bs"
    p = subprocess.run([sys.executable, "-m", "wattserve", "compare", "--scenario", "biscale-h100", "--workloads",
                        "azure-code", "--rates", "1", "--policies", "biscale", "--jobs", "1", "--data", str(DATA),
                        "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    res = json.loads((out / "compare.json").read_text())
    assert [r["policy"] for r in res["runs"]] == ["distserve", "biscale"]
    assert res["runs"][0]["prefill_energy_vs_distserve"] == 0.0
    assert {"energy_per_phase.png", "clock_over_time.png", "compare.md"} <= {f.name for f in out.iterdir()}
    assert "| azure-code | 1 | biscale |" in (out / "compare.md").read_text()


@pytest.mark.skipif(not (DATA / "traces/azure_llm_2023").is_dir(), reason="needs ../shared/data")
def test_biscale_saves_prefill_and_decode_energy_against_distserve_on_the_conversation_trace() -> None:
    """The issue's acceptance at one swept rate (azure-conv, 8 req/s, both 5-minute windows)."""
    from wattserve.experiments.biscale_scenario import BiScaleScenario, run_cell

    rows = {r["policy"]: r for r in run_cell(BiScaleScenario(), "azure-conv", 8.0, str(DATA),
                                             ("distserve", "place-only", "biscale"))}
    ds, po, bs = rows["distserve"], rows["place-only"], rows["biscale"]
    assert ds["slo_attainment"] >= 0.9 and bs["slo_attainment"] >= 0.9
    assert bs["prefill_energy_j"] <= 0.75 * ds["prefill_energy_j"]
    assert bs["decode_energy_j"] <= 0.70 * ds["decode_energy_j"]
    assert bs["gpu_energy_j"] <= po["gpu_energy_j"] <= ds["gpu_energy_j"]
