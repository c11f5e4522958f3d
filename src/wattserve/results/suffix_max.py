"""Running maximum over the most recent entries, for per-request worst inter-token gaps.

Entries are appended with increasing keys (an instance's iteration counter). A query asks for the
largest value among entries with key > k. A decreasing monotonic stack answers it by bisection, so
each request pays O(log n) once, instead of the simulator touching every request every iteration.
"""

from __future__ import annotations

from bisect import bisect_right


class SuffixMax:
    __slots__ = ("keys", "values")

    def __init__(self) -> None:
        self.keys: list[int] = []
        self.values: list[float] = []

    def append(self, key: int, value: float) -> None:
        keys, values = self.keys, self.values
        while values and values[-1] <= value:
            values.pop()
            keys.pop()
        keys.append(key)
        values.append(value)

    def query(self, after_key: int) -> float:
        i = bisect_right(self.keys, after_key)
        return self.values[i] if i < len(self.values) else 0.0
