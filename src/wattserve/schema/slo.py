"""Service-level objectives: a request meets its SLO when its TTFT and its TPOT are within them."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from wattserve.schema.base import Strict, flag


class SloConfig(Strict):
    ttft_ms: float | None = Field(1000.0, ge=0, description="TTFT SLO, ms (0 drops it)",
                                  json_schema_extra=flag("slo-ttft-ms"))
    tpot_ms: float | None = Field(50.0, ge=0, description="TPOT SLO, ms (0 drops it)",
                                  json_schema_extra=flag("slo-tpot-ms"))

    @field_validator("ttft_ms", "tpot_ms", mode="before")
    @classmethod
    def _zero_drops(cls, v: Any) -> Any:
        """0 means "no such SLO", so that a flag can drop one that a config file sets; the message for
        a negative value says so, since "greater than 0" would hide that 0 is allowed."""
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0:
            raise ValueError(f"{v:g} must be >= 0 (0 drops the SLO)")
        return None if v == 0 and not isinstance(v, bool) else v
