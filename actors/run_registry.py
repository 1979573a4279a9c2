"""Where a trial finds its run: the supervisor settings it needs, in Ray's cluster key-value store, by run id.

RLlib pickles an algorithm's whole config into every checkpoint (the algorithm's, the learner group's and
each learner's), so RLlib's config carries only the run id (``learner_config_dict["supervisor"] = {"run_id":
...}``, ``actors.callback.attach``); the rest (the run folder, the supervisor settings and profile, report
timeouts, checkpoint rotation, the trial's starting config) is published here by the driver when it opens
the run, read by every trial process (on any node, restarted trials included) when its algorithm starts,
and withdrawn when the run is closed. A checkpoint restored after that trains unsupervised.

The store is the GCS's internal key-value store (what Ray's own libraries keep their cluster-wide state in):
it outlives the supervisor actor's restarts, and it needs no shared disk.
"""

from __future__ import annotations

import json
import logging

from actors import compat

log = logging.getLogger(__name__)

NAMESPACE = "rl_supervisor"


def _key(run_id: str) -> bytes:
    return f"run/{run_id}".encode()


def publish(run_id: str, info: dict) -> None:
    """Make ``info`` (JSON) what the run's trials read; replaces an earlier one."""
    compat.kv_put(_key(run_id), json.dumps(info).encode(), namespace=NAMESPACE)


def lookup(run_id: str) -> dict | None:
    """The run's published info, or None (not published, withdrawn, or the cluster store unreachable)."""
    try:
        raw = compat.kv_get(_key(run_id), namespace=NAMESPACE)
    except Exception as e:  # the GCS is down or restarting: the trial trains on, unsupervised
        log.warning("cannot read run %s from the cluster store (%s: %s)", run_id, e.__class__.__name__, e)
        return None
    return json.loads(raw) if raw else None


def withdraw(run_id: str) -> None:
    try:
        compat.kv_del(_key(run_id), namespace=NAMESPACE)
    except Exception:  # best effort: a leftover entry is small and names a closed run
        pass
