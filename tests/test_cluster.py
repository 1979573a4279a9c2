"""Cluster health: the Ray-free aggregation (fake clock), the worker_fault detector, and a real
three-node Ray cluster (``ray.cluster_utils.Cluster``): status lists every node, a removed node is
reported down within 10 s, the supervised trial that ran there is restarted by Tune from its
checkpoint on another node and finishes, and the metrics reach the head node's Prometheus endpoint."""

import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from supervisor.cluster import ClusterSettings, ClusterState, build_status
from supervisor.report.text import render_status
from supervisor.stats import peer_score
from supervisor.detectors import DETECTORS, build_detectors
from supervisor.detectors.worker_fault import WorkerFault
from supervisor.history import History

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------- aggregation, no Ray


def hb(node, mem=40.0, gpus=()):
    return {"node_id": node, "address": f"10.0.0.{node[-1]}", "cpu_percent": 12.5, "memory_percent": mem,
            "gpus": list(gpus)}


def ray_node(node, alive=True):
    return {"NodeID": node, "Alive": alive, "NodeManagerAddress": f"10.0.0.{node[-1]}", "Resources": {"CPU": 1.0}}


def test_missed_heartbeats_raise_node_down_and_a_return_clears_it():
    cs = ClusterState(ClusterSettings(heartbeat_timeout_s=6.0))
    cs.sync_ray_nodes([ray_node("n1"), ray_node("n2")], 0.0)
    for t in (0.0, 2.0, 4.0):
        cs.heartbeat(hb("n1"), t)
        cs.heartbeat(hb("n2"), t)
        assert cs.check(t + 0.5) == []
    for t in (6.0, 8.0):  # n2 goes silent after t=4
        cs.heartbeat(hb("n1"), t)
        assert cs.check(t + 0.5) == []
    cs.heartbeat(hb("n1"), 10.0)
    (f,) = cs.check(10.5)  # 6.5 s of silence > 6 s
    assert (f["detector"], f["severity"], f["node_id"]) == ("node_down", "warning", "n2")
    assert "missed its heartbeats" in f["message"] and f["value"] == pytest.approx(6.5)
    assert cs.check(11.5) == []  # reported once, not every tick
    assert [r["alive"] for r in cs.node_rows(11.5)] == [True, False]
    # it heartbeats again: reported back (info), alive
    (f,) = cs.heartbeat(hb("n2"), 11.8)
    assert (f["detector"], f["severity"]) == ("node_down", "info") and cs.node_health("n2") == "ok"
    assert cs.check(12.0) == [] and all(r["alive"] for r in cs.node_rows(12.0))
    # silent again, then Ray confirms it dead: the finding escalates to critical
    for t in (13.0, 15.0, 17.0, 19.0):
        cs.heartbeat(hb("n1"), t)
        cs.check(t + 0.5)
    assert cs.node_health("n2") == "warning" and not cs.nodes["n2"].alive
    (f,) = cs.sync_ray_nodes([ray_node("n1"), ray_node("n2", alive=False)], 20.0)
    assert (f["detector"], f["severity"]) == ("node_down", "critical")
    assert cs.node_health("n2") == "critical"


def test_ray_reporting_a_node_dead_is_node_down_at_once_and_old_dead_nodes_are_not():
    cs = ClusterState()
    # a node that was already dead when we started watching is history, not a finding
    assert cs.sync_ray_nodes([ray_node("n1"), ray_node("n0", alive=False)], 0.0) == []
    (f,) = cs.sync_ray_nodes([ray_node("n1", alive=False), ray_node("n0", alive=False)], 1.0)
    assert (f["detector"], f["severity"], f["node_id"]) == ("node_down", "critical", "n1")
    assert "Ray reports it gone" in f["message"]
    assert cs.sync_ray_nodes([ray_node("n1", alive=False)], 2.0) == []


def test_a_stalled_supervisor_does_not_call_nodes_down():
    cs = ClusterState(ClusterSettings(heartbeat_timeout_s=6.0))
    cs.heartbeat(hb("n1"), 0.0)
    assert cs.check(1.0) == []
    assert cs.check(20.0) == []  # our own tick was 19 s late: heartbeats are queued behind it
    assert cs.check(20.5) and not cs.nodes["n1"].alive  # still silent at the next, punctual tick


