"""`wattserve validate` (issue 12): the calibrated simulator beside the real runtime. The accuracy is
measured by the command itself (docs/calibration.md); these tests hold its plumbing and its result
fields, on a short run."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from wattserve.experiments.runtime_replay import RuntimeLayout
from wattserve.experiments.validate import (
    METRICS,
    Requests,
    handoff_overhead,
    lengths,
    poisson,
    sim_cluster,
    simulate,
)
from wattserve.perf.iteration_table import IterationRow, write_rows
from wattserve.perf.perf_profile import load_profile

from refusal import assert_refused, run_in_process

pytest.importorskip("torch")


def cpu_table(path: Path) -> None:
    """A small table of plausible CPU step times for `tiny` (what `profile --kind iterations` writes)."""
    rows = [IterationRow("wattserve-runtime", "cpu", "tiny", 1, 0, 0, 0, b, b * c, 1.2 + 0.01 * b + 2e-4 * b * c)
            for b in (1, 4, 16) for c in (32, 256)]
    rows += [IterationRow("wattserve-runtime", "cpu", "tiny", 1, n, 1, 0, 0, 0, 1.3 + 0.02 * n + 6e-5 * n * n)
             for n in (16, 64, 256)]
    write_rows(rows, path)


def test_validate_writes_the_fields_scripts_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table, out = tmp_path / "t.csv", tmp_path / "v"
    cpu_table(table)
    code, stdout, err = run_in_process(["validate", "--layouts", "colocated", "--rates", "4", "--requests", "10",
                                        "--repeats", "1", "--profile-loads", "1", "--profile-table", str(table),
                                        "--out", str(out)], capsys)
    assert code == 0, err
    doc = json.loads((out / "validate.json").read_text())
    assert {r["metric"] for r in doc["rows"]} == set(METRICS)
    for r in doc["rows"]:
        assert {"layout", "rate", "metric", "runtime", "sim", "abs_error"} <= set(r)
        assert r["layout"] == "colocated" and r["rate"] == 4
        assert r["abs_error"] == pytest.approx(abs(r["sim"] - r["runtime"]) / r["runtime"])
    assert doc["median_abs_error"] == pytest.approx(float(np.median([r["abs_error"] for r in doc["rows"]])))
    assert {r["metric"] for r in doc["profiling_rows"]} == set(METRICS)
    assert {(r["layout"], r["rate"]) for r in doc["profiling_rows"]} == {("colocated", 4.0)}
    assert doc["profiling_median_abs_error"] == pytest.approx(
        float(np.median([r["abs_error"] for r in doc["profiling_rows"]])))
    assert doc["profiles"]["colocated"]["latency"]["request_overhead_s"] > 0
    for name in ("validate.md", "cdf.png", "profile-colocated.json", "grid_profile.json", "profile_table.csv",
                 "serving_table-colocated.csv"):
        assert (out / name).is_file()
    assert load_profile(str(out / "profile-colocated.json")).fitted_on == ("cpu",)
    assert list((out / "steps" / "colocated").glob("load0/steps-worker0-colocated.csv"))
    (sat,) = doc["saturation"]
    assert sat["layout"] == "colocated" and sat["rate"] == 4 and sat["offered_rps"] > 0
    assert sat["saturated"] == (sat["runtime_rps"] < 0.9 * sat["offered_rps"])


def test_the_capacity_burst_stays_out_of_the_serving_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                              ) -> None:
    """The burst measures capacity only: its steps of every request at once would price the measured
    runs' moderate batches too slow, so only the profiling loads' step logs are fitted."""
    from wattserve.perf.iteration_table import binned, read_rows

    table, out = tmp_path / "t.csv", tmp_path / "v"
    cpu_table(table)
    code, _, err = run_in_process(["validate", "--layouts", "colocated", "--requests", "10", "--repeats", "1",
                                   "--profile-loads", "0.5", "--profile-table", str(table), "--out", str(out)], capsys)
    assert code == 0, err
    doc = json.loads((out / "validate.json").read_text())
    assert doc["runtime_capacity_rps"]["colocated"] > 0
    logs = sorted((out / "steps" / "colocated").glob("*/*.csv"))
    assert [f.parent.name for f in logs] == ["load0"]
    assert doc["profile_fit"]["colocated"]["rows"] == len(binned(read_rows(logs[0], "step_log")))


def test_the_grid_keeps_only_steps_within_the_token_budget() -> None:
    from wattserve.experiments.validate import runnable

    def row(prompt: int, seqs: int, decode: int) -> IterationRow:
        return IterationRow("wattserve-runtime", "cpu", "tiny", 1, prompt, seqs, 0, decode, decode * 64, 1.0)

    rows = [row(512, 1, 0), row(1024, 2, 0), row(384, 1, 24), row(384, 1, 200), row(0, 0, 32)]
    assert runnable(rows, 512) == [rows[0], rows[2], rows[4]]


def test_a_rate_the_runtime_cannot_keep_up_with_is_called_saturated() -> None:
    from wattserve.experiments.validate import offered_rps, saturation_row

    arrivals = np.linspace(0.0, 9.9, 100)
    assert offered_rps(arrivals) == pytest.approx(10.0)
    kept_up = {"layout": "1p1d", "rate": 10.0, "offered_rps": 10.0, "runtime_runs": [{"request_throughput": 9.6}]}
    behind = {**kept_up, "runtime_runs": [{"request_throughput": 8.2}, {"request_throughput": 8.6}]}
    assert not saturation_row(kept_up)["saturated"]
    assert saturation_row(behind)["saturated"] and saturation_row(behind)["runtime_rps"] == pytest.approx(8.4)


def test_the_simulator_mirrors_the_runtime_settings(tmp_path: Path) -> None:
    layout = RuntimeLayout(layout="1p1d", model="tiny")
    cfg = sim_cluster(layout, "tiny", "default")
    s = layout.settings()
    assert (cfg.gpu, cfg.prefill, cfg.decode, cfg.colocated) == ("cpu", 1, 1, 0)
    assert cfg.engine.max_seqs == s["max_num_seqs"]
    assert cfg.engine.colocated_token_budget == cfg.engine.prefill_token_budget == s["max_batched_tokens"]
    prompt, output, _ = lengths(50, 0, None)
    m, _ = simulate(cfg, Requests(poisson(50, 5.0, 0), prompt, output))
    assert m["request_throughput"] > 0 and m["mean_tpot_ms"] > 0


def test_handoff_overhead_comes_from_idle_probes_only() -> None:
    p = load_profile("default")
    idle = {"colocated": {"ttft_s": 0.005, "first_gap_s": 0.002}, "1p1d": {"ttft_s": 0.005, "first_gap_s": 0.0045}}
    assert handoff_overhead(p, "tiny", idle) == pytest.approx(0.0025)
    alone = {"1p1d": idle["1p1d"]}
    assert 0.0 < handoff_overhead(p, "tiny", alone) < 0.0045


def test_bad_flags_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv, expect in ((["--model", "llama-3.1-70b"], "--model: unknown model"),
                         (["--layouts", "4p4d"], "--layouts: '4p4d' is not allowed"),
                         (["--rates", "0,5"], "--rates: '0,5' is not allowed"),
                         (["--requests", "3"], "--requests"),
                         (["--profile-table", str(tmp_path / "none.csv")], "--profile-table")):
        assert_refused(*run_in_process(["validate", "--out", str(tmp_path / "v"), *argv], capsys), expect)
    assert not (tmp_path / "v").exists()


def _step_spread() -> ModuleType:
    import importlib.util

    spec = importlib.util.spec_from_file_location("step_spread", Path(__file__).parents[1] / "scripts" / "step_spread.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_step_spread_tells_a_slow_drift_from_step_noise() -> None:
    """Steps of one shape whose time drifts slowly (a host slowing down for a while) are
    autocorrelated at a lag of one step; steps with independent noise of the same size are not."""
    import random

    from wattserve.perf.iteration_table import IterationRow

    rng = random.Random(0)
    drift, noise = [], []
    level = 0.0
    for _ in range(2000):
        level = 0.98 * level + 0.2 * 0.2 * rng.gauss(0, 1)
        drift.append(IterationRow("t", "cpu", "tiny", 1, 0, 0, 0, 4, 400, float(np.exp(level))))
        noise.append(IterationRow("t", "cpu", "tiny", 1, 0, 0, 0, 4, 400, float(np.exp(0.2 * rng.gauss(0, 1)))))
    mod = _step_spread()
    sd_drift, ac_drift = mod.spread(drift)
    sd_noise, ac_noise = mod.spread(noise)
    assert ac_drift[0] > 0.9 and abs(ac_noise[0]) < 0.1
    assert sd_noise == pytest.approx(0.2, rel=0.1)
