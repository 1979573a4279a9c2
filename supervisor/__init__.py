"""The core of the RL training supervisor: reports, detectors, policy, store, CLI.

The Ray boundary. No module of this package imports Ray or ``actors/`` when
it is imported; the Ray side (actors, the RLlib callback, Tune, attaching to
a cluster: ``actors/``) builds on the core, never the other way round, so
``supervise report``, ``scan`` and ``calibrate`` and every detector work
without Ray installed. The exceptions are the application layer: a CLI
command (``supervisor/commands/``) may import ``actors`` lazily, inside the
``run`` function of a command that needs a cluster, and only once its input
has been checked; and ``Supervisor(..., address=...)`` reaches the cluster's
supervisor actor through ``actors/`` only when an address is given. ``tests/test_core_no_ray.py`` holds the package to this.

``from supervisor import Supervisor, Verdict`` is the Python API (``supervisor/api.py``), loaded on first use.
"""

__version__ = "0.1.0"

_LAZY = {"Supervisor": "supervisor.api", "Verdict": "supervisor.verdict", "normalize_metrics": "supervisor.api"}


def __getattr__(name):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'supervisor' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(mod), name)


def __dir__():
    return sorted([*globals(), *_LAZY])
