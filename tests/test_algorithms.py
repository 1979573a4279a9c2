"""APPO, IMPALA, DQN and SAC without Ray: the per-algorithm table, config, metrics, the off-policy
detectors, the new actions' plans and the engine's per-algorithm detectors and ladders.

The result dicts below carry the keys Ray 2.60's new API stack reports for these algorithms (taken from
real iterations: CartPole DQN, Pendulum SAC, CartPole APPO)."""

from __future__ import annotations

import math

import pytest

from supervisor import actions, algorithms
from supervisor.config import Experiment, Sweep
from supervisor.detectors import DETECTORS, DetectorSuite, build_detectors
from supervisor.detectors.alpha_collapse import AlphaCollapse
from supervisor.detectors.alpha_runaway import AlphaRunaway
from supervisor.detectors.exploration_too_short import ExplorationTooShort
from supervisor.detectors.q_divergence import QDivergence
from supervisor.detectors.td_error_explosion import TDErrorExplosion
from supervisor.engine import Engine
from supervisor.config import SupervisorConfig
from supervisor.history import History
from supervisor.metrics import normalize_result
from supervisor.policy import DEFAULT_LADDERS, EscalationPolicy, PolicyState
from supervisor.findings import Finding
from supervisor.store import Store

DQN_RESULT = {
    "training_iteration": 3,
    "env_runners": {"episode_return_mean": 28.57, "episode_return_max": 69.0, "episode_return_min": 11.0,
                    "episode_len_mean": 28.57, "num_episodes": 7, "num_env_steps_sampled_lifetime": 600.0},
    "replay_buffer": {"num_env_steps_stored": 500.5, "num_env_steps_added_lifetime": 600.0,
                      "num_env_steps_sampled_lifetime": 16032.0},
    "learners": {"__all_modules__": {}, "default_policy": {
        "qf_loss": 0.00278, "default_optimizer_learning_rate": 0.0005, "total_loss": 0.00278, "td_error_mean": 0.164,
        "qf_mean": 1.268, "qf_max": 1.352, "qf_min": 1.082, "gradients_default_optimizer_global_norm": 0.0429,
        "last_target_update_ts": 500.0, "num_target_updates": 1.0}},
    "supervisor_extra": {"epsilon": 0.95},
}
SAC_RESULT = {
    "training_iteration": 2,
    "env_runners": {"episode_return_mean": -881.7, "episode_return_max": -881.7, "episode_return_min": -881.7,
                    "episode_len_mean": 200.0, "num_episodes": 1},
    "learners": {"default_policy": {
        "total_loss": 3.25, "qf_loss": 1.18, "qf_twin_loss": 1.22, "target_entropy": -1.0, "qf_learning_rate": 3e-4,
        "qf_twin_learning_rate": 3e-4, "alpha_learning_rate": 3e-4, "policy_learning_rate": 3e-5, "qf_min": -3.12,
        "qf_max": 0.331, "num_target_updates": 7.0, "policy_loss": 0.856, "alpha_loss": -0.00217,
        "log_alpha_value": -0.00135, "qf_mean": -1.459, "alpha_value": 0.9986, "logps": -0.604,
        "td_error_mean": 4.70}},
}
APPO_RESULT = {
    "training_iteration": 3,
    "env_runners": {"episode_return_mean": 46.7, "num_episodes": 20},
    "learners": {"default_policy": {
        "vf_loss": 10.01, "curr_entropy_coeff": 0.01, "var_IS": 0.0862, "mean_kl_loss": 0.0,
        "default_optimizer_learning_rate": 0.0005, "total_loss": 0.95, "gradients_default_optimizer_global_norm": 11.0,
        "mean_IS": 1.08, "diff_num_grad_updates_vs_sampler_policy": 6.1, "curr_kl_coeff": 1.0, "entropy": 0.644,
        "policy_loss": -4.05}},
}


# --------------------------------------------------------------------------- the table, config


