"""metrics_missing on a real RLlib run: a callback renames the learner's entropy key in every result (as a Ray
upgrade could), and the supervisor says, once, that the entropy detectors are blind; it acts on nothing."""

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
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
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
