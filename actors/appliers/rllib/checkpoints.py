"""Health-gated checkpoints of a live RLlib algorithm: ``algo.save_to_path`` plus the hyperparameters in effect.

A checkpoint is named by a local path or a run-storage URI (``s3://bucket/prefix/...``,
``supervisor.storage``): RLlib writes and reads it through that storage's pyarrow filesystem, so a
checkpoint one node wrote is restored on another.
"""

from __future__ import annotations

import json
import os
import time
from typing import Dict, Optional

from supervisor.storage import is_uri, open_fs

from actors.appliers.rllib.hparams import current_hparams

HPARAMS_SIDECAR = "supervisor_hparams.json"


def save_checkpoint(algo, where: str) -> str:
    """``algo.save_to_path`` into ``where`` (a folder or a URI: full algorithm state, usable by
    ``Algorithm.from_checkpoint`` and Tune too), plus a small sidecar file with the hparams in effect.
    Returns ``where``."""
    where = os.fspath(where)
    fs, path = open_fs(where)
    fs.create_dir(path, recursive=True)
    algo.save_to_path(path, filesystem=fs)
    try:
        write_hparams(algo, fs, path)
    except Exception:  # the checkpoint itself is what matters
        pass
    return where if is_uri(where) else os.path.abspath(where)


def write_hparams(algo, fs, path: str) -> None:
    """The sidecar: the hparams in effect, which a rollback to this checkpoint re-applies (SAC's alpha)."""
    data = {"hparams": current_hparams(algo), "iteration": getattr(algo, "iteration", None), "time": time.time()}
    with fs.open_output_stream(f"{path.rstrip('/')}/{HPARAMS_SIDECAR}") as f:
        f.write(json.dumps(data).encode())


def is_checkpoint(where: str) -> bool:
    """An RLlib algorithm checkpoint is there (its ``learner_group/``)."""
    import pyarrow.fs as pafs
    from ray.rllib.core import COMPONENT_LEARNER_GROUP

    try:
        fs, path = open_fs(os.fspath(where))
        return fs.get_file_info(f"{path.rstrip('/')}/{COMPONENT_LEARNER_GROUP}").type == pafs.FileType.Directory
    except Exception:
        return False


def checkpoint_hparams(where: str) -> Optional[Dict[str, Optional[float]]]:
    """The hparams that were in effect when ``save_checkpoint`` wrote ``where``."""
    try:
        fs, path = open_fs(os.fspath(where))
        with fs.open_input_stream(f"{path.rstrip('/')}/{HPARAMS_SIDECAR}") as f:
            return json.loads(f.read())["hparams"]
    except (OSError, ValueError, KeyError, RuntimeError):
        return None