def test_every_algorithm_is_accepted_and_unknown_names_the_supported_ones():
    base = {"name": "x", "env": "CartPole-v1", "stop": {"iterations": 1}}
    for name in algorithms.NAMES:
        assert Experiment.model_validate({**base, "algorithm": name}).algorithm == name
    assert Experiment.model_validate({**base, "algorithm": "dqn"}).algorithm == "DQN"
    with pytest.raises(ValueError, match="supported: PPO, APPO, IMPALA, DQN, SAC"):
        Experiment.model_validate({**base, "algorithm": "TD3"})


def test_table_names_only_real_detectors_and_actions_and_hparams():
    for spec in algorithms.ALGORITHMS.values():
        assert spec.detectors <= set(DETECTORS), spec.name
        assert set(spec.hparams) <= set(actions.HPARAMS), spec.name
        for det, ladder in spec.ladders.items():
            assert det in spec.detectors, (spec.name, det)
            assert all(a in actions.ACTIONS for step in ladder for a in step)


def test_detectors_that_do_not_apply_are_not_run():
    dqn = set(build_detectors(algorithm="DQN").names)
    assert {"q_divergence", "td_error_explosion", "exploration_too_short", "non_finite"} <= dqn
    assert not dqn & {"kl_spike", "kl_controller_stuck", "advantage_anomaly", "entropy_collapse", "alpha_collapse"}
    sac = set(build_detectors(algorithm="SAC").names)
    assert {"alpha_collapse", "alpha_runaway", "q_divergence"} <= sac and "entropy_collapse" not in sac
    ppo = set(build_detectors(algorithm="PPO").names)
    assert "kl_spike" in ppo and not ppo & {"q_divergence", "alpha_collapse", "exploration_too_short"}
    assert "kl_spike" in set(build_detectors(algorithm="APPO").names)
    assert set(build_detectors().names) == set(DETECTORS)  # unknown algorithm (scan): all of them


def test_sweep_over_algorithms():
    base = {"name": "x", "env": "CartPole-v1", "stop": {"iterations": 1}, "config": {"lr": 0.001},
            "search": {"algorithm": {"grid": ["DQN", "APPO"]}, "config.gamma": {"grid": [0.9, 0.99]}},
            "algorithm_config": {"dqn": {"train_batch_size_per_learner": 32}}}
    sw = Sweep.model_validate(base)
    assert sw.algorithms() == ["DQN", "APPO"]
    dqn = sw.for_algorithm("DQN")
    assert dqn.algorithm == "DQN" and dqn.config == {"lr": 0.001, "train_batch_size_per_learner": 32}
    assert list(dqn.search) == ["config.gamma"]
    assert sw.for_algorithm("APPO").config == {"lr": 0.001}
    for bad, msg in (({"algorithm": {"choice": ["DQN"]}}, "grid"), ({"algorithm": {"grid": ["DQN", "TD3"]}}, "TD3")):
        with pytest.raises(ValueError, match=msg):
            Sweep.model_validate({**base, "search": bad})
    with pytest.raises(ValueError, match="algorithm_config.TD3"):
        Sweep.model_validate({**base, "algorithm_config": {"TD3": {}}})


# --------------------------------------------------------------------------- metrics


def test_dqn_metrics_normalized():
    m = normalize_result(DQN_RESULT, "t")["metrics"]
    assert m["q_loss"] == 0.00278 and m["total_loss"] == 0.00278
    assert (m["q_mean"], m["q_max"], m["q_min"], m["td_error_mean"]) == (1.268, 1.352, 1.082, 0.164)
    assert m["target_updates"] == 1.0
    assert "last_target_update_step" not in m  # RLlib reports it NaN in iterations without an update: not mapped
    assert m["replay_buffer_size"] == 500.5 and m["replay_sampled_lifetime"] == 16032.0
    assert m["epsilon"] == 0.95 and m["lr"] == 0.0005 and m["grad_norm"] == 0.0429


