"""`wattserve serve --layout concurrent` / `--concurrent N` (RAPID-Serve on the CPU runtime, issue 11): a worker that
prefills in a second process over the same weights and KV cache while it decodes serves the same
greedy tokens as a colocated worker, really runs that second process, and leaves nothing running
when the server stops."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest.importorskip("torch")

from serverutil import greedy_texts, start_server  # noqa: E402

PROMPTS = ["the power budget", "prefill and decode at once", "one two three four five six seven", "x"]


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def test_a_concurrent_worker_serves_a_colocated_workers_greedy_tokens_from_two_processes() -> None:
    colocated = start_server("--colocated", "1")
    try:
        expected = greedy_texts(colocated.url, PROMPTS)
    finally:
        colocated.stop()
    srv = start_server("--layout", "concurrent", "--governor", "rapid-serve", "--threads-per-worker", "2")
    try:
        assert list(srv.roles.values()) == ["concurrent"]
        worker = next(iter(srv.pids.values()))
        prefill = _children(worker)
        assert prefill, "the concurrent worker started no prefill process"
        assert greedy_texts(srv.url, PROMPTS) == expected
    finally:
        out = srv.stop(60)
    assert "stopped" in out
    deadline = time.time() + 10
    while time.time() < deadline and any(Path(f"/proc/{p}").exists() for p in [worker, *prefill]):
        time.sleep(0.2)
    assert not any(Path(f"/proc/{p}/stat").exists() and " Z " not in Path(f"/proc/{p}/stat").read_text()
                   for p in [worker, *prefill]), "a worker or its prefill process outlived the server"


def test_concurrent_workers_do_not_mix_with_other_layouts(capsys: pytest.CaptureFixture[str]) -> None:
    from refusal import assert_refused, run_in_process

    assert_refused(*run_in_process(["serve", "--concurrent", "1", "--colocated", "1"], capsys), "--concurrent N")
    assert_refused(*run_in_process(["serve", "--layout", "concurrent", "--prefill", "2"], capsys),
                   "--layout concurrent with --prefill; allowed beside it: --concurrent N")
    assert_refused(*run_in_process(["serve", "--layout", "disaggregated", "--colocated", "1"], capsys),
                   "--layout disaggregated with --colocated")
