"""The Ray side of the API: ``Supervisor(address=...)`` through the cluster's supervisor actor, and RLlib
without Tune (``actors.rllib.supervise``). One real local Ray for the module."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from actors.supervisor_actor import find_supervisor  # noqa: E402
from supervisor import Supervisor  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gcs():
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def cli(*args, timeout=120):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "supervisor", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


def report(run_dir):
    p = cli("report", str(run_dir), "--format", "json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_api_with_an_address_reports_to_the_cluster_supervisor(gcs, tmp_path):
    run = tmp_path / "remote-api"
    sup = Supervisor(run, algorithm="ppo", address=gcs, trial_id="cleanrl-0")
    sup.checkpoint_saved(0, tmp_path / "ckpt.pt", {"lr": 3e-4})
    for i in range(1, 13):
        v = sup.observe(i, {"losses/approx_kl": 0.01 + 0.001 * (i % 3), "losses/entropy": 0.69 - 0.01 * i,
                            "charts/learning_rate": 3e-4, "charts/episodic_return": 20.0 + i})
        assert v.reported and v.findings == []
    v = sup.observe(13, {"losses/approx_kl": float("nan"), "charts/learning_rate": 3e-4})
    assert [f["detector"] for f in v.findings] == ["non_finite"]
    assert [a["action"] for a in v.actions] == ["rollback", "reduce_lr"]
    assert v.rollback["checkpoint"] == str((tmp_path / "ckpt.pt").resolve())

    # the cluster sees it while it runs: the actor's snapshot, and `supervise status`
    snap = ray.get(find_supervisor().snapshot.remote(), timeout=30)
    assert sup.run_id in [r["run_id"] for r in snap["runs"]] and sup.run_id.startswith(run.name + "-")
    (t,) = [t for t in snap["trials"] if t["trial_id"] == "cleanrl-0"]
    assert t["status"] == "running" and t["iteration"] == 13
    p = cli("status", "--address", gcs, "--format", "json")
    assert p.returncode == 0, p.stderr
    assert "cleanrl-0" in [t["trial_id"] for t in json.loads(p.stdout)["trials"]]

    sup.apply(v, _Recorder())
    assert sup.close() == "completed"
    rep = report(run)  # the actor wrote the run folder
    (t,) = rep["trials"]
    assert t["trial_id"] == "cleanrl-0" and t["status"] == "completed" and t["iterations"] == 13
    assert [f["detector"] for f in t["findings"]] == ["non_finite"]
    applied = {i["action"]: i for i in t["interventions"]}
    assert set(applied) == {"rollback", "reduce_lr"}
    assert rep["run"]["status"] == "completed"


class _Recorder:
    """A minimal applier for a loop whose only lever is the lr."""

    def __init__(self):
        self.lr = 3e-4

    def hparams(self):
        return {"lr": self.lr, "entropy_coeff": None, "kl_coeff": None, "grad_clip": None}

    def set_hparams(self, new):
        self.lr = new.get("lr", self.lr)
        return self.hparams()

    def rollback(self, checkpoint, hparams):
        return {"checkpoint": checkpoint, "verified": True}

    def request_stop(self, reason):
        pass

    def request_restart(self, reason):
        raise NotImplementedError("no restart")

    def alert(self, reason):
        pass


def test_rllib_without_tune_two_lines(gcs, tmp_path):
    from ray.rllib.algorithms.ppo import PPOConfig

    from actors.rllib import finish, supervise

    run = tmp_path / "own-loop"
    config = (PPOConfig().environment("CartPole-v1").env_runners(num_env_runners=0)
              .training(train_batch_size_per_learner=500, minibatch_size=250, num_epochs=2))
    config = supervise(config, run_dir=run)
    algo = config.build_algo()
    try:
        for _ in range(3):
            result = algo.train()
            assert result["supervisor"]["reported"] is True and result["supervisor"]["stop"] is False
        assert finish(algo) == "completed"
    finally:
        algo.stop()
    rep = report(run)
    (t,) = rep["trials"]
    assert t["status"] == "completed" and t["iterations"] == 3
    assert t["final"]["episode_return_mean"] is not None
    assert rep["run"]["status"] == "completed" and rep["run"]["ended"]
    assert list((run / "checkpoints").glob("*/seq_*"))  # the starting point: rollback has a target
    # the instrumented learner ran: its statistics are in the stored reports
    import sqlite3

    db = sqlite3.connect(run / "supervisor.db")
    (metrics,) = db.execute("SELECT metrics FROM reports ORDER BY seq DESC LIMIT 1").fetchone()
    assert "approx_kl" in json.loads(metrics) and "grad_norm_policy" in json.loads(metrics)
