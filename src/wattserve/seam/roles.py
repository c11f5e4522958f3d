"""The role-change contract that every back end enforces, written once."""

from __future__ import annotations

from collections.abc import Sequence

from wattserve.errors import UsageError

SWITCHABLE = ("prefill", "decode", "colocated")
"""Roles an instance may switch between (the simulator and the runtime; a fleet of external engines
refuses role changes)."""
WITH_CONCURRENT = (*SWITCHABLE, "concurrent")
"""The roles of a simulated cluster built to switch into and out of concurrent as well (RAPID-Serve,
arXiv 2601.11822; `Cluster(concurrent_switch=True)`, for the planner). The runtime's concurrent
workers run a second prefill process and do not switch."""
WHOLE = ("colocated", "concurrent")
"""Roles that serve requests whole, prompt and decode on the same GPUs."""
PROMPT_SIDE = ("prefill", *WHOLE)
DECODE_SIDE = ("decode", *WHOLE)


def instant_switch(role_now: str, target: str) -> bool:
    """A switch into or out of colocated (or concurrent) takes effect at once: such an instance
    serves whatever a prefill or a decode instance holds, and one leaving finishes what it holds
    (queued prompts, running sequences) where it is; only the work routed to it afterwards follows
    the new role. A switch between prefill and decode drains and reconfigures (RAPID's 2-5 s)."""
    return role_now in WHOLE or target in WHOLE


def check_role_change(name: str, role_now: str, switching_to: str | None, target: str,
                      active_others: Sequence[str], targets: Sequence[str] = SWITCHABLE) -> bool:
    """The role-change contract every back end enforces. Returns False when there is nothing to do;
    raises UsageError when the change is not allowed: a role outside `targets` (the back end's),
    a switch already under way, or a change that would leave no active instance taking prompts
    (prefill or colocated) or none decoding (decode or colocated). `active_others` are the roles of
    the other live instances that are not switching; an instant switch (`instant_switch`) keeps this
    instance active in its new role, a draining one takes it out until it is done."""
    if target not in targets or role_now not in targets:
        raise UsageError(f"role: {name} is {role_now}; allowed target roles: {', '.join(targets)}")
    if switching_to is not None:
        raise UsageError(f"role: {name} is already switching to {switching_to}")
    if role_now == target:
        return False
    serving = [*active_others, target] if instant_switch(role_now, target) else list(active_others)
    for side, roles in (("taking prompts", PROMPT_SIDE), ("decoding", DECODE_SIDE)):
        if not any(r in roles for r in serving):
            raise UsageError(f"role: {name} is the last {role_now} instance; each phase keeps one "
                             f"(no other instance would be {side})")
    return True


def role_moves(instances: Sequence[tuple[int, str]], want: dict[str, int]) -> list[tuple[int, str]]:
    """The (instance, new role) switches that give `want` instances each role. `instances` are
    (id, role) from the most worth keeping in its role to the least (a caller lists its busiest
    first): the first listed in a role keep it up to its count; of the rest, those whose switch is
    instant move first, then the last listed."""
    left = dict(want)
    spare = []
    for iid, role in instances:
        if left.get(role, 0) > 0:
            left[role] -= 1
        else:
            spare.append((iid, role))
    moves = []
    for target, n in left.items():
        pick = sorted(reversed(spare), key=lambda x: not instant_switch(x[1], target))[:n]
        moves += [(iid, target) for iid, _ in pick]
        spare = [x for x in spare if x not in pick]
    return moves
