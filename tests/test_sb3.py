"""Stable-Baselines3 under supervision: real SB3 PPO on CartPole, real faults, the real report."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("stable_baselines3")
import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.callbacks import BaseCallback, CallbackList  # noqa: E402
from stable_baselines3.common.utils import ConstantSchedule  # noqa: E402

import tests.envs.faulty  # noqa: E402,F401  (registers NanRewardCartPole-v0)
from supervisor import actions  # noqa: E402
from supervisor.integrations.sb3 import SB3Applier, SupervisorCallback  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def report(run_dir):
    p = subprocess.run([sys.executable, "-m", "supervisor", "report", str(run_dir), "--format", "json"],
                       capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def ppo(env="CartPole-v1", **kw):
    torch.set_num_threads(1)
    return PPO("MlpPolicy", env, n_steps=256, batch_size=64, n_epochs=4, seed=1, device="cpu", **kw)


class LrJump(BaseCallback):
    """A bad schedule: the lr jumps to ``lr`` for the ``at``-th update."""

    def __init__(self, at: int, lr: float = 5.0):
        super().__init__()
        self.at, self.lr = at, lr

    def _on_rollout_start(self) -> None:
        if self.model._n_updates // self.model.n_epochs == self.at - 1:
            self.model.lr_schedule = ConstantSchedule(self.lr)

    def _on_step(self) -> bool:
        return True


@pytest.mark.slow
def test_lr_jump_is_flagged_rolled_back_and_cut(tmp_path):
    run = tmp_path / "sb3-lr"
    model = ppo()
    # SB3's PPO has no KL penalty: a KL spike or loss explosion goes straight to rollback + reduce_lr.
    cb = SupervisorCallback(run, settings={"ladders": {d: [["rollback", "reduce_lr"], ["stop_trial"]]
                                                       for d in ("kl_spike", "loss_explosion")}})
    model.learn(256 * 18, callback=CallbackList([LrJump(at=12), cb]))
    assert cb.sup.status == "recovered"
    assert model.learning_rate == pytest.approx(3e-5)  # the checkpoint's 3e-4, cut by 10
    (t,) = report(run)["trials"]
    crit = [f for f in t["findings"] if f["severity"] == "critical"]
    assert crit and crit[0]["iteration"] == 12, t["findings"]
    first = [i for i in t["interventions"] if i["iteration"] == 12]
    assert [i["action"] for i in first] == ["rollback", "reduce_lr"], t["interventions"]
    rb, lr = first
    assert rb["verified"] is True and lr["verified"] is True  # finite weights; the next update ran at 3e-5
    assert rb["params"]["to_iteration"] == 10 and rb["params"]["checkpoint"].endswith("update_000010.zip")
    assert rb["outcome"] == "effective"
    assert t["iterations"] == 18 and t["status"] == "recovered"


@pytest.mark.slow
def test_nan_reward_is_flagged_and_learning_stopped(tmp_path):
    run = tmp_path / "sb3-nan"
    model = ppo(gym.make("NanRewardCartPole-v0", config={"nan_after": 1500}))
    cb = SupervisorCallback(run)
    model.learn(256 * 20, callback=cb)  # without the callback SB3 crashes on NaN logits in train()
    assert model.num_timesteps < 256 * 7  # ended in the rollout the first NaN arrived in
    assert cb.sup.status == "stopped"
    (t,) = report(run)["trials"]
    assert [(f["detector"], f["severity"], f["metric"]) for f in t["findings"]] == \
        [("non_finite", "critical", "episode_return_mean")]
    assert "stop_trial" in [i["action"] for i in t["interventions"]]
    assert t["status"] == "stopped"


def test_applier_reaches_lr_entropy_and_clip_and_says_what_it_cannot(tmp_path):
    model = ppo(ent_coef=0.01)
    ap = SB3Applier(model)
    params = actions.default_params()
    for name in ("reduce_lr", "boost_entropy", "tighten_grad_clip"):
        assert actions.apply(ap, {"action": name, "params": params[name]})["ok"]
    assert model.lr_schedule(0.3) == pytest.approx(3e-5) and model.ent_coef == pytest.approx(0.02)
    assert model.max_grad_norm == pytest.approx(0.25)
    e = actions.apply(ap, {"action": "raise_kl_coeff", "params": params["raise_kl_coeff"]})
    assert not e["ok"] and "no KL penalty" in e["error"]
    # rollback: weights and optimizer state back from the save, the current hyperparameters kept
    path = tmp_path / "m.zip"
    model.save(path)
    saved = [p.detach().clone() for p in model.policy.parameters()]
    with torch.no_grad():
        for p in model.policy.parameters():
            p.add_(1.0)
    out = actions.apply(ap, {"action": "rollback", "params": {"checkpoint": str(path), "hparams": {}}})
    assert out["ok"] and out["verified"]
    assert all(torch.equal(a, b) for a, b in zip(saved, model.policy.parameters()))
    assert model.lr_schedule(1.0) == pytest.approx(3e-5) and model.ent_coef == pytest.approx(0.02)
    assert np.isclose(ap.hparams()["grad_clip"], 0.25)


def test_explained_variance_is_pooled_over_the_rollouts_of_a_report():
    """A2C's default rollout is 5 env steps: within one, the returns hardly vary, and SB3's per-rollout
    explained variance is a ratio of two tiny variances (strongly negative for a critic that tracks the
    returns well). Pooled over the ~256 samples a report holds it says what it says for PPO's rollouts."""
    from stable_baselines3.common.utils import explained_variance

    from supervisor.integrations.sb3 import pooled_explained_variance

    rng = np.random.default_rng(0)
    parts = []
    for k in range(52):  # one report: 52 rollouts of 5 steps, each at its own return level
        returns = 10.0 * np.sin(k / 5) + 0.01 * np.arange(5, dtype=np.float32)
        values = returns + rng.normal(0, 0.5, 5)  # the critic is off by ~5 % of the returns' spread
        parts.append((values.astype(np.float32), returns.astype(np.float32)))
    per_rollout = [explained_variance(v, r) for v, r in parts]
    assert np.median(per_rollout) < -100  # what the median of SB3's values said: a collapsed critic
    assert pooled_explained_variance(parts) > 0.99
    one = parts[:1]  # PPO: one rollout a report, SB3's own figure
    assert pooled_explained_variance(one) == pytest.approx(float(explained_variance(*one[0])), rel=1e-5)
    assert math.isnan(pooled_explained_variance([(np.ones(5), np.full(5, 3.0))]))  # constant returns: no data
