"""Real RLlib runs under supervision (one local Ray for the module):

* metrics_missing: a callback renames the learner's entropy key in every result (as a Ray upgrade could), and
  the supervisor says, once, that the entropy detectors are blind; it acts on nothing;
* policy_lag: APPO's weight sync is lost for real (RLlib's EnvRunnerStateServer, which the env runners pull
  new weights from, is killed), the lag runs away, the supervisor flags it and pushes the learner's weights to
  the env runners (sync_weights), verified on every runner, and the lag falls back."""

from __future__ import annotations

import logging

import pytest

ray = pytest.importorskip("ray")

from ray.rllib.callbacks.callbacks import RLlibCallback  # noqa: E402

from supervisor.report import build_report  # noqa: E402

pytestmark = pytest.mark.slow


class RenameEntropy(RLlibCallback):
    """What an RLlib release that renamed ``entropy`` would hand the supervisor's callback (which runs after)."""

    def on_train_result(self, *, algorithm, metrics_logger=None, result, **kwargs):
        for stats in (result.get("learners") or {}).values():
            if isinstance(stats, dict) and "entropy" in stats:
                stats["policy_entropy"] = stats.pop("entropy")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield
    ray.shutdown()


def test_a_renamed_result_key_raises_metrics_missing_once(local_ray, tmp_path):
    from ray.rllib.algorithms.ppo import PPOConfig

    from actors.rllib import finish, supervise

    run = tmp_path / "renamed"
    config = (PPOConfig().environment("CartPole-v1").env_runners(num_env_runners=0)
              .training(train_batch_size_per_learner=400, minibatch_size=200, num_epochs=1)
              .callbacks([RenameEntropy]))
    config = supervise(config, run_dir=run)
    algo = config.build_algo()
    try:
        for _ in range(4):
            result = algo.train()
            assert "entropy" not in result["learners"]["default_policy"]
        assert finish(algo) == "completed"
    finally:
        algo.stop()
    (t,) = build_report(run)["trials"]
    found = [f for f in t["findings"] if f["detector"] == "metrics_missing"]
    assert len(found) == 1, t["findings"]
    (f,) = found
    assert f["iteration"] == 3 and f["severity"] == "warning" and f["metric"] == "entropy"
    assert "learners/<module>/entropy" in f["message"]
    assert {b["detector"] for b in t["blind"]} == {"entropy_collapse", "entropy_saturated", "premature_convergence"}
    assert t["interventions"] == []
    assert [x for x in t["findings"] if x["severity"] != "info" and x["detector"] != "metrics_missing"] == []


def test_a_lost_weight_sync_is_flagged_and_the_weights_pushed(local_ray, tmp_path):
    from ray.rllib.algorithms.appo import APPOConfig

    from actors.rllib import finish, supervise
    from supervisor.metrics import normalize_result

    run = tmp_path / "stale"
    # 5 learner updates an iteration: a lost sync adds 5 updates of lag an iteration
    config = (APPOConfig().environment("CartPole-v1").env_runners(num_env_runners=1)
              .training(lr=0.0005, train_batch_size_per_learner=100)
              .reporting(min_time_s_per_iteration=0, min_sample_timesteps_per_iteration=500))
    config = supervise(config, run_dir=run)
    algo = config.build_algo()
    lags, acted = [], None
    try:
        for i in range(12):
            if i == 2:
                ray.kill(algo._env_runner_state_server, no_restart=True)  # the env runners keep their weights
            result = algo.train()
            lags.append(normalize_result(result, "x")["metrics"].get("policy_lag"))
            if "sync_weights" in (result["supervisor"].get("actions") or []):
                acted = i
            if acted is not None and i >= acted + 3:
                break
        finish(algo)
    finally:
        algo.stop()
    assert acted is not None, lags
    t = build_report(run)["trials"][0]
    (f, *_) = [f for f in t["findings"] if f["detector"] == "policy_lag"]
    assert f["severity"] in ("warning", "critical") and f["value"] >= 12.0 and f["threshold"] == 12.0, lags
    (iv, *_) = [i for i in t["interventions"] if i["action"] == "sync_weights"]
    assert iv["verified"] is True, iv  # every env runner held the learner's weights
    assert max(lags[:2]) < 8.0  # healthy before the sync was lost
    after = [x for x in lags[acted + 1:] if x is not None]
    assert after and min(after) < lags[acted], lags  # the lag fell back once the runners had fresh weights
