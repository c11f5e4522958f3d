"""`wattserve serve` with bad input, as a user runs it: one line on stderr naming the flag and the
allowed values, exit 2, no traceback, and no process left behind; every check happens before a
worker is spawned, so each case ends in seconds.

Each run gets its own process group, so that "no process left" means no process at all in it (a
worker spawned and orphaned by a refused run would still be in the group)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from wattserve.cli import build_parser
from wattserve.schema.flag_table import SERVE

from refusal import assert_refused, run_in_process

README = Path(__file__).resolve().parents[1] / "README.md"


def serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.Popen([sys.executable, "-m", "wattserve", "serve", "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, **(env or {})})
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
            left = True
        except ProcessLookupError:
            left = False
    assert not left, f"processes of a refused run were left running: {err}"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def assert_process_refused(p: subprocess.CompletedProcess, expect: str) -> None:
    assert_refused(p.returncode, p.stdout, p.stderr, expect)


CASES = [
    ("ep-dense", ["--ep", "2"], "--ep: 2 needs a mixture-of-experts model, and tiny is dense; allowed: 1"),
    ("ep-not-dividing", ["--model", "tiny-moe", "--ep", "3"], "--ep: 3 must divide tiny-moe's 4 experts; allowed: 1, 2, 4"),
    ("ep-zero", ["--model", "tiny-moe", "--ep", "0"], "--ep: 0 is not allowed"),
    ("pals-no-models", ["--policy", "pals", "--budget", "1400"],
     "--policy: pals plans from fitted models, and the shipped file has no fitted models for h100/tiny/tp1/ep1"),
    ("planner-concurrent", ["--concurrent", "2", "--policy", "planner", "--budget", "1400"],
     "--policy: planner moves workers between prefill, decode and colocated, and concurrent workers do not switch"),
    ("planner-concurrent-policy", ["--policy", "planner-concurrent", "--budget", "1400"],
     "--policy: planner-concurrent moves workers into and out of concurrent, and the runtime's workers do not "
     "switch into or out of concurrent; allowed: planner"),
    ("budget-inf", ["--budget", "inf", "--policy", "rapid"], "--budget: inf is not allowed; allowed: a finite number > 0"),
    ("budget-nan", ["--budget", "nan", "--policy", "rapid"], "--budget: nan is not allowed; allowed: a finite number > 0"),
    ("budget-without-policy", ["--budget", "4000"], "give both a policy (--policy NAME) and a budget (--budget W)"),
    ("policy-without-budget", ["--policy", "rapid"], "give both a policy (--policy NAME) and a budget (--budget W)"),
    ("policy-unknown", ["--budget", "4000", "--policy", "nosuch"], "--policy: unknown policy 'nosuch'; allowed:"),
    ("port-negative", ["--port", "-1"], "--port: -1 is not allowed; allowed: an integer from 0 to 65535"),
    ("port-too-large", ["--port", "70000"], "--port: 70000 is not allowed; allowed: an integer from 0 to 65535"),
    ("max-num-seqs-zero", ["--max-num-seqs", "0"], "--max-num-seqs: 0 is not allowed; allowed: an integer >= 1"),
    ("governor-unknown", ["--governor", "nosuch"], "--governor: unknown governor 'nosuch'; allowed: max-clock"),
    ("placement-window-zero", ["--placement-window", "0"], "--placement-window: 0"),
    ("placement-window-words", ["--placement-window", "soon"], "--placement-window"),
    ("kv-transport-unknown", ["--kv-transport", "nosuch"], "--kv-transport: unknown kv_transport 'nosuch'; allowed:"),
    ("model-unknown", ["--model", "nosuch"], "--model: unknown value 'nosuch'; allowed: tiny"),
    ("weights-missing", ["--weights", "{missing}"], "--weights: '{missing}' is not a folder; allowed: dummy"),
    ("weights-empty-folder", ["--weights", "{empty}"], "--weights: no *.safetensors files"),
    ("device-unknown", ["--device", "nosuch"], "--device: 'nosuch' is not a torch device; allowed: cpu"),
    ("colocated-and-prefill", ["--colocated", "1", "--prefill", "1"], "--colocated N or --prefill/--decode"),
    ("budget-below-min-caps", ["--budget", "10", "--policy", "rapid"], "--budget: 10 W is below the sum of the minimum"),
    ("api-key-empty", ["--api-key", ""], "--api-key: an empty key would turn authentication off"),
    ("max-prompt-tokens-beyond-positions", ["--max-prompt-tokens", "5000"],
     "--max-prompt-tokens: 5000 leaves no room to generate in tiny's 4096 positions"),
    ("num-blocks-zero", ["--num-blocks", "0"], "--num-blocks: 0 is not allowed; allowed: an integer >= 1"),
    ("prefill-negative", ["--prefill", "-1"], "--prefill: -1 is not allowed; allowed: an integer >= 0"),
    ("power-backend-unknown", ["--power-backend", "rapl"], "--power-backend: 'rapl' is not allowed"),
    ("budget-trace-missing", ["--policy", "rapid", "--budget-trace", "{missing}"],
     "--budget-trace: file '{missing}' does not exist; allowed: a CSV file with header time_s,watts"),
    ("budget-trace-folder", ["--policy", "rapid", "--budget-trace", "{empty}"], "--budget-trace: '{empty}' is a folder"),
    ("budget-trace-shape-without-budget", ["--policy", "rapid", "--budget-trace", "ramp"],
     "--budget-trace: the shape 'ramp' scales the full budget; give --budget W too"),
    ("budget-trace-shape-below-min-caps", ["--policy", "rapid", "--budget", "600", "--budget-trace",
                                           "step:level=0.5"],
     "--budget-trace: 300 W from 60 s is below the sum of the minimum caps; allowed: >= 400 W"),
    ("budget-trace-shape-bad-key", ["--policy", "rapid", "--budget", "1400", "--budget-trace", "step:when=3"],
     "--budget-trace: step: unknown parameter 'when'; allowed: start, seconds, level"),
    ("target-without-policy", ["--target", "500"], "--target: a throughput target is for a power policy"),
    ("target-negative", ["--policy", "rapid", "--budget", "1400", "--target", "-5"], "--target: -5 is not allowed"),
    ("target-missing", ["--policy", "rapid", "--budget", "1400", "--target", "{missing}"],
     "--target: file '{missing}' does not exist; allowed: a CSV file with header time_s,tok_s, or a number"),
]

BUDGET_FILES = [
    ("empty", b"", "file is empty"),
    ("wrong-header", b"watts,time_s\n4000,0\n", "row 1: header 'watts,time_s'; allowed: exactly time_s,watts"),
    ("letters", b"time_s,watts\n0,1400\n4,lots\n", "row 3: watts 'lots' is not a number"),
    ("negative", b"time_s,watts\n0,1400\n4,-800\n", "row 3: watts -800 is not allowed; allowed: a finite number > 0"),
    ("inf", b"time_s,watts\n0,1400\n4,inf\n", "row 3: watts inf is not allowed"),
    ("unsorted", b"time_s,watts\n0,1400\n4,800\n2,900\n", "row 4: time_s 2 is not after the previous row's 4"),
    ("late-start", b"time_s,watts\n1,1400\n", "row 2: the first time is 1 s; allowed: 0"),
    ("below-min-caps", b"time_s,watts\n0,1400\n8,300\n", "300 W from 8 s is below the sum of the minimum caps"),
]


@pytest.mark.parametrize(("content", "expect"), [c[1:] for c in BUDGET_FILES], ids=[c[0] for c in BUDGET_FILES])
def test_a_bad_budget_file_is_refused_before_any_worker_starts(content: bytes, expect: str, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Two modelled H100 workers (200 W minimum caps each) under a --budget-trace file."""
    pytest.importorskip("torch")
    from wattserve.runtime import server

    async def started(*a: object, **k: object) -> None:
        raise AssertionError("the input passed every check and the server would have started")

    monkeypatch.setattr(server, "serve", started)
    (tmp_path / "b.csv").write_bytes(content)
    code, out, err = run_in_process(["serve", "--port", "0", "--policy", "rapid", "--budget-trace",
                                     str(tmp_path / "b.csv")], capsys)
    assert_refused(code, out, err, expect)


