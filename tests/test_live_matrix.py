"""Issue 25's live acceptance matrix: stock Stable-Baselines3 algorithms with their DEFAULT hyperparameters,
a CleanRL-style torch loop through the Python API and a ``transformers.Trainer``, each run to completion
under supervision with zero interventions; the same loops with a planted fault (an lr jump, a NaN reward)
caught: a finding and an action (here for DQN, A2C, SAC and TD3; PPO's lr jump and NaN reward are
tests/test_sb3.py's, the CleanRL loop's lr jump tests/test_api.py's, the Trainer's blow-up tests/test_hf.py's).

Budgets are the shortest that cover the transients that stopped these runs before issue 25: see the comment
on each case. Set
``LIVE_MATRIX_OUT=path.jsonl`` to append one row per run (steps, reports, findings, interventions)."""

import json
import os
import time
from pathlib import Path

import pytest

pytest.importorskip("stable_baselines3")
import gymnasium as gym  # noqa: E402
import torch  # noqa: E402
from stable_baselines3 import A2C, DQN, PPO, SAC, TD3  # noqa: E402
from stable_baselines3.common.callbacks import BaseCallback, CallbackList  # noqa: E402
from stable_baselines3.common.utils import ConstantSchedule  # noqa: E402

from supervisor import Supervisor  # noqa: E402
from supervisor.integrations.sb3 import SupervisorCallback  # noqa: E402
from supervisor.integrations.torch import TorchApplier  # noqa: E402
from supervisor.store import Store  # noqa: E402

pytestmark = pytest.mark.slow
ALGOS = {"ppo": PPO, "a2c": A2C, "dqn": DQN, "sac": SAC, "td3": TD3}


@pytest.fixture(autouse=True)
def cpu_seconds(request):
    """With $LIVE_MATRIX_OUT: each test's CPU time (what it costs a CI core, whatever else this machine runs)."""
    t0 = time.process_time()
    yield
    if os.environ.get("LIVE_MATRIX_OUT"):
        with open(os.environ["LIVE_MATRIX_OUT"], "a") as f:
            f.write(json.dumps({"test": request.node.name, "cpu_s": round(time.process_time() - t0, 1)}) + "\n")


def outcome(run_dir: Path, trial_id: str, name: str, steps: int, status: str) -> dict:
    """What the supervisor recorded about one run; appended to $LIVE_MATRIX_OUT when set."""
    store = Store(run_dir / "supervisor.db")
    try:
        findings = store.findings(trial_id)
        ivs = store.interventions(trial_id)
        reports = len(store.reports(trial_id))
    finally:
        store.close()
    row = {"run": name, "steps": steps, "reports": reports, "status": status,
           "findings": {s: sorted({f["detector"] for f in findings if f["severity"] == s})
                        for s in ("info", "warning", "critical")},
           "interventions": [(i["iteration"], i["action"], i["detector"]) for i in ivs if i["action"] != "alert"],
           "alerts": sum(i["action"] == "alert" for i in ivs)}
    if os.environ.get("LIVE_MATRIX_OUT"):
        with open(os.environ["LIVE_MATRIX_OUT"], "a") as f:
            f.write(json.dumps(row) + "\n")
    return row


def learn(tmp_path, algo, env, steps, seed=0, extra=(), **kw):
    # SAC's and TD3's updates (256-400 wide MLPs, one a step) run 1.3-1.4x faster on two threads than on one
    # here (2 cores, nothing else running); the others' small updates gain nothing
    threads = torch.get_num_threads()
    torch.set_num_threads(2 if algo in ("sac", "td3") else 1)
    try:
        model = ALGOS[algo]("MlpPolicy", env, seed=seed, device="cpu", **kw)
        cb = SupervisorCallback(tmp_path / algo)
        model.learn(steps, callback=CallbackList([*extra, cb]))
    finally:
        torch.set_num_threads(threads)
    return model, cb


# --- healthy: default hyperparameters, zero interventions ------------------------------------------

HEALTHY = [
    # (algorithm, env, env steps, non-default args). Before issue 25 (seed 0; the issue's own figure after /):
    ("ppo", "CartPole-v1", 40_000, {"n_steps": 512}),  # stopped at 37,377 / 55,296: loss_explosion, the value
                                                        # loss (not clipped) growing with the returns
    ("a2c", "CartPole-v1", 8_000, {}),                  # stopped at 196 / 795: EV of 5-step batches, returns
    ("a2c", "Acrobot-v1", 5_000, {}),                   # stopped at 1,241: value_collapse
    ("dqn", "CartPole-v1", 12_000, {}),                 # stopped at 2,845 / 7,916: a report per gradient step
    ("sac", "Pendulum-v1", 2_000, {}),                  # stopped at 416 / 415: the first two episodes' returns;
                                                        # 2 reports (one per 1,000 steps), 10 episodes
    ("td3", "Pendulum-v1", 2_000, {}),                  # completed (3,000 steps); 2 reports, 10 episodes
]


