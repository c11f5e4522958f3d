"""The configuration schema: one declaration, registries as the source of allowed names, flags
generated from the models, YAML round trips."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from wattserve.errors import UsageError
from wattserve.registry import Registry
from wattserve.schema.flags import render
from wattserve.schema.loading import load_scenario, scenario_yaml
from wattserve.schema.scenario import Scenario


def test_registry_names_make_and_unknown() -> None:
    reg: Registry[str] = Registry("thing", {"a": lambda x=1: f"a{x}", "b": "os.path:join"}, aliases={"aa": "a"})
    assert reg.names() == ("a", "b") and list(reg) == ["a", "b"] and "a" in reg and "aa" not in reg
    assert reg.make("aa", x=2) == "a2"
    assert reg["b"]("x", "y") == "x/y", "a 'module:attribute' entry is imported when it is looked up"
    with pytest.raises(UsageError, match=r"^thing: unknown value 'c'; allowed: a, b$"):
        reg.make("c")


def test_flag_table_matches_the_models() -> None:
    table = Path(__file__).parents[1] / "src/wattserve/schema/flag_table.py"
    assert table.read_text() == render(), "regenerate: python -m wattserve.schema.flags"


def test_parser_build_imports_nothing_heavy() -> None:
    """`wattserve --help` starts in under 0.1 s because building the parser reads the generated flag
    table, never pydantic, numpy or the registries' modules."""
    code = ("import sys; from wattserve.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('pydantic', 'numpy', 'yaml', 'wattserve.control', 'wattserve.sim') "
            "if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert p.stdout.strip() == "[]"


def test_registries_validate_and_canonicalise() -> None:
    s = load_scenario(None, {"cluster.gpu": "H100-SXM", "cluster.model": "llama3-8b"})
    assert (s.cluster.gpu, s.cluster.model) == ("h100", "llama-3.1-8b")
    for path, value, needle in (("cluster.router", "random", "allowed: round_robin, least_loaded"),
                                ("cluster.engine.governor", "x", "cluster.engine.governor: unknown governor"),
                                ("control.policy", "oracle", "control.policy: unknown policy 'oracle'")):
        with pytest.raises(UsageError, match=needle):
            load_scenario(None, {path: value, "control.budget_w": 4000} if path == "control.policy" else {path: value})


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
@pytest.mark.parametrize("path", ["workload.rate", "workload.duration_s", "workload.burstiness", "slo.ttft_ms",
                                  "cluster.power_cap_w", "cluster.engine.mem_util", "control.budget_w"])
def test_no_float_field_takes_a_non_finite_number(path: str, value: float) -> None:
    with pytest.raises(UsageError, match=path.replace(".", r"\.")):
        load_scenario(None, {path: value})


def test_control_needs_budget_and_policy_and_a_feasible_budget() -> None:
    with pytest.raises(UsageError, match="give both"):
        load_scenario(None, {"control.policy": "rapid"})
    with pytest.raises(UsageError, match="minimum caps"):
        load_scenario(None, {"control.policy": "rapid", "control.budget_w": 1000})
    s = load_scenario(None, {"control.policy": "rapid", "control.budget_w": 4000})
    assert (s.control.policy, s.control.budget_w) == ("rapid", 4000)


def test_yaml_round_trip(tmp_path: Path) -> None:
    s = load_scenario(None, {"control.policy": "static", "control.budget_w": 3000, "slo.tpot_ms": 0,
                             "cluster.colocated": 8, "cluster.prefill": 0, "cluster.decode": 0})
    assert s.slo.tpot_ms is None and s.cluster.layout == "colocated"
    path = tmp_path / "config.yaml"
    path.write_text(scenario_yaml(s))
    assert load_scenario(path) == s
    assert Scenario() == load_scenario(None)
