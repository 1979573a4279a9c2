"""What ``supervise status`` shows, gathered from a live cluster: Ray's node table and the supervisor actor's view.

The command (``supervisor/commands/status.py``) checks the address and
renders; this module attaches to Ray and asks the supervisor actor.
"""

from __future__ import annotations

import logging
import os

import ray

from supervisor.cluster import build_status

from actors.supervisor_actor import NAMESPACE, find_supervisor


class NoCluster(Exception):
    """No Ray cluster could be attached to at the address (the message is one line for stderr)."""


class NoSupervisor(Exception):
    """The cluster runs no supervisor, or it did not answer (the message is one line for stderr)."""


def attach(address: str) -> None:
    """Attach this process to the cluster at ``address`` (GCS host:port, "auto", "local" or ray://)."""
    if ray.is_initialized():
        return
    try:
        ray.init(address=address, namespace=NAMESPACE, log_to_driver=False,
                 logging_level=logging.ERROR, configure_logging=False)
    except Exception as e:
        hint = ""
        if os.environ.get("RAY_AUTH_MODE") != "token" and os.path.exists(os.path.expanduser("~/.ray/auth_token")):
            hint = " (if the cluster uses token auth, export RAY_AUTH_MODE=token)"
        first = (str(e).strip().splitlines() or [e.__class__.__name__])[0]
        raise NoCluster(f"cannot attach to a Ray cluster at {address}: {first}{hint}") from None


def gather(address: str, timeout: float) -> dict:
    """The cluster's status (``supervisor.cluster.build_status``) plus the supervisor's findings."""
    attach(address)
    ray_nodes = ray.nodes()
    sup = find_supervisor()
    if sup is None:
        # A cluster with no supervised run yet: its nodes as Ray knows them (alive, CPU, memory), no trials.
        st = build_status(ray_nodes, None, [])
        st.update(findings=[], supervisor_node_id=None, supervisor=None)
        return st
    view: dict = {}
    try:
        view = ray.get(sup.cluster_status.remote(), timeout=timeout)
    except AttributeError:  # an older supervisor without a cluster watch
        pass
    except Exception as e:
        raise NoSupervisor(f"the supervisor did not answer within {timeout:g} s ({e.__class__.__name__})") from None
    trials = view.get("trials")
    if trials is None:
        try:
            trials = ray.get(sup.snapshot.remote(), timeout=timeout).get("trials", [])
        except Exception:
            trials = []
    st = build_status(ray_nodes, view.get("nodes"), trials)
    st["findings"] = view.get("findings", [])
    st["supervisor_node_id"] = view.get("supervisor_node_id")
    return st
