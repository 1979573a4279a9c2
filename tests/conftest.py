"""The repo root on sys.path, so that tests can import ``benchmarks.synthetic`` (the synthetic
PPO streams the tests and the detection benchmark share) however pytest is started."""

import sys
from pathlib import Path

REPO = str(Path(__file__).resolve().parents[1])
if REPO not in sys.path:
    sys.path.insert(0, REPO)
