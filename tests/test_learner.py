"""SupervisedPPOTorchLearner on a real PPO (CartPole-v1), local and remote learner."""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # plain `pytest` puts tests/, not the repo root, on sys.path
    sys.path.insert(0, REPO)

ray = pytest.importorskip("ray")
torch = pytest.importorskip("torch")
pytest.importorskip("ray.rllib")

from ray.rllib.algorithms.ppo import PPOConfig  # noqa: E402
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner  # noqa: E402

from actors import compat  # noqa: E402
import actors.learner as sup_learner  # noqa: E402
from actors.learner import (  # noqa: E402
    SUP_KEYS,
    SupervisedPPOTorchLearner,
    _branch_of,
    _moments,
    use_supervised_learner,
)

MODULE = "default_policy"


@pytest.fixture(scope="module")
def ray_session():
    # Remote learners must import actors.learner: give the workers the repo root.
    pythonpath = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH", "")) if p)
    # address="local": always a fresh local Ray, never a cluster another process
    # started on this machine (`ray start`), which ray.init() would otherwise join.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": pythonpath}})
    yield
    ray.shutdown()


def _config(num_learners: int = 0, seed: int | None = None, **training) -> PPOConfig:
    cfg = (
        PPOConfig()
        .environment("CartPole-v1")
        .env_runners(num_env_runners=0)
        .learners(num_learners=num_learners)
        .training(train_batch_size_per_learner=500, minibatch_size=125, num_epochs=2, **training)
    )
    if seed is not None:
        cfg = cfg.debugging(seed=seed)
    return cfg


def _check_result(result) -> dict:
    m = result["learners"][MODULE]
    sup = {k: float(m[k]) for k in SUP_KEYS if k in m}
    missing = set(SUP_KEYS) - set(sup)
    assert not missing, f"missing keys: {sorted(missing)}"
    for k, v in sup.items():
        assert math.isfinite(v), (k, v)
    assert sup["sup_grad_norm_max"] >= sup["sup_grad_norm_mean"] > 0
    assert sup["sup_grad_norm_policy"] > 0 and sup["sup_grad_norm_value"] > 0
    # The global norm covers both branches (mean of norms, so <= is loose but true).
    assert sup["sup_grad_norm_mean"] >= max(sup["sup_grad_norm_policy"], sup["sup_grad_norm_value"]) * (1 - 1e-6)
    assert sup["sup_grad_norm_ratio"] == pytest.approx(
        sup["sup_grad_norm_policy"] / sup["sup_grad_norm_value"], rel=1e-6)
    assert 0.0 <= sup["sup_clip_fraction"] <= 1.0
    assert 0.0 <= sup["sup_vf_clip_fraction"] <= 1.0
    assert sup["sup_approx_kl"] >= 0.0
    assert sup["sup_advantage_std"] > 0
    assert sup["sup_advantage_standardized"] == 0.0  # raw (pre-standardization) stats
    assert sup["sup_value_target_scale"] > 0
    return sup


