"""`wattserve manage` against a fleet of our own CPU servers (they serve vLLM's metric names and the
OpenAI API) and two `wattserve agent`s over the NVML fake (issue 13's acceptance): caps move under
load, the budget holds at every sampled instant after the caps found at start are brought under it,
and an engine going away is marked down while the rest stay managed. Also the refusals that need no
fleet: a policy the engine cannot serve, an unreachable agent or endpoint."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("aiohttp")
pytest.importorskip("torch")

from test_agent import start_agent  # noqa: E402

from refusal import assert_refused, run_in_process  # noqa: E402
from serverutil import post, start_server  # noqa: E402

BUDGET_W = 1000.0


def _load(url: str, stop: threading.Event) -> int:
    n = 0
    while not stop.is_set():
        status, _ = post(url, "/v1/completions", {"model": "tiny", "prompt": "power " * 40, "max_tokens": 8})
        n += status == 200
    return n


def test_manage_moves_caps_under_load_holds_the_budget_and_survives_an_engine_going_away(tmp_path: Path) -> None:
    with ThreadPoolExecutor(4) as pool:
        servers = list(pool.map(lambda _: start_server("--colocated", "1"), range(2)))
        agents = list(pool.map(lambda k: start_agent(tmp_path, name=f"node{k}"), range(2)))
    stop = threading.Event()
    loaders = []
    manage = None
    try:
        out = tmp_path / "run"
        manage = subprocess.Popen(
            [sys.executable, "-m", "wattserve", "manage", "--engine", "vllm",
             "--endpoints", ",".join(s.url for s in servers), "--agents", ",".join(a[1] for a in agents),
             "--roles", "prefill,decode", "--budget", str(BUDGET_W), "--policy", "rapid-power",
             "--slo-ttft-ms", "2", "--slo-tpot-ms", "10000", "--poll", "0.25", "--duration", "9",
             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3):
            t = threading.Thread(target=_load, args=(servers[0].url, stop), daemon=True)
            t.start()
            loaders.append(t)
        time.sleep(5)
        servers[1].stop()
        stdout, stderr = manage.communicate(timeout=60)
    finally:
        stop.set()
        for t in loaders:
            t.join(timeout=70)
        for s in servers:
            s.stop()
        for proc, _, _ in agents:
            proc.terminate()
            proc.communicate(timeout=30)
        if manage is not None and manage.poll() is None:
            manage.kill()
    assert manage.returncode == 0, stderr
    assert "is down" in stderr and servers[1].url in stderr

    summary = json.loads((out / "summary.json").read_text())
    assert summary["budget_w"] == BUDGET_W
    assert summary["budget_held"] is True and summary["samples_over_budget"] == 0
    assert summary["max_sum_caps_w"] <= BUDGET_W + 1e-6
    assert summary["initial_sum_caps_w"] == 1400.0
    down = {e["url"]: e for e in summary["endpoints"]}
    assert down[servers[1].url]["alive"] is False and down[servers[1].url]["down_at_s"]
    assert down[servers[0].url]["alive"] is True

    rows = list(csv.DictReader((out / "actuations.csv").open()))
    caps = [(float(r["time_s"]), int(r["target"]), float(r["value"])) for r in rows
            if r["kind"] == "cap" and r["status"] == "applied"]
    prefill_caps = [v for _, g, v in caps if g == 0]
    assert max(prefill_caps) > BUDGET_W / 2 + 1, f"RAPID never gave the loaded prefill GPU more power: {caps}"
    assert min(v for _, g, v in caps if g == 1) < BUDGET_W / 2 - 1

    held_from = summary["held_from_s"]
    samples = list(csv.DictReader((out / "caps.csv").open()))
    assert len(samples) > 20
    after = [s for s in samples if float(s["time_s"]) >= held_from]
    assert after and all(float(s["committed_w"]) <= float(s["budget_w"]) + 1e-6 for s in after)
    assert all(float(s["readback_w"]) <= float(s["budget_w"]) + 1e-6 for s in after)
    assert int(samples[-1]["alive_endpoints"]) == 1

    for _, _, state in agents:
        left = json.loads(state.read_text())["devices"]
        assert [d["limit_mw"] for d in left] == [700_000], "manage did not ask the agents to restore defaults"


def test_manage_refuses_a_policy_the_engine_cannot_serve(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["manage", "--endpoints", "http://127.0.0.1:1", "--agents", "http://127.0.0.1:2", "--budget", "1000"]
    for policy, expect in (("pals", "max_num_seqs"), ("rapid", "role"), ("batch-only", "max_seqs")):
        code, out, err = run_in_process([*base, "--policy", policy], capsys)
        assert_refused(code, out, err, "--policy")
        assert expect in err and "rapid-power" in err


def test_manage_refuses_unreachable_agents_and_bad_lists(capsys: pytest.CaptureFixture[str],
                                                        tmp_path: Path) -> None:
    base = ["manage", "--budget", "1000", "--policy", "tdp"]
    for extra, expect in (
            (["--endpoints", "http://127.0.0.1:1", "--agents", "http://127.0.0.1:9"], "--agents"),
            (["--endpoints", "localhost:8000", "--agents", "http://127.0.0.1:9"], "--endpoints"),
            (["--endpoints", "http://a:1,http://b:1", "--agents", "http://c:1", "--roles", "prefill"], "--roles"),
            (["--endpoints", "http://a:1", "--agents", "http://c:1", "--roles", "leader"], "--roles"),
            (["--endpoints", "http://a:1", "--agents", "http://c:1", "--budget", "-5"], "--budget")):
        assert_refused(*run_in_process([*base, *extra], capsys), expect)
    assert not any(tmp_path.iterdir())
