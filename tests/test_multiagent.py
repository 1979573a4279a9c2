"""Multi-agent RLlib trials, for real (issue 24): every policy its own supervised stream.

One Ray instance for the module; tiny batches. MultiAgentCartPole (RLlib's own example env): agent i is
mapped to policy ``p<i>``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ray = pytest.importorskip("ray")
pytest.importorskip("ray.rllib")

from actors.appliers.rllib import RLlibApplier, current_hparams  # noqa: E402
from supervisor import actions  # noqa: E402

pytestmark = pytest.mark.slow

LR0 = 3e-4


ROOT = Path(__file__).resolve().parents[1]
# An iteration of a few hundred env steps and one epoch: the faults show all the same.
SMALL = ["config.train_batch_size_per_learner=200", "config.minibatch_size=100", "config.num_epochs=1",
         "config.num_env_runners=0", "stop.episode_return_mean=null", "supervisor.checkpoint_every=2"]


@pytest.fixture(scope="module")
def ray_session():
    import torch

    torch.set_num_threads(1)  # tiny models on a busy 2-core machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}})
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.shutdown()


def supervised(tmp_path, file: str, iterations: int, *sets: str):
    """Run an experiment file (supervise run's own code path); its report and stored reports."""
    from actors.run import run_experiment
    from supervisor.config import load_experiment
    from supervisor.report import build_report
    from supervisor.store import Store

    path = ROOT / "experiments" / file if "/" not in file else Path(file)
    exp = load_experiment(path, [*SMALL, f"stop.iterations={iterations}", *sets])
    out = tmp_path / path.stem
    code = run_experiment(exp, str(path), str(out), quiet=True)
    (trial,) = build_report(out)["trials"]
    store = Store.open_readonly(out / "supervisor.db")
    try:
        applied = store.interventions(trial["trial_id"])
        reports = store.reports(trial["trial_id"])
    finally:
        store.close()
    return code, trial, applied, reports


def _map(agent_id, episode, **kw):
    return f"p{agent_id}"


def two_policy_config(lr1: float = 5.0, **multi):
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.examples.envs.classes.multi_agent import MultiAgentCartPole

    return (PPOConfig().environment(MultiAgentCartPole, env_config={"num_agents": 2})
            .multi_agent(policies={"p0", "p1"}, policy_mapping_fn=_map,
                         algorithm_config_overrides_per_module={"p1": {"lr": lr1}}, **multi)
            .env_runners(num_env_runners=0)
            .training(lr=LR0, train_batch_size_per_learner=200, minibatch_size=100, num_epochs=1)
            .debugging(seed=0))


@pytest.fixture(scope="module")
def two_policies(ray_session):
    algo = two_policy_config().build_algo()
    yield algo
    algo.stop()


def test_reduce_lr_changes_only_its_module(two_policies):
    """The issue's measurement: reduce_lr for p1 wrote every module's lr as the main module's lr x factor
    (p0 raised 1,667-fold). Read back from each learner optimizer."""
    algo = two_policies
    assert current_hparams(algo, "p0")["lr"] == pytest.approx(LR0)
    assert current_hparams(algo, "p1")["lr"] == pytest.approx(5.0)
    entry = actions.apply(RLlibApplier(algo), {"action": "reduce_lr", "module": "p1", "params": {"factor": 0.1}})
    assert entry["ok"], entry
    assert current_hparams(algo, "p1")["lr"] == pytest.approx(0.5)
    assert current_hparams(algo, "p0")["lr"] == pytest.approx(LR0)  # untouched
    algo.train()  # and it sticks through an update (RLlib's lr scheduler rewrites the optimizer's lr)
    assert current_hparams(algo, "p1")["lr"] == pytest.approx(0.5)
    assert current_hparams(algo, "p0")["lr"] == pytest.approx(LR0)


def test_one_modules_rollback_from_run_storage_on_s3(two_policies, tmp_path):
    """A rollback target in the run storage (S3 API on moto's server; no shared disk): p1 goes back to it,
    p0 keeps what it learned since."""
    import os

    from actors.appliers.rllib import module_weights, save_checkpoint
    from tests.nodisk import AWS, S3Server

    saved_env = {k: os.environ.get(k) for k in AWS}
    os.environ.update(AWS)
    s3 = S3Server()
    try:
        algo = two_policies
        ckpt = save_checkpoint(algo, s3.uri("run/checkpoints/p1"))
        assert ckpt.startswith("s3://") and any(k.startswith("run/checkpoints/p1/learner_group") for k in s3.keys())
        saved = module_weights(algo)
        algo.train()
        trained = module_weights(algo)
        assert any((trained[k] != saved[k]).any() for k in saved if k.startswith("p1/"))  # p1 moved on
        entry = actions.apply(RLlibApplier(algo), {"action": "rollback", "module": "p1", "params": {"checkpoint": ckpt}})
        assert entry["ok"] and entry["verified"], entry
        now = module_weights(algo)
        assert all((now[k] == saved[k]).all() for k in saved if k.startswith("p1/"))  # p1 back
        assert all((now[k] == trained[k]).all() for k in trained if k.startswith("p0/"))  # p0 kept
    finally:
        s3.stop()
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_a_policy_sabotaged_through_its_own_config_is_flagged_and_repaired_alone(ray_session, tmp_path):
    """experiments/multiagent_cartpole_divergent.yaml, smaller: p1's lr jumps to 5.0 after 1,600 env steps
    (RLlib's algorithm_config_overrides_per_module), p0 keeps 3e-4."""
    code, t, ivs, reports = supervised(tmp_path, "multiagent_cartpole_divergent.yaml", 5,
                                       "multi_agent.policies.p1.lr=[[0, 0.0003], [599, 0.0003], [600, 5.0]]")
    assert code == 0, t
    assert {m["module"] for m in t["modules"]} == {"p0", "p1"}
    assert t["findings"], "p1's divergence went unseen"
    assert {f["module"] for f in t["findings"]} == {"p1"}, t["findings"]
    cut = [i for i in ivs if i["action"] == "reduce_lr"]
    assert cut and all(i["module"] == "p1" for i in cut), ivs
    # rolled back to its healthy checkpoint (lr 3e-4 there), then cut tenfold: p1 only
    assert cut[0]["verified"] == 1 and cut[0]["applied"]["after"]["lr"] == pytest.approx(LR0 / 10)
    rb = [i for i in ivs if i["action"] == "rollback"]
    assert rb and rb[0]["module"] == "p1" and not rb[0]["params"].get("whole_trial") and rb[0]["verified"] == 1
    # p0's lr as its learner's optimizer reported it, every iteration: untouched
    assert all(r["metrics"]["modules/p0/lr"] == pytest.approx(LR0) for r in reports)
    assert reports[-1]["metrics"]["modules/p1/lr"] == pytest.approx(LR0 / 10)
    p1 = next(m for m in t["modules"] if m["module"] == "p1")
    p0 = next(m for m in t["modules"] if m["module"] == "p0")
    assert p1["health"]["worst_severity"] == "critical" and p0["health"]["worst_severity"] == "ok"


def test_a_shared_self_play_policy_is_one_module(ray_session, tmp_path):
    code, t, ivs, reports = supervised(tmp_path, "multiagent_cartpole.yaml", 2, "multi_agent.mapping=null",
                                       "multi_agent.policies=shared")
    assert code == 0 and t["status"] == "completed", t
    assert [m["module"] for m in t["modules"]] == ["shared"] and t["findings"] == [] and ivs == []
    m = reports[-1]["metrics"]
    # one policy for both agents: its return is both agents', each agent's own is kept beside it
    assert m["modules/shared/episode_return_mean"] == pytest.approx(m["episode_return_mean"])
    assert {"agents/0/episode_return_mean", "agents/1/episode_return_mean"} <= set(m)


def test_a_frozen_opponent_gets_no_finding(ray_session, tmp_path):
    """p1 frozen (not in policies_to_train): RLlib still reports learner values for it (its lr, a zero gradient),
    and its return falls as p0 learns."""
    code, t, ivs, reports = supervised(tmp_path, "multiagent_cartpole.yaml", 3,
                                       "multi_agent.policies_to_train=[p0]")
    assert code == 0, t
    assert "modules/p1/lr" in reports[-1]["metrics"] and "modules/p1/episode_return_mean" in reports[-1]["metrics"]
    frozen = next(m for m in t["modules"] if m["module"] == "p1")
    assert frozen["trained"] is False and frozen["health"]["worst_severity"] == "ok"
    assert [f for f in t["findings"] if f["module"] == "p1"] == [] and [i for i in ivs if i["module"] == "p1"] == []


def test_a_pettingzoo_env_from_an_experiment_file(ray_session, tmp_path):
    pytest.importorskip("pettingzoo")
    exp = tmp_path / "pz.yaml"
    exp.write_text("name: pz-cartpoles\nenv: tests.envs.pz_cartpoles:parallel_env\nenv_config: {max_steps: 100}\n"
                   "algorithm: PPO\nmulti_agent: {policies: per_agent}\nconfig: {lr: 0.0003}\nstop: {iterations: 2}\n")
    code, t, ivs, reports = supervised(tmp_path, str(exp), 2)
    assert code == 0 and t["iterations"] == 2, t
    assert [m["module"] for m in t["modules"]] == ["pole_0", "pole_1"]
    assert "modules/pole_0/entropy" in reports[-1]["metrics"] and "modules/pole_1/entropy" in reports[-1]["metrics"]


def test_two_learners_each_change_reaches_both_and_a_rollback_leaves_them_equal(ray_session, tmp_path):
    """num_learners=2 (DDP over gloo on CPU): reduce_lr for p1 read back from both learners' optimizers;
    rolling p1 back leaves both learners with the checkpoint's p1 and their own p0, equal on both; a learner
    that dies is skipped (the change still reaches the other) and counted for worker_fault."""
    from actors.appliers.rllib import (extra_metrics, learner_hparams, learners_equal, module_weights,
                                       save_checkpoint)
    from actors.appliers.rllib.remote import foreach_learner
    from actors.appliers.rllib.weights import _learner_weights

    algo = two_policy_config(lr1=1e-3).learners(num_learners=2).build_algo()
    try:
        algo.train()
        ckpt = save_checkpoint(algo, str(tmp_path / "ckpt"))
        saved = module_weights(algo)
        algo.train()
        applier = RLlibApplier(algo)
        entry = actions.apply(applier, {"action": "reduce_lr", "module": "p1", "params": {"factor": 0.1}})
        assert entry["ok"], entry
        assert [h["lr"] for h in learner_hparams(algo, "p1")] == [pytest.approx(1e-4)] * 2
        assert [h["lr"] for h in learner_hparams(algo, "p0")] == [pytest.approx(LR0)] * 2
        p0_now = {k: v for k, v in module_weights(algo).items() if k.startswith("p0/")}

        entry = actions.apply(applier, {"action": "rollback", "module": "p1", "params": {"checkpoint": ckpt}})
        assert entry["ok"] and entry["verified"] and entry["learners_equal"], entry
        per_learner = foreach_learner(algo, _learner_weights)
        assert len(per_learner) == 2 and learners_equal(algo)
        for w in per_learner:
            assert all((w[k] == saved[k]).all() for k in saved if k.startswith("p1/"))  # p1 back
            assert all((w[k] == p0_now[k]).all() for k in p0_now)  # p0 kept
        # the lr p1 had before the rollback is re-applied, on both learners
        assert [h["lr"] for h in learner_hparams(algo, "p1")] == [pytest.approx(1e-4)] * 2

        # one learner dies: changes still reach the other, and the fleet says so
        manager = algo.learner_group._worker_manager
        ray.kill(manager._actors[manager.actor_ids()[1]])
        entry = actions.apply(applier, {"action": "reduce_lr", "module": "p0", "params": {"factor": 0.5}})
        assert entry["ok"], entry
        assert [h["lr"] for h in learner_hparams(algo, "p0")] == [pytest.approx(LR0 / 2)]
        extra = extra_metrics(algo)
        assert extra["learners"] == 2 and extra["healthy_learners"] == 1
    finally:
        algo.stop()


def test_a_sweep_over_a_multi_agent_file(ray_session, tmp_path):
    """Two Tune trials of a two-policy file (p1's lr 5.0 through its per-policy config): each supervised under
    Tune's trial id, each with its two modules, p1 alone flagged and repaired in both."""
    from actors.tune.sweep import run_sweep
    from supervisor.config import load_sweep
    from supervisor.report import build_report

    f = tmp_path / "ma_sweep.yaml"
    f.write_text((ROOT / "experiments" / "multiagent_cartpole.yaml").read_text()
                 + "search: {config.gamma: {grid: [0.99, 0.95]}}\nmax_concurrent: 2\n")
    sweep = load_sweep(f, [*SMALL, "stop.iterations=2", "multi_agent.policies.p1.lr=5.0"])
    out = tmp_path / "sweep"
    assert run_sweep(sweep, str(f), str(out), quiet=True) == 0
    trials = build_report(out)["trials"]
    tune_dirs = [p.name for p in (out / "tune").iterdir() if p.is_dir()]
    assert len(trials) == 2
    for t in trials:
        assert any(t["trial_id"] in d for d in tune_dirs), (t["trial_id"], tune_dirs)  # Tune's own trial id
        assert [m["module"] for m in t["modules"]] == ["p0", "p1"], t
        # the trials' own findings (a node finding, iteration -1, is the node's: a loaded machine's late heartbeat)
        own = [f for f in t["findings"] if f["severity"] != "info" and f["iteration"] >= 0]
        assert own and {f["module"] for f in own} == {"p1"}, t
        assert {i["module"] for i in t["interventions"]} == {"p1"}, t["interventions"]
