"""``ray job submit`` for real: a head started with ``ray start --head`` (its own temp dir and free,
non-default ports), the repository uploaded as the job's working dir, ``supervise run`` as the
entrypoint; the job succeeds, the supervisor saw the trial, ``supervise status --address`` lists it.
The head is stopped by the PIDs of its own processes (never ``ray stop``: other clusters share this
machine)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import pytest

from supervisor.store import Store

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--set", "config.train_batch_size_per_learner=500", "--set", "config.minibatch_size=250",
         "--set", "config.num_epochs=1", "--set", "config.num_env_runners=0"]

pytestmark = pytest.mark.slow


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def own_processes(marker: str) -> list[psutil.Process]:
    """The head's processes (their command line names our private temp dir) and their children."""
    found = {}
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(marker in a for a in p.info["cmdline"] or []):
                found[p.pid] = p
                for c in p.children(recursive=True):
                    found[c.pid] = c
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    found.pop(os.getpid(), None)
    return list(found.values())


def stop_head(marker: str) -> None:
    procs = own_processes(marker)
    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=5)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)


@pytest.fixture(scope="module")
def head():
    temp = tempfile.mkdtemp(prefix="rsj", dir="/tmp")  # short: Ray's socket paths must fit 107 chars
    gcs, dash, client, agent, agent_grpc, metrics, rt_agent = free_ports(7)
    env = {**os.environ, "RAY_AUTH_MODE": "token"}  # Ray 2.60 heads may require token auth
    env.pop("RAY_ADDRESS", None)
    cmd = ["ray", "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(gcs),
           "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--ray-client-server-port", str(client),
           "--dashboard-agent-listen-port", str(agent), "--dashboard-agent-grpc-port", str(agent_grpc),
           "--metrics-export-port", str(metrics), "--runtime-env-agent-port", str(rt_agent),
           "--temp-dir", temp, "--num-cpus", "2", "--disable-usage-stats"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
        yield {"gcs": f"127.0.0.1:{gcs}", "dashboard": f"http://127.0.0.1:{dash}", "env": env, "temp": temp}
    finally:
        stop_head(temp)
        shutil.rmtree(temp, ignore_errors=True)


def test_status_without_a_cluster_is_one_line_exit_1_and_without_a_supervisor_lists_nodes(head):
    env = {**head["env"], "PYTHONPATH": str(ROOT)}
    (port,) = free_ports(1)
    p = subprocess.run([sys.executable, "-m", "supervisor", "status", "--address", f"127.0.0.1:{port}"],
                       capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)
    assert p.returncode == 1 and p.stdout == "" and len(p.stderr.strip().splitlines()) == 1
    assert "no Ray cluster at" in p.stderr
    # a live cluster with no supervised run yet: its nodes from Ray, no trials, exit 0
    p = subprocess.run([sys.executable, "-m", "supervisor", "status", "--address", head["gcs"], "--format", "json"],
                       capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    st = json.loads(p.stdout)
    assert st["trials"] == [] and len(st["nodes"]) == 1, st
    node = st["nodes"][0]
    assert node["alive"] and node["health"] == "ok" and node["resources"]["CPU"] > 0 and node["resources"]["memory"] > 0


def test_ray_job_submit_runs_a_supervised_experiment(head, tmp_path):
    out = tmp_path / "job-run"
    sid = f"supervise-{uuid.uuid4().hex[:8]}"
    t0 = time.time()
    p = subprocess.run(
        ["ray", "job", "submit", "--address", head["dashboard"], "--submission-id", sid,
         "--working-dir", str(ROOT), "--",
         "supervise", "run", "experiments/cartpole_ppo.yaml", "--iterations", "2", "--out", str(out), "--quiet",
         *SMALL],
        capture_output=True, text=True, timeout=420, env=head["env"], cwd=ROOT)
    logs = p.stdout[-4000:] + p.stderr[-3000:]
    assert p.returncode == 0, logs
    st = subprocess.run(["ray", "job", "status", "--address", head["dashboard"], sid], capture_output=True,
                        text=True, timeout=60, env=head["env"])
    assert "succeeded" in (st.stdout + st.stderr).lower(), st.stdout + st.stderr + logs
    # the supervisor (a detached actor on the head) saw the trial: its run folder has the reports
    store = Store(out / "supervisor.db", readonly=True)
    try:
        (trial,) = store.trials()
        assert trial["status"] == "completed" and trial["iterations"] == 2
        assert [r["iteration"] for r in store.reports(trial["trial_id"])] == [1, 2]
        assert trial["node_id"]
    finally:
        store.close()
    # and `supervise status --address` on the same cluster lists the node and the trial
    env = {**head["env"], "PYTHONPATH": str(ROOT)}
    s = subprocess.run([sys.executable, "-m", "supervisor", "status", "--address", head["gcs"], "--format", "json"],
                       capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert s.returncode == 0, s.stderr[-2000:]
    status = json.loads(s.stdout)
    (node,) = status["nodes"]
    assert node["alive"] and node["node_id"] == trial["node_id"]
    assert [(t["trial_id"], t["status"], t["node_id"]) for t in status["trials"]] == \
           [(trial["trial_id"], "completed", trial["node_id"])]
    print(f"job submit + run + status: {time.time() - t0:.1f} s")
