"""`tpot-slack`: the first decode-slack governor's name, kept for the configs and reruns that use it.

It is `DecodeSlackGovernor` (BiScale's decode tier, "BiScale: Energy-Efficient Disaggregated LLM
Serving via Phase-Aware Placement and DVFS", arXiv 2602.18755) at a margin of 0.8 of the TPOT SLO,
the margin `tpot-slack` always had (our choice; BiScale's constants are not public). It once had its
own search and asked again every iteration; it now shares decode-slack's closed-form hold and guards.
"""

from __future__ import annotations

from dataclasses import dataclass

from wattserve.governors.decode_slack import DecodeSlackGovernor


@dataclass
class TpotSlackGovernor(DecodeSlackGovernor):
    name: str = "tpot-slack"
    margin: float = 0.8
