"""Interventions on a live RLlib PPO algorithm (real PPO on CartPole-v1).

Every test runs for ``num_learners=0`` (local learner) and ``num_learners=1``
(remote learner actor). One algorithm is built per learner setting and shared
by the tests of that setting; each test asserts relative to the state it finds.
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ray = pytest.importorskip("ray")
pytest.importorskip("torch")
pytest.importorskip("ray.rllib")

from actors.appliers import rllib  # noqa: E402
from tests import rllib_helpers as helpers  # noqa: E402
from supervisor import actions  # noqa: E402

pytestmark = pytest.mark.slow

MODULE = "default_policy"
LR0 = 3e-4


@pytest.fixture(scope="module")
def ray_session():
    # address="local": always start a private instance, never attach to a
    # cluster someone else started on this machine.
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
    )
    # Test-local functions shipped to learner actors must not need this file
    # to be importable in the Ray workers.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.shutdown()


@pytest.fixture(scope="module", params=[0, 1], ids=["local_learner", "remote_learner"])
def algo(request, ray_session):
    from ray.rllib.algorithms.ppo import PPOConfig

    config = (
        PPOConfig()
        .environment("CartPole-v1")
        .env_runners(num_env_runners=1)
        .learners(num_learners=request.param)
        .training(
            lr=LR0,
            train_batch_size_per_learner=500,
            minibatch_size=250,
            num_epochs=1,
        )
        .debugging(seed=0)
    )
    a = config.build_algo()
    yield a
    a.stop()


def _learner_results(result):
    return result["learners"][MODULE]


def _train(algo):
    return _learner_results(algo.train())


def _kl_range(v):
    # PPO adapts the KL coeff after every update: x0.5, x1 or x1.5.
    return [v * 0.5, v, v * 1.5]


def _close_to_any(x, candidates, rel=1e-5):
    return any(math.isclose(float(x), c, rel_tol=rel, abs_tol=1e-12) for c in candidates)


# Runs on the learner (locally or inside the learner actor): feed a gradient
# of global norm ~O(100) through RLlib's own gradient postprocessing (where
# clipping happens) and return the resulting global norm.
def _clipped_norm_probe(learner, scale=10.0):
    import torch

    grads = {ref: torch.full_like(p, scale) for ref, p in learner._params.items()}
    raw = float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads.values())))
    out = learner.postprocess_gradients(grads)
    clipped = float(torch.sqrt(sum((g.double() ** 2).sum() for g in out.values())))
    cfg = learner.config.get_config_for_module(MODULE)
    return raw, clipped, cfg.grad_clip, cfg.grad_clip_by


def _probe(algo):
    res = [r.get() for r in algo.learner_group.foreach_learner(_clipped_norm_probe)]
    assert res and all(not isinstance(r, BaseException) for r in res), res
    return res[0]


# ---------------------------------------------------------------------------


def test_current_hparams(algo):
    hp = rllib.current_hparams(algo)
    assert set(hp) == {"lr", "entropy_coeff", "kl_coeff", "grad_clip", "vf_clip_param"}
    assert hp["vf_clip_param"] == pytest.approx(10.0)  # PPO default
    assert hp["lr"] == pytest.approx(LR0)
    assert hp["entropy_coeff"] == 0.0
    assert hp["kl_coeff"] > 0
    assert hp["grad_clip"] is None
    assert rllib.weights_finite(algo, include_env_runners=True)


def test_set_lr_sticks(algo):
    helpers.set_lr(algo, 1.234e-4)
    assert rllib.current_hparams(algo)["lr"] == pytest.approx(1.234e-4)
    for _ in range(2):
        assert _train(algo)["default_optimizer_learning_rate"] == pytest.approx(1.234e-4)
    helpers.set_lr(algo, LR0)
    assert rllib.current_hparams(algo)["lr"] == pytest.approx(LR0)


def test_set_entropy_coeff_sticks(algo):
    helpers.set_entropy_coeff(algo, 0.037)
    for _ in range(2):
        assert _train(algo)["curr_entropy_coeff"] == pytest.approx(0.037)
    assert rllib.current_hparams(algo)["entropy_coeff"] == pytest.approx(0.037)


def test_set_kl_coeff_takes_effect(algo):
    helpers.set_kl_coeff(algo, 0.8)
    assert rllib.current_hparams(algo)["kl_coeff"] == pytest.approx(0.8)
    r1 = _train(algo)["curr_kl_coeff"]
    assert _close_to_any(r1, _kl_range(0.8)), r1
    r2 = _train(algo)["curr_kl_coeff"]
    assert _close_to_any(r2, _kl_range(r1)), (r1, r2)  # kept adapting from 0.8, not reset
    assert rllib.current_hparams(algo)["kl_coeff"] == pytest.approx(r2)


def test_grad_clip_changes_effective_clip(algo):
    helpers.set_grad_clip(algo, None)
    raw, clipped, clip, clip_by = _probe(algo)
    assert clip is None and clipped == pytest.approx(raw)  # no clipping at all
    assert "gradients_default_optimizer_global_norm" not in _train(algo)

    start = actions.get("tighten_grad_clip").defaults["value"]  # the one default, documented and live
    out = helpers.apply_action(algo, "tighten_grad_clip", {})
    assert out["before"]["grad_clip"] is None
    assert out["after"]["grad_clip"] == pytest.approx(start)
    raw, clipped, clip, clip_by = _probe(algo)
    assert clip == pytest.approx(start) and clip_by == "global_norm"
    assert raw > 100 and clipped == pytest.approx(start, rel=1e-4)
    # The real update now goes through the clipping branch (which is what
    # reports the pre-clip global norm).
    res = _train(algo)
    assert np.isfinite(res["gradients_default_optimizer_global_norm"])

    out = helpers.apply_action(algo, "tighten_grad_clip", {})
    assert out["changed"]["grad_clip"] == [pytest.approx(start), pytest.approx(start / 2)]
    _raw, clipped, clip, _ = _probe(algo)
    assert clip == pytest.approx(start / 2) and clipped == pytest.approx(start / 2, rel=1e-4)
    assert np.isfinite(_train(algo)["gradients_default_optimizer_global_norm"])  # still clipping
    assert rllib.current_hparams(algo)["grad_clip"] == pytest.approx(start / 2)
    helpers.set_grad_clip(algo, None)
    assert rllib.current_hparams(algo)["grad_clip"] is None


def test_raise_vf_clip_lifts_the_value_loss_ceiling(algo):
    rllib.set_hparams(algo, {"vf_clip_param": 1e-3})
    assert rllib.current_hparams(algo)["vf_clip_param"] == pytest.approx(1e-3)
    assert _train(algo)["vf_loss"] <= 1e-3 + 1e-9  # every sample clipped: the loss sits at the clip
    out = helpers.apply_action(algo, "raise_vf_clip", {"factor": 1e4})
    assert out["changed"]["vf_clip_param"] == [pytest.approx(1e-3), pytest.approx(10.0)]
    assert _train(algo)["vf_loss"] > 1e-3  # the next update computes the loss with the new clip
    rllib.set_hparams(algo, {"vf_clip_param": 10.0})


def test_actions_take_effect_next_iteration_and_stick(algo):
    rllib.set_hparams(algo, {"lr": 2e-4, "entropy_coeff": 0.0, "kl_coeff": 0.0})
    assert rllib.current_hparams(algo)["kl_coeff"] == 0.0

    out = helpers.apply_action(algo, "reduce_lr", {})
    assert out["action"] == "reduce_lr"
    assert out["before"]["lr"] == pytest.approx(2e-4)
    assert out["after"]["lr"] == pytest.approx(2e-5)
    assert set(out["changed"]) == {"lr"}
    out = helpers.apply_action(algo, "increase_lr", {"factor": 3.0})
    assert out["after"]["lr"] == pytest.approx(6e-5)
    out = helpers.apply_action(algo, "reduce_lr", {"factor": 0.01, "min_lr": 1e-5})
    assert out["after"]["lr"] == pytest.approx(1e-5)

    out = helpers.apply_action(algo, "boost_entropy", {})
    assert out["after"]["entropy_coeff"] == pytest.approx(0.01)  # from 0 -> default
    out = helpers.apply_action(algo, "boost_entropy", {"factor": 3.0})
    assert out["after"]["entropy_coeff"] == pytest.approx(0.03)

    out = helpers.apply_action(algo, "raise_kl_coeff", {})
    assert out["after"]["kl_coeff"] == pytest.approx(0.2)  # from ~0 -> 0.2
    out = helpers.apply_action(algo, "raise_kl_coeff", {})
    assert out["after"]["kl_coeff"] == pytest.approx(0.4)

    r1 = _train(algo)
    assert r1["default_optimizer_learning_rate"] == pytest.approx(1e-5)
    assert r1["curr_entropy_coeff"] == pytest.approx(0.03)
    assert _close_to_any(r1["curr_kl_coeff"], _kl_range(0.4))
    r2 = _train(algo)
    assert r2["default_optimizer_learning_rate"] == pytest.approx(1e-5)
    assert r2["curr_entropy_coeff"] == pytest.approx(0.03)
    assert _close_to_any(r2["curr_kl_coeff"], _kl_range(r1["curr_kl_coeff"]))


def test_bad_actions(algo):
    with pytest.raises(ValueError):
        helpers.apply_action(algo, "explode", {})
    for handled_elsewhere in ("alert", "restart_trial", "stop_trial"):
        with pytest.raises(ValueError):
            helpers.apply_action(algo, handled_elsewhere, {})
    with pytest.raises(ValueError):
        helpers.apply_action(algo, "reduce_lr", {"factor": 2.0})
    with pytest.raises(ValueError):
        helpers.apply_action(algo, "rollback", {})
    with pytest.raises(ValueError):
        helpers.set_lr(algo, float("nan"))
    # Nothing above took a learner or env runner out of service.
    assert rllib.current_hparams(algo)["lr"] > 0
    assert len(rllib.env_runner_weights(algo)) == 2


def test_rollback_restores_weights_everywhere(algo, tmp_path):
    rllib.set_hparams(algo, {"lr": 3e-4, "entropy_coeff": 0.005, "grad_clip": None})
    _train(algo)
    iteration_at_save = algo.iteration
    path = rllib.save_checkpoint(algo, tmp_path / "ckpt")
    assert Path(path, "learner_group").is_dir()
    assert rllib.checkpoint_hparams(path)["entropy_coeff"] == pytest.approx(0.005)
    ckpt_w = rllib.module_weights(algo)
    ckpt_steps = helpers.optimizer_steps(algo)

    for _ in range(2):
        _train(algo)
    moved = rllib.module_weights(algo)
    assert any(not np.array_equal(moved[k], ckpt_w[k]) for k in ckpt_w), "training did not move the weights"
    runner_w = rllib.env_runner_weights(algo)
    assert "remote_1" in runner_w
    assert any(not np.array_equal(runner_w["remote_1"][k], ckpt_w[k]) for k in runner_w["remote_1"])
    assert helpers.optimizer_steps(algo) != ckpt_steps

    new_hp = {"lr": 1e-5, "entropy_coeff": 0.02}
    out = helpers.apply_action(algo, "rollback", {"path": path, "hparams": new_hp})
    assert out["action"] == "rollback" and out["checkpoint"] == str(path)
    assert out["after"]["lr"] == pytest.approx(1e-5)
    assert out["after"]["entropy_coeff"] == pytest.approx(0.02)

    # learner == checkpoint (weights and optimizer state)
    lw = rllib.module_weights(algo)
    assert set(lw) == set(ckpt_w)
    for k in ckpt_w:
        np.testing.assert_array_equal(lw[k], ckpt_w[k], err_msg=k)
    assert helpers.optimizer_steps(algo) == ckpt_steps
    # env runners (remote and local) == learner (inference-only subset)
    runner_w = rllib.env_runner_weights(algo)
    assert set(runner_w) == {"local", "remote_1"}
    for name, w in runner_w.items():
        assert w and set(w) <= set(lw)
        for k in w:
            np.testing.assert_array_equal(w[k], lw[k], err_msg=f"{name}:{k}")
    assert rllib.weights_finite(algo, include_env_runners=True)

    # hparams re-applied and in effect on the next two iterations; counters kept
    hp = rllib.current_hparams(algo)
    assert hp["lr"] == pytest.approx(1e-5) and hp["entropy_coeff"] == pytest.approx(0.02)
    for _ in range(2):
        res = algo.train()
        lr_ = _learner_results(res)
        assert lr_["default_optimizer_learning_rate"] == pytest.approx(1e-5)
        assert lr_["curr_entropy_coeff"] == pytest.approx(0.02)
    assert res["training_iteration"] == iteration_at_save + 4
    # training continued from the restored weights and reached the runners again
    after = rllib.module_weights(algo)
    runner_w = rllib.env_runner_weights(algo)["remote_1"]
    for k in runner_w:
        np.testing.assert_array_equal(runner_w[k], after[k], err_msg=k)


def test_rollback_without_hparams_keeps_current_ones(algo, tmp_path):
    rllib.set_hparams(algo, {"lr": 3e-4})
    path = rllib.save_checkpoint(algo, tmp_path / "ckpt")
    ckpt_w = rllib.module_weights(algo)
    rllib.set_hparams(algo, {"lr": 7e-5, "entropy_coeff": 0.011})
    _train(algo)
    out = rllib.rollback(algo, path)
    assert out["changed"] == {}
    assert out["sync"]["learner_seq_no"] == out["weights_seq_no"]
    assert all(s == out["weights_seq_no"] for s in out["sync"]["env_runner_group_seq_nos"])
    lw = rllib.module_weights(algo)
    for k in ckpt_w:
        np.testing.assert_array_equal(lw[k], ckpt_w[k])
    # the checkpoint's optimizer lr (3e-4) must not leak into the next update
    res = _train(algo)
    assert res["default_optimizer_learning_rate"] == pytest.approx(7e-5)
    assert res["curr_entropy_coeff"] == pytest.approx(0.011)
    assert rllib.weights_finite(algo)


def test_rollback_falls_back_when_rllib_push_is_lost(algo, tmp_path, monkeypatch):
    # Simulate RLlib dropping the async weight push (it does so silently when
    # another "set_state" request to that runner is still in flight).
    path = rllib.save_checkpoint(algo, tmp_path / "ckpt")
    ckpt_w = rllib.module_weights(algo)
    _train(algo)
    monkeypatch.setattr(algo.env_runner_group, "sync_weights", lambda *a, **k: None)
    out = rllib.rollback(algo, path)
    monkeypatch.undo()
    assert out["sync"]["fallback_push"] is True
    assert all(s == out["weights_seq_no"] for s in out["sync"]["env_runner_group_seq_nos"])
    for name, w in rllib.env_runner_weights(algo).items():
        for k in w:
            np.testing.assert_array_equal(w[k], ckpt_w[k], err_msg=f"{name}:{k}")
    # and the normal per-iteration sync still works afterwards
    _train(algo)
    lw = rllib.module_weights(algo)
    for k, v in rllib.env_runner_weights(algo)["remote_1"].items():
        np.testing.assert_array_equal(v, lw[k], err_msg=k)
