"""The node power agent (`wattserve agent`, issue 13): its HTTP API over the NVML fake, its refusals
(out-of-range caps, unauthenticated remote requests, exposure without a token), and its restore of
the defaults on SIGTERM, seen from the device's side (the fake keeps its state in a file, as the
driver keeps it across processes)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aiohttp")

from aiohttp.test_utils import TestClient, TestServer  # noqa: E402
from fake_nvml import FakeNvml  # noqa: E402

from wattserve.runtime.power.agent_api import AgentApi, authorized, is_loopback  # noqa: E402
from wattserve.runtime.power.agent_daemon import check_exposure, describe_nvml, is_loopback_host  # noqa: E402
from wattserve.runtime.power.nvml import NvmlGpuPower  # noqa: E402

from refusal import assert_refused, run_in_process  # noqa: E402

FAKE = Path(__file__).resolve().parent / "fake_pynvml"


def _power(count: int = 2, **kw: Any) -> NvmlGpuPower:
    return NvmlGpuPower(nvml=FakeNvml(count=count, **kw), install_handlers=False)


async def _with_client(power: NvmlGpuPower, fn: Any, token: str | None = None) -> Any:
    client = TestClient(TestServer(AgentApi(power, token, describe_nvml(power)).app()))
    await client.start_server()
    try:
        return await fn(client)
    finally:
        await client.close()


def test_agent_lists_gpus_with_cap_range_clock_table_and_readings() -> None:
    async def go(c: TestClient) -> dict:
        r = await c.get("/v1/gpus")
        assert r.status == 200
        return await r.json()

    doc = asyncio.run(_with_client(_power(), go))
    assert [g["index"] for g in doc["gpus"]] == [0, 1]
    g = doc["gpus"][0]
    assert (g["cap_min_w"], g["cap_max_w"], g["cap_w"]) == (200.0, 700.0, 700.0)
    assert g["supported_clocks_mhz"][0] == 345 and g["supported_clocks_mhz"][-1] == 1980
    assert g["power_w"] > 0 and g["energy_j"] >= 0 and g["clock_mhz"] > 0 and not g["modelled"]
    assert g["uuid"].startswith("GPU-")


def test_agent_sets_cap_and_clock_and_reads_each_back_from_the_device() -> None:
    power = _power()

    async def go(c: TestClient) -> list[dict]:
        out = []
        for method, path, body in (("POST", "/v1/gpus/1/power_cap", {"watts": 450}),
                                   ("POST", "/v1/gpus/0/locked_clock", {"mhz": 1200}),
                                   ("DELETE", "/v1/gpus/0/locked_clock", None)):
            r = await c.request(method, path, json=body)
            assert r.status == 200, await r.text()
            out.append(await r.json())
        return out

    cap, lock, unlock = asyncio.run(_with_client(power, go))
    assert cap["ok"] and cap["cap_w"] == 450.0
    assert power.nvml.devices[1].limit_mw == 450_000
    assert lock["locked_clock_mhz"] == 1200 and unlock["locked_clock_mhz"] is None
    assert power.nvml.devices[0].locked is None
    assert "lock 0 1200 1200" in power.nvml.calls and "unlock 0" in power.nvml.calls


@pytest.mark.parametrize("body,param", [({"watts": 150}, "watts"), ({"watts": 701}, "watts"),
                                        ({"watts": "high"}, "watts"), ({"watts": True}, "watts")])
def test_agent_refuses_a_cap_outside_the_range_before_the_device_sees_it(body: dict, param: str) -> None:
    power = _power()

    async def go(c: TestClient) -> tuple[int, dict]:
        r = await c.post("/v1/gpus/0/power_cap", json=body)
        return r.status, await r.json()

    status, doc = asyncio.run(_with_client(power, go))
    assert status == 400
    assert doc["error"]["param"] == param and "200" in doc["error"]["message"] and "700" in doc["error"]["message"]
    assert not any(c.startswith("set_limit") for c in power.nvml.calls)
    assert power.nvml.devices[0].limit_mw == 700_000


def test_agent_reports_permission_errors_typed_with_the_devices_readback() -> None:
    power = _power(root=False)

    async def go(c: TestClient) -> tuple[int, dict]:
        r = await c.post("/v1/gpus/0/power_cap", json={"watts": 400})
        return r.status, await r.json()

    status, doc = asyncio.run(_with_client(power, go))
    assert status == 403 and doc["error"]["type"] == "permission"
    assert doc["readback"]["cap_w"] == 700.0 and doc["readback"]["ok"] is False


def test_agent_refuses_an_unknown_gpu_and_malformed_bodies() -> None:
    async def go(c: TestClient) -> list[int]:
        a = await c.post("/v1/gpus/7/power_cap", json={"watts": 400})
        b = await c.post("/v1/gpus/0/power_cap", data=b"{not json")
        d = await c.post("/v1/gpus/0/locked_clock", json={"mhz": 12.5})
        return [a.status, b.status, d.status]

    assert asyncio.run(_with_client(_power(), go)) == [404, 400, 400]


@pytest.mark.parametrize("remote,header,ok", [
    ("127.0.0.1", None, True), ("::1", None, True), ("::ffff:127.0.0.1", None, True),
    ("192.0.2.7", None, False), ("192.0.2.7", "Bearer wrong", False), ("192.0.2.7", "Bearer s3cret", True),
    ("192.0.2.7", "s3cret", False), (None, "Bearer s3cret", True), (None, None, False)])
def test_only_loopback_or_the_token_passes(remote: str | None, header: str | None, ok: bool) -> None:
    assert authorized("s3cret", remote, header) is ok


def test_without_a_token_no_remote_request_passes() -> None:
    assert not authorized(None, "192.0.2.7", "Bearer anything")
    assert is_loopback("127.0.0.5") and not is_loopback("10.0.0.1") and not is_loopback(None)


def test_agent_refuses_to_listen_off_loopback_without_a_token() -> None:
    check_exposure("127.0.0.1", None)
    check_exposure("localhost", None)
    check_exposure("0.0.0.0", "t")
    assert is_loopback_host("::1") and not is_loopback_host("0.0.0.0")
    with pytest.raises(Exception, match="needs a token"):
        check_exposure("0.0.0.0", None)


def test_agent_command_refuses_exposure_and_bad_flags_in_one_line(capsys: pytest.CaptureFixture[str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATTSERVE_AGENT_TOKEN", raising=False)
    for argv, expect in ((["agent", "--host", "0.0.0.0", "--power", "modelled"], "--token"),
                         (["agent", "--power", "magic"], "--power"),
                         (["agent", "--power", "nvml", "--gpus", "2"], "--gpus"),
                         (["agent", "--port", "70000"], "--port")):
        assert_refused(*run_in_process(argv, capsys), expect)


def _non_loopback_ip() -> str | None:
    """This host's address on its default route, if it has one (CI machines may not)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.1", 9))
        ip = s.getsockname()[0]
    except OSError:
        return None
    finally:
        s.close()
    return None if ip.startswith("127.") else ip