def test_sac_metrics_normalized_entropy_and_lr_derived():
    m = normalize_result(SAC_RESULT, "t")["metrics"]
    assert m["q_loss"] == 1.18 and m["q_twin_loss"] == 1.22 and m["policy_loss"] == 0.856
    assert m["alpha"] == 0.9986 and m["alpha_loss"] == -0.00217 and m["target_entropy"] == -1.0
    assert m["entropy"] == pytest.approx(0.604)  # minus the mean log-prob of the policy's own actions
    assert m["lr"] == 3e-4 and m["lr_actor"] == 3e-5 and m["lr_alpha"] == 3e-4


def test_appo_metrics_normalized():
    m = normalize_result(APPO_RESULT, "t")["metrics"]
    assert (m["vf_loss"], m["entropy"], m["policy_loss"], m["kl"], m["kl_coeff"]) == (10.01, 0.644, -4.05, 0.0, 1.0)
    assert m["entropy_coeff"] == 0.01 and m["is_ratio_mean"] == 1.08 and m["is_ratio_var"] == 0.0862
    assert m["policy_lag"] == 6.1


# --------------------------------------------------------------------------- detectors


def _run(det, stream):
    hist, out = History(256), []
    for i, m in enumerate(stream, 1):
        out += [(i, f.severity) for f in det(i, m, hist)]
        hist.append(m)
    return out


def _cartpole(i, q):
    return {"episode_return_mean": 20.0 + i, "episode_return_max": 40.0 + 2 * i, "episode_return_min": 9.0,
            "episode_len_mean": 20.0 + i, "q_mean": q, "q_max": 1.2 * q, "q_min": 0.5 * q,
            "td_error_mean": 0.05 * q + 0.1}


def test_q_divergence_silent_while_q_learns_the_return_scale_and_fires_past_it():
    healthy = [_cartpole(i, min(100.0, 1.5 * i)) for i in range(80)]  # Q grows to 1 / (1 - 0.99)
    assert _run(QDivergence(), healthy) == []
    bad = healthy[:10] + [_cartpole(10, 400.0), _cartpole(11, 5e4)]  # q_max 480: 3.8 x 100 above [0, 100]
    assert _run(QDivergence(), bad) == [(11, "warning"), (12, "critical")]
    assert _run(QDivergence(), [{"q_max": 1e9}]) == []
    assert _run(QDivergence(), healthy[:3] + [_cartpole(3, -300.0)]) == [(4, "warning")]  # Q < 0 with rewards >= 0  # no episode yet: no bound, no judgement


def test_q_divergence_leaves_room_for_sacs_entropy_bonus():
    """Soft Q-values hold alpha x the policy's entropy per step: SB3's SAC on MountainCarContinuous (rewards
    -0.03 a step: [-3.4, 0]) reached q_max +6.8 at 6,000 steps of a healthy run (sb3_live, seed 1) and drew
    reduce_lr. With its entropy coefficient reported and the action space known, the top rises by
    alpha_max x H / (1 - gamma); a real divergence still fires."""
    from supervisor.priors import Priors

    def mcc(i, q, alpha=None):
        m = {"episode_return_mean": -30.0, "episode_len_mean": 999.0, "q_mean": q / 2, "q_max": q, "q_min": -1.0}
        if alpha is not None:
            m["entropy_coeff"] = alpha
        return m

    def det(priors=True):
        d = QDivergence()
        if priors:
            d.priors = Priors.from_dict({"algorithm": "SAC", "action_kind": "continuous", "action_dim": 1})
        return d

    alphas = [1.0 * 0.995 ** i for i in range(20)]              # SB3's auto coefficient from 1, decaying
    soft = [mcc(i, 6.8, a) for i, a in enumerate(alphas)]
    assert _run(det(), soft) == []
    assert _run(det(), [mcc(i, 6.8) for i in range(20)])[:1] == [(1, "warning")]  # no coefficient: no room
    assert _run(det(priors=False), soft)[:1] == [(1, "warning")]                    # no max entropy: no room
    assert _run(det(), soft[:10] + [mcc(10, 1e3, alphas[10])]) == [(11, "critical")]  # past the bonus too


