"""The core of the RL training supervisor: reports, detectors, policy, store, CLI.

Nothing in this package imports Ray; the Ray side lives in ``actors/``.
"""

__version__ = "0.1.0"