def test_memory_pressure_latches_escalates_and_clears_with_hysteresis():
    cs = ClusterState(ClusterSettings(memory_warning=90, memory_critical=97, memory_hysteresis=5, repeat_s=60))
    assert cs.heartbeat(hb("n1", mem=80), 0) == []
    (f,) = cs.heartbeat(hb("n1", mem=92), 2)
    assert (f["detector"], f["severity"], f["metric"], f["threshold"]) == ("memory_pressure", "warning",
                                                                            "memory_percent", 90)
    assert cs.heartbeat(hb("n1", mem=93), 4) == []
    (f,) = cs.heartbeat(hb("n1", mem=98), 6)
    assert f["severity"] == "critical"
    assert cs.heartbeat(hb("n1", mem=98), 8) == []
    assert len(cs.heartbeat(hb("n1", mem=98), 70)) == 1  # repeated after repeat_s
    assert cs.heartbeat(hb("n1", mem=87), 72) == [] and cs.node_health("n1") == "warning"  # hysteresis
    cs.heartbeat(hb("n1", mem=80), 74)
    assert cs.node_health("n1") == "ok"


def test_straggler_is_scored_against_its_peers_median_and_mad():
    cs = ClusterState()
    trials = {f"t{i}": {"run_id": "r", "node_id": f"n{i}", "times": [1.0 + 0.02 * i, 1.01, 0.99, 1.0]}
              for i in range(4)}
    assert cs.stragglers(trials, 0) == []
    trials["t3"]["times"] = [1.0, 3.1, 3.0, 2.9, 3.2]  # about 3x its peers
    (f,) = cs.stragglers(trials, 1)
    assert (f["detector"], f["severity"], f["trial_id"], f["node_id"]) == ("straggler", "warning", "t3", "n3")
    assert f["details"]["ratio"] == pytest.approx(3.0, rel=0.05) and f["details"]["z"] >= 4
    assert cs.stragglers(trials, 2) == []  # latched
    # peers of another run do not count; two peers are the minimum
    assert ClusterState().stragglers({"a": {"run_id": "x", "times": [3, 3, 3]},
                                      "b": {"run_id": "y", "times": [1, 1, 1]},
                                      "c": {"run_id": "y", "times": [1, 1, 1]}}, 0) == []
    # noisy peers widen the scale: 1.6x a wide spread is not a straggler
    z, ratio, med = peer_score(1.6, [1.0, 1.3, 0.7, 1.2, 0.8])
    assert ratio == pytest.approx(1.6) and z < 4


def test_build_status_merges_ray_nodes_with_monitor_rows_and_renders():
    cs = ClusterState()
    cs.sync_ray_nodes([ray_node("n1")], 0)
    cs.heartbeat(hb("n1"), 0)
    st = build_status([ray_node("n1"), ray_node("n2"), ray_node("n3", alive=False)], cs.node_rows(1.0),
                      [{"trial_id": "t1", "status": "running", "health": {"score": 0.9, "worst_severity": "info",
                                                                          "components": {}},
                        "node_id": "n1", "iteration": 3}])
    by = {n["node_id"]: n for n in st["nodes"]}
    assert set(by) == {"n1", "n2", "n3"}
    assert by["n1"]["monitor"] and by["n1"]["cpu_percent"] == 12.5
    assert not by["n2"]["monitor"] and by["n2"]["alive"] and by["n2"]["cpu_percent"] is None  # no monitor there
    assert not by["n3"]["alive"] and by["n3"]["health"] == "critical"
    for n in st["nodes"]:
        assert {"node_id", "address", "alive", "cpu_percent", "memory_percent", "gpus"} <= set(n)
    (t,) = st["trials"]
    assert t == {**t, "trial_id": "t1", "status": "running", "node_id": "n1",
                 "health": {"score": 0.9, "worst_severity": "info"}}
    text = render_status(st)
    assert "nodes: 3 (2 alive)" in text and "DEAD" in text and "(no monitor)" in text and "t1" in text


# ---------------------------------------------------------------------------------- worker_fault


def feed(det, stream):
    hist, out = History(), []
    for i, m in enumerate(stream, 1):
        out += det(i, m, hist)
        hist.append(m)
    return out


