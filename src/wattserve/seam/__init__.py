"""The seam between controllers and cluster back ends (the simulator and the runtime).

Controllers see a `ClusterState` and emit `Action`s; a `Backend` turns actions into actuation and
state into observations; a `StepGovernor` answers each engine iteration. Both sides import this
package and nothing of each other, so a controller or governor written against the simulator runs
unchanged against real GPUs.
"""

from wattserve.seam.actions import (
    Action,
    SetBatchLimit,
    SetClock,
    SetComputeShare,
    SetPowerCap,
    SetRole,
    SetStepTarget,
)
from wattserve.seam.actuation_log import Actuation, ActuationLog
from wattserve.seam.backend import ActuationRefused, Backend, Offloads
from wattserve.seam.budget import BudgetSignal
from wattserve.seam.governor import (
    HOLD_UNTIL_CHANGE,
    STEP_PHASES,
    UNGOVERNED,
    StepDecision,
    StepGovernor,
    StepView,
    Targeted,
)
from wattserve.seam.info import ClusterInfo
from wattserve.seam.plan import CAP_LEVELS, Layout, LoadEstimate, PlanModel, cap_grid, want_of
from wattserve.seam.roles import check_role_change
from wattserve.seam.signal import StepSignal
from wattserve.seam.state import PHASES, ClusterState, GpuState, InstanceState

__all__ = [
    "Action", "Actuation", "ActuationLog", "ActuationRefused", "Backend", "BudgetSignal", "ClusterInfo",
    "ClusterState",
    "GpuState", "HOLD_UNTIL_CHANGE", "InstanceState", "Layout", "Offloads", "LoadEstimate", "PlanModel", "PHASES", "want_of", "cap_grid", "CAP_LEVELS", "STEP_PHASES", "SetBatchLimit", "SetClock",
    "SetComputeShare", "SetPowerCap", "SetRole", "SetStepTarget", "StepDecision", "StepGovernor", "StepSignal", "StepView",
    "Targeted", "UNGOVERNED",
    "check_role_change",
]
