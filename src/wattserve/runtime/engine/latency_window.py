"""TTFT and TPOT samples an engine observed in the last few seconds, for its step governor.

The window is the runtime back end's (`runtime.backend.WINDOW_S`, 5 s), so a governor and a
controller looking at the same engine see the same recent requests.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

WINDOW_S = 5.0


@dataclass
class LatencyWindow:
    window_s: float = WINDOW_S
    _ttft: deque[tuple[float, float]] = field(default_factory=deque, repr=False)
    _tpot: deque[tuple[float, float]] = field(default_factory=deque, repr=False)

    def add_ttft(self, now_s: float, ttft_s: float) -> None:
        self._ttft.append((now_s, ttft_s))

    def add_tpot(self, now_s: float, tpot_s: float) -> None:
        self._tpot.append((now_s, tpot_s))

    def _recent(self, q: deque[tuple[float, float]], now_s: float) -> list[float]:
        """Drop samples older than the window (they arrive in time order) and return the rest."""
        while q and q[0][0] < now_s - self.window_s:
            q.popleft()
        return [v for _, v in q]

    def ttft(self, now_s: float) -> list[float]:
        return self._recent(self._ttft, now_s)

    def tpot(self, now_s: float) -> list[float]:
        return self._recent(self._tpot, now_s)
