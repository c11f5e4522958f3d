"""Command-line flags generated from the schema models.

A field becomes a flag when its `json_schema_extra` has `flag` (see `wattserve.schema.base.flag`);
its help is the field's description, default and allowed values. Building the models' flags needs
pydantic and the registries (a few tenths of a second), while `wattserve --help` must start in under
0.1 s, so the flags are generated once into `wattserve.schema.flag_table` (plain data) by
`python -m wattserve.schema.flags`, and a test fails when that table and the models disagree.
This module imports nothing heavy until it generates.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

GROUP_TITLES = {"cluster": "cluster", "control": "power control", "workload": "workload", "slo": "SLO and output",
                "": "SLO and output"}
TABLES = {"SIMULATE": ("wattserve.schema.scenario:Scenario", ("cluster", "control", "workload", "slo", "")),
          "SERVE": ("wattserve.schema.serve:ServeConfig", ("", "control", "slo")),
          "BENCH": ("wattserve.schema.bench:BenchConfig", ("",)),
          "PROFILE": ("wattserve.schema.profile:ProfileConfig", ("",)),
          "FIT": ("wattserve.schema.profile:FitConfig", ("",)),
          "VALIDATE": ("wattserve.schema.validate:ValidateConfig", ("",)),
          "AGENT": ("wattserve.schema.agent:AgentConfig", ("",)),
          "MANAGE": ("wattserve.schema.agent:ManageConfig", ("", "control", "slo"))}
"""Each generated table: its model and the order of its sections."""
_TYPES: dict[str, type] = {"int": int, "float": float, "str": str}


class Flag(NamedTuple):
    name: str
    """The flag without its dashes ("power-cap"); argparse's dest is the same with underscores."""
    path: str
    """The field it sets, dotted from the top model ("cluster.power_cap_w")."""
    type: str
    """"int", "float" or "str"."""
    help: str
    group: str
    """The section of the top model it belongs to ("" for a top-level field)."""


def add_flags(parser: argparse.ArgumentParser, flags: tuple[Flag, ...],
              titles: dict[str, str | None] | None = None,
              metavars: dict[str, str] | None = None) -> dict[str, Any]:
    """Add `flags` in argument groups titled by section (a section titled None goes in the parser's
    own options); returns the groups by title. Defaults are None so that only the flags given
    override a config file or the model's defaults; the schema validates the values (names through
    the registries, so aliases work and errors name the field). A bool field is a switch (given:
    True), a list field takes one or more values; `metavars` overrides a flag's placeholder."""
    titles = dict(GROUP_TITLES) if titles is None else titles
    groups: dict[str, Any] = {}
    for f in flags:
        title = titles.get(f.group, f.group)
        if title is None:
            target: Any = parser
        else:
            if title not in groups:
                groups[title] = parser.add_argument_group(title)
            target = groups[title]
        metavar = (metavars or {}).get(f.name) or _metavar(f)
        if f.type == "bool":
            target.add_argument(f"--{f.name}", action="store_true", default=None, help=f.help)
        elif f.type == "list":
            target.add_argument(f"--{f.name}", nargs="+", help=f.help, metavar=metavar)
        else:
            target.add_argument(f"--{f.name}", type=_TYPES[f.type], help=f.help, metavar=metavar)
    return groups


def _metavar(f: Flag) -> str:
    """The unit where the field's name carries one (power_cap_w -> W), else what kind of value."""
    for suffix, unit in (("_w", "W"), ("_ms", "MS"), ("_s", "S"), ("_mhz", "MHZ")):
        if f.path.endswith(suffix):
            return unit
    return {"int": "N", "float": "X"}.get(f.type, "NAME")


def overrides(args: argparse.Namespace, flags: tuple[Flag, ...]) -> dict[str, Any]:
    """The dotted field paths of the flags given, with their values."""
    out = {}
    for f in flags:
        value = getattr(args, f.name.replace("-", "_"), None)
        if value is not None:
            out[f.path] = value
    return out


_RANGE_ERRORS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number")


