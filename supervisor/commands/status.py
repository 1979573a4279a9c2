"""``supervise status``: live health of a running cluster: nodes, GPUs, trials.

Checks the address here, then (``actors/status.py``, the Ray side) attaches
to the cluster at ``--address`` (its GCS address host:port; else
``RAY_ADDRESS`` unless that is a dashboard http:// address, else the cluster
this machine belongs to, as ``ray status`` finds it), finds the
supervisor actor and asks it for its view; ``ray.nodes()`` adds every node
the supervisor has no monitor on.

Exit codes: 0 printed; 1 no cluster reachable at the address, or no
supervisor running on it (one line on stderr); 2 a malformed address.
"""

from __future__ import annotations

import os
import sys

NAME = "status"
HELP = "live health of the cluster: nodes, GPUs, trials"
FORMATS = ["text", "json"]
NO_CLUSTER_EXIT = 1
NO_SUPERVISOR_EXIT = 1


def uses_ray(args) -> bool:
    return True


def add_arguments(p) -> None:
    from supervisor.commands import number

    p.add_argument("--address", help="Ray cluster (GCS) address host:port (default: RAY_ADDRESS, else this "
                                     "machine's cluster)")
    p.add_argument("--format", choices=FORMATS, default="text")
    p.add_argument("--timeout", type=number(float, gt=0, le=3600), default=10.0, help="seconds to wait for the supervisor (default 10)")


def _fail(msg: str, code: int) -> int:
    print(f"supervise status: {msg}", file=sys.stderr)
    return code


def _reachable(address: str, timeout: float = 3.0) -> str | None:
    """None when a TCP connection to host:port opens, else why not (fast fail before ray.init)."""
    import socket

    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout):
            return None
    except (OSError, ValueError) as e:
        return f"{e.__class__.__name__}: {e}"


def run(args) -> int:
    from supervisor.errors import InputError

    env = os.environ.get("RAY_ADDRESS")
    if not args.address and env and env.startswith(("http://", "https://")):
        env = None  # the job server's address (for `ray job submit`): find the cluster as `ray status` does
    address = args.address or env or "auto"
    if address.startswith(("http://", "https://")):
        raise InputError("--address", None, f"{address} is a dashboard (job) address; give the cluster's GCS "
                                            "address host:port (e.g. 127.0.0.1:6379)")
    direct = address not in ("auto", "local") and not address.startswith("ray://")
    if direct:
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise InputError("--address", None, f"expected host:port, got {address!r}")
        why = _reachable(address)
        if why:
            return _fail(f"no Ray cluster at {address} ({why})", NO_CLUSTER_EXIT)

    from actors.status import NoCluster, NoSupervisor, gather  # the Ray side, only once the address is good

    try:
        st = gather(address, args.timeout)
    except NoCluster as e:
        return _fail(str(e), NO_CLUSTER_EXIT)
    except NoSupervisor as e:
        return _fail(str(e), NO_SUPERVISOR_EXIT)
    if args.format == "json":
        from supervisor.report import render_json

        print(render_json(st), end="")
    else:
        from supervisor.report.text import render_status

        print(render_status(st), end="")
    return 0
