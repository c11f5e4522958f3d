"""wattserve's planner on live workers (`serve --policy planner`): the same controller the
simulator runs, handed the simulator of the deployment as its model, its searches run off the API's
event loop. Two CPU workers stand for two modelled H100s (200 to 700 W) under 1,400 W."""

from __future__ import annotations

import time
import urllib.request

import pytest

from serverutil import post, start_server


def _roles_and_caps(url: str) -> tuple[dict[str, str], list[float]]:
    from prometheus_client import parser

    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        fams = {f.name: f.samples for f in parser.text_string_to_metric_families(r.read().decode())}
    roles = {s.labels["worker"]: s.labels["role"] for s in fams["wattserve:worker_alive"]}
    return roles, [s.value for s in fams["wattserve:gpu_power_cap_watts"]]


def test_serve_runs_the_planner_on_live_workers_inside_the_budget() -> None:
    """It starts both workers colocated (before any load), then plans from the load it measures:
    at this light load every candidate serves everything, so it moves for power alone, away from
    two colocated workers at 700 W each; every request completes, and the caps never sum above the
    budget."""
    pytest.importorskip("torch")
    srv = start_server("--prefill", "1", "--decode", "1", "--policy", "planner", "--budget", "1400")
    seen: list[tuple[dict[str, str], list[float]]] = []
    try:
        assert set(srv.roles.values()) == {"colocated"}, srv.lines
        t0 = time.monotonic()
        while time.monotonic() - t0 < 8.0:
            code, body = post(srv.url, "/v1/completions", {"model": "tiny", "prompt": "hello world " * 20,
                                                         "max_tokens": 16})
            assert code == 200, body
            seen.append(_roles_and_caps(srv.url))
            time.sleep(0.1)
    finally:
        out = srv.stop()
    assert srv.proc.returncode == 0 and "Traceback" not in out and "decision failed" not in out, out
    assert max(sum(caps) for _, caps in seen) <= 1400 + 1e-3
    roles, caps = seen[-1]
    assert set(roles.values()) != {"colocated"} or sorted(caps) != [700.0, 700.0], seen[-1]


def _step_targets(url: str) -> dict[str, float]:
    from prometheus_client import parser

    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        fams = {f.name: f.samples for f in parser.text_string_to_metric_families(r.read().decode())}
    return {s.labels["worker"]: s.value for s in fams.get("wattserve:worker_step_target", [])}


def test_the_planner_sets_the_step_governors_target_on_live_workers() -> None:
    """With no --governor named, a planner's workers run BiScale's decode-slack governor (target 0.9
    of the TPOT SLO on its own) and get the planner's target through SetStepTarget: 0 at its start,
    which spends no slack, until its model and the observed latencies show slack."""
    pytest.importorskip("torch")
    srv = start_server("--prefill", "1", "--decode", "1", "--policy", "planner", "--budget", "1400",
                       "--slo-tpot-ms", "5000")
    try:
        deadline = time.monotonic() + 10.0
        while _step_targets(srv.url) != {"0": 0.0, "1": 0.0} and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _step_targets(srv.url) == {"0": 0.0, "1": 0.0}
        code, body = post(srv.url, "/v1/completions", {"model": "tiny", "prompt": "hello", "max_tokens": 8})
        assert code == 200, body
    finally:
        out = srv.stop()
    assert srv.proc.returncode == 0 and "Traceback" not in out and "decision failed" not in out, out
