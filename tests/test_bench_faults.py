"""`wattserve bench` against a server that misbehaves on purpose: every request ends as completed or
failed (completed + failed == --num-prompts), failures are counted by reason, and the exit status
says how the run went; SIGINT and SIGTERM stop the run and still print and save what finished.

The server is a real aiohttp server on a local port, run in a thread of the test process. The
first segment of the URL's path is its script: "ok+503+hang" answers its first request normally,
its second with 503, its third never, its fourth normally again, and so on (in order of arrival,
so the counts are the same whatever order the requests arrive in)."""

from __future__ import annotations

import asyncio
import json
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

SERVER_ERROR = "worker 1 exited"
STREAM_ERROR = "engine step failed"


def sse(obj: Any) -> bytes:
    return f"data: {json.dumps(obj)}\n\n".encode()


def token(text: str) -> bytes:
    return sse({"object": "text_completion", "choices": [{"index": 0, "text": text, "finish_reason": None}]})


@dataclass
class FaultServer:
    """The server's state, shared with the test: its address and each request's behaviour as it
    arrives (so a test can wait for the server to have seen a request instead of sleeping)."""
    url: str = ""
    arrivals: queue.Queue[str] = field(default_factory=queue.Queue)
    counts: dict[str, int] = field(default_factory=dict)
    release: asyncio.Event | None = None

    def behaviour(self, script: str) -> str:
        steps = script.split("+")
        k = self.counts.get(script, 0)
        self.counts[script] = k + 1
        return steps[k % len(steps)]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        what = self.behaviour(request.match_info["script"])
        await request.read()
        self.arrivals.put(what)
        if what == "503":
            body = {"error": {"message": SERVER_ERROR, "type": "server_error", "param": None, "code": 503}}
            return web.json_response(body, status=503)
        if what == "hang":
            assert self.release is not None
            await self.release.wait()
            return web.Response(status=500)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(token("power"))
        await resp.write(token(" budget"))
        if what == "close":
            assert request.transport is not None
            request.transport.abort()
            return resp
        if what == "stall":
            assert self.release is not None
            await self.release.wait()
            return resp
        if what == "sse-error":
            await resp.write(sse({"error": {"message": STREAM_ERROR, "type": "server_error", "param": None,
                                            "code": None}}))
        elif what == "ok":
            await resp.write(sse({"choices": [], "usage": {"prompt_tokens": 8, "completion_tokens": 2}}))
        if what != "no-done":
            await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


