"""How the supervisor's actions (``supervisor/actions/``) reach each framework on the Ray side."""

from actors.appliers.rllib import RLlibApplier

__all__ = ["RLlibApplier"]
