"""The concurrent prefill/decode engine (RAPID-Serve, arXiv 2601.11822): a spawned prefill process
over the same shared weights and KV cache, producing what the one-process engine produces."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

torch = pytest.importorskip("torch")

from wattserve.runtime.engine.concurrent import ConcurrentEngine  # noqa: E402
from wattserve.runtime.engine.engine import EngineArgs, LLMEngine, StepOutput, generate  # noqa: E402
from wattserve.runtime.engine.sequence import SamplingParams  # noqa: E402
from wattserve.seam.governor import StepDecision, StepView  # noqa: E402

ARGS = EngineArgs(model="tiny", seed=3, num_blocks=64)
GREEDY = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
PROMPTS = [[256, *b"hello paged attention"], [256, *b"a"], [256, *(b"long prompt " * 12)], [256, 7]]


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fail the test instead of hanging when the engine blocks."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_until(engine: ConcurrentEngine, done: Callable[[list[StepOutput]], bool], seconds: float = 20.0) -> list[StepOutput]:
    out: list[StepOutput] = []
    with deadline(seconds):
        while not done(out):
            out += engine.step()
    return out


def gone(pid: int) -> bool:
    """No such process, or only its zombie (reparented orphans may wait for a reaper)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.fixture(scope="module")
def engine() -> Iterator[ConcurrentEngine]:
    with ConcurrentEngine(ARGS) as e:
        yield e


def test_outputs_equal_the_one_process_engine(engine: ConcurrentEngine) -> None:
    assert generate(engine, PROMPTS, GREEDY) == generate(LLMEngine(ARGS), PROMPTS, GREEDY)
    sampled = SamplingParams(max_tokens=12, temperature=0.8, top_p=0.9, seed=7, ignore_eos=True)
    assert generate(engine, PROMPTS[:2], sampled) == generate(LLMEngine(ARGS), PROMPTS[:2], sampled)
    assert engine.prefills >= 6 and engine.cache.used_blocks == 0 and not engine.has_work()


def test_preempted_sequences_are_prefilled_again_in_the_child() -> None:
    args = EngineArgs(model="tiny", num_blocks=12, block_size=4, seed=3)
    params = SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True)
    prompts = [[256, *b"preempt me %d" % i] for i in range(3)]
    with ConcurrentEngine(args, decode_share=1) as e:
        with deadline(30):
            got = generate(e, prompts, params)
        assert e.scheduler.preemptions > 0 and e.prefills > len(prompts)
        assert got == generate(LLMEngine(args), prompts, params)
        assert e.cache.used_blocks == 0


def test_prefill_runs_in_another_process_and_writes_the_shared_cache(engine: ConcurrentEngine) -> None:
    assert engine.child.pid != os.getpid() and engine.child.pid == engine.child_pid
    assert engine.child.weights_shared and engine.child.kv_shared
    prompt = PROMPTS[2]
    params = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True)
    engine.add("kv", prompt, params)
    run_until(engine, lambda out: any(o.seq_id == "kv" for o in out))
    assert engine.prefill_pid == engine.child.pid != os.getpid()
    seq = engine.seqs["kv"]
    written = engine.cache.export(seq.block_table, len(prompt))
    ref = LLMEngine(ARGS)
    ref.add("kv", prompt, params, prefill_only=True)
    expected = ref.step()[0].kv
    assert written.abs().sum() > 0 and torch.allclose(written, expected, atol=1e-6)
    run_until(engine, lambda out: not engine.has_work())

    slot = engine.cache.scratch_slot
    marker = torch.arange(engine.cfg.kv_heads * engine.cfg.head_dim, dtype=torch.float32) + 0.5
    engine.cache.k[0][slot] = marker.view(engine.cfg.kv_heads, engine.cfg.head_dim)
    assert engine.probe(slot).k_row == engine.cache.k[0][slot].tolist()
    engine.cache.k[0][slot] = 0


def test_abort_of_an_in_flight_prompt_frees_its_blocks_after_the_prefill(engine: ConcurrentEngine) -> None:
    os.kill(engine.child_pid, signal.SIGSTOP)
    try:
        engine.add("gone", PROMPTS[2], GREEDY)
        assert engine.step() == [] and engine.prefilling == 1 and engine.cache.used_blocks > 0
        assert engine.abort("gone") and "gone" not in engine.seqs
        assert engine.cache.used_blocks > 0
    finally:
        os.kill(engine.child_pid, signal.SIGCONT)
    out = run_until(engine, lambda out: not engine.has_work())
    assert out == [] and engine.cache.used_blocks == 0


