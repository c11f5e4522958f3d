"""A config.json `rope_scaling` entry, apart from the rotary layer that applies it: model configs
are read (by the router, to size prompts) where torch is not imported."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wattserve.errors import UsageError


@dataclass(frozen=True)
class RopeScaling:
    """A config.json `rope_scaling` entry. "llama3" uses every field; "linear" only `factor`."""

    rope_type: str
    factor: float
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192

    @staticmethod
    def from_hf(entry: dict[str, Any] | None) -> RopeScaling | None:
        if not entry:
            return None
        kind = entry.get("rope_type", entry.get("type", "default"))
        if kind == "default":
            return None
        if kind not in ("linear", "llama3"):
            raise UsageError(f"weights: rope_scaling type {kind!r} is not supported; supported: linear, llama3")
        if kind == "linear":
            return RopeScaling("linear", float(entry["factor"]))
        return RopeScaling("llama3", float(entry["factor"]), float(entry["low_freq_factor"]),
                           float(entry["high_freq_factor"]), int(entry["original_max_position_embeddings"]))
