"""Does the supervisor actor stall reports? Round trip of a report with node monitoring and alerts on,
against the same actor with them off, side by side in one run on one 8-node Ray cluster.

    python benchmarks/actor_stall.py [--nodes 8] [--seconds 90] [--trials 4] [--baseline DIR]

The cluster: ``ray.cluster_utils.Cluster``, a head and ``--nodes - 1`` worker
nodes (real raylets), all on this machine. Two supervisor actors on the head:

* **on**: the cluster's supervisor (``supervisor``): a node monitor on every
  node heartbeating every 2 s, the cluster watch ticking every second
  (``ray.nodes()``, straggler and node judgments, node rows and findings
  stored in every open run), and alerts on: every run sends its findings and
  its run-end summary to an Apprise ``json://`` endpoint on 127.0.0.1 that
  takes 0.3 s to answer each post (a slow chat webhook).
* **off**: the same actor class, no cluster watch, no alerts.

Both get the same load: ``--trials`` trials of one run each reporting (a
non-finite iteration every 40th report, so findings and alerts flow), and
beside them a churn of short runs (open, register, three reports, close)
every 2 s, whose close flushes its alerts on the **on** actor. The measured
reports go round-robin to the two actors from one caller, so both see the
same machine at the same moments. The figure: the report round trip, p50
and p99, per actor, and the ratio on/off (goal p99 <= 1.25).

Run it alone on the machine (other processes' load shows in both columns but
widens p99); the load average is written next to the figures.
``--baseline DIR``: first the same measurement of the actor in another
checkout (``git archive main | tar -x -C DIR``: the code before a change),
in a process of its own on a cluster of its own, for comparison.
Writes ``benchmarks/results/actor_stall.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import ray

sys.path.append(str(Path(__file__).resolve().parents[1]))  # PYTHONPATH first: it picks the actor measured
from actors.supervisor_actor import NAMESPACE, SupervisorActor  # noqa: E402
from benchmarks.synthetic import healthy_stream  # noqa: E402

SLOW_HOOK_S = 0.3


class SlowHook:
    """An Apprise ``json://`` endpoint on 127.0.0.1 that answers every post after ``delay_s``."""

    def __init__(self, delay_s: float):
        self.posts = 0
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                time.sleep(delay_s)
                hook.posts += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"json://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


class Side:
    """One actor under test: its run, its trials' seqs, its round trips."""

    def __init__(self, name: str, actor, run_dir: Path, settings: dict, trials: int):
        self.name, self.actor, self.settings = name, actor, settings
        self.run_dir = run_dir
        self.run_id = f"stall-{name}"
        self.info = {"run_dir": str(run_dir / "main"), "name": self.run_id, "kind": "sweep", "settings": settings,
                     "spec": None, "profile": None}
        ray.get(actor.open_run.remote(self.run_id, **self.info), timeout=120)
        self.trials = [f"{name}-t{k}" for k in range(trials)]
        for t in self.trials:
            ray.get(actor.register_trial.remote(t, self.run_id, None, {"algorithm": "PPO"}), timeout=60)
        self.seq = {t: 0 for t in self.trials}
        self.rtt: list[float] = []
        self.stream = healthy_stream(400, seed=3)
        self.churned = 0

    def report(self, t: str, measure: bool = True) -> None:
        s = self.seq[t]
        m = dict(self.stream[s % len(self.stream)])
        if s % 40 == 39:
            m["total_loss"] = float("nan")
        rep = {"trial_id": t, "seq": s, "iteration": s + 1, "metrics": m}
        t0 = time.perf_counter()
        ray.get(self.actor.report.remote(self.run_id, rep), timeout=120)
        if measure:
            self.rtt.append(1000.0 * (time.perf_counter() - t0))
        self.seq[t] = s + 1

    def churn(self, i: int) -> None:
        """A short run beside the measured one: open, one trial, three reports (one non-finite), close."""
        rid = f"churn-{self.name}-{i}"
        info = {**self.info, "run_dir": str(self.run_dir / rid), "name": rid}
        a = self.actor
        ray.get(a.open_run.remote(rid, **info), timeout=120)
        ray.get(a.register_trial.remote("c", rid, None, None), timeout=60)
        for s in range(3):
            m = dict(self.stream[s])
            if s == 2:
                m["vf_loss"] = float("nan")
            ray.get(a.report.remote(rid, {"trial_id": "c", "seq": s, "iteration": s + 1, "metrics": m}), timeout=60)
        ray.get(a.close_run.remote(rid, "completed"), timeout=120)
        self.churned += 1


