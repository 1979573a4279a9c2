"""One run identity everywhere: the id a run has in the supervisor actor and in its store.

``supervise run``/``sweep``, the Python API (``Supervisor(run_dir)``) and ``actors.rllib.supervise``
all derive it here, from the run's location: its folder's name plus a hash of the folder's full path
(or of the URI, for a run kept in storage such as ``s3://bucket/runs/ppo``). Two folders named alike
(``a/ppo`` and ``b/ppo``) never share an engine or a store; one folder always gets the same id.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from urllib.parse import urlsplit


def run_id_for(location: str | os.PathLike) -> str:
    """``<name>-<8 hex digits>``: the last component of the path or URI, and a hash of all of it (a
    local path resolved first, so ``x/../a/ppo`` and ``a/ppo`` are one run)."""
    text = os.fspath(location)
    if "://" in str(text):
        full = str(text).rstrip("/")
        name = urlsplit(full).path.rstrip("/").rsplit("/", 1)[-1] or urlsplit(full).netloc
    else:
        full = str(Path(text).resolve())
        name = Path(full).name
    return f"{name}-{hashlib.sha1(full.encode()).hexdigest()[:8]}"