def start_agent(tmp: Path, *args: str, gpus: int = 1, env: dict[str, str] | None = None,
                name: str = "gpu") -> tuple[subprocess.Popen, str, Path]:
    """`wattserve agent --power nvml` over the fake pynvml; returns the process, its URL and the file
    holding the fake devices' state."""
    state = tmp / f"{name}-state.json"
    e = {**os.environ, "PYTHONPATH": f"{FAKE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
         "FAKE_NVML_STATE": str(state), "FAKE_NVML_GPUS": str(gpus), **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "wattserve", "agent", "--power", "nvml", "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=e)
    deadline = time.time() + 60
    lines = []
    while time.time() < deadline:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        m = re.search(r"listening on (http://\S+)", line)
        if m:
            return proc, m.group(1), state
    proc.kill()
    raise RuntimeError("agent did not start: " + "".join(lines))


def _call(url: str, method: str = "GET", body: dict | None = None, token: str | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_agent_restores_default_caps_and_clocks_on_sigterm(tmp_path: Path) -> None:
    proc, url, state = start_agent(tmp_path, gpus=2)
    try:
        assert _call(f"{url}/v1/gpus/0/power_cap", "POST", {"watts": 300})[0] == 200
        assert _call(f"{url}/v1/gpus/1/locked_clock", "POST", {"mhz": 990})[0] == 200
        held = json.loads(state.read_text())["devices"]
        assert held[0]["limit_mw"] == 300_000 and held[1]["locked"] == [990, 990]
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "defaults restored" in out
    left = json.loads(state.read_text())["devices"]
    assert [d["limit_mw"] for d in left] == [700_000, 700_000]
    assert [d["locked"] for d in left] == [None, None]


def test_agent_refuses_unauthenticated_requests_from_another_host(tmp_path: Path) -> None:
    ip = _non_loopback_ip()
    if ip is None:
        pytest.skip("this machine has no non-loopback address to reach the agent from")
    proc, url, state = start_agent(tmp_path, "--host", "0.0.0.0", env={"WATTSERVE_AGENT_TOKEN": "s3cret"})
    port = url.rsplit(":", 1)[1]
    try:
        remote = f"http://{ip}:{port}"
        status, doc = _call(f"{remote}/v1/gpus/0/power_cap", "POST", {"watts": 300})
        assert status == 401 and doc["error"]["type"] == "authentication_error"
        assert _call(f"{remote}/v1/gpus", token="wrong")[0] == 401
        assert _call(f"{remote}/v1/gpus", token="s3cret")[0] == 200
        assert _call(f"http://127.0.0.1:{port}/v1/gpus")[0] == 200
        assert json.loads(state.read_text() if state.exists() else '{"devices": [{"limit_mw": 700000}]}'
                          )["devices"][0]["limit_mw"] == 700_000
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
