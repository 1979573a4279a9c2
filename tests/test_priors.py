"""Priors from the trial's own config and spaces: faults caught from iteration 1, no false alarm from no-data.

Synthetic streams with a known onset (iteration 0 for faults present from the start), asserting when
and what fires; the recorded real runs are measured in benchmarks/detection.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.synthetic import run_detectors
from supervisor.detectors import build_detectors
from supervisor.engine import Engine
from supervisor.health import HealthScore
from supervisor.findings import Finding
from supervisor.metrics import drop_no_data
from supervisor.priors import GAUSSIAN_UNIT_ENTROPY, Priors
from supervisor.store import Store

CARTPOLE = {"algorithm": "PPO", "kl_target": 0.01, "clip_param": 0.3, "vf_clip_param": 10.0,
            "action_kind": "discrete", "action_dim": 2}
PENDULUM = {**CARTPOLE, "action_kind": "continuous", "action_dim": 1}


def healthy(i: int, rng) -> dict:
    """A PPO iteration of a healthy discrete run: KL near kl_target, entropy slowly falling, return rising."""
    return {"approx_kl": float(0.01 * rng.uniform(0.5, 2.0)), "kl": 0.01, "clip_fraction": float(rng.uniform(0.03, 0.15)),
            "entropy": 0.69 - 0.004 * i, "entropy_coeff": 0.0, "vf_clip_fraction": float(rng.uniform(0.3, 0.9)),
            "vf_loss": 8.0, "grad_norm_value": 0.05, "explained_variance": 0.2, "lr": 3e-4,
            "episode_return_mean": 20.0 + 8 * i + float(rng.normal(0, 2))}


def stream(n: int, seed: int = 0, **override) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{**healthy(i, rng), **override} for i in range(n)]


def fired(findings, detector: str) -> list[tuple[int, str]]:
    return [(f.iteration, f.severity) for f in findings if f.detector == detector]


def suite(priors=CARTPOLE):
    return build_detectors(priors=priors)


def test_priors_from_plain_data():
    p = Priors.from_dict(CARTPOLE)
    assert p.max_entropy == pytest.approx(math.log(2)) and p.kl_target == 0.01 and p.algorithm == "PPO"
    assert Priors.from_dict(PENDULUM).max_entropy == pytest.approx(GAUSSIAN_UNIT_ENTROPY)
    junk = Priors.from_dict({"kl_target": "x", "clip_param": -1, "action_kind": "weird", "action_dim": True})
    assert not junk.known
    assert Priors.from_dict(None) == Priors()


def test_healthy_stream_with_priors_raises_nothing():
    for seed in range(20):
        assert [f for f in run_detectors(suite(), stream(40, seed)) if f.severity != "info"] == []


@pytest.mark.parametrize("kl, severity", [(0.5, "warning"), (1.5, "critical")])
def test_update_too_large_from_iteration_1(kl, severity):
    s = stream(10, approx_kl=kl, clip_fraction=0.85)
    got = fired(run_detectors(suite(), s), "update_too_large")
    assert got[0] == (0, severity)
    # the threshold follows the trial's own kl_target
    lax = fired(run_detectors(suite({**CARTPOLE, "kl_target": 0.5}), stream(10, approx_kl=kl)), "update_too_large")
    assert lax == ([] if kl < 10 * 0.5 else lax)


def test_clip_fraction_alone_is_enough():
    got = fired(run_detectors(suite(), stream(5, clip_fraction=0.9)), "update_too_large")
    assert got and got[0][0] == 0


def test_value_loss_clipped_on_every_sample():
    got = fired(run_detectors(suite(), stream(10, vf_clip_fraction=1.0, vf_loss=10.0)), "value_loss_clipped")
    assert got == [(2, "warning")]  # 3 consecutive iterations, then once (repeat 50)
    # partial clipping (CartPole's default runs) is not a finding
    assert fired(run_detectors(suite(), stream(10, vf_clip_fraction=0.99)), "value_loss_clipped") == []
    # without the learner's fraction: a value gradient of exactly 0 with the loss at vf_clip_param
    s = [{k: v for k, v in m.items() if k != "vf_clip_fraction"} | {"grad_norm_value": 0.0, "vf_loss": 10.0}
         for m in stream(6)]
    assert fired(run_detectors(suite(), s), "value_loss_clipped") == [(2, "warning")]
    assert fired(run_detectors(suite({}), s), "value_loss_clipped") == []  # no vf_clip_param known


def test_entropy_saturated_names_the_bonus():
    s = stream(8, entropy=0.6929, entropy_coeff=5.0, approx_kl=0.002, clip_fraction=0.0)
    f = [x for x in run_detectors(suite(), s) if x.detector == "entropy_saturated"]
    assert [(x.iteration, x.severity) for x in f] == [(2, "warning")]
    assert "entropy_coeff=5" in f[0].message
    assert fired(run_detectors(suite(), stream(8, entropy=0.6929)), "entropy_saturated") == []  # coeff 0
    # continuous: the policy's std grew past the initial unit Gaussian
    wide = stream(8, entropy=GAUSSIAN_UNIT_ENTROPY + 1.0, entropy_coeff=0.5)
    assert fired(run_detectors(suite(PENDULUM), wide), "entropy_saturated")[0][0] == 2


def test_entropy_saturated_waits_for_a_reward_signal():
    """A sparse-reward task before its first success (RLlib's IMPALA on Acrobot, default config: -500, the
    episode cap, on every episode for 21k steps): no return differs, so the policy gradient has no signal
    and the default bonus holds the entropy at its maximum. That is no fault of the bonus: one info note,
    no warning; from the first return that differs the rule judges again, with the same patience."""
    acrobot = {**CARTPOLE, "action_dim": 3}
    flat = stream(8, entropy=0.995 * math.log(3), entropy_coeff=0.01, episode_return_mean=-500.0,
                  episode_return_min=-500.0, episode_return_max=-500.0)
    f = [(x.iteration, x.severity, x.details.get("no_signal")) for x in run_detectors(suite(acrobot), flat)
         if x.detector == "entropy_saturated"]
    assert f == [(2, "info", True)]  # three reports (the rule's patience) with the same return: no signal
    # a first success at iteration 8: the returns differ from then on, and the saturation is the bonus's
    later = flat + stream(6, seed=1, entropy=0.995 * math.log(3), entropy_coeff=0.01, episode_return_mean=-400.0,
                          episode_return_min=-500.0, episode_return_max=-120.0)
    assert fired(run_detectors(suite(acrobot), later), "entropy_saturated") == [(2, "info"), (10, "warning")]
    # reports that finished no episode repeat a windowed mean: no evidence that every episode returned it
    repeats = stream(8, entropy=0.995 * math.log(3), entropy_coeff=0.01, episode_return_mean=-300.0,
                     num_episodes=0.0)
    assert fired(run_detectors(suite(acrobot), repeats), "entropy_saturated") == [(2, "warning")]
    # no return reported at all: no evidence of a missing signal, the rule as before
    assert fired(run_detectors(suite(acrobot), stream(8, entropy=0.995 * math.log(3), entropy_coeff=0.01,
                                                            episode_return_mean=float("nan"))),
                 "entropy_saturated")[0][0] == 2


def test_no_learning_when_frozen():
    got = fired(run_detectors(suite(), stream(8, approx_kl=3e-8, clip_fraction=0.0)), "no_learning")
    assert got == [(2, "warning")]


def test_premature_convergence_at_the_starting_return():
    rng = np.random.default_rng(1)
    s = [{**healthy(i, rng), "entropy": 0.6 if i < 3 else 0.02, "episode_return_mean": 20.0 + rng.normal(0, 1)}
         for i in range(12)]
    got = fired(run_detectors(suite(), s), "premature_convergence")
    assert got and got[0] == (6, "warning")  # judged after 5 iterations, 2 in a row
    assert fired(run_detectors(suite(PENDULUM), s), "premature_convergence") == []  # discrete only


def test_entropy_collapse_reference_from_the_action_space():
    s = stream(10, entropy=0.03)  # collapsed from iteration 1: the run's own early median is low too
    assert fired(run_detectors(suite(), s), "entropy_collapse")[0] == (1, "warning")
    assert fired(run_detectors(build_detectors(), s), "entropy_collapse") == []  # blind without priors
    assert fired(run_detectors(suite(PENDULUM), s), "entropy_collapse") == []  # Gaussian: no natural 0


def test_value_collapse_needs_a_critic_that_learned():
    pinned = stream(12, vf_loss=10.0, explained_variance=0.0, vf_clip_fraction=0.9)
    assert fired(run_detectors(suite(), pinned), "value_collapse") == []
    learned = stream(6, vf_loss=5.0) + stream(8, vf_loss=10.0, explained_variance=0.0)
    assert fired(run_detectors(suite(), learned), "value_collapse")[0] == (10, "critical")  # 5 pinned values


def test_no_data_is_not_a_fault():
    nan = float("nan")
    m = drop_no_data({"episode_return_mean": nan, "episode_return_max": nan, "episode_len_mean": nan,
                      "num_episodes": 0.0, "grad_norm_ratio": math.inf, "grad_norm_value": 0.0, "vf_loss": 10.0})
    assert m == {"num_episodes": 0.0, "grad_norm_value": 0.0, "vf_loss": 10.0}
    # a NaN return of finished episodes is evidence (NaN rewards); so is a ratio with a live denominator
    assert math.isnan(drop_no_data({"episode_return_mean": nan, "num_episodes": 3.0})["episode_return_mean"])
    assert drop_no_data({"grad_norm_ratio": math.inf, "grad_norm_value": 1e-3})["grad_norm_ratio"] == math.inf
    # a learner that made no update (async APPO/IMPALA) reports NaN for everything, hyperparameters too
    assert drop_no_data({"lr": nan, "policy_loss": nan, "entropy": nan, "env_steps_lifetime": 10.0}) == \
        {"env_steps_lifetime": 10.0}
    assert [f for f in run_detectors(suite(), [drop_no_data({"episode_return_mean": nan, "num_episodes": 0.0,
                                                             "grad_norm_ratio": math.inf,
                                                             "grad_norm_value": 0.0})])] == []


def test_health_score_never_contradicts_the_worst_severity():
    h = HealthScore()
    h.observe(0, [Finding("non_finite", "critical", "total_loss", math.inf, "x")])
    snap = h.snapshot(500)
    assert snap["worst_severity"] == "critical" and snap["score"] <= 0.75
    h2 = HealthScore()
    h2.observe(0, [Finding("kl_spike", "warning", "kl", 1.0, "x")])
    assert 0.9 < h2.snapshot(500)["score"] <= 0.95
    h3 = HealthScore()
    h3.observe(0, [Finding("plateau", "info", None, None, "x")])
    assert h3.snapshot(500)["score"] == 1.0


def test_engine_keeps_the_priors_across_a_rebuild(tmp_path):
    store = Store(tmp_path / "supervisor.db")
    eng = Engine(store)
    eng.register_trial("t", "r", config={"priors": CARTPOLE})
    v = eng.observe({"trial_id": "t", "seq": 0, "iteration": 1, "metrics": stream(1, approx_kl=1.5)[0]})
    assert [f["detector"] for f in v.findings] == ["update_too_large"]
    assert [a["action"] for a in v.actions] == ["reduce_lr"]
    eng2 = Engine(store)  # the actor restarted: the trial is rebuilt from the store, priors included
    eng2.register_trial("t", "r")
    assert eng2.trials["t"].detectors[0].priors.kl_target == 0.01
    store.close()


def test_a_fault_between_its_reports_is_not_health(tmp_path):
    """A detector reports a lasting fault again only every ``repeat`` iterations: in between the trial is
    not healthy enough to checkpoint, and the action taken is not judged effective."""
    store = Store(tmp_path / "supervisor.db")
    eng = Engine(store)
    eng.register_trial("t", "r", config={"priors": CARTPOLE})
    checkpoints, actions = [], []
    for i, m in enumerate(stream(25, approx_kl=0.5)):  # 50 x kl_target on every update
        v = eng.observe({"trial_id": "t", "seq": i, "iteration": i + 1, "metrics": m})
        checkpoints += [i] if v.checkpoint else []
        actions += [(i, a["action"]) for a in v.actions]
    assert checkpoints == []
    assert actions[0] == (1, "reduce_lr")  # a warning acts once confirmed: its alarm held 2 reports
    outcomes = {iv["action"]: iv["outcome"] for iv in store.interventions("t")}
    assert outcomes["reduce_lr"] == "ineffective"
    store.close()