def test_td_error_explosion():
    healthy = [_cartpole(i, min(100.0, 1.5 * i)) for i in range(80)]
    assert _run(TDErrorExplosion(), healthy) == []
    bad = healthy[:10] + [{**_cartpole(10, 15.0), "td_error_mean": 300.0},
                          {**_cartpole(11, 15.0), "td_error_mean": -5e3}]
    assert _run(TDErrorExplosion(), bad) == [(11, "warning"), (12, "critical")]


def _sac(alpha, entropy, target=-1.0):
    return {"alpha": alpha, "entropy": entropy, "target_entropy": target}


def test_alpha_collapse_needs_a_dead_temperature_and_entropy_below_target():
    healthy = [_sac(1.0 * 0.9 ** i, -0.5 - 0.01 * i) for i in range(40)]  # alpha falls, entropy near target
    assert _run(AlphaCollapse(), healthy) == []
    assert _run(AlphaCollapse(), [_sac(1e-4, -0.5)] * 5) == []  # tiny alpha, but entropy at target: fine
    assert _run(AlphaCollapse(), [_sac(0.5, -1.0), _sac(1e-4, -4.0), _sac(1e-4, -5.0)]) == [(3, "warning")]
    assert _run(AlphaCollapse(), [_sac(1e-8, -5.0)] * 2) == [(2, "critical")]


def test_alpha_runaway():
    assert _run(AlphaRunaway(), [_sac(1.0 * 0.95 ** i, -1.2) for i in range(40)]) == []
    climb = [_sac(1.0 * 4 ** i, -3.0) for i in range(6)]  # 1, 4, 16, 64, ...
    assert _run(AlphaRunaway(), climb)[0] == (4, "warning")
    assert _run(AlphaRunaway(), [_sac(2000.0, -3.0)] * 2) == [(2, "critical")]


def test_exploration_too_short():
    def it(eps, ret):
        return {"epsilon": eps, "episode_return_mean": ret}

    early = [it(1.0, 21.0), it(0.9, 22.0)]
    learning = early + [it(max(0.05, 0.8 - 0.1 * i), 22.0 + 15 * i) for i in range(20)]
    assert _run(ExplorationTooShort(), learning) == []
    stuck = early + [it(0.02, 20.0)] * 5
    assert _run(ExplorationTooShort(), stuck) == [(6, "warning")]  # 3 iterations after epsilon stopped falling
    assert _run(ExplorationTooShort(), [it(0.02, 20.0)] * 8) == []  # never saw the random level


def test_exploration_too_short_judges_points_of_episodes_not_single_episodes():
    """RLlib's default DQN on LunarLander (held-out recording): past its 10k-step exploration each report
    finishes one ~1,000-step episode, returning anywhere in -280..+30. Three single episodes near the random
    level are no evidence of a policy that learned nothing: a point needs 5 new episodes."""
    def it(eps, ret, n):
        return {"epsilon": eps, "episode_return_mean": ret, "num_episodes": float(n)}

    early = [it(1.0, -188.0, 10), it(0.9, -167.0, 11)]  # the random level: -177.5
    singles = [-103.0, -119.0, -277.0, -129.0, -65.0, -188.0, -202.0, -77.0, -33.0, -42.0]  # as recorded
    assert _run(ExplorationTooShort(), early + [it(0.05, r, 1) for r in singles]) == []
    # five episodes a report at the random level, epsilon at its floor: a point a report, a warning at the third
    stuck = early + [it(0.05, -180.0, 5)] * 4
    assert _run(ExplorationTooShort(), stuck) == [(6, "warning")]  # epsilon stopped falling at report 4
    # one episode a report: the same evidence takes five reports a point
    slow = early + [it(0.05, -180.0, 1)] * 16
    assert [i for i, _ in _run(ExplorationTooShort(), slow)] == [17]


