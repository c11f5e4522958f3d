"""The base of every schema model: unknown keys are refused, assignments are validated, and no float
field accepts nan or inf (a rate or duration of inf would otherwise overflow deep inside a run)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def flag(name: str, choices: Iterable[str] = ()) -> dict[str, Any]:
    """Mark a field as a command-line flag (`--name`), with the allowed names of the registry that
    validates it (shown in --help and in the JSON schema); see wattserve.schema.flags."""
    allowed = list(choices)
    return {"flag": name, "choices": allowed} if allowed else {"flag": name}