def field_error(e: Any, model: Any, flags: Mapping[str, str] | None = None, where: str = "") -> str:
    """One line for the first error of a pydantic ValidationError `e` raised by `model`.

    The field is named as the flag the user typed (`--max-num-seqs`) where `flags` (dotted path ->
    "--flag") says the value came from one, else as its dotted path under `where` ("config:
    cluster.tp"). Numbers out of range state the range from the field's own bounds; NaN and inf
    count as out of range; a section given as a list or scalar asks for a mapping (no class names). A
    validator of a whole section may name the field it refuses as its message's head
    ("workload.num_requests: ..."); that field is then the one named."""
    flags = flags or {}
    err = e.errors()[0]
    path = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
    kind, value = err.get("type"), err.get("input")
    more = f" [+{len(e.errors()) - 1} more]" if len(e.errors()) > 1 else ""
    if kind == "literal_error":
        msg = f"{value!r} is not allowed; allowed: {err['ctx']['expected']}"
    elif kind in _RANGE_ERRORS:
        shown = f"{value:g}" if isinstance(value, float) else repr(value)
        msg = f"{shown} is not allowed; allowed: {_allowed(model, path)}"
    elif kind in ("model_type", "dict_type", "model_attributes_type"):
        msg = f"should be a mapping of fields (got {type(value).__name__} {value!r})"[:200]
    else:
        msg = str(err["msg"]).removeprefix("Value error, ")
        if kind != "value_error" and value is not None and not isinstance(value, dict):
            msg += f" (got {value!r})"
    head = msg.partition(": ")[0]
    if path and not (head == path or head.startswith(f"{path}.")):
        msg = f"{path}: {msg}"
    head, sep, rest = msg.partition(": ")
    if sep and head in flags:
        return f"{flags[head]}: {rest}{more}"
    return f"{where}: {msg}{more}" if where else f"{msg}{more}"


def _allowed(model: Any, path: str) -> str:
    """The range of a numeric field, from its bounds: "an integer from 0 to 65535", "a finite number > 0"."""
    field = None
    for part in path.split("."):
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields:
            return "a number in the field's range"
        field = fields[part]
        model = field.annotation
    if field is None:
        return "a number in the field's range"
    kind, _ = _unwrap(field.annotation)
    bounds = {k: getattr(m, k) for m in field.metadata for k in ("gt", "ge", "lt", "le") if hasattr(m, k)}
    finite = not any(getattr(m, "allow_inf_nan", False) for m in field.metadata)
    noun = "an integer" if kind == "int" else "a finite number" if finite else "a number"
    if "ge" in bounds and "le" in bounds:
        return f"{noun} from {_number(bounds['ge'])} to {_number(bounds['le'])}"
    ops = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    limits = " and ".join(f"{ops[k]} {_number(v)}" for k, v in bounds.items())
    return f"{noun} {limits}" if limits else noun


def _number(v: float) -> str:
    """A bound as typed: 1000000 rather than 1e+06, 0.5 as is."""
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def _unwrap(ann: Any) -> tuple[str, tuple[str, ...]]:
    """The flag type and Literal choices of an annotation like `Literal[1, 2] | None`."""
    args = [a for a in typing.get_args(ann) if a is not type(None)] \
        if typing.get_origin(ann) in (typing.Union, types.UnionType) else [ann]
    (inner,) = args
    if typing.get_origin(inner) is typing.Annotated:
        inner = typing.get_args(inner)[0]
    if typing.get_origin(inner) is typing.Literal:
        values = typing.get_args(inner)
        return type(values[0]).__name__, tuple(str(v) for v in values)
    return inner.__name__, ()


def _help(description: str, default: Any, choices: tuple[str, ...]) -> str:
    notes = []
    if default is not None:
        notes.append(f"default {default:g}" if isinstance(default, float) else f"default {default}")
    if choices:
        notes.append(f"allowed: {', '.join(choices)}")
    text = f"{description} [{'; '.join(notes)}]" if notes else description
    return text.replace("%", "%%")


def generate(model: Any, prefix: str = "") -> list[Flag]:
    """The flags of `model` (a pydantic model class) and of its nested models, in field order."""
    from pydantic import BaseModel
    from pydantic_core import PydanticUndefined

    out: list[Flag] = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += generate(ann, f"{prefix}{name}.")
            continue
        extra = field.json_schema_extra
        if not isinstance(extra, dict) or "flag" not in extra:
            continue
        kind, choices = _unwrap(ann)
        choices = tuple(str(c) for c in extra.get("choices", ())) or choices  # type: ignore[union-attr]
        default = None if field.default is PydanticUndefined else field.default
        out.append(Flag(str(extra["flag"]), prefix + name, kind, _help(field.description or "", default, choices),
                        prefix.split(".", 1)[0]))
    return out


def _ordered(flags: list[Flag], order: tuple[str, ...]) -> list[Flag]:
    return sorted(flags, key=lambda f: order.index(f.group) if f.group in order else len(order))


def render() -> str:
    """The source of wattserve.schema.flag_table, from the models as they are now."""
    import importlib

    lines = ['"""Generated from the schema models by `python -m wattserve.schema.flags`: do not edit by hand',
             '(tests/test_schema_flags.py fails when this table and the models disagree)."""', "# ruff: noqa: E501", "",
             "from wattserve.schema.flags import Flag", ""]
    for table, (target, order) in TABLES.items():
        module, _, attr = target.partition(":")
        model = getattr(importlib.import_module(module), attr)
        lines.append(f"{table} = (")
        lines += [f"    {f!r}," for f in _ordered(generate(model), order)]
        lines.append(")")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    Path(__file__).with_name("flag_table.py").write_text(render())
