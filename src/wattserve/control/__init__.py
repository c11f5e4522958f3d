"""The power-aware control plane: controllers, the BudgetGuard, and the loop that runs them.

Nothing here imports a back end: controllers talk only to `wattserve.seam`.
"""

from wattserve.control.guard import BudgetGuard
from wattserve.control.loop import ControlLoop
from wattserve.control.registry import CONTROLLERS, make_controller

__all__ = ["CONTROLLERS", "BudgetGuard", "ControlLoop", "make_controller"]
