"""A supervised sweep on a cluster whose nodes share no disk, with its storage on a real S3 API server.

The head runs no trial (``--num-cpus=0``); each worker node has a mount namespace of its own with an
empty tmpfs over the folder that holds the run folder (``tests/nodisk.py``), so nothing a trial writes
to "the run folder" reaches the head, and nothing of the head's reaches a trial: checkpoints,
rollbacks, Tune's restarts and ``--restore`` work only through the run storage
(``s3://...`` on ``moto_server``). The trial starts on node A; node A is preempted (its process group
killed) after a health-gated checkpoint; node B joins, and Tune restarts the trial there from its
last checkpoint in storage. After the move the trial's lr jumps to 5.0 (a planted fault): the
supervisor rolls it back from storage. The run's best checkpoint then starts a new run from the
head with ``--restore URI``, and the report is read from the store's snapshot in storage.

``ray.cluster_utils.Cluster`` cannot show any of this: its nodes share one disk. Needs root (mount
namespaces); without it the test fails, it never skips.
"""

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.nodisk import NoDiskCluster, S3Server

ROOT = Path(__file__).resolve().parents[1]
ITERATIONS = 10
BATCH = 500
JUMP_AT = 6 * BATCH  # env steps: the lr is 5.0 from iteration 7's update on, well after the move

EXPERIMENT = f"""\
name: nodisk
env: CartPole-v1
seed: 1
config:
  lr: 0.0003
  train_batch_size_per_learner: {BATCH}
  minibatch_size: 250
  num_epochs: 2
  num_env_runners: 0
stop:
  iterations: {ITERATIONS}
supervisor:
  checkpoint_every: 2
  store_snapshot_s: 1
"""
SWEEP = EXPERIMENT.replace("  lr: 0.0003", f"  lr: [[0, 0.0003], [{JUMP_AT - 1}, 0.0003], [{JUMP_AT}, 5.0]]") + \
    "num_samples: 1\nmax_failures: 3\n"

pytestmark = pytest.mark.slow


def _rows(db: Path, sql: str) -> list[tuple]:
    """Read the head's live store (WAL: readers never block the supervisor)."""
    if not db.is_file():
        return []
    con = sqlite3.connect(db.as_uri() + "?mode=ro", uri=True, timeout=10)
    try:
        return con.execute(sql).fetchall()
    except sqlite3.OperationalError:  # not created yet
        return []
    finally:
        con.close()


def _where(db: Path) -> str:
    """What the store holds: where a sweep that did not get somewhere stood."""
    return (f"reports (seq, iteration, node) {_rows(db, 'SELECT seq, iteration, node_id FROM reports')}; checkpoints "
            f"{_rows(db, 'SELECT iteration, path FROM checkpoints')}; findings "
            f"{_rows(db, 'SELECT iteration, detector, severity FROM findings')}; interventions "
            f"{_rows(db, 'SELECT iteration, action FROM interventions')}; trials "
            f"{_rows(db, 'SELECT trial_id, status, node_id FROM trials')}")


def _wait(what: str, fn, proc: subprocess.Popen, db: Path, timeout_s: float = 240.0):
    deadline = time.monotonic() + timeout_s
    while True:
        got = fn()
        if got:
            return got
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the sweep ended ({proc.returncode}) before {what}; {_where(db)}:\n"
                                 f"{out[-3000:]}\n{err[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()  # the sweep this test started: its output says where it stood
            out, err = proc.communicate()
            raise AssertionError(f"no {what} after {timeout_s} s; {_where(db)}:\n{out[-3000:]}\n{err[-3000:]}")
        time.sleep(0.5)


