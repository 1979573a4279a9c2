"""``supervise run`` for real: real Ray, real RLlib PPO, the real CLI in a subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--set", "config.train_batch_size_per_learner=1000", "--set", "config.minibatch_size=250",
        "--set", "config.num_epochs=4"]

pytestmark = pytest.mark.slow


def supervise(*args, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "supervisor", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


def report(run_dir):
    p = supervise("report", str(run_dir), "--format", "json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_healthy_run_has_no_false_alarm(tmp_path):
    out = tmp_path / "healthy"
    p = supervise("run", "experiments/cartpole_ppo.yaml", "--iterations", "12", "--out", str(out), *FAST)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "iter   12/12" in p.stdout
    rep = report(out)
    (t,) = rep["trials"]
    assert t["status"] == "completed" and t["iterations"] == 12
    assert [f for f in t["findings"] if f["severity"] != "info"] == []
    assert t["interventions"] == []
    assert t["final"]["episode_return_mean"] > 30  # it learned something
    assert t["health"]["score"] > 0.9
    assert rep["run"]["status"] == "completed" and rep["run"]["ended"]
    ckpts = sorted((out / "checkpoints").glob("*/seq_*"))
    assert len(ckpts) >= 1  # health-gated checkpoints were taken
    pickled = b"".join(f.read_bytes() for f in ckpts[-1].rglob("*.pkl"))
    assert b"learner_config_dict" in pickled  # RLlib's config is in the checkpoint (three times)...
    assert b"report_timeout_s" not in pickled and b"run_info" not in pickled  # ...the supervisor's settings are not


def test_divergent_run_is_flagged_rolled_back_and_recovers(divergent_run):
    out, p, _ = divergent_run  # (its alerts: test_alerts_e2e)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    (t,) = report(out)["trials"]
    # lr jumps to 5.0 for the update of iteration 6: flagged no later than iteration 7
    bad = [f for f in t["findings"] if f["severity"] == "critical"]
    assert bad and bad[0]["iteration"] in (6, 7), t["findings"]
    first = bad[0]["iteration"]
    acts = [i for i in t["interventions"] if i["iteration"] == first]
    assert [i["action"] for i in acts] == ["rollback", "reduce_lr"], t["interventions"]
    rb, lr = acts
    assert rb["verified"] is True  # restored weights are finite and reached the env runners
    assert lr["verified"] is True  # the next result reported the reduced lr
    assert rb["params"]["to_iteration"] < first
    assert rb["outcome"] == "effective" and t["status"] == "recovered"
    assert "rollback" in supervise("report", str(out)).stdout


def test_nan_reward_is_flagged_at_the_source_quarantined_then_stopped(tmp_path):
    out = tmp_path / "nan"
    exp = tmp_path / "nan.yaml"
    exp.write_text(
        "name: nan-reward\n"
        "env: tests.envs.faulty:NanRewardCartPole\n"
        "env_config: {nan_after: 2500}\n"
        "config: {lr: 0.0003, train_batch_size_per_learner: 1000, minibatch_size: 250, num_epochs: 2,\n"
        "         num_env_runners: 0}\n"
        "stop: {iterations: 5}\n"
        "supervisor: {checkpoint_every: 1}\n")
    p = supervise("run", str(exp), "--out", str(out))
    assert p.returncode == 3, p.stdout[-3000:] + p.stderr[-3000:]
    # the exit line says why
    assert "the environment produces non-finite rewards" in p.stdout, p.stdout[-2000:]
    (t,) = report(out)["trials"]
    dp = [f for f in t["findings"] if f["detector"] == "data_poisoned"]
    # the env emits NaN from step 2501: iteration 3 samples steps 2001..3000; the data guard on the env runner
    # sees it there, before the learner: no learner statistic of the run is ever NaN
    assert dp and dp[0]["severity"] == "critical" and dp[0]["iteration"] == 3, dp
    assert [(i["iteration"], i["action"]) for i in t["interventions"]] == [(3, "quarantine"), (4, "stop_trial")]
    assert "the environment produces non-finite rewards" in t["interventions"][1]["reason"]
    nf = [f for f in t["findings"] if f["detector"] == "non_finite"]
    assert all(f["metric"] not in ("total_loss", "policy_loss", "vf_loss") for f in nf), nf
    assert t["status"] == "stopped" and t["iterations"] == 4
