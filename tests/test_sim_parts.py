"""The simulator's parts on their own: KV ledger, decode run (closed form and table), event loop."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wattserve.sim.decode_run import DecodeRun
from wattserve.sim.events import EventLoop
from wattserve.sim.kv_ledger import KvLedger


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 5000), st.integers(0, 5000), st.integers(0, 40), st.integers(1, 64), st.sampled_from([8, 16, 32]))
def test_iterations_left_is_the_last_iteration_that_fits(other: int, run: int, seqs: int, batch: int, bs: int) -> None:
    kv = KvLedger(20_000, bs)
    kv.other, kv.run, kv.seqs = other, run, seqs + batch
    k = kv.iterations_left(batch)
    if k >= 1:
        assert kv.growth_fits(batch * k)
    assert not kv.growth_fits(batch * (k + 1))


def test_fits_keeps_a_block_of_growth_per_running_decode() -> None:
    kv = KvLedger(16 * 12, 16)
    kv.reserve(16 * 8)
    assert kv.used_blocks() == 8
    assert kv.fits(16, running=2)
    assert not kv.fits(16, running=3)
    kv.release(16 * 8)
    assert kv.used_blocks() == 0 and kv.peak == 8


def _formula(k: int = 40, b: int = 7, c0: int = 3000) -> DecodeRun:
    r = DecodeRun()
    r.begin(0.0)
    r.decode(k, b, c0, 0.004, 2e-7)
    return r


def _table_like(f: DecodeRun) -> DecodeRun:
    r = DecodeRun()
    r.begin(0.0)
    r.decode(f.k, f.b, f.c0, 0.0, 0.0)
    cum = [f.run_time(j) for j in range(1, f.k + 1)]
    r.table(cum, [None] * f.k, {None: (1980, 500.0, f.alpha, f.beta)})
    return r


def test_table_run_agrees_with_closed_form() -> None:
    f = _formula()
    t = _table_like(f)
    for j in range(0, f.k + 1):
        assert t.run_time(j) == pytest.approx(f.run_time(j), rel=1e-12)
    for tau in [0.0, 0.001, 0.0045, 0.05, 0.1, f.run_time(f.k), 1.0]:
        assert t.iters_done(tau) == f.iters_done(tau)
    t_j = f.run_time(13)
    f.rebase(13, t_j)
    t.rebase(13, t_j)
    f.k = t.k = 27
    assert t.d0 == pytest.approx(f.d0, rel=1e-12)
    for j in range(0, 28):
        assert t.run_time(j) == pytest.approx(f.run_time(j), rel=1e-9)


def test_iters_done_counts_an_iteration_only_once_it_ends() -> None:
    f = _formula()
    for j in range(1, f.k):
        end = f.run_time(j)
        assert f.iters_done(end) == j
        assert f.iters_done(end * (1 - 1e-12)) == j - 1


def test_rescaled_iteration_finishes_its_remaining_fraction() -> None:
    f = _formula()
    d = f.alpha + f.beta * f.c0
    f.rescale(1.0, d, 0.25)
    f.k = 1
    assert f.step_time() == pytest.approx(0.25 * d)
    assert f.iters_done(0.25 * d * 0.999) == 0 and f.iters_done(0.25 * d) == 1


def test_event_loop_refuses_the_past_and_stops() -> None:
    loop = EventLoop()
    seen: list[float] = []
    loop.at(1.0, lambda _: seen.append(loop.now))
    loop.run()
    with pytest.raises(ValueError, match="before the current time"):
        loop.at(0.5, lambda _: None)
    loop.at(1.0 - 1e-13, lambda _: seen.append(loop.now))
    loop.at(2.0, lambda _: loop.stop())
    loop.at(3.0, lambda _: seen.append(loop.now))
    loop.run()
    assert seen == [1.0, 1.0] and loop.now == 2.0
