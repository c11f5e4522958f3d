"""Scale-out on Ray (issue 14), on a local Ray instance on CPU: a comparison's tasks on Ray give the
process pool's results, and the tiny model served by Ray actors (1 prefill + 1 decode) answers a
bench and gives the same greedy tokens as local worker processes; a worker actor dying is a dead
worker to the router."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("ray")

from wattserve.experiments.executors import ProcessExecutor, RayExecutor, resolve  # noqa: E402

from serverutil import greedy_texts, post, start_server  # noqa: E402

COMPARE = ["compare", "--scenario", "rapid-mi300x", "--workloads", "sonnet-shift", "--rates", "3",
           "--policies", "static-split,rapid", "--jobs", "2"]


def _square_sum(cell: tuple[object, int]) -> int:
    return sum(v * v for v in resolve(cell[0])) + cell[1]


def test_both_executors_map_in_order_and_resolve_shared_objects() -> None:
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    data = list(range(50))
    ray_ex = RayExecutor(num_cpus=2)
    try:
        for ex in (ProcessExecutor(2), ray_ex):
            seen: list[int] = []
            shared = ex.share(data)
            out = ex.map(_square_sum, [(shared, k) for k in range(6)], lambda d, n, seen=seen: seen.append(d))
            assert out == [40425 + k for k in range(6)], ex.name
            assert seen[-1] == 6
    finally:
        ray_ex.close()


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wattserve", *args], capture_output=True, text=True, timeout=600)


def test_compare_on_ray_gives_the_process_pools_results(tmp_path: Path) -> None:
    local = _run(*COMPARE, "--out", str(tmp_path / "local"))
    assert local.returncode == 0, local.stderr
    on_ray = _run(*COMPARE, "--ray", "--out", str(tmp_path / "ray"))
    assert on_ray.returncode == 0, on_ray.stderr
    a = json.loads((tmp_path / "local" / "compare.json").read_text())
    b = json.loads((tmp_path / "ray" / "compare.json").read_text())
    assert (a["executor"], b["executor"]) == ("process", "ray")
    assert a["runs"] == b["runs"] and a["summary"] == b["summary"]
    assert (tmp_path / "ray" / "runs.csv").read_text() == (tmp_path / "local" / "runs.csv").read_text()
    assert len((tmp_path / "ray" / "runs.csv").read_text().splitlines()) == 1 + 2


def test_compare_refuses_an_unreachable_ray_cluster(tmp_path: Path) -> None:
    r = _run(*COMPARE, "--ray-address", "127.0.0.1:1", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "--ray-address" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x").exists()


PROMPTS = ["the power budget", "prefill and decode", "one two three four five six", "x"]


def test_serving_on_ray_actors_gives_the_local_launchers_greedy_tokens_and_survives_an_actor_dying() -> None:
    local = start_server("--prefill", "1", "--decode", "1")
    try:
        expected = greedy_texts(local.url, PROMPTS)
    finally:
        local.stop()
    srv = start_server("--prefill", "1", "--decode", "1", "--launcher", "ray", timeout_s=180)
    try:
        assert greedy_texts(srv.url, PROMPTS) == expected
        bench = _run("bench", "--base-url", srv.url, "--num-prompts", "16", "--request-rate", "inf",
                     "--random-input-len", "32", "--random-output-len", "8", "--ignore-eos")
        assert bench.returncode == 0, bench.stderr
        assert re.search(r"Successful requests:\s+16\s", bench.stdout), bench.stdout
        decode = next(w for w, r in srv.roles.items() if r == "decode")
        os.kill(srv.pids[decode], signal.SIGKILL)
        deadline = time.time() + 30
        health = 200
        while time.time() < deadline and health == 200:
            try:
                with urllib.request.urlopen(srv.url + "/health", timeout=5) as r:
                    health = r.status
            except urllib.error.HTTPError as e:
                health = e.code
                body = json.loads(e.read())
            time.sleep(0.2)
        assert health == 503 and str(decode) in json.dumps(body)
        status, doc = post(srv.url, "/v1/completions",
                           {"model": "tiny", "prompt": "after", "max_tokens": 4, "ignore_eos": True})
        assert status == 503 and "no live decode worker" in doc["error"]["message"], doc
    finally:
        out = srv.stop(60)
    assert "stopped" in out