@pytest.mark.parametrize(("args", "expect"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2(args: list[str], expect: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """In this process (a Python start with torch costs seconds per case): every check runs before
    `serve` starts anything, and a case that got through would fail here instead of serving."""
    pytest.importorskip("torch")
    from wattserve.runtime import server

    async def started(*a: object, **k: object) -> None:
        raise AssertionError("the input passed every check and the server would have started")

    monkeypatch.setattr(server, "serve", started)
    monkeypatch.delenv("WATTSERVE_API_KEY", raising=False)
    (tmp_path / "empty").mkdir()
    paths = {"missing": str(tmp_path / "missing"), "empty": str(tmp_path / "empty")}
    code, out, err = run_in_process(["serve", "--port", "0", *(a.format(**paths) for a in args)], capsys)
    assert_refused(code, out, err, expect.format(**paths))


def test_a_refused_run_leaves_no_process() -> None:
    """As a user runs it, in its own process group: a refused run exits 2 and nothing of it is left."""
    pytest.importorskip("torch")
    assert_process_refused(serve("--budget", "10", "--policy", "rapid"), "--budget: 10 W is below the sum of the minimum")


def test_an_empty_api_key_in_the_environment_is_refused() -> None:
    """WATTSERVE_API_KEY= (an unset shell variable expanded) must not turn authentication off."""
    pytest.importorskip("torch")
    p = serve(env={"WATTSERVE_API_KEY": ""})
    assert_process_refused(p, "WATTSERVE_API_KEY: an empty key would turn authentication off")


def test_cuda_without_a_gpu_is_refused() -> None:
    """CUDA_VISIBLE_DEVICES="" hides every GPU, so the case holds on a machine that has one."""
    pytest.importorskip("torch")
    p = serve("--device", "cuda", env={"CUDA_VISIBLE_DEVICES": ""})
    assert_process_refused(p, "--device: 'cuda' asked for, but torch sees no CUDA device; allowed: cpu")


def test_a_busy_port_is_refused_before_the_workers_start(busy_port: int) -> None:
    pytest.importorskip("torch")
    assert_process_refused(serve("--port", str(busy_port)), f"--host/--port: cannot listen on 127.0.0.1:{busy_port}")


def test_help_describes_every_flag() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    actions = [a for a in sub.choices["serve"]._actions if a.option_strings and a.dest != "help"]
    assert {a.option_strings[0] for a in actions} == {f"--{f.name}" for f in SERVE}
    for a in actions:
        assert a.help and len(a.help) > 10, a.option_strings


def test_readme_lists_every_serve_flag() -> None:
    text = README.read_text()
    section = text[text.index("`serve`'s flags:"):]
    listed = set(re.findall(r"--[a-z][a-z-]*", section[:section.index("\n\n")]))
    assert {f"--{f.name}" for f in SERVE} <= listed, {f"--{f.name}" for f in SERVE} - listed
