"""Poisoned data, crashes and hung trials for real: real Ray (one instance for the module), real RLlib, real Tune.

* DQN on CartPole whose rewards turn NaN at a fixed step: flagged by the env runner's data guard in the
  iteration the NaNs appear, quarantined, then stopped with the cause; the replay buffer never holds a NaN
  (without the guard this run dies in RLlib's prioritized buffer, ``segment_tree.find_prefixsum_idx``).
  PPO's counterpart runs through ``supervise run`` in ``test_run_e2e.py``.
* One Tune sweep of two trials: an env that raises a custom exception at step 300 (``trial_crashed`` names
  the exception, its message and the env's frame; the sweep retries it once and stops it with that
  reason) and an env that sleeps forever in iteration 2 (``trial_hung`` on the supervisor's clock, then
  Tune restarts the trial from its checkpoint of iteration 1 and it finishes iteration 2).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import ray

from supervisor.report import build_report

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    import torch

    torch.set_num_threads(1)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}})
    yield
    ray.shutdown()


def test_dqn_nan_rewards_are_held_at_the_source_quarantined_then_stopped(tmp_path):
    from ray.rllib.algorithms.dqn import DQNConfig

    from actors.rllib import finish, supervise
    from tests.envs.faulty import NanRewardCartPole

    cfg = (DQNConfig().environment(NanRewardCartPole, env_config={"nan_after": 700})
           .env_runners(num_env_runners=0, rollout_fragment_length=50)
           .training(lr=5e-4, train_batch_size_per_learner=32, num_steps_sampled_before_learning_starts=100)
           .reporting(min_time_s_per_iteration=0, min_sample_timesteps_per_iteration=500)
           .debugging(seed=1))
    run_dir = tmp_path / "dqn"
    algo = supervise(cfg, run_dir, settings={"checkpoint_every": 1}).build_algo()
    try:
        for _ in range(6):
            result = algo.train()  # the prioritized replay buffer's AssertionError would come out of here
            if result["supervisor"]["stop"]:
                break
        buffer = algo.local_replay_buffer
        stored = [e for e in buffer.episodes if e is not None]
        assert stored and all(np.isfinite(np.asarray(e.get_rewards(), float)).all() for e in stored)
        status = finish(algo)
    finally:
        algo.stop()
    assert status == "stopped"
    (t,) = build_report(run_dir)["trials"]
    dp = [f for f in t["findings"] if f["detector"] == "data_poisoned"]
    # 500 env steps an iteration; NaN from step 701: iteration 2 is where they first are
    assert dp[0]["iteration"] == 2 and dp[0]["severity"] == "critical" and "rewards" in dp[0]["message"]
    assert [(i["iteration"], i["action"]) for i in t["interventions"]] == [(2, "quarantine"), (3, "stop_trial")]
    assert "the environment produces non-finite rewards" in t["interventions"][-1]["reason"]
    assert not any(f["detector"] == "trial_crashed" for f in t["findings"])


def test_sweep_explains_a_crash_stops_its_repeat_and_restarts_a_hung_trial(tmp_path):
    from actors.tune.sweep import run_sweep
    from supervisor.config import Sweep

    marker = tmp_path / "hung.marker"
    sweep = Sweep.model_validate({
        "name": "faults", "env": "tests.envs.faulty:BrokenCartPole",
        "config": {"train_batch_size_per_learner": 500, "minibatch_size": 250, "num_epochs": 2,
                   "num_env_runners": 0},
        "stop": {"iterations": 2}, "max_failures": 3,
        # the hang bound, shrunk for a test: max(3 x the median iteration, 8 s)
        # (report_timeout_s: a loaded machine's slow verdict still gates Tune's checkpoints)
        "supervisor": {"checkpoint_every": 1, "report_timeout_s": 30,
                       "hang": {"factor": 3, "floor_s": 8, "heartbeat_s": 0.5}}})
    sink: dict = {}
    code = run_sweep(sweep, "test_crash_e2e.py", out=str(tmp_path / "run"), quiet=True, result_sink=sink,
                     variants=[{"env_config": {"raise_at": 300}},
                               {"env_config": {"hang_at": 700, "marker": str(marker)}}])
    assert code in (0, 3), code
    cb = sink["callback"]
    trials = {("crash" if "raise_at" in str(cb.configs[t["trial_id"]]) else "hang"): t
              for t in build_report(tmp_path / "run")["trials"]}

    crash = trials["crash"]
    crashed = [f for f in crash["findings"] if f["detector"] == "trial_crashed"]
    assert len(crashed) == 2 and all(f["severity"] == "critical" for f in crashed)
    assert crashed[0]["message"].startswith("SensorFault: lidar returned no echo at step 300"), crashed[0]
    info = crash["crash"]
    assert info["exception"] == "SensorFault" and info["cause"] == "env_exception"
    env_frame = info["frames"]["user"][0]
    assert env_frame["file"].endswith("tests/envs/faulty.py") and env_frame["function"] == "step"
    assert [i["action"] for i in crash["interventions"]] == ["restart_trial", "stop_trial"]
    assert "the environment raised" in crash["interventions"][1]["reason"]
    assert "repeats the same way" in crash["interventions"][1]["reason"]
    assert crash["status"] == "stopped" and cb.restarts[crash["trial_id"]] == 1  # one retry, not max_failures

    hang = trials["hang"]
    (hung,) = [f for f in hang["findings"] if f["detector"] == "trial_hung"]
    assert hung["iteration"] == 2 and "in phase sampling" in hung["message"] and "on node" in hung["message"]
    assert hung["value"] > hung["threshold"] >= 8.0  # elapsed past the bound, never under the floor
    assert [i["action"] for i in hang["interventions"] if i["action"] != "alert"][:1] == ["restart_trial"]
    assert cb.restarts[hang["trial_id"]] == 1 and hang["iterations"] == 2  # Tune restarted it; it finished
    assert hang["status"] in ("completed", "recovered")


@pytest.mark.parametrize("algo,num_learners", [("APPO", 0), ("APPO", 1), ("IMPALA", 0)],
                         ids=["appo_local_learner", "appo_remote_learner", "impala_local_learner"])
def test_learner_thread_death_is_told_as_a_crash_then_stopped_when_it_repeats(tmp_path, algo, num_learners):
    # RLlib lets APPO and IMPALA sample on after their learner thread died, and its next wait on the thread never
    # ends: for its results (APPO, measured without the check: both runs hung in iteration 2, the remote one in
    # the checkpoint's get_state), or for room in its bounded in-queue (IMPALA: 12 updates an iteration, its queue
    # holds 3). With it: the death is told as a crash in the iteration it is seen, restarted once, then stopped.
    import faulthandler

    from ray.rllib.algorithms.appo import APPOConfig
    from ray.rllib.algorithms.impala import IMPALAConfig

    from actors.appliers.rllib.remote import foreach_learner
    from actors.callback import RestartRequested
    from actors.rllib import finish, supervise
    from tests.envs.faulty import break_loss_after

    cfg = ((APPOConfig() if algo == "APPO" else IMPALAConfig()).environment("CartPole-v1")
           .env_runners(num_env_runners=0)
           .learners(num_learners=num_learners)
           .training(train_batch_size_per_learner=250)
           .reporting(min_time_s_per_iteration=0, min_sample_timesteps_per_iteration=500 if algo == "APPO" else 3000)
           .debugging(seed=1))
    run_dir = tmp_path / algo.lower()
    faulthandler.dump_traceback_later(240, exit=True)  # a hang fails the run with every thread's stack
    try:
        outcomes = []
        for _ in range(2):  # the trial, then its restart (Tune's, in a sweep) with the same fault
            trainer = supervise(cfg, run_dir, settings={"checkpoint_every": 1}).build_algo()
            try:
                assert all(foreach_learner(trainer, break_loss_after, updates=6))
                for _ in range(8):
                    try:
                        result = trainer.train()
                    except RestartRequested as e:
                        outcomes.append(("restart", str(e)))
                        break
                    if result["supervisor"]["stop"]:
                        outcomes.append(("stop", finish(trainer)))
                        break
            finally:
                trainer.stop()
    finally:
        faulthandler.cancel_dump_traceback_later()
    assert [o[0] for o in outcomes] == ["restart", "stop"], outcomes
    assert "planted: the loss broke" in outcomes[0][1] and outcomes[1][1] == "stopped"
    (t,) = build_report(run_dir)["trials"]
    crashed = [f for f in t["findings"] if f["detector"] == "trial_crashed"]
    assert len(crashed) == 2, crashed
    assert crashed[0]["message"].startswith("RuntimeError: planted: the loss broke (RLlib's learner thread died in "
                                            "iteration "), crashed[0]
    assert t["crash"]["exception"] == "RuntimeError" and t["crash"]["cause"] == "user_exception", t["crash"]
    # the frames are the learner thread's, from the learner's own process: down to the planted loss
    assert t["crash"]["frames"]["user"][0]["function"] == "broken", t["crash"]["frames"]
    assert [i["action"] for i in t["interventions"] if i["action"] != "alert"] == ["restart_trial", "stop_trial"]
    assert "repeats the same way" in t["interventions"][-1]["reason"]