@dataclass
class ShareGovernor:
    """A governor whose decode share the test sets."""

    share: float | None = None
    name: str = "share"

    def decide(self, view: StepView) -> StepDecision:
        return StepDecision(None, 1, self.share)


def test_core_split_changes_between_steps() -> None:
    gov = ShareGovernor()
    threads0 = torch.get_num_threads()
    params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
    with ConcurrentEngine(ARGS, governor=gov) as e:
        cores = e.units
        assert e.decode_units == e.prefill_units == cores
        child = e.probe()
        assert child.threads == len(cores) and (not child.pinned or child.units == cores)
        for i, p in enumerate(PROMPTS):
            e.add(f"s{i}", p, params)
        out = run_until(e, lambda out: len(out) >= len(PROMPTS))

        e.set_decode_share(1)
        decode, prefill = e.split(1)
        assert e.decode_units == decode == cores[:1] and e.prefill_units == prefill
        if len(cores) > 1:
            assert not set(decode) & set(prefill) and set(decode) | set(prefill) == set(cores)
        assert torch.get_num_threads() == len(decode)
        if e.pinned:
            assert os.sched_getaffinity(0) == set(decode)
        child = e.probe()
        assert child.pid == e.child_pid and child.threads == len(prefill)
        if child.pinned:
            assert child.units == prefill
        out += e.step()

        gov.share = None
        out += e.step()
        assert e.decode_units == decode, "a governor's share applies when it changes, not every step"
        gov.share = 0.75
        out += e.step()
        assert len(e.decode_units) == max(1, round(0.75 * len(cores)))
        assert torch.get_num_threads() == len(e.decode_units) and e.probe().threads == len(e.prefill_units)

        gov.share = None
        out += e.step()
        assert e.decode_units == e.prefill_units == cores
        child = e.probe()
        assert torch.get_num_threads() == len(cores) == child.threads
        if child.pinned:
            assert child.units == cores and os.sched_getaffinity(0) == set(cores)

        e.set_decode_share(0.5)
        out += run_until(e, lambda out: not e.has_work())
    assert torch.get_num_threads() == threads0
    got = [[o.token for o in out if o.seq_id == f"s{i}"] for i in range(len(PROMPTS))]
    assert got == generate(LLMEngine(ARGS), PROMPTS, params)


def test_close_leaves_no_prefill_process() -> None:
    e = ConcurrentEngine(ARGS)
    pid = e.child_pid
    assert pid is not None and not gone(pid)
    e.close()
    assert not e.child_alive() and gone(pid)
    assert pid not in [p.pid for p in multiprocessing.active_children()]
    with pytest.raises(RuntimeError, match="closed"):
        e.step()
    e.close()


def test_prefill_process_does_not_outlive_a_killed_parent() -> None:
    script = ("from wattserve.runtime.engine.concurrent import ConcurrentEngine\n"
              "from wattserve.runtime.engine.engine import EngineArgs\n"
              "import sys, time\n"
              "e = ConcurrentEngine(EngineArgs(model='tiny', num_blocks=16))\n"
              "print(e.child_pid, flush=True)\n"
              "time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        with deadline(40):
            child = int(parent.stdout.readline())
        assert not gone(child)
    finally:
        parent.kill()
        parent.wait()
    end = time.monotonic() + 20
    while not gone(child) and time.monotonic() < end:
        time.sleep(0.05)
    assert gone(child)


def test_a_killed_prefill_process_fails_its_prompts_without_hanging() -> None:
    decoding = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)
    with ConcurrentEngine(ARGS, decode_share=1) as e:
        e.add("decoding", PROMPTS[0], decoding)
        out = run_until(e, lambda out: len(out) >= 2)
        pid = e.child_pid
        os.kill(pid, signal.SIGSTOP)
        e.add("pending", PROMPTS[2], GREEDY)
        out += e.step()
        assert e.prefilling == 1
        os.kill(pid, signal.SIGKILL)
        out += run_until(e, lambda out: any(o.seq_id == "pending" for o in out))
        failed = [o for o in out if o.seq_id == "pending"]
        assert len(failed) == 1 and failed[0].finished and failed[0].finish_reason == "error"
        assert failed[0].token is None and e.dead and "died" in e.prefill_error and not e.child_alive()
        with pytest.raises(RuntimeError, match="died"):
            e.add("late", PROMPTS[1], GREEDY)
        out += run_until(e, lambda out: not e.has_work())
        decoded = [o.token for o in out if o.seq_id == "decoding"]
        assert decoded == generate(LLMEngine(ARGS), PROMPTS[:1], decoding)[0]
        assert e.cache.used_blocks == 0


