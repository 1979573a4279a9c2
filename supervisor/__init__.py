"""The core of the RL training supervisor: reports, detectors, policy, store, CLI.

Nothing in this package imports Ray; the Ray side lives in ``actors/``.
``from supervisor import Supervisor, Verdict`` is the Python API (``supervisor/api.py``), loaded on first use.
"""

__version__ = "0.1.0"

_LAZY = {"Supervisor": "supervisor.api", "Verdict": "supervisor.api", "normalize_metrics": "supervisor.api"}


def __getattr__(name):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'supervisor' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(mod), name)


def __dir__():
    return sorted([*globals(), *_LAZY])
