"""What each policy reads from a ClusterState and which actions it issues, so a back end that
cannot fill a field or take an action (an external vLLM or SGLang fleet) refuses the policy before
it runs, naming the field, rather than running it blind.

`reads` are the InstanceState fields without which the policy's decisions mean nothing; GPU fields
(caps, range, clock, energy, throttle reasons) come from the power agents on every back end and are
not listed. Fields a policy only sharpens its view with, or needs only for an optional part, are
`uses`: RAPID's prefill pressure takes
the larger of the p90 TTFT and the oldest queued prompt's age, and without the age it works from
the TTFT alone (arXiv 2601.12241's signal is the TTFT; the age is our addition to see a queue build
before its requests finish)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Needs:
    reads: frozenset[str]
    acts: frozenset[str]
    uses: frozenset[str] = frozenset()


_CAPS = frozenset({"SetPowerCap"})
_RAPID_READS = frozenset({"role", "ttft_p90_s", "tpot_p90_s", "waiting", "kv_usage"})
_PALS_READS = frozenset({"role", "output_tokens", "max_seqs", "running", "waiting"})
_PLANNER_READS = frozenset({"role", "waiting", "waiting_tokens", "prefilling", "running", "prompt_tokens",
                            "output_tokens", "completed"})
_PLANNER_USES = frozenset({"ttft_p90_s", "tpot_p90_s", "max_seqs", "step_target"})
"""The planner spends slack (clock locks, step targets) only where the observed p90 TTFT and TPOT
show it, judges a smaller batch only where the TPOT is over its SLO, and sets a step target only
where the governors take one: without these it plans roles and caps alone."""

POLICY_NEEDS: dict[str, Needs] = {
    "static": Needs(frozenset({"role"}), _CAPS),
    "static-split": Needs(frozenset({"role"}), _CAPS),
    "tdp": Needs(frozenset(), _CAPS),
    "static-cap": Needs(frozenset(), _CAPS),
    "rapid-power": Needs(_RAPID_READS, _CAPS, frozenset({"oldest_wait_s"})),
    "rapid-roles": Needs(_RAPID_READS | {"running"}, frozenset({"SetRole"}), frozenset({"oldest_wait_s"})),
    "rapid": Needs(_RAPID_READS | {"running"}, _CAPS | {"SetRole"}, frozenset({"oldest_wait_s"})),
    "batch-only": Needs(_PALS_READS, frozenset({"SetBatchLimit"})),
    "pals": Needs(_PALS_READS, _CAPS | {"SetBatchLimit"}),
    "planner": Needs(_PLANNER_READS, _CAPS | {"SetRole", "SetClock"}, _PLANNER_USES),
    "planner-concurrent": Needs(_PLANNER_READS, _CAPS | {"SetRole", "SetClock"}, _PLANNER_USES),
}
"""Every registered policy (tests/test_fleet_backend.py checks the keys against CONTROLLERS)."""


def missing(policy: str, fills: frozenset[str], actions: frozenset[str]) -> tuple[list[str], list[str]]:
    """The fields and actions `policy` needs that a back end filling `fills` and taking `actions`
    lacks (both empty: it can run)."""
    n = POLICY_NEEDS[policy]
    return sorted(n.reads - fills), sorted(n.acts - actions)
