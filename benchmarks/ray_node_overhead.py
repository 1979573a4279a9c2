"""What a node joining and leaving costs a Ray actor's memory, whatever the actor does with it: the
yardstick for the supervisor's figure in benchmarks/soak.py.

    python benchmarks/ray_node_overhead.py [--nodes 30]

One ``ray.cluster_utils.Cluster`` on this machine; worker nodes join and leave
one after another. Four plain Ray actors on the head, none of them the
supervisor:

* **idle**: does nothing;
* **polls**: calls ``ray.nodes()`` every 5 s (as the supervisor's cluster watch does);
* **starts**: starts a detached, named actor on every node that joins (as the
  supervisor starts its node monitors) and drops the handle when the node goes;
* **called**: is called every 2 s by an actor on every node that joins (as the
  node monitors heartbeat to the supervisor).

Their memory (USS) is sampled every 10 nodes. Writes
``benchmarks/results/ray_node_overhead.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
import threading
import time
from pathlib import Path

import psutil
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

sys.path.append(str(Path(__file__).resolve().parents[1]))

NS = "ray_node_overhead"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


@ray.remote(num_cpus=0)
class Dummy:
    def ok(self) -> int:
        return 1


@ray.remote(num_cpus=0, max_concurrency=8)
class Probe:
    def __init__(self, mode: str):
        self.mode, self.started = mode, {}
        if mode in ("polls", "starts"):
            threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        while True:
            time.sleep(5.0 if self.mode == "polls" else 1.0)
            try:
                nodes = ray.nodes()
                if self.mode != "starts":
                    continue
                alive = {n["NodeID"] for n in nodes if n["Alive"]}
                for nid in [n for n in self.started if n not in alive]:
                    del self.started[nid]
                for nid in alive - set(self.started):
                    self.started[nid] = Dummy.options(
                        name=f"dummy:{nid}", namespace=NS, lifetime="detached", get_if_exists=True,
                        scheduling_strategy=NodeAffinitySchedulingStrategy(nid, soft=False)).remote()
            except Exception as e:  # noqa: BLE001
                print(f"probe {self.mode}: {e}", flush=True)

    def ping(self, payload=None) -> int:
        return 1

    def pid(self) -> int:
        import os

        return os.getpid()


@ray.remote(num_cpus=0)
class Caller:
    """Calls the ``called`` probe every 2 s, like a node monitor's heartbeat."""

    def __init__(self, target):
        def loop():
            while True:
                try:
                    target.ping.remote({"cpu_percent": 1.0, "memory_percent": 2.0})
                except Exception:  # noqa: BLE001
                    pass
                time.sleep(2.0)
        threading.Thread(target=loop, daemon=True).start()

    def ok(self) -> int:
        return 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=30)
    args = ap.parse_args()
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "dashboard_agent_listen_port": free_port()})
    samples = []
    try:
        ray.init(address=c.address, log_to_driver=False, logging_level=logging.ERROR)
        head = next(n["NodeID"] for n in ray.nodes() if "node:__internal_head__" in n["Resources"])
        pin = NodeAffinitySchedulingStrategy(head, soft=False)
        probes = {m: Probe.options(scheduling_strategy=pin).remote(m) for m in ("idle", "polls", "starts", "called")}
        procs = {m: psutil.Process(ray.get(p.pid.remote(), timeout=120)) for m, p in probes.items()}

        def sample(k: int) -> None:
            s = {"nodes_joined": k, **{m: round(p.memory_full_info().uss / 2**20, 2) for m, p in procs.items()}}
            samples.append(s)
            print(json.dumps(s), flush=True)

        time.sleep(5.0)
        sample(0)
        alive, k = [], 0
        while k < args.nodes:
            try:
                node = c.add_node(num_cpus=0)
            except Exception as e:  # a raylet that did not start in time on a busy machine
                print(f"a node did not start ({e}); trying again", flush=True)
                time.sleep(5.0)
                continue
            k += 1
            caller = Caller.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False)
                                    ).remote(probes["called"])
            ray.get(caller.ok.remote(), timeout=300)
            alive.append(node)
            if len(alive) >= 2:
                time.sleep(3.0)
                c.remove_node(alive.pop(0))
            if k % 10 == 0:
                sample(k)
        while alive:
            c.remove_node(alive.pop(0))
    finally:
        ray.shutdown()
        c.shutdown()
    first, last = samples[1] if len(samples) > 1 else samples[0], samples[-1]
    n = max(last["nodes_joined"] - first["nodes_joined"], 1)
    per_node = {m: round(1024 * (last[m] - first[m]) / n, 1) for m in ("idle", "polls", "starts", "called")}
    from benchmarks.results_io import write_results

    lines = ["# What a node joining and leaving costs a Ray actor (benchmarks/ray_node_overhead.py)", "",
             "Plain Ray actors on the head of a `ray.cluster_utils.Cluster` while worker nodes join and leave; "
             "USS in MB.", "", "| nodes joined | idle | polls ray.nodes() | starts an actor per node | "
             "called by an actor per node |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {s['nodes_joined']} | {s['idle']} | {s['polls']} | {s['starts']} | {s['called']} |" for s in samples]
    lines += ["", "KiB per node that joined (from the second sample on): " +
              ", ".join(f"{m} {v:g}" for m, v in per_node.items()) + "."]
    write_results("ray_node_overhead", "\n".join(lines), {"samples": samples, "kib_per_node": per_node})
    print(json.dumps(per_node))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
