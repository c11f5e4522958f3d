"""Predicted throughput and power of one instance over a grid of (power cap, batch limit).

PALS ("PALS: Power-Aware LLM Serving for Mixture-of-Experts Models", Hankendi, Shahout, Yu, Coskun;
arXiv 2605.21427) chooses a cap and a batch size from lightweight offline models fitted to a
profile. `wattserve fit` evaluates its regressor on a dense grid and writes the predictions
(format `wattserve-pals-models/1`), so a controller plans from a table and needs no scikit-learn at
run time. One table describes one deployment: GPU kind, model, TP and EP degree.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

FORMAT = "wattserve-pals-models/1"


@dataclass(frozen=True)
class OperatingPoint:
    cap_w: float
    """Per-GPU power cap, W."""
    batch: int
    """Batch limit (max sequences admitted at once) of the instance."""
    tok_s: float
    """Predicted output tokens per second of one instance (one TP group)."""
    power_w: float
    """Predicted mean draw per GPU, W (at most the cap)."""

    def tok_per_j(self, gpus_per_instance: int) -> float:
        return self.tok_s / (self.power_w * gpus_per_instance) if self.power_w > 0 else 0.0


@dataclass(frozen=True)
class OperatingTable:
    gpu: str
    model: str
    tp: int
    ep: int
    caps_w: tuple[float, ...]
    """Ascending."""
    batches: tuple[int, ...]
    """Ascending."""
    tok_s: tuple[tuple[float, ...], ...]
    """tok_s[i][j]: cap caps_w[i], batch batches[j]."""
    power_w: tuple[tuple[float, ...], ...]

    def points(self) -> Iterator[OperatingPoint]:
        for i, cap in enumerate(self.caps_w):
            for j, b in enumerate(self.batches):
                yield OperatingPoint(cap, b, self.tok_s[i][j], min(cap, self.power_w[i][j]))

    def at(self, cap_w: float, batch: int) -> OperatingPoint:
        """The prediction at a cap between grid caps (linear in the cap) and a grid batch."""
        j = self.batches.index(batch)
        caps = self.caps_w
        c = min(max(cap_w, caps[0]), caps[-1])
        i = min(max(bisect.bisect_right(caps, c) - 1, 0), len(caps) - 2) if len(caps) > 1 else 0
        if len(caps) == 1:
            return OperatingPoint(c, batch, self.tok_s[0][j], min(c, self.power_w[0][j]))
        f = (c - caps[i]) / (caps[i + 1] - caps[i])
        tok = self.tok_s[i][j] + f * (self.tok_s[i + 1][j] - self.tok_s[i][j])
        pw = self.power_w[i][j] + f * (self.power_w[i + 1][j] - self.power_w[i][j])
        return OperatingPoint(c, batch, tok, min(c, pw))

    @staticmethod
    def from_models(doc: Mapping[str, Any], gpu: str, model: str, tp: int, ep: int = 1) -> OperatingTable:
        """The group of a `wattserve fit` document for one deployment; KeyError naming the groups the
        document has when it has no such group."""
        if doc.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} document (format {doc.get('format')!r})")
        for g in doc["groups"]:
            if (g["gpu"], g["model"], int(g["tp"]), int(g.get("ep", 1))) == (gpu, model, tp, ep):
                return OperatingTable(
                    gpu, model, tp, ep, tuple(float(c) for c in g["caps_w"]), tuple(int(b) for b in g["batches"]),
                    tuple(tuple(float(v) for v in row) for row in g["tok_s"]),
                    tuple(tuple(float(v) for v in row) for row in g["power_w"]))
        have = ", ".join(f"{g['gpu']}/{g['model']}/tp{g['tp']}/ep{g.get('ep', 1)}" for g in doc["groups"])
        raise KeyError(f"no fitted models for {gpu}/{model}/tp{tp}/ep{ep}; the file has: {have}")