def ft(healthy, restarts, dropped):
    return {"healthy_env_runners": healthy, "env_runner_restarts": restarts, "env_runners_dropped": dropped,
            "episode_return_mean": 20.0}


def test_worker_fault_is_registered_and_quiet_on_healthy_or_missing_figures():
    assert "worker_fault" in DETECTORS and "worker_fault" in [d.name for d in build_detectors()]
    assert feed(WorkerFault(), [ft(2, 0, 0)] * 20) == []
    assert feed(WorkerFault(), [{"episode_return_mean": 1.0}] * 5) == []
    assert feed(WorkerFault(), [ft(0, 0, 0)] * 5) == []  # no remote env runners configured: nothing to lose


def test_worker_fault_reports_restarts_drops_and_a_shrinking_fleet():
    stream = [ft(4, 0, 0)] * 3 + [ft(3, 0, 1), ft(4, 1, 1), ft(4, 1, 1), ft(1, 1, 3), ft(1, 1, 3)]
    got = [(f.iteration, f.metric, f.severity) for f in feed(WorkerFault(), stream)]
    assert got == [(4, "env_runners_dropped", "warning"), (4, "healthy_env_runners", "warning"),
                   (5, "env_runner_restarts", "warning"),
                   (7, "env_runners_dropped", "warning"), (7, "healthy_env_runners", "critical")]
    # a counter that starts over (a restarted trial) is a new baseline
    assert feed(WorkerFault(), [ft(2, 5, 0), ft(2, 5, 0), ft(2, 0, 0), ft(2, 0, 0)])[1:] == []


def test_worker_fault_reads_a_timed_out_request_from_a_whole_fleet_as_load_until_it_persists():
    """RLlib drops a sample request that does not answer within its timeout (a busy machine: two trainings
    sharing the cores did it to a healthy Hopper run). With every runner healthy and none restarted that
    is info; dropped on ``persist`` iterations in a row, every iteration trains on part of its samples:
    a warning. A drop with a runner lost or restarted stays a warning at once."""
    once = [ft(4, 0, 0)] * 3 + [ft(4, 0, 1)] + [ft(4, 0, 1)] * 5 + [ft(4, 0, 2)]
    got = [(f.iteration, f.severity) for f in feed(WorkerFault(), once)]
    assert got == [(4, "info"), (10, "info")]  # two isolated drops: load, never a warning
    held = [ft(4, 0, 0)] * 3 + [ft(4, 0, 1), ft(4, 0, 2), ft(4, 0, 4), ft(4, 0, 5), ft(4, 0, 5), ft(4, 0, 6)]
    got = [(f.iteration, f.severity, f.details["consecutive"]) for f in feed(WorkerFault(), held)]
    assert got == [(4, "info", 1), (5, "info", 2), (6, "warning", 3), (7, "warning", 4), (9, "info", 1)]
    assert [(f.iteration, f.severity) for f in feed(WorkerFault(persist=1), held)][:1] == [(4, "warning")]
    with_restart = [ft(4, 0, 0)] * 3 + [ft(4, 1, 1)]
    assert {(f.metric, f.severity) for f in feed(WorkerFault(), with_restart)} == {
        ("env_runner_restarts", "warning"), ("env_runners_dropped", "warning")}


# ---------------------------------------------------------------------------------- a real 3-node cluster

WORKER = {"num_cpus": 1}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    # head: no CPU, so the trial lands on a worker node; metrics flushed every second
    # (the head's agent gets a free port, not Ray's default 52365, which other clusters on this machine hold)
    c = Cluster(initialize_head=True,
                head_node_args={"num_cpus": 0, "dashboard_agent_listen_port": free_port(),
                                "_system_config": {"metrics_report_interval_ms": 1000}})
    try:
        workers = [c.add_node(**WORKER) for _ in range(2)]
        c.wait_for_nodes()
        ray.init(address=c.address, log_to_driver=False, logging_level=logging.ERROR)
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from actors.supervisor_actor import (ACTOR_NAME, NAMESPACE, SupervisorActor, _start_cluster_watch,
                                             get_or_create_supervisor, head_node_id)

        # get_or_create_supervisor pins it to the head softly; a loaded machine can spill it to a worker
        # node, and this test kills worker nodes: pin it for real, as get_or_create_supervisor means it
        head = head_node_id()
        sup = SupervisorActor.options(
            name=ACTOR_NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=head, soft=False)).remote()
        _start_cluster_watch(sup)
        assert get_or_create_supervisor()._actor_id == sup._actor_id
        assert ray.get(sup.cluster_status.remote(), timeout=60)["supervisor_node_id"] == head
        yield {"cluster": c, "workers": workers, "sup": sup, "address": c.address}
    finally:
        ray.shutdown()
        c.shutdown()


