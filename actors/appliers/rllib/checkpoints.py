"""Health-gated checkpoints of a live RLlib algorithm: ``algo.save_to_path`` plus the hyperparameters in effect."""

from __future__ import annotations

import json
import os
import time
from typing import Dict, Optional

from actors.appliers.rllib.hparams import current_hparams

HPARAMS_SIDECAR = "supervisor_hparams.json"


def save_checkpoint(algo, path: str) -> str:
    """``algo.save_to_path(path)`` (full algorithm state, usable by
    ``Algorithm.from_checkpoint`` and Tune too), plus a small sidecar file with
    the hparams in effect. Returns the checkpoint directory."""
    path = os.path.abspath(os.fspath(path))
    os.makedirs(path, exist_ok=True)
    out = algo.save_to_path(path)
    out = os.fspath(out) if out is not None else path
    try:
        hp = current_hparams(algo)
        with open(os.path.join(out, HPARAMS_SIDECAR), "w") as f:
            json.dump({"hparams": hp, "iteration": getattr(algo, "iteration", None), "time": time.time()}, f)
    except Exception:  # the checkpoint itself is what matters
        pass
    return out


def checkpoint_hparams(path: str) -> Optional[Dict[str, Optional[float]]]:
    """The hparams that were in effect when ``save_checkpoint`` wrote ``path``."""
    try:
        with open(os.path.join(os.fspath(path), HPARAMS_SIDECAR)) as f:
            return json.load(f)["hparams"]
    except (OSError, ValueError, KeyError):
        return None