def test_a_pinned_share_holds_over_the_governors_answers() -> None:
    """SetComputeShare on a concurrent worker pins the split, as the simulator's pin_share does."""
    gov = ShareGovernor()
    params = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
    with ConcurrentEngine(ARGS, governor=gov) as e:
        cores = e.units
        e.pin_share(1)
        assert e.decode_units == e.split(1)[0]
        gov.share = 0.75
        for i, p in enumerate(PROMPTS):
            e.add(f"s{i}", p, params)
        out = run_until(e, lambda out: not e.has_work())
        assert e.decode_units == cores[:1], "the governor moved a pinned split"
        e.pin_share(None)
        assert e.decode_units == e.prefill_units == cores
    got = [[o.token for o in out if o.seq_id == f"s{i}"] for i in range(len(PROMPTS))]
    assert got == generate(LLMEngine(ARGS), PROMPTS, params)


def test_a_prefill_thread_over_the_same_tensors_gives_the_one_process_engines_tokens() -> None:
    """The GPU's form (a prefill thread of the decode process) run on the CPU, where it can only
    overallocate: threads of one process share its cores."""
    with ConcurrentEngine(ARGS, side="thread") as e:
        assert e.side == "thread" and e.compute.kind == "shared" and e.units == (0,)
        child = e.probe(slot=0)
        assert child.pid == os.getpid() and child.weights_shared and child.kv_shared
        assert generate(e, PROMPTS, GREEDY) == generate(LLMEngine(ARGS), PROMPTS, GREEDY)
        assert e.prefills >= len(PROMPTS) and e.prefill_pid == os.getpid()
        e.set_decode_share(0.5)
        assert e.decode_units == e.prefill_units == (0,), "one shared unit: both sides keep the whole device"
        assert e.probe(slot=0).k_row == e.cache.k[0][0].tolist()
    assert not e.child_alive()


def test_a_stopped_prefill_thread_fails_its_prompts_and_decoding_goes_on() -> None:
    decoding = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
    with ConcurrentEngine(ARGS, side="thread") as e:
        e.add("decoding", PROMPTS[0], decoding)
        out = run_until(e, lambda out: len(out) >= 2)
        e._jobs.send(("stop",))
        with deadline(10):
            while e.child_alive():
                time.sleep(0.01)
        e.add("pending", PROMPTS[2], GREEDY)
        out += run_until(e, lambda out: any(o.seq_id == "pending" for o in out))
        failed = [o for o in out if o.seq_id == "pending"]
        assert len(failed) == 1 and failed[0].finish_reason == "error" and e.dead
        assert "thread stopped" in e.prefill_error
        out += run_until(e, lambda out: not e.has_work())
        assert [o.token for o in out if o.seq_id == "decoding"] == generate(LLMEngine(ARGS), PROMPTS[:1], decoding)[0]
        assert e.cache.used_blocks == 0


def test_sides_and_splits_that_cannot_work_are_refused() -> None:
    from wattserve.errors import UsageError
    from wattserve.runtime.engine.compute_split import CoreSplit

    with pytest.raises(UsageError, match="CUDA IPC"):
        ConcurrentEngine(EngineArgs(model="tiny", num_blocks=64, device="cuda"), side="process")
    with pytest.raises(UsageError, match="two processes"):
        ConcurrentEngine(ARGS, side="thread", compute=CoreSplit())
    with pytest.raises(UsageError, match="allowed: process, thread"):
        ConcurrentEngine(ARGS, side="fiber")  # type: ignore[arg-type]