@pytest.fixture
def server() -> Iterator[FaultServer]:
    state = FaultServer()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> web.AppRunner:
        state.release = asyncio.Event()
        app = web.Application()
        app.router.add_post("/{script}/v1/completions", state.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        state.url = f"http://127.0.0.1:{port}"
        return runner

    async def stop(runner: web.AppRunner) -> None:
        assert state.release is not None
        state.release.set()
        await runner.cleanup()

    runner = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield state
    finally:
        asyncio.run_coroutine_threadsafe(stop(runner), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def argv(url: str, tmp_path: Path, *args: str) -> list[str]:
    """The fault server has no /tokenize: prompts are counted in words, as the user would say."""
    return [sys.executable, "-m", "wattserve", "bench", "--base-url", url, "--random-input-len", "4",
            "--tokenizer", "words", "--random-output-len", "2", "--save-result", "--result-dir", str(tmp_path),
            "--result-filename", "r.json", *args]


def bench(url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv(url, tmp_path, *args), capture_output=True, text=True, timeout=60)


def result(tmp_path: Path, num_prompts: int) -> dict[str, Any]:
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["completed"] + res["failed"] == res["num_prompts"] == num_prompts
    assert sum(res["failures"].values()) == res["failed"] == len(res["errors"])
    return res


MIX = "ok+503+sse-error+close+no-done+hang+stall"
"""Each fault the bench must count as failed: an OpenAI error with 503, an SSE error event after two
tokens, the connection closed after two tokens, a stream without [DONE], a server that never
answers, and one that stops answering after two tokens."""
MIX_FAILURES = {"timed out after 1 s": 4, "503 worker 1 exited": 2, "connection closed mid-response": 2,
                STREAM_ERROR: 2, "stream ended before [DONE]": 2}


def test_every_fault_is_a_failure_with_its_reason_and_exit_1(server: FaultServer, tmp_path: Path) -> None:
    p = bench(f"{server.url}/{MIX}", tmp_path, "--num-prompts", "14", "--request-timeout", "1")
    assert p.returncode == 1, (p.stdout, p.stderr)
    res = result(tmp_path, 14)
    assert res["completed"] == 2
    assert res["failures"] == MIX_FAILURES
    assert list(res["failures"]) == list(MIX_FAILURES), "reasons are not most frequent first, then by name"
    assert res["total_output_tokens"] == 4, "tokens of failed requests were counted"
    line = next(s for s in p.stdout.splitlines() if s.startswith("failed: "))
    assert line == "failed: 12 (" + "; ".join(f"{k}: {n}" for k, n in MIX_FAILURES.items()) + ")"
    assert "Serving Benchmark Result" in p.stdout and "Traceback" not in p.stderr


def test_a_server_without_tokenize_gets_words_and_a_line_saying_so(server: FaultServer, tmp_path: Path) -> None:
    """The default --tokenizer server meets a 404 from /tokenize: one line on stderr before the run,
    and the result says the lengths were words."""
    cmd = [a for a in argv(f"{server.url}/ok", tmp_path, "--num-prompts", "2") if a not in ("--tokenizer", "words")]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert p.stderr.strip().splitlines() == [
        f"wattserve bench: POST {server.url}/ok/tokenize answered 404, so prompt lengths are counted in whitespace "
        "words, not the server's tokens (--tokenizer words)"]
    res = result(tmp_path, 2)
    assert res["input_len_unit"] == "words" and res["input_len_check"] is None


def test_tokenizer_server_given_is_refused_without_tokenize(server: FaultServer, tmp_path: Path) -> None:
    cmd = [a if a != "words" else "server" for a in argv(f"{server.url}/ok", tmp_path, "--num-prompts", "2")]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert p.stderr.strip().splitlines() == [
        f"wattserve bench: error: --tokenizer server: POST {server.url}/ok/tokenize answered 404: the server has no "
        "/tokenize; allowed: --tokenizer words (lengths in whitespace words)"]
    assert p.stdout == "" and not (tmp_path / "r.json").exists()
    assert server.arrivals.empty(), "a request was sent"


def test_allow_failures_exits_0(server: FaultServer, tmp_path: Path) -> None:
    p = bench(f"{server.url}/ok+503", tmp_path, "--num-prompts", "4", "--allow-failures")
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert result(tmp_path, 4)["failures"] == {"503 worker 1 exited": 2}
    assert "failed: 2 (503 worker 1 exited: 2)" in p.stdout


def test_a_clean_run_exits_0_with_no_failures(server: FaultServer, tmp_path: Path) -> None:
    p = bench(f"{server.url}/ok", tmp_path, "--num-prompts", "3")
    assert p.returncode == 0, (p.stdout, p.stderr)
    res = result(tmp_path, 3)
    assert res["completed"] == 3 and res["failures"] == {}
    assert "failed: " not in p.stdout


@pytest.mark.parametrize(("script", "extra", "reason"), [
    ("503", [], "failed: 3 (503 worker 1 exited: 3)"),
    ("hang", ["--request-timeout", "0.2"], "failed: 3 (timed out after 0.2 s: 3)"),
    ("sse-error", [], f"failed: 3 ({STREAM_ERROR}: 3)"),
], ids=["503", "never-answers", "sse-error"])
def test_a_run_where_every_request_failed_is_one_line_and_exit_2(server: FaultServer, tmp_path: Path,
                                                                  script: str, extra: list[str],
                                                                  reason: str) -> None:
    p = bench(f"{server.url}/{script}", tmp_path, "--num-prompts", "3", *extra)
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert lines == [f"wattserve bench: error: no request succeeded; {reason}"]
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_run_and_still_reports(server: FaultServer, tmp_path: Path,
                                                  sig: signal.Signals, status: int) -> None:
    """One request at a time: the first completes, the second hangs; once the server has seen the
    second, the signal leaves one completed, one cancelled in flight and three never sent."""
    proc = subprocess.Popen(argv(f"{server.url}/ok+hang", tmp_path, "--num-prompts", "5", "--max-concurrency", "1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("wattserve bench: 5 requests"), first
        assert [server.arrivals.get(timeout=30) for _ in range(2)] == ["ok", "hang"]
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == status, (out, err)
    assert "Serving Benchmark Result" in out and "Traceback" not in err
    res = result(tmp_path, 5)
    assert res["completed"] == 1 and res["interrupted"] == sig.name
    assert res["failures"] == {"not sent: interrupted": 3, "cancelled in flight: interrupted": 1}
    assert err.strip().splitlines()[-1].startswith(f"wattserve bench: interrupted by {sig.name}; failed: 4")
    assert server.arrivals.empty(), "a request was sent after the signal"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_server_gone_before_the_requests_fails_each_one() -> None:
    """The server died between the port check and the run: every request fails, none is lost."""
    from wattserve.loadgen.bench import plan, run
    from wattserve.schema.bench import BenchConfig

    a = BenchConfig(base_url=f"http://127.0.0.1:{free_port()}", num_prompts=4, random_input_len=4)
    res = asyncio.run(run(a, plan(a)))
    assert res["completed"] == 0 and res["failed"] == 4
    assert res["failures"] == {"cannot connect (Connection refused)": 4}
    assert res["interrupted"] is None
