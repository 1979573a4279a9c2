"""Real RLlib runs under supervision (one local Ray for the module):

* metrics_missing: a callback renames the learner's entropy key in every result (as a Ray upgrade could), and
  the supervisor says, once, that the entropy detectors are blind; it acts on nothing;
* policy_lag: APPO's weight sync is lost for real (RLlib's EnvRunnerStateServer, which the env runners pull
  new weights from, is killed), the lag runs away, the supervisor flags it and pushes the learner's weights to
  the env runners (sync_weights), verified on every runner; with the sync itself gone the pushed weights are
  outrun (the runners hold them unchanged while the learner moves on), the lag keeps growing, the push is
  judged ineffective and the ladder's next rung, restart_trial, is requested."""

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


def test_a_lost_weight_sync_is_flagged_pushed_and_then_restarted(local_ray, tmp_path):
    from ray.rllib.algorithms.appo import APPOConfig

    from actors.appliers.rllib.rollback import _env_runner_seq_no
    from actors.appliers.rllib.remote import foreach_env_runner
    from actors.rllib import RestartRequested, finish, supervise
    from supervisor.metrics import normalize_result

    run = tmp_path / "stale"
    # 10 batches of 50 steps an iteration, each trained twice (APPO's circular buffer, here 4 batches: the
    # policy_lag level is max(8, 1.5 x 4) = 8): 20 learner updates an iteration, so a lost sync adds about that
    # much lag an iteration (reported as it grows: supervised, APPO's results are kept current)
    config = (APPOConfig().environment("CartPole-v1").env_runners(num_env_runners=1)
              .training(lr=0.0005, train_batch_size_per_learner=50, circular_buffer_num_batches=4)
              .reporting(min_time_s_per_iteration=0, min_sample_timesteps_per_iteration=500))
    config = supervise(config, run_dir=run)
    algo = config.build_algo()
    lags, runner_seqs, acted, restarted = [], [], None, None
    try:
        for i in range(12):
            if i == 1:
                ray.kill(algo._env_runner_state_server, no_restart=True)  # the env runners keep their weights
            try:
                result = algo.train()
            except RestartRequested:
                restarted = i
                break
            lags.append(normalize_result(result, "x")["metrics"].get("policy_lag"))
            if "sync_weights" in (result["supervisor"].get("actions") or []):
                acted = i
                runner_seqs.append(foreach_env_runner(algo.env_runner_group, _env_runner_seq_no, timeout_s=30))
            elif acted is not None:
                runner_seqs.append(foreach_env_runner(algo.env_runner_group, _env_runner_seq_no, timeout_s=30))
        finish(algo)
    finally:
        algo.stop()
    assert lags[0] < 8.0, lags  # healthy before the sync was lost
    assert acted is not None and restarted is not None and restarted > acted, (lags, acted, restarted)
    t = build_report(run)["trials"][0]
    f, *_, g = [f for f in t["findings"] if f["detector"] == "policy_lag"]
    assert f["severity"] in ("warning", "critical") and f["value"] >= 8.0 and f["threshold"] == 8.0, lags
    assert f["iteration"] == acted + 1  # the push answered the first finding
    assert "still growing" in g["message"] and g["value"] >= f["value"] + 8.0, (f, g)
    sync, restart = [i for i in t["interventions"] if i["action"] in ("sync_weights", "restart_trial")]
    assert sync["action"] == "sync_weights" and sync["verified"] is True, sync  # every runner held the learner's
    assert sync["outcome"] == "ineffective", sync  # the lag kept growing past the pushed weights
    assert restart["action"] == "restart_trial" and "still growing" in restart["reason"], restart
    # why: with the sync gone nothing brings the runners newer weights than the pushed ones
    assert len({tuple(s) for s in runner_seqs}) == 1, runner_seqs
