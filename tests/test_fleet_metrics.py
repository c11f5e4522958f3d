"""Reading vLLM's and SGLang's /metrics pages (runtime.fleet): the pages in tests/data are written by hand
from each engine's documented metric list, not captured from live servers."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wattserve.runtime.fleet.engines import (
    ENGINES,
    WINDOW_S,
    EngineReading,
    LatencyWindow,
    read_engine,
)
from wattserve.runtime.fleet.prom import parse_metrics, quantile_between
from wattserve.seam import actions
from wattserve.seam.state import InstanceState

DATA = Path(__file__).resolve().parent / "data"


def page(name: str) -> str:
    return (DATA / name).read_text()


def interpolate(start: float, end: float, rank: float, below: float, within: float) -> float:
    """Prometheus' linear interpolation inside the bucket (start, end] (promql/quantile.go)."""
    return start + (end - start) * (rank - below) / within


def test_vllm_page() -> None:
    scrape = parse_metrics(page("vllm_metrics.txt"))
    r = read_engine(ENGINES["vllm"], scrape)
    assert (r.running, r.waiting, r.kv_usage) == (3, 2, 0.42)
    assert (r.prompt_tokens, r.output_tokens, r.completed) == (1284530, 402168, 1510 + 96 + 0)
    assert r.ttft is not None and r.ttft[-1] == (math.inf, 1609.0)
    assert len(r.ttft) == 23
    assert r.tpot is not None and r.tpot[-1] == (math.inf, 1606.0), "per-request TPOT, not inter-token latency"
    assert scrape.total("vllm:request_success_total", finished_reason="stop") == 1510.0
    assert scrape.total("vllm:request_success_total", finished_reason="abort", engine="0") == 0.0
    assert scrape.total("vllm:request_success_total", finished_reason="nonesuch") is None
    assert scrape.total("vllm:num_preemptions_total") == 4.0
    assert scrape.has("vllm:cache_config_info") and not scrape.has("vllm:gpu_cache_usage_perc")
    assert scrape.buckets("vllm:nonesuch") is None
    assert quantile_between(None, r.ttft, 0.9) == pytest.approx(interpolate(0.1, 0.25, 0.9 * 1609, 1290, 234))
    assert quantile_between(None, r.tpot, 0.9) == pytest.approx(interpolate(0.025, 0.05, 0.9 * 1606, 1130, 440))


def test_sglang_page() -> None:
    r = read_engine(ENGINES["sglang"], parse_metrics(page("sglang_metrics.txt")))
    assert (r.running, r.waiting, r.kv_usage) == (12, 5, 0.61)
    assert (r.prompt_tokens, r.output_tokens, r.completed) == (2417336, 1893402, 5214)
    assert r.ttft is not None and r.ttft[-1] == (math.inf, 5226.0)
    assert r.tpot is not None and r.tpot[-1] == (math.inf, 1888176.0)
    assert quantile_between(None, r.ttft, 0.9) == pytest.approx(interpolate(0.2, 0.4, 0.9 * 5226, 4402, 509))
    assert quantile_between(None, r.tpot, 0.9) == pytest.approx(
        interpolate(0.015, 0.02, 0.9 * 1888176, 1390551, 1768004 - 1390551))


def test_sglang_falls_back_to_the_e2e_count_for_completed_requests() -> None:
    text = "\n".join(line for line in page("sglang_metrics.txt").splitlines() if "num_requests" not in line)
    assert read_engine(ENGINES["sglang"], parse_metrics(text)).completed == 5214


def test_v0_page_uses_the_older_names() -> None:
    scrape = parse_metrics(page("vllm_metrics_v0.txt"))
    assert not scrape.has("vllm:kv_cache_usage_perc")
    r = read_engine(ENGINES["vllm"], scrape)
    assert (r.running, r.waiting, r.kv_usage) == (5, 1, 0.3)
    assert (r.prompt_tokens, r.output_tokens, r.completed) == (96412, 61388, 212 + 31)
    assert r.ttft is not None and r.ttft[-1] == (math.inf, 248.0)
    assert r.tpot is not None and r.tpot[-1] == (math.inf, 61140.0), "vllm:time_per_output_token_seconds"
    assert quantile_between(None, r.tpot, 0.9) == pytest.approx(interpolate(0.025, 0.05, 0.9 * 61140, 40210, 19660))


def test_a_page_from_the_wrong_engine_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="running: this /metrics page has none of vllm:num_requests_running: "
                                         "is it a vLLM server?"):
        read_engine(ENGINES["vllm"], parse_metrics(page("sglang_metrics.txt")))
    with pytest.raises(ValueError, match="sglang:num_running_reqs: is it a SGLang server"):
        read_engine(ENGINES["sglang"], parse_metrics(page("vllm_metrics.txt")))
    without_kv = "\n".join(line for line in page("vllm_metrics.txt").splitlines() if "kv_cache_usage" not in line)
    with pytest.raises(ValueError, match="kv_usage: this /metrics page has none of vllm:kv_cache_usage_perc, "
                                         "vllm:gpu_cache_usage_perc: is it a vLLM server?"):
        read_engine(ENGINES["vllm"], parse_metrics(without_kv))