@pytest.mark.parametrize("algo,env,steps,kw", HEALTHY, ids=[f"{a}-{e}" for a, e, _, _ in HEALTHY])
def test_default_sb3_run_completes_untouched(tmp_path, algo, env, steps, kw):
    model, cb = learn(tmp_path, algo, env, steps, **kw)
    row = outcome(tmp_path / algo, cb.sup.trial_id, f"{algo}-{env}", model.num_timesteps, cb.sup.status)
    assert model.num_timesteps >= steps and cb.sup.status == "completed", row
    assert row["interventions"] == [] and row["findings"]["critical"] == [], row
    assert row["reports"] >= 2  # judged more than once: a second report could have confirmed a transient


def test_cleanrl_loop_completes_untouched(tmp_path):
    from tests.envs.cleanrl_ppo import train

    sup = Supervisor(tmp_path / "cleanrl", algorithm="ppo", config={"priors": {
        "algorithm": "PPO", "action_kind": "discrete", "action_dim": 2, "clip_param": 0.2, "use_kl_loss": False}})
    st = {}

    def ready(ctx):
        st["ap"] = TorchApplier(ctx.optimizer, ctx.agent, coefficients=ctx.coefs)

    def on_update(update, metrics, ctx):
        v = sup.observe(update, metrics)
        sup.apply(v, st["ap"])
        return st["ap"].stop_requested

    train(30, on_update, ctx_ready=ready)
    status = sup.close()
    row = outcome(tmp_path / "cleanrl", sup.trial_id, "cleanrl-ppo-CartPole-v1", 30 * 512, status)
    assert status == "completed" and row["interventions"] == [] and row["findings"]["critical"] == [], row


def test_transformers_trainer_completes_untouched(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from tests.test_hf import trainer
    from supervisor.integrations.hf import SupervisorCallback as HFCallback

    cb = HFCallback(tmp_path / "hf")
    trainer(tmp_path, [cb], max_steps=80).train()
    row = outcome(tmp_path / "hf", cb.sup.trial_id, "hf-trainer-gpt2-tiny", 80, cb.sup.status)
    assert cb.sup.status == "completed" and row["interventions"] == [] and row["findings"]["critical"] == [], row
    assert row["reports"] == 80


# --- the same loops with a planted fault: caught ------------------------------------------------------


class LrJump(BaseCallback):
    """From env step ``at`` on, a broken schedule sets the lr to ``lr`` (the supervisor's cuts then replace it)."""

    def __init__(self, at: int, lr: float):
        super().__init__()
        self.at, self.lr, self.done = at, lr, False

    def _on_step(self) -> bool:
        if not self.done and self.model.num_timesteps >= self.at:
            self.done = True
            self.model.lr_schedule = ConstantSchedule(self.lr)
        return True


class BrokenReward(gym.Wrapper):
    """After ``after`` env steps the reward pipeline breaks: every reward x ``scale``, or NaN (scale None)."""

    def __init__(self, env, after: int, scale: float | None):
        super().__init__(env)
        self.after, self.scale, self.steps = after, scale, 0

    def step(self, action):
        obs, r, term, trunc, info = self.env.step(action)
        self.steps += 1
        if self.steps > self.after:
            r = float("nan") if self.scale is None else r * self.scale
        return obs, r, term, trunc, info


FAULTS = [
    # (algorithm, env, env steps, (fault, at env step, value), the detectors that may catch it). A DQN's lr
    # jump shows only once its target network updates (every 10,000 steps by default), and its loss is
    # judged after 10 reports (10,000 env steps): its TD loss is made to explode by a reward pipeline that
    # breaks (rewards x1000) after the warm-up. SAC's and TD3's 1,000-step reports cost ~18 s of CPU each
    # (a gradient step per env step): within this budget, the fault they get is a NaN reward.
    ("dqn", "CartPole-v1", 12_000, ("reward_scale", 10_500, 1e3), {"loss_explosion", "q_divergence",
                                                                   "td_error_explosion"}),
    ("a2c", "CartPole-v1", 3_000, ("lr", 1_000, 0.05), {"loss_explosion", "gradient_explosion", "entropy_collapse",
                                                         "value_collapse", "non_finite"}),
    ("sac", "Pendulum-v1", 1_000, ("nan_reward", 300, None), {"non_finite"}),
    ("td3", "Pendulum-v1", 1_000, ("nan_reward", 300, None), {"non_finite"}),
]


@pytest.mark.parametrize("algo,env,steps,how,catchers", FAULTS, ids=[f"{a}-{h[0]}" for a, _, _, h, _ in FAULTS])
def test_planted_fault_is_caught(tmp_path, algo, env, steps, how, catchers):
    kind, at, value = how
    extra = [LrJump(at, value)] if kind == "lr" else []
    env_obj = env if kind == "lr" else BrokenReward(gym.make(env), at, value)
    model, cb = learn(tmp_path, algo, env_obj, steps, extra=extra)
    row = outcome(tmp_path / algo, cb.sup.trial_id, f"{algo}-{env}-{kind}", model.num_timesteps, cb.sup.status)
    caught = set(row["findings"]["warning"]) | set(row["findings"]["critical"])
    assert caught & catchers, row
    assert row["interventions"], row  # and acted on
