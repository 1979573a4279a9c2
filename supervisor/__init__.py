"""The core of the RL training supervisor: reports, detectors, policy, store, CLI.

The Ray boundary. No module of this package imports Ray or ``actors/`` when
it is imported; the Ray side (actors, the RLlib callback, Tune, attaching to
a cluster: ``actors/``) builds on the core, never the other way round, so
``supervise report``, ``scan`` and ``calibrate`` and every detector work
without Ray installed. The one exception is the application layer: a CLI
command (``supervisor/commands/``) may import ``actors`` lazily, inside the
``run`` function of a command that needs a cluster, and only once its input
has been checked. ``tests/test_core_no_ray.py`` holds the package to this.
"""

__version__ = "0.1.0"
