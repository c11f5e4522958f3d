"""The role-change contract that every back end enforces, written once."""

from __future__ import annotations

from wattserve.errors import UsageError
from wattserve.seam.state import PHASES


def check_role_change(name: str, role_now: str, switching_to: str | None, target: str,
                      active_peers_in_role: int) -> bool:
    """The role-change contract every back end enforces. Returns False when there is nothing to do;
    raises UsageError when the change is not allowed: an unknown or colocated role, a switch already
    under way, or leaving the current phase with no active instance."""
    if target not in PHASES or role_now not in PHASES:
        raise UsageError(f"role: {name} is {role_now}; allowed target roles: {', '.join(PHASES)} "
                         "(on disaggregated instances)")
    if switching_to is not None:
        raise UsageError(f"role: {name} is already switching to {switching_to}")
    if role_now == target:
        return False
    if active_peers_in_role == 0:
        raise UsageError(f"role: {name} is the last {role_now} instance; each phase keeps one")
    return True
