"""A trace replayed on the real runtime (`wattserve serve` as its own process, driven over HTTP by
the load generator's pieces): every request completes with the lengths asked for and its latencies
measured, the settings the simulator mirrors are the ones the server ran with, and nothing the
server started (worker processes, KV segments in /dev/shm) outlives it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from wattserve.experiments.runtime_replay import RuntimeLayout, replay

pytest.importorskip("torch")
pytest.importorskip("aiohttp")


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_server_runs_with_the_settings_the_layout_records() -> None:
    """The layout's flags, read back by serve's own parser, give a ServeConfig with the layout's
    settings (its `layout`, validate's name for it, is checked through the worker roles below); the
    KV blocks it resolves are what a CPU engine gives itself without --num-blocks."""
    from wattserve.cli import build_parser
    from wattserve.runtime.engine.engine import EngineArgs, LLMEngine
    from wattserve.runtime.server import worker_specs
    from wattserve.schema.flag_table import SERVE
    from wattserve.schema.flags import overrides
    from wattserve.schema.loading import apply_overrides
    from wattserve.schema.serve import ServeConfig

    for layout in (RuntimeLayout("1p1d"), RuntimeLayout("colocated", threads=2, max_num_seqs=8)):
        args = build_parser().parse_args(["serve", *layout.serve_args(seed=3)])
        config = ServeConfig.model_validate(apply_overrides({}, overrides(args, SERVE)))
        settings = {k: v for k, v in layout.settings().items() if k != "layout"}
        assert {k: getattr(config, k) for k in settings if k in ServeConfig.model_fields} == \
            {k: v for k, v in settings.items() if k in ServeConfig.model_fields}
        roles = [s.role for s in worker_specs(config)]
        assert {r: roles.count(r) for r in roles} == layout.workers
    engine = LLMEngine(EngineArgs(model="tiny"))
    assert RuntimeLayout().kv_blocks == engine.cache.num_blocks
    assert RuntimeLayout().block_size == engine.cache.block_size


@pytest.mark.parametrize("layout", ["1p1d"])
def test_a_replay_completes_every_request_as_asked_and_leaves_nothing(layout: str) -> None:
    """1P/1D, the layout with a KV hand-off and two workers to leave behind (tests/test_validate.py
    replays the colocated one end to end)."""
    from wattserve.runtime.transport import live_segments, server_prefix

    rng = np.random.default_rng(7)
    n = 10
    arrivals = np.concatenate([[0.0], np.cumsum(rng.exponential(1 / 5, n - 1))])
    prompts = rng.integers(8, 96, n)
    outputs = np.array([1, 2, *rng.integers(3, 16, n - 2)])
    r = replay(RuntimeLayout(layout), arrivals, prompts, outputs, seed=1, timeout_s=60)

    assert r.completed == n and r.errors == [""] * n
    assert r.prompt_tokens.tolist() == prompts.tolist()
    assert r.output_tokens.tolist() == outputs.tolist()
    assert np.all(r.ttft_s > 0) and np.all(r.e2e_s >= r.ttft_s)
    assert np.all(r.tpot_s[outputs > 1] > 0) and np.isnan(r.tpot_s[outputs == 1]).all()
    assert r.duration_s >= arrivals[-1]
    assert r.request_throughput == pytest.approx(n / r.duration_s)
    assert r.bench["completed"] == n and r.bench["mean_ttft_ms"] == pytest.approx(1e3 * r.ttft_s.mean())
    assert 0 < r.idle.server_ttft_s < r.idle.ttft_s and r.idle.first_gap_s > 0
    assert not math.isnan(r.idle.server_ttft_s)

    assert set(r.worker_pids) == set(RuntimeLayout(layout).workers)
    assert r.leftovers == []
    assert not alive(r.server_pid) and not any(alive(p) for p in r.worker_pids.values())
    assert live_segments(server_prefix(r.server_pid)) == []


def test_requests_the_server_would_refuse_are_refused_before_it_starts() -> None:
    layout = RuntimeLayout()
    with pytest.raises(ValueError, match="as long as each other"):
        replay(layout, [0.0, 1.0], [10], [4])
    with pytest.raises(ValueError, match="prompt lengths"):
        replay(layout, [0.0], [layout.max_prompt_tokens + 1], [4])
    with pytest.raises(ValueError, match="arrival times"):
        replay(layout, [float("nan")], [10], [4])
    with pytest.raises(ValueError, match="KV cache"):
        replay(RuntimeLayout(num_blocks=2), [0.0], [30], [4])
    with pytest.raises(ValueError, match="layout"):
        RuntimeLayout("2p2d")  # type: ignore[arg-type]
