"""`serve --policy pals --budget-trace FILE` on the CPU runtime: the tiny MoE model on two workers
with modelled A100 power agents, a budget file with a cut and a moving throughput target, for half
half a minute under a steady load. The PALS controller plans from models fitted to a runtime profile of the
same model (tests/data/pals_tiny_moe.json: `wattserve profile --backend runtime --gpu a100 --model
tiny-moe --tp 1 --caps 150,250,400 --batches 2,8,32 --duration 6`, then `wattserve fit --folds 3`)."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path

import pytest

MODELS = Path(__file__).parent / "data" / "pals_tiny_moe.json"
BUDGET = ((0.0, 800.0), (10.0, 450.0), (20.0, 800.0))
TARGET = ((0.0, 600.0), (7.0, 5000.0), (23.0, 800.0))
RUN_S = 30.0
SLACK_S = 1.5
"""Samples this close to a budget change are not judged: the test's clock and the server's differ by
the time the banner took to reach the test."""


def _budget_at(t: float) -> float:
    return [w for s, w in BUDGET if s <= t][-1]


def _load(url: str, stop: threading.Event) -> None:
    body = json.dumps({"prompt": "the power budget", "max_tokens": 24, "ignore_eos": True}).encode()
    while not stop.is_set():
        req = urllib.request.Request(url + "/v1/completions", data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                r.read()
        except OSError:
            time.sleep(0.05)


def test_pals_serve_moves_caps_and_batch_limits_and_holds_a_budget_file(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from prometheus_client import parser

    from serverutil import start_server

    budget = tmp_path / "budget.csv"
    budget.write_text("time_s,watts\n" + "".join(f"{t:g},{w:g}\n" for t, w in BUDGET))
    target = tmp_path / "target.csv"
    target.write_text("time_s,tok_s\n" + "".join(f"{t:g},{v:g}\n" for t, v in TARGET))
    srv = start_server("--model", "tiny-moe", "--colocated", "2", "--gpu", "a100", "--policy", "pals",
                       "--budget-trace", str(budget), "--target", str(target), "--pals-models", str(MODELS))
    stop = threading.Event()
    clients = [threading.Thread(target=_load, args=(srv.url, stop), daemon=True) for _ in range(12)]
    for c in clients:
        c.start()
    t0 = time.monotonic()
    seen: list[tuple[float, list[float], list[float]]] = []
    try:
        while (t := time.monotonic() - t0) < RUN_S:
            with urllib.request.urlopen(srv.url + "/metrics", timeout=10) as r:
                fams = {f.name: f.samples for f in parser.text_string_to_metric_families(r.read().decode())}
            seen.append((t, [s.value for s in fams["wattserve:gpu_power_cap_watts"]],
                         [s.value for s in fams["wattserve:worker_max_num_seqs"]]))
            time.sleep(0.25)
    finally:
        stop.set()
        for c in clients:
            c.join(timeout=35)
        out = srv.stop()
    assert srv.proc.returncode == 0 and "Traceback" not in out, out
    for t, caps, _ in seen:
        assert sum(caps) <= max(w for _, w in BUDGET) + 1e-3, (t, caps)
        near_change = any(abs(t - s) < SLACK_S for s, _ in BUDGET[1:])
        if not near_change:
            assert sum(caps) <= _budget_at(t) + 1e-3, (t, caps, _budget_at(t))
    assert len({round(c, 1) for _, caps, _ in seen for c in caps}) >= 3, "caps moved"
    limits = [tuple(b) for _, _, b in seen]
    assert len(set(limits)) >= 2, f"batch limits moved: {sorted(set(limits))}"
    during = [sum(caps) for t, caps, _ in seen if 10 + SLACK_S < t < 20 - SLACK_S]
    assert during and max(during) <= 450 + 1e-3
