"""The concurrent engine's GPU form (RAPID-Serve, arXiv 2601.11822): a prefill thread on its own CUDA
stream, shares as green-context SM partitions. Runs only where a CUDA GPU is present."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA GPU here", allow_module_level=True)

from wattserve.runtime.engine.concurrent import ConcurrentEngine  # noqa: E402
from wattserve.runtime.engine.engine import EngineArgs, LLMEngine, generate  # noqa: E402
from wattserve.runtime.engine.sequence import SamplingParams  # noqa: E402

ARGS = EngineArgs(model="tiny", seed=3, num_blocks=64, device="cuda")
GREEDY = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
PROMPTS = [[256, *b"hello paged attention"], [256, *b"a"], [256, *(b"long prompt " * 12)], [256, 7]]


def test_a_prefill_thread_on_its_own_stream_gives_the_one_process_engines_tokens() -> None:
    with ConcurrentEngine(ARGS) as e:
        assert e.side == "thread"
        want = generate(LLMEngine(ARGS), PROMPTS, GREEDY)
        assert generate(e, PROMPTS, GREEDY) == want
        if e.compute.kind == "green-contexts":
            e.set_decode_share(0.25)
            decode, prefill = e.decode_units, e.prefill_units
            assert decode and prefill and not set(decode) & set(prefill)
            assert e.compute.sms(decode) + e.compute.sms(prefill) <= e.compute.total_sms
            assert torch.cuda.current_stream() == e.compute.streams[("decode", decode)]
            assert e.probe().units == prefill
            assert generate(e, PROMPTS, GREEDY) == want
            e.set_decode_share(None)
            assert e.decode_units == e.prefill_units == e.units
        else:
            pytest.skip(f"no SM partitions: {e.split_note}")
    assert torch.cuda.current_stream() == torch.cuda.default_stream()


def test_the_cuda_engine_refuses_a_prefill_process() -> None:
    from wattserve.errors import UsageError

    with pytest.raises(UsageError, match="CUDA IPC"):
        ConcurrentEngine(ARGS, side="process")
