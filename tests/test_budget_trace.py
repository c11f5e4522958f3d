"""Budgets and throughput targets over time (docs/budgets.md): the step signal, the CSV format and
the shapes, the schema's rules, and runs that must hold a moving budget with no breach while the
caps follow it down and back up, in the simulator and in `wattserve serve`."""

from __future__ import annotations

import csv
import json
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wattserve.cli import main
from wattserve.control.budget_rises import rise_caps
from wattserve.errors import UsageError
from wattserve.experiments.build import build_run
from wattserve.metrics.budget_tracking import track_budget
from wattserve.metrics.power_series import cluster_caps
from wattserve.schema.loading import load_scenario
from wattserve.seam import BudgetSignal, ClusterState, GpuState, StepSignal
from wattserve.workload.step_signal import load_steps, shape_steps

signals = st.lists(st.tuples(st.floats(0.001, 100.0), st.floats(1.0, 5000.0)), min_size=0, max_size=8).map(
    lambda rows: StepSignal((0.0, *np.cumsum([d for d, _ in rows]).tolist()),
                            (1234.0, *[v for _, v in rows])))


@settings(max_examples=60, deadline=None)
@given(signals, st.floats(-10.0, 600.0), st.floats(0.0, 300.0))
def test_min_and_max_over_a_window_bound_every_value_in_it(s: StepSignal, t0: float, width: float) -> None:
    t1 = t0 + width
    inside = [t0, *[t for t in s.times if t0 <= t <= t1]]
    assert s.min_over(t0, t1) == min(s.at(t) for t in inside)
    assert s.max_over(t0, t1) == max(s.at(t) for t in inside)
    for t in np.linspace(t0, t1, 7):
        assert s.min_over(t0, t1) <= s.at(float(t)) <= s.max_over(t0, t1)
    assert s.floor() <= s.min_over(t0, t1) and s.max_over(t0, t1) <= s.peak()


@settings(max_examples=30, deadline=None)
@given(signals)
def test_a_signal_written_as_csv_reads_back_the_same(tmp_path_factory: pytest.TempPathFactory, s: StepSignal) -> None:
    path = tmp_path_factory.mktemp("csv") / "b.csv"
    path.write_text("time_s,watts\n" + "".join(f"{t!r},{v!r}\n" for t, v in zip(s.times, s.values)))
    assert StepSignal(*load_steps(path, "watts", "control.budget_trace")) == s


def test_at_holds_each_value_from_its_time_on() -> None:
    s = BudgetSignal((0.0, 5.0, 9.0), (4000.0, 2400.0, 4000.0))
    assert [s.at(t) for t in (-1.0, 0.0, 4.999, 5.0, 8.0, 9.0, 1e9)] == [4000, 4000, 4000, 2400, 2400, 4000, 4000]
    assert s.watts == s.values and list(s.change_times()) == [5.0, 9.0]
    assert BudgetSignal.constant(3.0) == BudgetSignal((0.0,), (3.0,))


def test_shapes_and_their_defaults() -> None:
    assert shape_steps("step", 4000, "f") == ((0.0, 60.0, 120.0), (4000, 2800.0, 4000))
    assert shape_steps("demand-response", 4000, "f") == ((0.0, 120.0, 1020.0), (4000, 2400.0, 4000))
    assert shape_steps("demand-response:start=30,minutes=1,level=0.5", 4000, "f") == (
        (0.0, 30.0, 90.0), (4000, 2000.0, 4000))
    times, watts = shape_steps("ramp", 4000, "f")
    assert times[:3] == (0.0, 35.0, 40.0) and min(watts) == 2000.0 and watts[-1] == 4000
    low = watts.index(2000.0)
    assert times[low] == 90.0 and times[-1] == 150.0
    assert list(watts[:low + 1]) == sorted(watts[:low + 1], reverse=True) and list(watts[low:]) == sorted(watts[low:])
    assert max(np.diff(times[1:])) <= 5.0 + 1e-9
    assert shape_steps("step:start=0", 4000, "f") == ((0.0, 60.0), (2800.0, 4000))


