"""Mixture-of-experts with expert parallelism (docs/moe.md): the all-to-all fit against APEX+'s
profile, communication that ignores the clock, the busiest rank, routing skew, the refusals, the
runtime's expert-parallel routing shape, and closed-form decode on an EP cluster."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wattserve.catalog.gpus import get_gpu
from wattserve.catalog.models import BatchShape, expected_busiest_group, get_model
from wattserve.errors import UsageError
from wattserve.perf.collectives import ALLTOALL_FITS, alltoall_fit
from wattserve.perf.latency import RooflineLatencyModel
from wattserve.perf.power import UtilizationPowerModel
from wattserve.schema.cluster import ClusterConfig, EngineConfig
from wattserve.sim.cluster import Cluster
from wattserve.workload import LengthDist, SyntheticSpec, generate

from refusal import assert_refused, run_in_process

H100 = get_gpu("h100")
MIXTRAL = get_model("mixtral-8x7b")
QWEN = get_model("qwen3-30b-a3b")
FIT_TOLERANCE = {2: 0.35, 4: 0.25, 8: 0.30}
"""Largest relative error of the fit at any APEX+ half-precision point, per group size (the
fit's own worst cases are 34.6%, 23.1%/16.7% and 27.3%: small messages near the flat floor)."""


def _lat(model=MIXTRAL, ep: int = 1, skew: float | None = None, gpu=H100, tp: int = 4) -> RooflineLatencyModel:
    return RooflineLatencyModel(gpu, model, tp, ep, skew)


def test_the_fit_reproduces_apex_plus_all_to_all_points(data_dir: Path) -> None:
    spec = importlib.util.spec_from_file_location("fit_alltoall", Path(__file__).parents[1] / "scripts" /
                                                  "fit_alltoall.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    for kind, folder in script.KINDS.items():
        path = data_dir / "anchors" / "apex_plus" / "profile" / "comm" / folder / "alltoall.csv"
        name = get_gpu(kind).name
        errors = []
        for n, rows in script.load(path).items():
            fit = ALLTOALL_FITS[name][n]
            assert script.fit(rows) == pytest.approx((fit.floor_s, fit.latency_s, fit.bw_bytes_s), rel=1e-3)
            for kb, t_us, _ in rows:
                err = abs(fit.time_s(kb * 1024.0) * 1e6 - t_us) / t_us
                assert err <= FIT_TOLERANCE[n], (kind, n, kb, t_us, err)
                errors.append(err)
        assert float(np.median(errors)) < 0.05


def test_the_fit_reads_only_half_rows_of_one_node(data_dir: Path) -> None:
    path = data_dir / "anchors" / "apex_plus" / "profile" / "comm" / "H100-SXM-80GB" / "alltoall.csv"
    with path.open() as f:
        halves = [r for r in csv.DictReader(f) if r["dtype"] == "half"]
    assert {r["num_gpus_per_node"] for r in halves} == {"2", "4", "8"}
    assert len(halves) == 57


@given(st.sampled_from(["h100", "h200", "a100", "mi300x"]), st.sampled_from([2, 4, 8]),
       st.floats(0, 1e9), st.floats(0, 1e9))
@settings(max_examples=200, deadline=None)
def test_all_to_all_time_is_continuous_and_grows_with_size(gpu: str, n: int, a: float, b: float) -> None:
    fit = alltoall_fit(get_gpu(gpu), n)
    lo, hi = sorted((a, b))
    assert fit.floor_s <= fit.time_s(lo) <= fit.time_s(hi)
    for edge in (256 * 1024, 1024 * 1024):
        assert fit.time_s(edge * (1 + 1e-9)) == pytest.approx(fit.time_s(edge), rel=1e-6)


def test_gpus_without_a_profile_scale_h100_by_link_bandwidth() -> None:
    a100, h100 = alltoall_fit(get_gpu("a100"), 4), alltoall_fit(H100, 4)
    assert a100.bw_bytes_s == pytest.approx(h100.bw_bytes_s * 300 / 450)
    assert a100.floor_s == h100.floor_s
    assert a100.time_s(64e6) > h100.time_s(64e6)


def _without_comm(lat: RooflineLatencyModel) -> RooflineLatencyModel:
    """The same model with its all-to-all switched off, to take communication apart."""
    bare = RooflineLatencyModel(lat.gpu, lat.model, lat.tp, lat.ep, lat.expert_skew)
    object.__setattr__(bare, "_a2a", None)
    return bare


@pytest.mark.parametrize("shape", [BatchShape.decode(1, 500), BatchShape.decode(64, 2000), BatchShape.prefill(2048)])
def test_communication_time_is_the_same_at_two_clocks(shape: BatchShape) -> None:
    lat = _lat(ep=4)
    bare = _without_comm(lat)
    comm = lat.comm_s(shape.tokens)
    expected = 2 * MIXTRAL.layers * alltoall_fit(H100, 4).time_s(shape.tokens * 2 * 4096 * 2 / 4)
    assert comm == pytest.approx(expected) and comm > 0
    assert _lat(ep=1).comm_s(shape.tokens) == 0.0
    for clock in (H100.clock_max_mhz, 990):
        with_comm, without = lat.iteration(shape, clock), bare.iteration(shape, clock)
        assert with_comm.time_s - without.time_s == pytest.approx(comm, rel=1e-9)
    assert lat.iteration(shape, 990).time_s > lat.iteration(shape, H100.clock_max_mhz).time_s


def test_communication_counts_as_neither_compute_nor_memory_busy_time() -> None:
    shape = BatchShape.decode(32, 32 * 800)
    lat = _lat(ep=4)
    c, bare = lat.iteration(shape, H100.clock_max_mhz), _without_comm(lat).iteration(shape, H100.clock_max_mhz)
    assert (c.compute_s, c.memory_s) == (bare.compute_s, bare.memory_s)
    assert c.time_s > bare.time_s
    power = UtilizationPowerModel.for_gpu(H100)
    assert power.busy_power(c, H100.clock_max_mhz) < power.busy_power(bare, H100.clock_max_mhz)


def test_ep4_reads_whole_experts_on_the_busiest_rank_at_batch_one() -> None:
    """One token, top-2 of 8 experts over 4 ranks: the busiest rank reads one whole expert, two with
    probability 1/7 (both picks on one rank), where TP4 reads a quarter of each of two experts."""
    shape = BatchShape.decode(1, 1000)
    tp, ep = _lat(ep=1), _lat(ep=4)
    assert ep.experts_read(1) == pytest.approx(8 / 7)
    assert tp.experts_read(1) == pytest.approx(2.0)
    expert_bytes = MIXTRAL.expert_params * 2
    w_tp = MIXTRAL.work(shape, 4).weight_bytes
    w_ep = MIXTRAL.work(shape, 4, 4).weight_bytes
    assert w_ep - w_tp == pytest.approx(MIXTRAL.layers * expert_bytes * (8 / 7 - 2 / 4), rel=1e-9)
    assert ep.iteration(shape, H100.clock_max_mhz).time_s > tp.iteration(shape, H100.clock_max_mhz).time_s


def test_ep4_beats_tp4_at_a_large_batch_where_fewer_all_reduces_win() -> None:
    """At 256 sequences every expert is touched on every rank, FLOPs per rank are equal under uniform
    routing, and EP swaps the MoE all-reduce (30 us per call) for two all-to-alls of ~10-15 us."""
    shape = BatchShape.decode(256, 256 * 1000)
    tp, ep = _lat(ep=1), _lat(ep=4)
    assert ep.experts_read(256) == pytest.approx(2.0, rel=1e-6)
    assert MIXTRAL.work_coeffs(4, 4).flops_per_token == pytest.approx(MIXTRAL.work_coeffs(4).flops_per_token)
    assert ep.iteration(shape, H100.clock_max_mhz).time_s < tp.iteration(shape, H100.clock_max_mhz).time_s


def test_the_busiest_group_table_is_exact_for_mixtral_on_four_ranks() -> None:
    table = expected_busiest_group(8, 4)
    assert table[0] == 0 and table[1] == 1 and table[8] == 2
    assert table[2] == pytest.approx(1 + 1 / 7)
    assert table[5] == 2.0


@given(st.sampled_from([(8, 2), (8, 4), (8, 8), (128, 2), (128, 4), (128, 8)]), st.integers(0, 128))
@settings(max_examples=80, deadline=None)
def test_the_busiest_group_holds_at_least_the_mean_and_at_most_a_group(eg: tuple[int, int], d: int) -> None:
    experts, groups = eg
    d = min(d, experts)
    busiest = expected_busiest_group(experts, groups)[d]
    assert d / groups - 1e-9 <= busiest <= min(d, experts // groups) + 1e-9


@pytest.mark.parametrize(("model", "shape"), [(MIXTRAL, BatchShape.decode(8, 1000)),
                                               (MIXTRAL, BatchShape.decode(256, 1000)),
                                               (MIXTRAL, BatchShape.prefill(2048)),
                                               (QWEN, BatchShape.decode(512, 1000)), (QWEN, BatchShape.prefill(2048))])
def test_skew_at_its_maximum_slows_an_ep_step(model, shape: BatchShape) -> None:
    uniform = _lat(model, ep=4).iteration(shape, H100.clock_max_mhz)
    skewed = _lat(model, ep=4, skew=model.max_share).iteration(shape, H100.clock_max_mhz)
    assert skewed.time_s > uniform.time_s
    assert skewed.compute_s > uniform.compute_s


def test_at_a_small_batch_skew_can_read_fewer_experts_than_uniform() -> None:
    """Qwen3's 8 sequences make 64 assignments over 128 experts: concentrating them touches fewer
    distinct experts, and a memory-bound step reads less, even on the busiest rank."""
    uniform, skewed = _lat(QWEN, ep=4), _lat(QWEN, ep=4, skew=QWEN.max_share)
    assert skewed.experts_read(8) < uniform.experts_read(8)
    shape = BatchShape.decode(8, 1000)
    assert skewed.iteration(shape, 1980).time_s < uniform.iteration(shape, 1980).time_s


def test_skew_does_not_change_tp_only_flops() -> None:
    """With TP alone every rank runs its slice of every expert, so routing skew moves no FLOPs
    between ranks; it only concentrates reads on fewer experts."""
    shape = BatchShape.decode(4, 2000)
    uniform, skewed = _lat(ep=1), _lat(ep=1, skew=0.5)
    assert skewed.iteration(shape, 1980).compute_s == pytest.approx(uniform.iteration(shape, 1980).compute_s)
    assert skewed.experts_read(4) < uniform.experts_read(4)


@given(st.sampled_from([MIXTRAL, QWEN]), st.floats(0, 1), st.integers(1, 4096))
@settings(max_examples=100, deadline=None)
def test_skewed_routing_touches_no_more_experts_than_uniform(model, frac: float, tokens: int) -> None:
    s = model.uniform_share + frac * (model.max_share - model.uniform_share)
    touched = model.experts_touched(tokens, s)
    assert model.experts_per_token - 1e-9 <= touched <= model.experts_touched(tokens) + 1e-9
    assert model.experts_touched(tokens, model.uniform_share) == pytest.approx(model.experts_touched(tokens))
    assert model.busiest_rank_share(4, s) >= 0.25 - 1e-12


def test_decode_coeffs_stay_linear_in_context_with_ep() -> None:
    lat = _lat(QWEN, ep=4, skew=0.05)
    for seqs in (1, 16, 200):
        alpha, beta = lat.decode_coeffs(seqs, 1500)
        for ctx in (seqs * 10, seqs * 3000):
            t = lat.iteration(BatchShape(decode_seqs=seqs, decode_ctx=ctx), 1500).time_s
            assert t == pytest.approx(alpha + beta * ctx, rel=1e-12)


def test_a_dense_model_refuses_ep_in_the_latency_model() -> None:
    with pytest.raises(ValueError, match="dense"):
        RooflineLatencyModel(H100, get_model("llama-3.1-8b"), 4, 4)


def test_closed_form_decode_agrees_with_stepping_on_an_ep_cluster() -> None:
    """Timing to 1e-6 as elsewhere; energy to 1e-4, since a closed-form run draws one power for the
    run while stepping redraws it as the context (and so the memory share) grows."""
    wl = generate(SyntheticSpec(rate=6, num_requests=80, duration_s=None,
                                prompt=LengthDist("uniform", low=50, high=1500),
                                output=LengthDist("uniform", low=1, high=200)), 3)
    base = dict(model="mixtral-8x7b", tp=4, ep=4, expert_skew=0.3, prefill=1, decode=1,
                engine=EngineConfig(max_seqs=32))
    jump = Cluster(ClusterConfig(**base), wl).run()
    step = Cluster(ClusterConfig(max_run_iters=1, **base), wl).run()
    assert jump.events < step.events
    np.testing.assert_allclose(jump.records.finish, step.records.finish, rtol=1e-6)
    np.testing.assert_allclose(jump.records.ttft, step.records.ttft, rtol=1e-6)
    assert sum(g.energy_j for g in jump.gpus) == pytest.approx(sum(g.energy_j for g in step.gpus), rel=1e-4)


@pytest.mark.parametrize(("over", "field", "text"), [
    (dict(ep=3), "cluster.ep", "allowed: 1, 4"),
    (dict(ep=2), "cluster.ep", "must be 1 or equal tp (4)"),
    (dict(model="llama-3.1-70b", ep=4), "cluster.ep", "Llama-3.1-70B is dense"),
    (dict(expert_skew=0.6), "cluster.expert_skew", "allowed: 0.125 to 0.5"),
    (dict(expert_skew=0.1), "cluster.expert_skew", "allowed: 0.125 to 0.5"),
    (dict(model="llama-3.1-70b", expert_skew=0.2), "cluster.expert_skew", "dense"),
])
def test_the_cluster_refuses_bad_expert_parallelism(over: dict, field: str, text: str) -> None:
    spec = ClusterConfig(**{**dict(model="mixtral-8x7b", tp=4, prefill=1, decode=1), **over})
    wl = generate(SyntheticSpec(rate=1, num_requests=1, duration_s=None, prompt=LengthDist("fixed", 10),
                                output=LengthDist("fixed", 10)), 0)
    with pytest.raises(UsageError) as e:
        Cluster(spec, wl)
    assert e.value.field == field
    assert text in str(e.value)


@pytest.mark.parametrize(("argv", "expect"), [
    (["--ep", "3", "--tp", "4", "--model", "mixtral-8x7b"], "--ep: 3 must be 1 or equal tp (4)"),
    (["--ep", "4", "--tp", "4"], "--ep: 4 needs a mixture-of-experts model, and Llama-3.1-8B is dense"),
    (["--expert-skew", "0.2", "--tp", "4", "--model", "qwen3-30b-a3b"], "--expert-skew: 0.2 is outside"),
])
def test_simulate_refuses_bad_ep_flags_in_one_line(argv: list[str], expect: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_in_process(["simulate", *argv, "--out", str(tmp_path / "run")], capsys)
    assert_refused(code, out, err, expect)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("experts", "top_k", "ep"), [(4, 2, 2), (4, 2, 4), (8, 2, 4), (16, 4, 8)])
def test_the_runtime_expert_parallel_moe_equals_ep1(experts: int, top_k: int, ep: int) -> None:
    from wattserve.runtime.layers.mlp import SparseMoE

    torch.manual_seed(experts * 10 + ep)
    one = SparseMoE(32, 48, experts, top_k)
    sharded = SparseMoE(32, 48, experts, top_k, ep)
    sharded.load_state_dict(one.state_dict())
    x = torch.randn(41, 32)
    torch.testing.assert_close(sharded(x), one(x), rtol=1e-5, atol=1e-5)


@given(st.sampled_from([(4, 1, 2), (4, 2, 4), (8, 2, 2), (8, 3, 8), (16, 4, 4)]), st.integers(0, 64),
       st.integers(0, 2**16))
@settings(max_examples=40, deadline=None)
def test_expert_parallel_routing_never_changes_the_output(shape: tuple[int, int, int], tokens: int, seed: int) -> None:
    """Any batch, empty included, any routing (a seeded gate): sharding the experts and dispatching
    to the shards gives ep = 1's output."""
    from wattserve.runtime.layers.mlp import SparseMoE

    experts, top_k, ep = shape
    torch.manual_seed(seed)
    one = SparseMoE(16, 24, experts, top_k)
    sharded = SparseMoE(16, 24, experts, top_k, ep)
    sharded.load_state_dict(one.state_dict())
    x = torch.randn(tokens, 16)
    torch.testing.assert_close(sharded(x), one(x), rtol=1e-5, atol=1e-5)


def test_the_runtime_tiny_moe_model_gives_the_same_logits_with_ep() -> None:
    from dataclasses import replace

    from wattserve.runtime.engine.config import get_config
    from wattserve.runtime.models.llama import DecoderLayer

    cfg = get_config("tiny-moe")
    torch.manual_seed(1)
    one, two = DecoderLayer(cfg).block_sparse_moe, DecoderLayer(replace(cfg, ep=2)).block_sparse_moe
    two.load_state_dict(one.state_dict())
    assert two.ep == 2
    x = torch.randn(9, cfg.hidden)
    torch.testing.assert_close(two(x), one(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("model", "ep", "text"), [
    ("tiny-moe", 3, "--ep: 3 must divide tiny-moe's 4 experts; allowed: 1, 2, 4"),
    ("tiny", 2, "--ep: 2 needs a mixture-of-experts model, and tiny is dense; allowed: 1"),
])
def test_the_runtime_config_refuses_bad_ep(model: str, ep: int, text: str) -> None:
    from dataclasses import replace

    from wattserve.runtime.engine.config import get_config

    with pytest.raises(UsageError) as e:
        replace(get_config(model), ep=ep)
    assert str(e.value) == text