def wait_for(fn, timeout, every=0.25):
    end = time.time() + timeout
    while time.time() < end:
        v = fn()
        if v:
            return v
        time.sleep(every)
    return fn()


def status_cli(address, fmt="json"):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "supervisor", "status", "--address", address, "--format", fmt],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)


@pytest.mark.slow
def test_status_lists_every_node_with_health(cluster):
    import ray

    sup = cluster["sup"]
    st = wait_for(lambda: (lambda s: s if sum(n["monitor"] and n["cpu_percent"] is not None
                                              for n in s["nodes"]) == 3 else None)(
        ray.get(sup.cluster_status.remote())), 60)
    assert st, "node monitors did not heartbeat from all three nodes"
    p = status_cli(cluster["address"])
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout)
    ids = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert {n["node_id"] for n in out["nodes"]} == ids and len(ids) == 3
    for n in out["nodes"]:
        assert n["alive"] and n["health"] == "ok" and n["monitor"]
        assert 0 <= n["cpu_percent"] <= 100 and 0 < n["memory_percent"] < 100
        assert n["gpus"] == []  # no GPU on this machine: the no-GPU path, for real
        assert n["address"]
    assert out["trials"] == []


@pytest.mark.slow
def test_a_silent_monitor_is_node_down_within_10s_then_replaced(cluster):
    """The heartbeat path for real: the node stays up in Ray's eyes, its monitor goes quiet."""
    import ray

    from actors.node_monitor import NAMESPACE, monitor_name

    sup, victim = cluster["sup"], cluster["workers"][0].node_id
    t0 = time.time()
    ray.kill(ray.get_actor(monitor_name(victim), namespace=NAMESPACE))

    def found(severity):
        return [f for f in ray.get(sup.cluster_findings.remote(t0))
                if f["detector"] == "node_down" and f["node_id"] == victim and f["severity"] == severity]
    down = wait_for(lambda: found("warning"), 20)
    assert down and down[0]["time"] - t0 <= 10.0, down
    assert "missed its heartbeats" in down[0]["message"] and "Ray still lists it alive" in down[0]["message"]
    # the watch starts a new monitor on the silent node; its heartbeats clear the finding
    back = wait_for(lambda: found("info"), 40)
    assert back and "heartbeating again" in back[0]["message"]
    st = ray.get(sup.cluster_status.remote())
    assert all(n["alive"] and n["health"] == "ok" for n in st["nodes"])