@pytest.mark.slow
def test_local_learner_metrics(ray_session, monkeypatch):
    """num_learners=0: keys present and finite, reduces match per-minibatch values."""
    # Record every minibatch's norms independently of the code under test, and the
    # raw advantages as RLlib's GAE computes them (values, value targets) in numpy.
    per_mb = []
    orig_grad = SupervisedPPOTorchLearner._sup_grad_stats

    def recording_grad_stats(self, grads):
        orig_grad(self, grads)
        params, _, counts = self._sup_groups()[MODULE]
        g = [grads[p] for p in params]
        a, b = counts[0], counts[0] + counts[1]
        n = lambda xs: float(torch.linalg.vector_norm(torch.stack([x.norm() for x in xs])))  # noqa: E731
        per_mb.append((n(g), n(g[:a]), n(g[a:b])))

    monkeypatch.setattr(SupervisedPPOTorchLearner, "_sup_grad_stats", recording_grad_stats)

    gae_calls = []
    import ray.rllib.connectors.learner.general_advantage_estimation as gae_mod
    orig_cvt = gae_mod.compute_value_targets

    def recording_cvt(*, values, **kw):
        vt = orig_cvt(values=values, **kw)
        gae_calls.append((np.asarray(values, dtype=np.float64), np.asarray(vt, dtype=np.float64)))
        return vt

    monkeypatch.setattr(gae_mod, "compute_value_targets", recording_cvt)
    seen = {}
    orig_raw = sup_learner.SupervisedGeneralAdvantageEstimation._log_raw_stats

    def recording_raw(self, batch, vf_preds, metrics):
        seen["mask"] = batch[MODULE]["loss_mask"].numpy().astype(bool)
        seen["adv"] = batch[MODULE]["advantages"].numpy().astype(np.float64)
        return orig_raw(self, batch, vf_preds, metrics)

    monkeypatch.setattr(sup_learner.SupervisedGeneralAdvantageEstimation, "_log_raw_stats", recording_raw)

    # CleanRL's definitions, per minibatch, from torch.distributions (not the learner's
    # fast path), pooled over the loss-masked rows of the iteration.
    kl_rows = []
    orig_loss = SupervisedPPOTorchLearner._sup_loss_stats

    def recording_loss_stats(self, module_id, config, batch, fwd_out, vf_preds=None):
        with torch.no_grad():
            dist = torch.distributions.Categorical(logits=fwd_out["action_dist_inputs"])
            logratio = dist.log_prob(batch["actions"]) - batch["action_logp"]
            mask = batch["loss_mask"].bool()
            logratio = logratio[mask]
            ratio = logratio.exp()
            # The value loss RLlib clamps, from a fresh critic pass (same pre-step weights).
            values = self.module[module_id].unwrapped().compute_values(batch)
            sq = (values - batch["value_targets"])[mask] ** 2
            kl_rows.append((((ratio - 1.0).abs() > config.clip_param).float(), (ratio - 1) - logratio,
                            (sq > config.vf_clip_param).float()))
        return orig_loss(self, module_id, config, batch, fwd_out, vf_preds)

    monkeypatch.setattr(SupervisedPPOTorchLearner, "_sup_loss_stats", recording_loss_stats)

    # A small clip range and a larger lr, so that some ratios do leave it.
    algo = use_supervised_learner(_config(lr=1e-3, clip_param=0.05)).build_algo()
    clip_fractions = []
    try:
        for _ in range(2):
            per_mb.clear()
            gae_calls.clear()
            seen.clear()
            kl_rows.clear()
            sup = _check_result(algo.train())
            clip_fractions.append(sup["sup_clip_fraction"])

            clipped = torch.cat([c for c, _, _ in kl_rows])
            kl = torch.cat([k for _, k, _ in kl_rows])
            vf_clipped = torch.cat([v for _, _, v in kl_rows])
            assert sup["sup_clip_fraction"] == pytest.approx(float(clipped.mean()), abs=1e-6)
            assert sup["sup_vf_clip_fraction"] == pytest.approx(float(vf_clipped.mean()), abs=1e-6)
            assert sup["sup_approx_kl"] == pytest.approx(float(kl.mean()), rel=1e-4, abs=1e-8)

            # Max and mean over all minibatches of the iteration (not the last one).
            assert len(per_mb) >= 8  # 2 epochs x >= 4 minibatches
            tot = [t for t, _, _ in per_mb]
            assert sup["sup_grad_norm_max"] == pytest.approx(max(tot), rel=1e-5)
            assert sup["sup_grad_norm_mean"] == pytest.approx(np.mean(tot), rel=1e-5)
            assert sup["sup_grad_norm_policy"] == pytest.approx(np.mean([p for _, p, _ in per_mb]), rel=1e-5)
            assert sup["sup_grad_norm_value"] == pytest.approx(np.mean([v for _, _, v in per_mb]), rel=1e-5)

            # Raw advantages = value targets - value predictions, on loss-masked rows.
            (values, vt), = gae_calls
            mask, std_adv = seen["mask"], seen["adv"]
            raw = vt - values
            # RLlib standardizes over all rows (incl. the artificial bootstrap step).
            np.testing.assert_allclose(std_adv, (raw - raw.mean()) / max(1e-4, raw.std()), atol=1e-4)
            r = raw[mask]
            assert sup["sup_advantage_mean"] == pytest.approx(r.mean(), rel=1e-4, abs=1e-4)
            assert sup["sup_advantage_std"] == pytest.approx(r.std(), rel=1e-4)
            z = (r - r.mean()) / r.std()
            assert sup["sup_advantage_skew"] == pytest.approx(np.mean(z ** 3), rel=1e-3, abs=1e-4)
            assert sup["sup_advantage_kurtosis"] == pytest.approx(np.mean(z ** 4) - 3, rel=1e-3, abs=1e-4)
            assert sup["sup_value_target_scale"] == pytest.approx(np.abs(vt[mask]).mean(), rel=1e-4)
        assert max(clip_fractions) > 0
        # The instrumentation did not replace RLlib's own keys.
        m = algo.train()["learners"][MODULE]
        for k in ("policy_loss", "vf_loss", "entropy", "mean_kl_loss", "total_loss"):
            assert k in m

        # Fallback when the raw advantages are not accessible: the standardized ones
        # the loss reads, flagged as such.
        algo.learner_group._learner._sup_gae = None
        monkeypatch.setattr(sup_learner.SupervisedGeneralAdvantageEstimation, "_log_raw_stats",
                            lambda self, *a: None)
        m = algo.train()["learners"][MODULE]
        assert m["sup_advantage_standardized"] == 1.0
        assert abs(m["sup_advantage_mean"]) < 0.1
        assert m["sup_advantage_std"] == pytest.approx(1.0, abs=0.1)
        for k in SUP_KEYS:
            assert math.isfinite(float(m[k])), k
    finally:
        algo.stop()


