"""User-facing errors.

Every error a user can cause (bad flag, bad config, malformed trace, unknown model) is a
`UsageError`; the CLI prints its one-line message and exits with status 2, never a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class UsageError(Exception):
    """Bad input from the user. The message names the field and the allowed values.

    `field` is the field as the layer that raised it knows it (a scenario's dotted path such as
    `workload.trace`, or a subcommand's own name such as `out`); the command line renames it to the
    flag the user typed (`named`), so that one check serves a YAML file, a flag and the Python API."""

    def __init__(self, message: str, field: str | None = None) -> None:
        self.field = field
        self.detail = message
        super().__init__(f"{field}: {message}" if field else message)

    def named(self, names: Mapping[str, str]) -> UsageError:
        """This error with its field named as in `names` (field -> "--flag"); itself if not there."""
        if self.field is None or self.field not in names:
            return self
        return UsageError(self.detail, names[self.field])


def unknown(field: str, value: object, allowed: Iterable[str]) -> UsageError:
    return UsageError(f"unknown value {value!r}; allowed: {', '.join(sorted(allowed))}", field)