@pytest.mark.slow
def test_node_loss_is_reported_and_the_trial_restarts_from_its_checkpoint_elsewhere(cluster, tmp_path):
    import ray
    from ray import tune
    from ray.rllib.algorithms.ppo import PPOConfig

    from actors.tune import supervised_trainable_config
    from supervisor.store import Store

    sup, c = cluster["sup"], cluster["cluster"]
    iterations = 7
    cfg = (PPOConfig().environment("CartPole-v1")
           .training(lr=3e-4, train_batch_size_per_learner=500, minibatch_size=250, num_epochs=1)
           .env_runners(num_env_runners=0).debugging(seed=1)
           .reporting(min_time_s_per_iteration=1))  # a quiet machine trains 7 iterations in 3 s: time to kill
    run_dir = tmp_path / "node-loss"
    st = supervised_trainable_config(cfg, run_dir, name="node-loss", settings={"checkpoint_every": 1},
                                     max_failures=3, quiet=True)
    killed: dict = {}

    def killer():
        def running_trial():
            trials = ray.get(sup.snapshot.remote())["trials"]
            ok = [t for t in trials if t["status"] == "running" and t["iteration"] >= 3 and t["node_id"]]
            return ok[0] if ok else None
        t = wait_for(running_trial, 150, every=0.2)
        if not t:
            return
        node = next((w for w in list(c.worker_nodes) if w.node_id == t["node_id"]), None)
        if node is None:
            killed["error"] = f"trial {t['trial_id']} is on {t['node_id']}, not a worker node"
            return
        killed.update(trial=t, node_id=t["node_id"], at=time.time())
        c.remove_node(node)
        f = wait_for(lambda: [f for f in ray.get(sup.cluster_findings.remote(killed["at"] - 1))
                              if f["detector"] == "node_down" and f["node_id"] == killed["node_id"]], 20, every=0.1)
        killed["node_down_after_s"] = (f[0]["time"] - killed["at"]) if f else None
        killed["finding"] = f[0] if f else None
        print(f"node_down {killed['node_down_after_s']} s after the node went away")

    th = threading.Thread(target=killer, daemon=True)
    th.start()
    grid = tune.Tuner(st.trainable, param_space=st.param_space,
                      run_config=st.run_config(stop={"training_iteration": iterations})).fit()
    th.join(timeout=60)
    assert "error" not in killed, killed.get("error")
    assert killed.get("node_id"), "the trial never reached iteration 3"
    # node_down within 10 s of the node going away
    assert killed["node_down_after_s"] is not None and killed["node_down_after_s"] <= 10.0, killed
    # Tune restarted the trial from its checkpoint on the other worker, and the sweep completed
    (res,) = list(grid)
    assert res.error is None, res.error
    assert res.metrics["training_iteration"] == iterations
    assert res.metrics["iterations_since_restore"] < iterations  # resumed, not started over
    tid = killed["trial"]["trial_id"]
    store = Store(run_dir / "supervisor.db", readonly=True)
    try:
        row = store.trial(tid)
        assert row["status"] in ("completed", "recovered")
        survivor = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU"))
        assert row["node_id"] == survivor != killed["node_id"]  # the trial record follows its node
        reports = store.reports(tid)
        assert {r["node_id"] for r in reports} == {killed["node_id"], survivor}
        assert [r["iteration"] for r in reports][-1] == iterations
        # the node loss is in the run's store: cluster-level and on the trial that ran there
        downs = [f for f in store.findings() if f["detector"] == "node_down"]
        assert any(f["trial_id"] is None for f in downs) and any(f["trial_id"] == tid for f in downs)
        nodes = {n["node_id"]: n for n in store.nodes()}
        assert nodes[killed["node_id"]]["alive"] == 0 and nodes[survivor]["alive"] == 1
    finally:
        store.close()
    # status now: two alive, the lost one dead
    out = json.loads(status_cli(cluster["address"]).stdout)
    alive = {n["node_id"]: n["alive"] for n in out["nodes"]}
    assert alive[killed["node_id"]] is False and sum(alive.values()) == 2
    assert [t["node_id"] for t in out["trials"] if t["trial_id"] == tid] == [survivor]


@pytest.mark.slow
def test_metrics_reach_the_head_nodes_prometheus_endpoint(cluster):
    import ray

    from actors import compat

    where = ray.get(cluster["sup"].cluster_status.remote())["supervisor_node_id"]  # the head node
    node = next(n for n in ray.nodes() if n["Alive"] and n["NodeID"] == where)
    assert compat.is_head_node(node["Resources"])
    url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"

    seen: set = set()

    def scrape():
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        names = set(re.findall(r"^(ray_rl_supervisor_\w+)\{", text, re.M))
        seen.update(names)
        return (text, names) if {"ray_rl_supervisor_node_alive", "ray_rl_supervisor_node_health",
                                 "ray_rl_supervisor_node_cpu_percent"} <= names else None

    got = wait_for(scrape, 60, every=1.0)
    assert got, f"supervisor metrics never appeared on {url}: saw {sorted(seen)}; " \
                f"{ray.get(cluster['sup'].cluster_status.remote())}"
    text, names = got
    alive = re.findall(r'^ray_rl_supervisor_node_alive\{[^}]*node_id="(\w+)"[^}]*\} (\S+)', text, re.M)
    assert len(alive) >= 3
    # after the node-loss test: a dead node, a trial's health score, node_down counted
    if any(float(v) == 0.0 for _, v in alive):
        assert "ray_rl_supervisor_trial_health_score" in names
        assert re.search(r'^ray_rl_supervisor_findings\w*\{[^}]*detector="node_down"', text, re.M)
