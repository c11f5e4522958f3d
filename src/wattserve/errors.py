"""User-facing errors.

Every error a user can cause (bad flag, bad config, malformed trace, unknown model) is a
`UsageError`; the CLI prints its one-line message and exits with status 2, never a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


class UsageError(Exception):
    """Bad input from the user. The message names the field and the allowed values."""


def unknown(field: str, value: object, allowed: Iterable[str]) -> UsageError:
    return UsageError(f"{field}: unknown value {value!r}; allowed: {', '.join(sorted(allowed))}")


def out_of_range(field: str, value: float, lo: float, hi: float, unit: str = "") -> UsageError:
    return UsageError(f"{field}: {value:g}{unit} is outside the allowed range [{lo:g}, {hi:g}]{unit}")
