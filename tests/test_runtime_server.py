"""The runtime end to end on CPU: real worker processes, a real HTTP server, real clients."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import serverutil
from serverutil import start_server

pytest.importorskip("torch")
openai = pytest.importorskip("openai")
parser = pytest.importorskip("prometheus_client.parser")

KEY = "test-key"


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    srv = start_server("--prefill", "1", "--decode", "1", "--api-key", KEY, "--max-prompt-tokens", "600")
    yield srv.url
    out = srv.stop()
    assert "Traceback" not in out, out


def post(url: str, path: str, body: bytes, key: str | None = KEY) -> tuple[int, dict]:
    return serverutil.post(url, path, body, key, timeout_s=30)


def metrics(url: str) -> dict[str, list]:
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    return {f.name: f.samples for f in parser.text_string_to_metric_families(text)}


def test_openai_client_completions_and_chat(server: str) -> None:
    client = openai.OpenAI(base_url=server + "/v1", api_key=KEY)
    assert [m.id for m in client.models.list().data] == ["tiny"]
    r = client.completions.create(model="tiny", prompt="Hello power", max_tokens=8, temperature=0)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 8
    chunks = list(client.completions.create(model="tiny", prompt="Hello power", max_tokens=8, temperature=0,
                                            stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == r.choices[0].text
    c = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=6,
                                       temperature=0)
    assert c.choices[0].message.role == "assistant" and c.usage.completion_tokens == 6
    streamed = list(client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                                   max_tokens=6, temperature=0, stream=True))
    text = "".join((s.choices[0].delta.content or "") for s in streamed if s.choices)
    assert text == c.choices[0].message.content
    assert streamed[-1].choices[0].finish_reason == "length"


def test_metrics_parse_with_vllm_names(server: str) -> None:
    post(server, "/v1/completions", json.dumps({"prompt": "x", "max_tokens": 4}).encode())
    fams = metrics(server)
    for name in ("vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds", "vllm:num_requests_running",
                 "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc", "wattserve:gpu_power_watts",
                 "wattserve:gpu_power_cap_watts", "wattserve:gpu_sm_clock_mhz", "wattserve:gpu_energy_joules"):
        assert name in fams, name
    power = fams["wattserve:gpu_power_watts"]
    assert len(power) == 2 and all(s.labels["modelled"] == "true" and s.value >= 75 for s in power)
    ttft_count = [s.value for s in fams["vllm:time_to_first_token_seconds"] if s.name.endswith("_count")]
    assert ttft_count[0] >= 1


def test_api_key_is_required(server: str) -> None:
    status, err = post(server, "/v1/completions", json.dumps({"prompt": "x"}).encode(), key=None)
    assert status == 401 and err["error"]["type"] == "authentication_error"
    with urllib.request.urlopen(server + "/health", timeout=10) as r:
        assert r.status == 200


def test_client_disconnect_frees_kv_blocks(server: str) -> None:
    import http.client

    host, port = server.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("POST", "/v1/completions", body=json.dumps({"prompt": "a long one", "max_tokens": 1900,
                                                             "ignore_eos": True, "stream": True}),
                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
    resp = conn.getresponse()
    for _ in range(4):
        resp.fp.readline()
    busy = False
    for _ in range(40):
        fams = metrics(server)
        if fams["vllm:num_requests_running"][0].value >= 1 and fams["vllm:kv_cache_usage_perc"][0].value > 0:
            busy = True
            break
        time.sleep(0.05)
    assert busy
    conn.sock.close()
    conn.close()
    deadline = time.time() + 10
    while time.time() < deadline:
        fams = metrics(server)
        if fams["vllm:num_requests_running"][0].value == 0 and fams["vllm:kv_cache_usage_perc"][0].value == 0:
            break
        time.sleep(0.1)
    assert fams["vllm:num_requests_running"][0].value == 0
    assert fams["vllm:kv_cache_usage_perc"][0].value == 0
    assert all(s.labels.get("finished_reason") != "abort" for s in fams["vllm:request_success"])


def test_bench_against_the_server(server: str, tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "wattserve", "bench", "--base-url", server, "--api-key", KEY,
                        "--num-prompts", "20", "--request-rate", "40", "--random-input-len", "20",
                        "--random-output-len", "12", "--ignore-eos", "--goodput", "ttft:2000", "tpot:200",
                        "--save-result", "--result-dir", str(tmp_path), "--result-filename", "r.json"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["completed"] == 20 and res["failed"] == 0 and res["total_output_tokens"] == 240
    for k in ("request_throughput", "output_throughput", "mean_ttft_ms", "median_tpot_ms", "p99_itl_ms",
              "request_goodput", "duration"):
        assert k in res
    assert "Serving Benchmark Result" in p.stdout


def test_bench_replays_a_trace(server: str, tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    rows = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    rows += [f"2023-11-16 18:15:{46 + i // 4:02d}.{i % 4 * 25:02d}00000,{20 + i},{4 + i % 5}" for i in range(12)]
    trace.write_text("\n".join(rows) + "\n")
    p = subprocess.run([sys.executable, "-m", "wattserve", "bench", "--base-url", server, "--api-key", KEY,
                        "--trace", str(trace), "--num-prompts", "12", "--request-rate", "30", "--ignore-eos",
                        "--save-result", "--result-dir", str(tmp_path), "--result-filename", "t.json"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    res = json.loads((tmp_path / "t.json").read_text())
    assert res["completed"] == 12 and res["total_output_tokens"] == sum(4 + i % 5 for i in range(12))