def scenario(**control: object) -> object:
    return load_scenario(None, {"workload.rate": 150, "workload.duration_s": 40, "control.policy": "rapid",
                                **{f"control.{k}": v for k, v in control.items()}})


@pytest.mark.parametrize(("control", "expect"), [
    ({"budget_trace": "step"}, "the shape 'step' scales the full budget; give --budget W too"),
    ({"budget_trace": "step:level=1.5", "budget_w": 4000}, "level=1.5 is not allowed"),
    ({"budget_trace": "ramp:every=0", "budget_w": 4000}, "every=0 is not allowed"),
    ({"budget_trace": "ramp:speed=3", "budget_w": 4000}, "unknown parameter 'speed'; allowed: start"),
    ({"budget_trace": "step:60", "budget_w": 4000}, "'60' is not KEY=VALUE"),
    ({"budget_trace": "b.csv", "budget_w": 4000}, "give --budget-trace FILE or --budget W, not both"),
    ({"budget_w": 4000, "target_trace": "0"}, "control.target_trace: 0 is not allowed"),
    ({"budget_w": 4000, "target_trace": "inf"}, "control.target_trace: inf is not allowed"),
])
def test_the_schema_refuses(control: dict[str, object], expect: str) -> None:
    with pytest.raises(UsageError) as e:
        scenario(**control)
    assert expect in str(e.value)


def targets_seen(target: str, times: tuple[float, ...]) -> list[float | None]:
    """ClusterState.target_tok_s as a controller would see it at `times` of a run."""
    run = build_run(scenario(budget_w=4000, target_trace=target))
    backend = run.guard.backend  # type: ignore[union-attr]
    seen: list[float | None] = []
    for t in times:
        run.cluster.loop.at(t, lambda _: seen.append(backend.observe().target_tok_s))
    run.run()
    return seen