def test_sweep_survives_a_lost_node_with_storage_on_s3_and_nothing_on_shared_disk(tmp_path):
    t0 = time.monotonic()
    phases = {}
    s3 = S3Server()
    head_disk = tmp_path / "head"  # the run folder's parent: every worker node sees an empty tmpfs here
    cluster = None
    try:
        cluster = NoDiskCluster(head_disk)
        env = {**cluster.env, "PYTHONPATH": str(ROOT)}
        sweep = tmp_path / "sweep.yaml"
        sweep.write_text(SWEEP)
        run = head_disk / "run"
        storage = s3.uri("runs")
        cluster.add_node("nodeA")
        phases["cluster up"] = time.monotonic() - t0
        driver = subprocess.Popen(
            [sys.executable, "-m", "supervisor", "sweep", str(sweep), "--out", str(run), "--storage", storage,
             "--address", cluster.address], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            cwd=ROOT)
        db = run / "supervisor.db"
        # node A runs the trial until a health-gated checkpoint is in storage and the trial is past it
        ckpt_it = _wait("a checkpoint in storage", lambda: [
            it for (it,) in _rows(db, "SELECT iteration FROM checkpoints WHERE iteration > 0 AND path LIKE 's3://%'")
            if _rows(db, f"SELECT 1 FROM reports WHERE iteration > {it}")], driver, db)[-1]
        phases["node A trained"] = time.monotonic() - t0
        cluster.kill_node("nodeA")  # preempted: its process group, the trial's process with it
        killed_after = max(i for (i,) in _rows(db, "SELECT iteration FROM reports"))
        cluster.add_node("nodeB")
        try:
            out, err = driver.communicate(timeout=400)
        except subprocess.TimeoutExpired:
            driver.kill()
            out, err = driver.communicate()
            raise AssertionError(f"the sweep did not finish:\n{out[-3000:]}\n{err[-3000:]}")
        log = out[-4000:] + err[-4000:]
        assert driver.returncode == 0, log
        phases["sweep done"] = time.monotonic() - t0

        # the report, read from the store's snapshot in storage: what outlives the head
        rep = subprocess.run([sys.executable, "-m", "supervisor", "report", s3.uri("runs/run"), "--format", "json"],
                             capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
        assert rep.returncode == 0, rep.stderr
        (t,) = json.loads(rep.stdout)["trials"]
        assert t["status"] in ("completed", "recovered") and t["iterations"] == ITERATIONS, (t, log)

        reports = _rows(db, "SELECT seq, iteration, node_id FROM reports ORDER BY seq")
        nodes = list(dict.fromkeys(n for _, _, n in reports))
        assert len(nodes) == 2, nodes  # node A, then node B
        on_b = [it for _, it, n in reports if n == nodes[1]]
        # the trial finished on B from its last checkpoint in storage: not from scratch, no iteration lost
        assert on_b[0] == ckpt_it + 1 <= killed_after + 1, (ckpt_it, killed_after, on_b)
        assert sorted(set(it for _, it, _ in reports)) == list(range(1, ITERATIONS + 1))

        # the planted fault after the move: rolled back, on B, from a checkpoint in storage
        rb = [i for i in t["interventions"] if i["action"] == "rollback"]
        assert rb and rb[0]["iteration"] > on_b[0], t["interventions"]
        assert rb[0]["params"]["checkpoint"].startswith("s3://runs/runs/run/"), rb[0]
        assert rb[0]["verified"] is True and rb[0]["outcome"] == "effective", rb[0]

        # its best checkpoint, in storage, starts a new run from the head
        best = t["best_checkpoint"]["path"]
        assert best.startswith("s3://runs/runs/run/"), best
        exp = tmp_path / "exp.yaml"
        exp.write_text(EXPERIMENT)
        r = subprocess.run([sys.executable, "-m", "supervisor", "run", str(exp), "--iterations", "1", "--restore",
                            best, "--out", str(tmp_path / "restored"), "--address", cluster.address],
                           capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
        assert r.returncode == 0 and f"restored weights from {best}" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
        phases["restored"] = time.monotonic() - t0
        # the storage holds Tune's checkpoints, the best, the TensorBoard files and the store's snapshot; the
        # head's run folder none of them
        keys = s3.keys("runs/run/")
        for what in ("runs/run/tune/", "runs/run/checkpoints/", "runs/run/tensorboard/", "runs/run/supervisor.db"):
            assert any(k.startswith(what) for k in keys), (what, keys[:20])
        assert not (run / "checkpoints").exists() and not (run / "tune").exists()
        print(" ".join(f"{k}: {v:.0f} s," for k, v in phases.items()), f"iteration of the restart: {on_b[0]}")
    finally:
        if cluster is not None:
            cluster.shutdown()
        s3.stop()
