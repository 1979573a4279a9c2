"""Soak: a thousand short runs and two hundred node joins and leaves through one supervisor actor.
Its threads, open files and memory must stay flat.

    python benchmarks/soak.py [--runs 1000] [--nodes 200] [--lost-every 10] [--prune-s 10]

One ``ray.cluster_utils.Cluster`` on this machine: the head, and worker nodes
(real raylets) that join and leave one after another, ``--nodes`` of each, at
most two at a time, while the runs go through. The supervisor actor (the
cluster's ``supervisor``, on the head) watches the cluster as in production:
a node monitor started on every node that joins, the cluster watch every
second, nodes down for ``--prune-s`` forgotten (production: an hour; here
short, so that the bound shows within the run).

Each run: open, two trials, five reports each (one non-finite, so findings,
interventions and alerts go through), both trials finished, run closed. Every
``--lost-every``-th run is abandoned instead (its driver "dies" after the
reports): the actor must close it as ``lost`` by itself (``lost_after_s`` of
10 s here). Every 50 runs the actor's process is sampled: threads, open file
descriptors, resident memory, the runs it holds, and the nodes its cluster
watch knows. Writes ``benchmarks/results/soak.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import ray

sys.path.append(str(Path(__file__).resolve().parents[1]))
from actors.supervisor_actor import ACTOR_NAME, NAMESPACE, SupervisorActor  # noqa: E402
from benchmarks.synthetic import healthy_stream  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--nodes", type=int, default=200, help="worker nodes that join and then leave")
    ap.add_argument("--lost-every", type=int, default=10)
    ap.add_argument("--prune-s", type=float, default=10.0)
    ap.add_argument("--lost-after-s", type=float, default=10.0, help="the runs' lost_after_s (production: 600)")
    ap.add_argument("--sample-every", type=int, default=50)
    args = ap.parse_args()

    from ray.cluster_utils import Cluster
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    print(f"load average {os.getloadavg()}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="soak-"))
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "dashboard_agent_listen_port": free_port()})
    samples: list[dict] = []
    events = {"joined": 0, "left": 0}
    stop = threading.Event()
    try:
        ray.init(address=c.address, log_to_driver=False, logging_level=logging.ERROR)
        head = next(n["NodeID"] for n in ray.nodes() if "node:__internal_head__" in n["Resources"])
        sup = SupervisorActor.options(name=ACTOR_NAME, namespace=NAMESPACE, lifetime="detached",
                                      scheduling_strategy=NodeAffinitySchedulingStrategy(head, soft=False)).remote()
        ray.get(sup.ensure_cluster_monitoring.remote(2.0, True, args.prune_s), timeout=120)
        pid = ray.get(sup.ping.remote(), timeout=60)["pid"]
        proc = psutil.Process(pid)
        stream = healthy_stream(10, seed=1)

        def sample(i: int) -> None:
            st = ray.get(sup.cluster_status.remote(), timeout=120)
            with proc.oneshot():
                mem = proc.memory_full_info()
                s = {"runs_done": i, "t_s": round(time.monotonic() - t0, 1), "threads": proc.num_threads(),
                     "fds": proc.num_fds(), "rss_mb": round(mem.rss / 2**20, 1), "uss_mb": round(mem.uss / 2**20, 1),
                     "runs_held": len(ray.get(sup.ping.remote(), timeout=60)["runs"]),
                     "nodes_known": len(st["nodes"]), "monitors": st.get("monitors"),
                     "nodes_joined": events["joined"], "nodes_left": events["left"]}
            samples.append(s)
            print(json.dumps(s), flush=True)

        settings = {"lost_after_s": args.lost_after_s, "checkpoint_every": 2}
        lost: list[str] = []
        failures: list[str] = []

        def runs() -> None:  # a thread: Ray's Cluster adds and removes nodes from the main thread only
            try:
                for i in range(args.runs):
                    # paced by the nodes: the joins and leaves go on all through the runs
                    while events["joined"] < i * args.nodes // args.runs and not stop.is_set():
                        time.sleep(0.05)
                    one_run(i)
                    if (i + 1) % args.sample_every == 0:
                        sample(i + 1)
            except Exception as e:  # shown, and the soak ends
                failures.append(f"{e.__class__.__name__}: {e}")
            finally:
                stop.set()

        def one_run(i: int) -> None:
            rid = f"soak-{i}"
            info = {"run_dir": str(tmp / rid), "name": rid, "kind": "sweep", "settings": settings, "spec": None,
                    "profile": None}
            ray.get(sup.open_run.remote(rid, **info), timeout=120)
            for t in ("a", "b"):
                ray.get(sup.register_trial.remote(f"{rid}-{t}", rid, None, {"algorithm": "PPO"}), timeout=120)
                for s in range(5):
                    m = dict(stream[s])
                    if t == "b" and s == 3:
                        m["total_loss"] = float("nan")
                    ray.get(sup.report.remote(rid, {"trial_id": f"{rid}-{t}", "seq": s, "iteration": s + 1,
                                                    "metrics": m}), timeout=120)
            if args.lost_every and i % args.lost_every == args.lost_every - 1:
                lost.append(rid)  # its driver died here
                return
            for t in ("a", "b"):
                ray.get(sup.finish_trial.remote(rid, f"{rid}-{t}", "completed"), timeout=120)
            ray.get(sup.close_run.remote(rid, "completed"), timeout=120)

        t0 = time.monotonic()
        sample(0)
        runner = threading.Thread(target=runs, daemon=True)
        runner.start()
        alive = []
        while events["joined"] < args.nodes and not (stop.is_set() and failures):
            try:
                alive.append(c.add_node(num_cpus=0))
            except Exception as e:  # a raylet that did not start in time on a busy machine: try again
                events["failed_starts"] = events.get("failed_starts", 0) + 1
                print(f"a node did not start ({e}); trying again", flush=True)
                time.sleep(5.0)
                continue
            events["joined"] += 1
            if len(alive) >= 2:
                time.sleep(1.0)  # long enough for its monitor to start and heartbeat, sometimes
                c.remove_node(alive.pop(0))
                events["left"] += 1
        while alive:
            c.remove_node(alive.pop(0))
            events["left"] += 1
        runner.join()
        if failures:
            raise RuntimeError(failures[0])
        deadline = time.monotonic() + 60
        deadline += args.lost_after_s
        while ray.get(sup.ping.remote(), timeout=60)["runs"] and time.monotonic() < deadline:
            time.sleep(1.0)
        time.sleep(args.prune_s + 5)  # the last nodes to leave get forgotten too
        sample(args.runs)
        from supervisor.store import Store

        statuses = []
        for rid in lost:
            st = Store.open_readonly(tmp / rid / "supervisor.db")
            statuses.append(st.runs()[0]["status"])
            st.close()
        res = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "runs": args.runs, "lost_runs": len(lost),
               "lost_closed_as_lost": sum(s == "lost" for s in statuses), "nodes_joined": events["joined"],
               "nodes_left": events["left"], "failed_node_starts": events.get("failed_starts", 0),
               "prune_s": args.prune_s, "wall_s": round(time.monotonic() - t0, 1),
               "load_after": list(os.getloadavg()), "samples": samples}
        write(res)
        print(json.dumps({k: v for k, v in res.items() if k != "samples"}), flush=True)
    finally:
        stop.set()
        ray.shutdown()
        c.shutdown()
    return 0


def write(res: dict) -> None:
    from benchmarks.results_io import write_results

    s = res["samples"]
    warm = next((x for x in s if x["runs_done"] >= res["runs"] // 10), s[0])
    last = s[-1]
    res["flat"] = {"from_runs": warm["runs_done"], "threads": [warm["threads"], last["threads"]],
                   "fds": [warm["fds"], last["fds"]], "uss_mb": [warm["uss_mb"], last["uss_mb"]],
                   "rss_mb": [warm["rss_mb"], last["rss_mb"]]}
    lines = ["# Soak: short runs and node joins/leaves through one supervisor actor (benchmarks/soak.py)", "",
             f"{res['time']}: {res['runs']} runs ({res['lost_runs']} abandoned by their driver, "
             f"{res['lost_closed_as_lost']} of them closed as `lost` by the actor), {res['nodes_joined']} nodes "
             f"joined and {res['nodes_left']} left (forgotten {res['prune_s']:g} s after leaving), "
             f"{res['wall_s']:.0f} s. The actor's process, sampled as the runs went by (paced so that "
             "the node joins and leaves go on all through them):", "",
             "| runs done | s | threads | open fds | RSS MB | USS MB | runs held | nodes known | monitors | nodes joined / left |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for x in s:
        lines.append(f"| {x['runs_done']} | {x['t_s']:.0f} | {x['threads']} | {x['fds']} | {x['rss_mb']:.0f} | "
                     f"{x['uss_mb']:.0f} | {x['runs_held']} | {x['nodes_known']} | {x['monitors']} | "
                     f"{x['nodes_joined']} / {x['nodes_left']} |")
    lines += ["", f"From {warm['runs_done']} runs (warmed up) to the end: threads {warm['threads']} -> {last['threads']}, "
              f"open fds {warm['fds']} -> {last['fds']}, USS {warm['uss_mb']:.0f} -> {last['uss_mb']:.0f} MB."]
    write_results("soak", "\n".join(lines), res)


if __name__ == "__main__":
    raise SystemExit(main())