def test_a_target_reaches_the_controllers(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("time_s,tok_s\n0,500\n10,800\n")
    assert targets_seen("650", (1.0, 11.0)) == [650.0, 650.0]
    assert targets_seen(str(tmp_path / "t.csv"), (1.0, 11.0)) == [500.0, 800.0]
    plain = build_run(scenario(budget_w=4000))
    assert plain.guard.backend.observe().target_tok_s is None  # type: ignore[union-attr]


def caps_in_force(actuations: Path, start_w: float, gpus: int) -> list[tuple[float, float]]:
    """(time, sum of caps in force from then on), replayed from actuations.csv's applied caps."""
    caps = dict.fromkeys(range(gpus), start_w)
    events = sorted((float(r["effective_s"]), int(r["target"]), float(r["value"]))
                    for r in csv.DictReader(actuations.open()) if r["kind"] == "cap" and r["status"] == "applied")
    out = [(0.0, sum(caps.values()))]
    for t, g, w in events:
        caps[g] = w
        out.append((t, sum(caps.values())))
    return out


def sum_at(series: list[tuple[float, float]], t: float) -> float:
    return [s for x, s in series if x <= t][-1]


@pytest.mark.parametrize("kind", ["shape", "csv"])
def test_simulate_holds_a_moving_budget_and_the_caps_follow_it(kind: str, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A cut to 60% from 10 s to 25 s: no breach, the caps are under the cut while it lasts and back
    to the full budget after it."""
    (tmp_path / "b.csv").write_text("time_s,watts\n0,4000\n10,2400\n25,4000\n")
    trace = ["--budget", "4000", "--budget-trace", "demand-response:start=10,minutes=0.25,level=0.6"] \
        if kind == "shape" else ["--budget-trace", str(tmp_path / "b.csv")]
    out = tmp_path / "run"
    assert main(["simulate", "--json", "--no-plots", "--rate", "150", "--duration", "40", "--policy", "rapid",
                 *trace, "--out", str(out)]) == 0
    capsys.readouterr()
    s = json.loads((out / "summary.json").read_text())
    assert s["budget_breaches"] == 0 and s["budget_w"] == 4000 and s["budget_min_w"] == 2400
    assert s["max_sum_caps_w"] <= 4000 and 0 < s["budget_gap_mean_w"] < 4000
    series = caps_in_force(out / "actuations.csv", 500.0, 8)
    assert all(sum_at(series, t) <= 2400 + 1e-3 for t in np.arange(10.0, 25.0, 0.25))
    assert sum_at(series, 9.0) > 3900 and sum_at(series, 27.0) > 3900
    assert max(s for _, s in series) <= 4000 + 1e-3


def test_a_drop_sooner_than_the_guard_could_act_is_held_from_the_start(tmp_path: Path) -> None:
    """A drop at 0.2 s comes before a cap lowered at t=0 settles (0.3 s): the run starts at the lowest
    budget of the guard's first look-ahead instead."""
    (tmp_path / "b.csv").write_text("time_s,watts\n0,4000\n0.2,2400\n0.5,4000\n")
    run = build_run(scenario(budget_trace=str(tmp_path / "b.csv")))
    res = run.run()
    assert track_budget(res.gpus, run.budget, res.end_s).budget_breaches == 0  # type: ignore[arg-type]
    assert cluster_caps(res.gpus)[1][0] == pytest.approx(2400.0)


def test_a_budget_below_the_minimum_caps_names_the_time(tmp_path: Path) -> None:
    (tmp_path / "b.csv").write_text("time_s,watts\n0,4000\n30,1500\n")
    with pytest.raises(UsageError) as e:
        build_run(scenario(budget_trace=str(tmp_path / "b.csv")))
    assert e.value.field == "control.budget_trace" and "1500 W from 30 s is below" in str(e.value)
    with pytest.raises(UsageError, match="1400 W from 60 s"):
        build_run(scenario(budget_w=4000, budget_trace="step:level=0.35"))


def test_rise_caps_returns_the_split_in_proportion() -> None:
    def g(i: int, cap: float) -> GpuState:
        return GpuState(index=i, instance=i, cap_w=cap, cap_target_w=cap, cap_min_w=200.0, cap_max_w=700.0,
                        clock_mhz=1980, clock_max_mhz=1980, locked_clock_mhz=None, power_w=cap, energy_j=0.0,
                        throttled=False)

    state = ClusterState(0.0, 1650.0, None, None, (), (g(0, 300.0), g(1, 500.0), g(2, 650.0)))
    caps = {a.gpu: a.watts for a in rise_caps(state)}
    assert caps[2] == 700.0 and caps[0] < caps[1] < 700.0
    assert caps[0] + caps[1] + 700.0 == pytest.approx(1650.0)
    assert rise_caps(ClusterState(0.0, 1450.0, None, None, (), state.gpus)) == []


def test_serve_follows_a_budget_file_down_and_up(tmp_path: Path) -> None:
    """Two CPU workers (modelled H100s, 200 to 700 W) under 1400 W, then 800 W from 3 s to 7 s: the
    caps the workers report go down before the cut lands and back up after it, and their sum is
    never above the budget in force."""
    pytest.importorskip("torch")
    from prometheus_client import parser

    from serverutil import start_server

    (tmp_path / "b.csv").write_text("time_s,watts\n0,1400\n3,800\n7,1400\n")
    srv = start_server("--colocated", "2", "--policy", "static", "--budget-trace", str(tmp_path / "b.csv"))
    t0 = time.monotonic()
    seen: list[tuple[float, float]] = []
    try:
        while time.monotonic() - t0 < 10.0:
            with urllib.request.urlopen(srv.url + "/metrics", timeout=10) as r:
                text = r.read().decode()
            fams = {f.name: f.samples for f in parser.text_string_to_metric_families(text)}
            caps = [s.value for s in fams["wattserve:gpu_power_cap_watts"]]
            seen.append((time.monotonic() - t0, sum(caps)))
            time.sleep(0.2)
    finally:
        out = srv.stop()
    assert srv.proc.returncode == 0 and "Traceback" not in out, out
    assert max(s for _, s in seen) <= 1400 + 1e-3
    during = [s for t, s in seen if 3.3 <= t <= 6.3]
    assert during and max(during) <= 800 + 1e-3, seen
    assert any(s > 1300 for t, s in seen if t >= 8.5), seen