def measure(args) -> dict:
    """One side-by-side run of the actor code on ``sys.path`` (``PYTHONPATH`` first)."""
    import tempfile

    from ray.cluster_utils import Cluster
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    code = Path(sys.modules["actors.supervisor_actor"].__file__).resolve().parents[1]
    print(f"actor code: {code}; {load()}", file=sys.stderr, flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="actor-stall-"))
    hook = SlowHook(SLOW_HOOK_S)
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "dashboard_agent_listen_port": free_port()})
    try:
        for _ in range(args.nodes - 1):
            c.add_node(num_cpus=0)
        c.wait_for_nodes()
        ray.init(address=c.address, log_to_driver=False, logging_level=logging.ERROR)
        head = next(n["NodeID"] for n in ray.nodes() if "node:__internal_head__" in n["Resources"])
        pin = NodeAffinitySchedulingStrategy(node_id=head, soft=False)
        on_actor = SupervisorActor.options(name="supervisor", namespace=NAMESPACE, scheduling_strategy=pin).remote()
        off_actor = SupervisorActor.options(name="supervisor-off", namespace=NAMESPACE,
                                            scheduling_strategy=pin).remote()
        ray.get(on_actor.ensure_cluster_monitoring.remote(2.0, True), timeout=120)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            st = ray.get(on_actor.cluster_status.remote(), timeout=60)
            if sum(1 for n in st["nodes"] if n.get("monitor") and n.get("cpu_percent") is not None) >= args.nodes:
                break
            time.sleep(1.0)
        beating = sum(1 for n in st["nodes"] if n.get("monitor") and n.get("cpu_percent") is not None)
        print(f"{len(st['nodes'])} nodes, {beating} heartbeating to the monitored actor", file=sys.stderr, flush=True)
        alerts = {"alerts": [{"url": hook.url, "min_severity": "warning"}]}
        on = Side("on", on_actor, tmp / "on", alerts, args.trials)
        off = Side("off", off_actor, tmp / "off", {}, args.trials)
        sides = (on, off)
        for side in sides:  # warm up: imports, first transactions, detectors' first reports
            for _ in range(10):
                for t in side.trials:
                    side.report(t, measure=False)

        stop = threading.Event()

        def churner():
            i = 0
            while not stop.wait(2.0):
                for side in sides:
                    try:
                        side.churn(i)
                    except Exception as e:  # noqa: BLE001 (shown, never fatal to the measurement)
                        print(f"churn on {side.name} failed: {e}", file=sys.stderr, flush=True)
                i += 1
        th = threading.Thread(target=churner, daemon=True)
        load_before = os.getloadavg()[0]
        t_end = time.monotonic() + args.seconds
        th.start()
        k = 0
        while time.monotonic() < t_end:
            for side in (sides if k % 2 == 0 else sides[::-1]):  # alternate who goes first
                for t in side.trials:
                    side.report(t)
            k += 1
            time.sleep(0.005)
        stop.set()
        th.join(timeout=60)
        inside = {s.name: ray.get(s.actor.verdict_latency.remote(), timeout=60) for s in sides}
        res = {"code": code.name, "nodes": len(st["nodes"]), "heartbeating": beating, "trials": args.trials,
               "seconds": args.seconds, "alert_posts": hook.posts,
               "load_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
        for s in sides:
            res[s.name] = {"n": len(s.rtt), "p50_ms": round(pct(s.rtt, 0.5), 3), "p99_ms": round(pct(s.rtt, 0.99), 3),
                           "max_ms": round(max(s.rtt), 3), "churned_runs": s.churned,
                           "inside_actor_p99_ms": round(inside[s.name].get("p99", float("nan")), 3)}
        res["p50_ratio"] = round(res["on"]["p50_ms"] / res["off"]["p50_ms"], 3)
        res["p99_ratio"] = round(res["on"]["p99_ms"] / res["off"]["p99_ms"], 3)
        return res
    finally:
        ray.shutdown()
        c.shutdown()
        hook.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=90.0)
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--baseline", help="another checkout whose actor is measured the same way first")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON and write nothing")
    args = ap.parse_args()
    baseline = None
    if args.baseline:
        import subprocess
        import tempfile

        cmd = [sys.executable, str(Path(__file__).resolve()), "--json", "--nodes", str(args.nodes),
               "--seconds", str(args.seconds), "--trials", str(args.trials)]
        # a folder of its own as the working directory: Ray's workers take the driver's onto their path
        p = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": str(Path(args.baseline).resolve())},
                           cwd=tempfile.mkdtemp(prefix="actor-stall-baseline-"), stdout=subprocess.PIPE, text=True)
        if p.returncode != 0:
            raise SystemExit(f"the baseline run failed (exit {p.returncode})")
        baseline = json.loads(p.stdout)
    res = measure(args)
    if args.json:
        print(json.dumps(res))
        return 0
    print(json.dumps({"current": res, "baseline": baseline}, indent=1), flush=True)
    write(res, baseline)
    return 0


def write(res: dict, baseline: dict | None) -> None:
    from benchmarks.results_io import write_results

    lines = ["# Report round trip with node monitoring and alerts on, against off (benchmarks/actor_stall.py)", "",
             f"One {res['nodes']}-node `ray.cluster_utils.Cluster` on this machine; two supervisor actors on the head, "
             "the same load on both (trials reporting, a short run opened and closed every 2 s); **on**: node "
             "monitors on every node, the cluster watch every second, alerts to a json:// endpoint that answers in "
             f"{SLOW_HOOK_S} s; **off**: neither. Round trip of one report (ms) from one caller, round-robin.", "",
             "| actor | reports each | on p50 | on p99 | on max | off p50 | off p99 | off max | p50 on/off "
             "| p99 on/off | alert posts | load 1m (before / after) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for label, r in (("before (baseline)", baseline), ("this code", res)):
        if r is None:
            continue
        lines.append(f"| {label}: `{r['code']}` | {r['on']['n']} | {r['on']['p50_ms']:.2f} | {r['on']['p99_ms']:.2f} | "
                     f"{r['on']['max_ms']:.0f} | {r['off']['p50_ms']:.2f} | {r['off']['p99_ms']:.2f} | "
                     f"{r['off']['max_ms']:.0f} | {r['p50_ratio']:.2f} | {r['p99_ratio']:.2f} | {r['alert_posts']} | "
                     f"{r['load_1m'][0]:g} / {r['load_1m'][1]:g} |")
    write_results("actor_stall", "\n".join(lines), {"current": res, "baseline": baseline})


if __name__ == "__main__":
    raise SystemExit(main())
