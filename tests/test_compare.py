"""`wattserve compare` end to end on a reduced sweep."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from wattserve.experiments.compare import rate_at_attainment


def test_rate_at_attainment() -> None:
    assert rate_at_attainment([10, 20, 30], [1.0, 0.9, 0.5], 0.8) == 22.5
    assert rate_at_attainment([10, 20], [0.5, 0.4], 0.8) is None
    assert rate_at_attainment([10, 20], [1.0, 0.95], 0.8) == 20


def test_compare_writes_json_table_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    p = subprocess.run([sys.executable, "-m", "wattserve", "compare", "--scenario", "rapid-mi300x", "--out", str(out),
                        "--workloads", "sonnet-shift", "--rates", "30", "--policies", "static,rapid,oracle",
                        "--jobs", "2"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    res = json.loads((out / "compare.json").read_text())
    assert res["scenario"] == "rapid-mi300x" and res["budget_w"] == 4800
    assert len(res["runs"]) == 3
    for r in res["runs"]:
        for k in ("policy", "workload", "rate", "slo_attainment", "gpu_energy_j", "qps_per_w", "max_sum_caps_w",
                  "role_changes", "cap_changes"):
            assert k in r, k
        assert r["max_sum_caps_w"] <= 4800 + 1e-6
    by = {(r["policy"], r["rate"]): r for r in res["runs"]}
    assert by[("oracle", 30)]["slo_attainment"] >= by[("static", 30)]["slo_attainment"]
    assert by[("rapid", 30)]["role_changes"] > 0
    acts = by[("rapid", 30)]["actuations"]
    assert any(a["kind"] == "role" for a in acts) and any(a["kind"] == "cap" for a in acts)
    assert all(a["time_s"] >= 0 and a["status"] in ("applied", "refused") for a in acts)
    assert {f.name for f in out.iterdir()} >= {"compare.json", "compare.md", "attainment_vs_rate_sonnet-shift.png",
                                               "power_roles_sonnet-shift.png"}
    assert "| sonnet-shift | rapid |" in (out / "compare.md").read_text()


def test_compare_bad_input(tmp_path: Path) -> None:
    for args, needle in ((["--scenario", "nope"], "allowed: rapid-h100, rapid-mi300x"),
                         (["--scenario", "rapid-mi300x", "--policies", "static,magic"], "policies: unknown value 'magic'"),
                         (["--scenario", "rapid-mi300x", "--rates", "1,x"], "rates:")):
        p = subprocess.run([sys.executable, "-m", "wattserve", "compare", *args, "--out", str(tmp_path / "o")],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 2 and needle in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert not (tmp_path / "o").exists()


def test_oracle_measures_its_peak_sum_of_caps() -> None:
    """With a budget above what the caps can spend (8 x 750 W = 6,000 W < 6,500 W), every split the
    oracle tries is clamped at the GPU's maximum cap: the measured peak is below the budget, so an
    oracle that wrote the budget instead of measuring would fail here."""
    from dataclasses import replace

    from wattserve.experiments.oracle import oracle
    from wattserve.experiments.scenarios import get_scenario
    from wattserve.experiments.workloads import make_workload

    sc = replace(get_scenario("rapid-mi300x"), budget_w=6500, prefill_caps_w=(450, 750), oracle_prefill_counts=(2, 4))
    wl = make_workload("longbench-like", 30, 0, per_phase=40)
    res = oracle(sc, wl, [(0, 40), (40, 80)])
    sums = [c["prefill"] * c["prefill_cap_w"] + (8 - c["prefill"]) * c["decode_cap_w"] for c in res["oracle_choice"]]
    assert res["max_sum_caps_w"] == pytest.approx(max(sums))
    assert res["max_sum_caps_w"] < sc.budget_w
    assert all(c["max_sum_caps_w"] == pytest.approx(s) for c, s in zip(res["oracle_choice"], sums))


def test_budget_drop_every_policy_follows_the_cut_and_reports_each_side_of_it() -> None:
    """budget-drop (issue 15): caps start at the full 4,800 W, so a run whose caps did not come down
    to 3,360 W during the minute of the cut counts breaches; attainment is split at the cut."""
    from wattserve.experiments.compare import markdown, run_compare
    from wattserve.experiments.scenarios import get_scenario

    sc = get_scenario("budget-drop")
    res = run_compare(sc, ["static", "rapid"], ["sonnet-shift"], {"sonnet-shift": [26.0]}, 0, None, jobs=1)
    assert res["budget_events"] == {"sonnet-shift": "demand-response:start=10,minutes=1,level=0.7"}
    assert res["budget_breaches"] == 0
    for r in res["runs"]:
        assert r["max_sum_caps_w"] == pytest.approx(4800)
        assert r["budget_low_w"] == pytest.approx(3360) and r["drop_s"] == [10.0, 70.0]
        assert r["budget_breaches"] == 0
        for k in ("attainment_before_drop", "attainment_during_drop", "attainment_after_drop"):
            assert 0.0 <= r[k] <= 1.0, k
    assert "| sonnet-shift | 26 | rapid |" in markdown(res).split("Budget events")[1]


def test_the_widened_oracle_tries_colocated_and_concurrent_and_bounds_the_colocated_layout() -> None:
    """Issue 15: the oracle searches every layout a shipped policy runs (planner-concurrent reaches
    concurrent ones). On sonnet-shift's 8K-prompt phase at 38 req/s, colocated instances beat every
    disaggregated split, so the oracle must pick them there and attain at least what the colocated
    layout does over the whole run."""
    from dataclasses import replace

    from wattserve.experiments.build import build_run
    from wattserve.experiments.oracle import oracle, oracle_cells
    from wattserve.experiments.run_metrics import metrics
    from wattserve.experiments.scenarios import get_scenario
    from wattserve.experiments.workloads import make_workload

    sc = replace(get_scenario("rapid-mi300x"), prefill_caps_w=(450, 600, 750), oracle_prefill_counts=(4, 6))
    colocated = [c for c in oracle_cells(sc, [(0, 10)]) if c.layout == "colocated"]
    assert sorted(c.prefill_cap_w for c in colocated) == [450, 600]
    assert all(c.prefill_cap_w == c.decode_cap_w and 8 * c.prefill_cap_w <= sc.budget_w for c in colocated)
    concurrent = [c for c in oracle_cells(sc, [(0, 10)]) if c.layout == "concurrent"]
    assert [(c.prefill_cap_w, c.decode_cap_w) for c in concurrent] == [(c.prefill_cap_w, c.decode_cap_w)
                                                                       for c in colocated]
    assert concurrent[0].scenario(sc).cluster.concurrent == 8
    wl = make_workload("sonnet-shift", 38, 0, per_phase=300)
    res = oracle(sc, wl, [(0, 300), (300, 600)])
    arm = metrics(sc, build_run(sc.scenario(sc.arm("colocated")), wl).run(), [])
    assert res["oracle_choice"][0]["layout"] == "colocated"
    assert res["slo_attainment"] >= arm["slo_attainment"]
