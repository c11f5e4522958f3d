"""Reading a scenario: a YAML file, single fields overridden by dotted paths (from flags), validated
into one `Scenario`; and writing the resolved one back. Errors name the field and the allowed values."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from wattserve.errors import UsageError
from wattserve.schema.flags import field_error
from wattserve.schema.scenario import Scenario
from wattserve.workload.step_signal import parse_number, shape_name


def format_error(e: ValidationError, what: str = "config", flags: dict[str, str] | None = None) -> str:
    """One line naming the field: as `--flag` where `flags` (dotted path -> flag) says the value came
    from one, else as the dotted YAML path under `what` (wattserve.schema.flags.field_error)."""
    return field_error(e, Scenario, flags, what)


def read_yaml(path: str | Path, field: str = "config") -> dict[str, Any]:
    """The mapping in the YAML file at `path`; errors are on `field` (the command line names it --config)."""
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{str(p)!r} is a folder, not a YAML file", field)
    if not p.is_file():
        raise UsageError(f"file {str(p)!r} does not exist", field)
    try:
        loaded = yaml.safe_load(p.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise UsageError(f"{p}: not UTF-8 text (byte {e.start}); expected a YAML file", field) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UsageError(f"{p}{where}: not valid YAML ({getattr(e, 'problem', e)})", field) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise UsageError(f"{p}: expected a mapping with keys {', '.join(Scenario.model_fields)} "
                         f"(got a {type(loaded).__name__})", field)
    return loaded


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`data` with each dotted path ("cluster.gpu") set to its value, creating sections as needed."""
    for dotted, value in overrides.items():
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = {}
                node[part] = nxt
            node = nxt
        node[parts[-1]] = value
    return data


def load_scenario(path: str | Path | None, overrides: dict[str, Any] | None = None,
                  flags: dict[str, str] | None = None) -> Scenario:
    """The scenario of the YAML at `path` with `overrides` (dotted path -> value) applied; `flags`
    (dotted path -> "--flag") names the flags that gave those overrides, for the error message.
    A relative file path (the workload's trace, a budget trace, a target) is resolved against the
    working folder (as it always was read), so that the config.yaml a run writes holds an absolute
    path and reruns from any folder. Budget shapes and numeric targets are not paths and stay."""
    data = read_yaml(path) if path is not None else {}
    given = dict(overrides or {})
    for dotted, keep in _PATHS.items():
        section, _, key = dotted.partition(".")
        node = data.get(section)
        if isinstance(node, dict) and isinstance(node.get(key), str) and not keep(node[key]):
            node[key] = _resolved(node[key])
        if isinstance(given.get(dotted), str) and not keep(given[dotted]):
            given[dotted] = _resolved(given[dotted])
    try:
        return Scenario.model_validate(apply_overrides(data, given))
    except ValidationError as e:
        flagged = {p: f for p, f in (flags or {}).items() if p in given}
        raise UsageError(format_error(e, f"config {path}" if path is not None else "", flagged)) from None


def _resolved(trace: str) -> str:
    return str(Path(trace).expanduser().resolve())


_PATHS: dict[str, Callable[[str], bool]] = {
    "workload.trace": lambda _: False,
    "control.budget_trace": lambda v: not v.strip() or shape_name(v) is not None,
    "control.target_trace": lambda v: not v.strip() or parse_number(v) is not None,
    "control.pals_models": lambda v: not v.strip(),
}
"""The fields that may hold a file path, and what of theirs is not a path (kept as given)."""


def scenario_yaml(s: Scenario) -> str:
    return yaml.safe_dump(s.model_dump(mode="json"), sort_keys=False)