def test_missing_histograms_read_as_none() -> None:
    text = "\n".join(line for line in page("vllm_metrics.txt").splitlines() if "_seconds" not in line)
    r = read_engine(ENGINES["vllm"], parse_metrics(text))
    assert (r.ttft, r.tpot, r.running) == (None, None, 3)


DATA_PARALLEL = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_running{engine="1",model_name="m"} 4.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 0.0
vllm:num_requests_waiting{engine="1",model_name="m"} 2.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.75
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="m"} 100.0
vllm:prompt_tokens_total{engine="1",model_name="m"} 50.0
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="m"} 10.0
vllm:generation_tokens_total{engine="1",model_name="m"} 20.0
# TYPE vllm:request_success_total counter
vllm:request_success_total{engine="0",finished_reason="stop",model_name="m"} 1.0
vllm:request_success_total{engine="1",finished_reason="stop",model_name="m"} 2.0
vllm:request_success_total{engine="1",finished_reason="length",model_name="m"} 3.0
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="m"} 1.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="m"} 1.0
vllm:time_to_first_token_seconds_bucket{engine="1",le="0.1",model_name="m"} 1.0
vllm:time_to_first_token_seconds_bucket{engine="1",le="+Inf",model_name="m"} 5.0
"""


def test_data_parallel_engines_are_summed_and_kv_usage_averaged() -> None:
    r = read_engine(ENGINES["vllm"], parse_metrics(DATA_PARALLEL))
    assert (r.running, r.waiting, r.kv_usage) == (7, 2, 0.5)
    assert (r.prompt_tokens, r.output_tokens, r.completed) == (150, 30, 6)
    assert r.ttft == ((0.1, 2.0), (math.inf, 6.0))
    assert r.tpot is None


def test_our_server_page_reads_as_vllm() -> None:
    from wattserve.runtime.metrics import ServerMetrics

    m = ServerMetrics("tiny")
    worker = {"wid": 0, "role": "colocated", "running": 1, "waiting": 2, "kv_blocks_used": 3, "kv_blocks": 10,
              "alive": True}
    fresh = read_engine(ENGINES["vllm"], parse_metrics(m.render([worker], [])))
    assert fresh.completed == 0, "vllm:request_success is declared before any request finishes"
    m.ttft.observe(0.05)
    m.itl.observe(0.01)
    m.finished("stop", 10, 5)
    r = read_engine(ENGINES["vllm"], parse_metrics(m.render([worker], [])))
    assert (r.running, r.waiting, r.kv_usage) == (1, 2, 0.3)
    assert (r.prompt_tokens, r.output_tokens, r.completed) == (10, 5, 1)
    assert r.ttft is not None and r.ttft[-1] == (math.inf, 1.0)
    assert r.tpot is not None and r.tpot[0] == (0.01, 1.0), "vllm:inter_token_latency_seconds"


def test_a_malformed_page_raises_one_line() -> None:
    with pytest.raises(ValueError, match="malformed /metrics page: Invalid value") as e:
        parse_metrics('vllm:num_requests_running{model_name="m" 1.0\n')
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="malformed /metrics page: .*le='fast'"):
        parse_metrics('# TYPE h histogram\nh_bucket{le="fast"} 1.0\n')
    with pytest.raises(ValueError, match="malformed /metrics page"):
        parse_metrics("{}\n")


OLD = ((0.1, 2.0), (0.5, 5.0), (1.0, 6.0), (math.inf, 6.0))
NEW = ((0.1, 4.0), (0.5, 15.0), (1.0, 19.0), (math.inf, 20.0))


def test_quantile_between_is_prometheus_histogram_quantile_of_the_difference() -> None:
    # Window: 2 in (0, 0.1], 8 in (0.1, 0.5], 3 in (0.5, 1], 1 above 1: 14 observations.
    assert quantile_between(OLD, NEW, 0.5) == pytest.approx(0.1 + 0.4 * (7 - 2) / 8)
    assert quantile_between(OLD, NEW, 0.9) == pytest.approx(0.5 + 0.5 * (12.6 - 10) / 3)
    assert quantile_between(OLD, NEW, 0.1) == pytest.approx(0.1 * 1.4 / 2)
    assert quantile_between(OLD, NEW, 0.99) == 1.0, "in the +Inf bucket: the highest finite bound"
    assert quantile_between(OLD, NEW, 0.0) == 0.0
    assert quantile_between(NEW, NEW, 0.9) is None, "no observations in the window"
    assert quantile_between(None, None, 0.9) is None
    assert quantile_between(OLD, None, 0.9) is None
    with pytest.raises(ValueError):
        quantile_between(OLD, NEW, 1.5)
    with pytest.raises(ValueError, match=r"\+Inf"):
        quantile_between(None, ((0.1, 1.0), (0.5, 2.0)), 0.5)


def test_a_counter_reset_or_new_buckets_fall_back_to_the_new_histogram() -> None:
    restarted = ((0.1, 1.0), (0.5, 3.0), (1.0, 3.0), (math.inf, 3.0))
    assert quantile_between(NEW, restarted, 0.5) == quantile_between(None, restarted, 0.5)
    assert quantile_between(NEW, restarted, 0.5) == pytest.approx(0.1 + 0.4 * (1.5 - 1) / 2)
    rebucketed = ((0.2, 4.0), (2.0, 30.0), (math.inf, 30.0))
    assert quantile_between(NEW, rebucketed, 0.5) == pytest.approx(0.2 + 1.8 * (15 - 4) / 26)


def reading(ttft: tuple[tuple[float, float], ...] | None) -> EngineReading:
    return EngineReading(running=0, waiting=0, kv_usage=0.0, prompt_tokens=0, output_tokens=0, completed=0,
                         ttft=ttft, tpot=None)


def test_latency_window_gives_the_p90_of_only_the_last_window() -> None:
    window = LatencyWindow()
    assert window.window_s == WINDOW_S == 5.0
    assert window.ttft_p90_s() is None
    window.add(0.0, reading(((0.1, 0.0), (1.0, 0.0), (math.inf, 0.0))))
    assert window.ttft_p90_s() is None, "one reading spans no time"
    window.add(5.0, reading(((0.1, 10.0), (1.0, 10.0), (math.inf, 10.0))))
    assert window.ttft_p90_s() == pytest.approx(0.1 * 0.9)
    window.add(10.0, reading(((0.1, 10.0), (1.0, 20.0), (math.inf, 20.0))))
    assert window.ttft_p90_s() == pytest.approx(0.1 + 0.9 * 9 / 10), "the 10 fast ones before t=5 are out"
    assert quantile_between(((0.1, 0.0), (1.0, 0.0), (math.inf, 0.0)), ((0.1, 10.0), (1.0, 20.0), (math.inf, 20.0)),
                            0.9) == pytest.approx(0.1 + 0.9 * 8 / 10)
    assert window.tpot_p90_s() is None
    with pytest.raises(ValueError, match="time order"):
        window.add(9.0, reading(None))


def test_latency_window_keeps_the_oldest_reading_until_one_is_a_window_old() -> None:
    window = LatencyWindow(window_s=5.0)
    window.add(0.0, reading(((0.1, 0.0), (1.0, 0.0), (math.inf, 0.0))))
    window.add(3.0, reading(((0.1, 10.0), (1.0, 10.0), (math.inf, 10.0))))
    window.add(6.0, reading(((0.1, 10.0), (1.0, 20.0), (math.inf, 20.0))))
    assert window.ttft_p90_s() == pytest.approx(0.1 + 0.9 * 8 / 10), "nothing at or before t=1 but t=0"
    window.add(8.0, reading(((0.1, 10.0), (1.0, 20.0), (math.inf, 20.0))))
    assert window.ttft_p90_s() == pytest.approx(0.1 + 0.9 * 9 / 10), "t=3 is now at or before t=8-5"


@st.composite
def cumulative_buckets(draw: st.DrawFn) -> tuple[tuple[float, float], ...]:
    bounds = sorted(draw(st.lists(st.floats(min_value=1e-6, max_value=1e4, allow_nan=False), min_size=1,
                                  max_size=12, unique=True)))
    steps = draw(st.lists(st.integers(min_value=0, max_value=10_000), min_size=len(bounds) + 1,
                          max_size=len(bounds) + 1))
    counts, total = [], 0
    for s in steps:
        total += s
        counts.append(float(total))
    return tuple(zip([*bounds, math.inf], counts))


@given(cumulative_buckets(), st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=2, max_size=8))
def test_quantile_is_monotone_in_q_and_within_the_finite_bounds(
        buckets: tuple[tuple[float, float], ...], qs: list[float]) -> None:
    values = [quantile_between(None, buckets, q) for q in sorted(qs)]
    if buckets[-1][1] == 0:
        assert values == [None] * len(values)
        return
    assert all(v is not None for v in values)
    top = buckets[-2][0]
    assert all(0.0 <= v <= top for v in values)  # type: ignore[operator]
    assert values == sorted(values)  # type: ignore[type-var]


def test_engine_specs_describe_what_the_seam_can_and_cannot_get() -> None:
    state_fields = {f.name for f in dataclasses.fields(InstanceState)}
    action_names = {name for name in dir(actions) if name.startswith("Set")}
    for spec in ENGINES.values():
        assert spec.fills <= state_fields
        assert not spec.fills & {"prefilling", "waiting_tokens", "oldest_wait_s", "max_seqs"}
        assert spec.runtime_actions == frozenset()
        assert set(spec.refusals) == {"SetBatchLimit", "SetRole", "SetComputeShare", "SetStepTarget"} <= action_names
        assert all(reason and "\n" not in reason for reason in spec.refusals.values())
        assert spec.versions
    assert ENGINES["vllm"].kv_usage == ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
    assert ENGINES["vllm"].tpot[0] == "vllm:request_time_per_output_token_seconds"