@pytest.mark.slow
def test_same_update_as_stock_learner(ray_session):
    """Same seed, one iteration: identical weights with and without instrumentation."""
    weights = []
    for cfg in (_config(seed=7), use_supervised_learner(_config(seed=7))):
        algo = cfg.build_algo()
        try:
            algo.train()
            w = algo.learner_group.get_weights()[MODULE]
            weights.append({k: np.asarray(v) for k, v in w.items()})
        finally:
            algo.stop()
    assert weights[0].keys() == weights[1].keys()
    for k in weights[0]:
        np.testing.assert_allclose(weights[0][k], weights[1][k], rtol=1e-6, atol=1e-7, err_msg=k)


@pytest.mark.slow
def test_remote_learner_metrics(ray_session):
    """num_learners=1: the learner runs in its own actor; the keys still arrive."""
    algo = use_supervised_learner(_config(num_learners=1)).build_algo()
    try:
        for _ in range(2):
            _check_result(algo.train())
    finally:
        algo.stop()


@pytest.mark.slow
def test_vf_clip_fraction(ray_session):
    """sup_vf_clip_fraction is 1 when vf_clip_param is tiny, 0 when huge, and agrees with
    RLlib's own clipped / unclipped value losses."""
    seen = {}
    for vf_clip in (1e-6, 1e6):
        algo = use_supervised_learner(_config(seed=3, vf_clip_param=vf_clip)).build_algo()
        try:
            m = algo.train()["learners"][MODULE]
        finally:
            algo.stop()
        seen[vf_clip] = m
        assert math.isfinite(float(m["sup_vf_clip_fraction"]))
    tiny, huge = seen[1e-6], seen[1e6]
    assert tiny["sup_vf_clip_fraction"] == 1.0
    # Every row clipped: RLlib's mean clipped loss is the clip value itself.
    assert float(tiny["vf_loss"]) == pytest.approx(1e-6, rel=1e-3)
    assert huge["sup_vf_clip_fraction"] == 0.0
    # Nothing clipped: clipped and unclipped losses agree.
    assert float(huge["vf_loss"]) == pytest.approx(float(huge["vf_loss_unclipped"]), rel=1e-5)


# ---- no Ray needed below ------------------------------------------------------------

def test_use_supervised_learner_sets_class_and_is_idempotent():
    cfg = use_supervised_learner(PPOConfig())
    assert cfg.learner_class is SupervisedPPOTorchLearner
    assert use_supervised_learner(cfg).learner_class is SupervisedPPOTorchLearner

    class Mine(SupervisedPPOTorchLearner):
        pass

    cfg = PPOConfig()
    compat.set_learner_class(cfg, Mine)
    assert use_supervised_learner(cfg).learner_class is Mine

    class Foreign(PPOTorchLearner):
        pass

    cfg = PPOConfig()
    compat.set_learner_class(cfg, Foreign)
    with pytest.raises(ValueError, match="SupervisedPPOTorchLearner"):
        use_supervised_learner(cfg)
    with pytest.raises(ValueError):
        use_supervised_learner(object())


def test_branch_classification():
    assert _branch_of("encoder.actor_encoder.net.mlp.0.weight") == 0
    assert _branch_of("pi.net.mlp.0.bias") == 0
    assert _branch_of("encoder.critic_encoder.net.mlp.2.weight") == 1
    assert _branch_of("vf.net.mlp.0.weight") == 1
    assert _branch_of("module._orig_mod.vf.net.mlp.0.weight") == 1  # DDP / compile wrappers
    assert _branch_of("encoder.encoder.net.mlp.0.weight") == 2  # vf_share_layers=True


def test_moments_match_numpy():
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 3.0, size=5000)
    mean, std, skew, kurt = _moments(torch.tensor(x, dtype=torch.float64))
    z = (x - x.mean()) / x.std()
    assert mean == pytest.approx(x.mean(), rel=1e-9)
    assert std == pytest.approx(x.std(), rel=1e-9)
    assert skew == pytest.approx(np.mean(z ** 3), rel=1e-9)
    assert kurt == pytest.approx(np.mean(z ** 4) - 3.0, rel=1e-9)
    # A constant batch gives 0 spread and 0 (not NaN) shape statistics.
    assert _moments(torch.ones(10)) == [1.0, 0.0, 0.0, 0.0]