# --------------------------------------------------------------------------- actions


def test_new_action_plans():
    assert actions.get("raise_alpha").plan({"alpha": 1e-4}, {}) == {"alpha": 0.01}
    assert actions.get("raise_alpha").plan({"alpha": 0.05}, {}) == {"alpha": pytest.approx(0.5)}
    assert actions.get("set_target_entropy").plan({"target_entropy": -1.0}, {}) == {"target_entropy": -2.0}
    assert actions.get("set_target_entropy").plan({"target_entropy": -1.0}, {"value": -3}) == {"target_entropy": -3.0}
    assert actions.get("extend_exploration").plan({"epsilon": 0.05}, {}) == {"epsilon": 0.5, "epsilon_timesteps": 10000}
    assert actions.get("extend_exploration").plan({"epsilon": 0.7}, {})["epsilon"] == 0.7  # never lowered
    slow = actions.get("slow_target_updates")
    assert slow.plan({"tau": 0.005, "target_network_update_freq": 1}, {}) == {"tau": 0.0025}
    assert slow.plan({"tau": 1.0, "target_network_update_freq": 500}, {}) == {"target_network_update_freq": 1000.0}
    for name, hp in (("raise_alpha", {"lr": 1.0}), ("set_target_entropy", {"lr": 1.0}),
                     ("extend_exploration", {"lr": 1.0}), ("slow_target_updates", {"lr": 1.0})):
        with pytest.raises(ValueError):
            actions.get(name).plan(hp, {})


# --------------------------------------------------------------------------- policy and engine


def test_ladders_per_algorithm_and_the_experiment_file_wins():
    f = [Finding("q_divergence", "warning", "q_max", 1e4, "")]
    assert EscalationPolicy().decide(PolicyState(), 0, f, algorithm="DQN").actions == ["reduce_lr", "slow_target_updates"]
    assert EscalationPolicy({"q_divergence": [["alert"]]}).decide(PolicyState(), 0, f, algorithm="DQN").actions == ["alert"]
    nf = [Finding("non_finite", "critical", "q_loss", math.nan, "")]
    assert EscalationPolicy().decide(PolicyState(), 0, nf, algorithm="SAC").actions == DEFAULT_LADDERS["non_finite"][0]


def test_engine_runs_the_trials_algorithm(tmp_path):
    store = Store(tmp_path / "supervisor.db")
    try:
        store.upsert_run("r", "r", "run", "running")
        eng = Engine(store, SupervisorConfig(cooldown=0))
        eng.register_trial("dqn", "r", config={"lr": 0.001, "algorithm": "DQN"})
        eng.register_trial("ppo", "r", config={"lr": 0.001})
        assert "kl_spike" not in eng.trials["dqn"].detectors.names
        assert "kl_spike" in eng.trials["ppo"].detectors.names
        seq = 0
        for i in range(3):
            eng.observe({"trial_id": "dqn", "seq": seq, "iteration": seq + 1, "metrics": _cartpole(i, 1.0)})
            seq += 1
        v = eng.observe({"trial_id": "dqn", "seq": seq, "iteration": seq + 1, "metrics": _cartpole(3, 1e4)})
        assert [f["detector"] for f in v.findings][:1] == ["q_divergence"]
        assert [a["action"] for a in v.actions] == ["reduce_lr", "slow_target_updates"]
        # after an actor restart the trial is rebuilt from the store with its algorithm
        eng2 = Engine(store, eng.settings)
        eng2.register_trial("dqn", "r")
        assert eng2.trials["dqn"].algorithm == "DQN" and "kl_spike" not in eng2.trials["dqn"].detectors.names
    finally:
        store.close()
