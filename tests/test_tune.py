"""Ray Tune sweeps under supervision: the stopper, the trial ids, restarts through Tune, ``supervise sweep``.

The unit tests need no Ray cluster. ``test_sweep_cli_*`` runs one real
3-trial sweep through the CLI in a subprocess (about 1.5 to 2.5 minutes on a
busy 2-core machine): a healthy trial, a trial whose lr jumps to 5.0 (repaired
by ``reduce_lr`` + ``restart_trial`` through Tune) and a trial with lr=1e5
(restarted, diverges again, stopped by ``StabilityStopper``).
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from supervisor.store import Store

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------
# unit: stoppers
# ---------------------------------------------------------------------------


def test_stability_stopper_stops_only_what_the_supervisor_asked():
    from actors.tune import StabilityStopper

    s = StabilityStopper()
    assert s("t1", {"supervisor": {"stop": True, "health_score": 0.1}}) is True
    assert s("t2", {"supervisor": {"stop": False, "health_score": 1.0}}) is False
    assert s("t3", {"supervisor": {"reported": False}}) is False  # supervisor unreachable: keep training
    assert s("t4", {"training_iteration": 3}) is False  # an unsupervised trial
    assert s("t5", {"supervisor": "garbage"}) is False
    assert s.stop_all() is False
    assert s.stopped == {"t1"}


def test_combined_stop_keeps_the_file_conditions():
    from ray.tune.stopper import CombinedStopper

    from actors.tune import StopRule, ThresholdStopper, combine_stop, stability_stopper_of
    from supervisor.config import Sweep

    sweep = Sweep.model_validate({"name": "s", "env": "CartPole-v1",
                                  "stop": {"iterations": 5, "episode_return_mean": 400}})
    stop = StopRule(sweep.stop)
    assert stop.thresholds == {"training_iteration": 5, "env_runners/episode_return_mean": 400}
    c = combine_stop(stop)
    assert isinstance(c, CombinedStopper) and stability_stopper_of(c) is not None
    assert c("a", {"training_iteration": 5}) is True
    assert c("a", {"training_iteration": 4, "env_runners": {"episode_return_mean": 401.0}}) is True
    assert c("a", {"training_iteration": 4, "env_runners": {"episode_return_mean": float("nan")}}) is False
    assert c("a", {"training_iteration": 2, "supervisor": {"stop": True}}) is True
    assert c.stop_all() is False
    assert ThresholdStopper({"x": 1})("a", {}) is False


def test_one_stop_rule_for_the_single_run_and_the_sweep():
    import numpy as np

    from actors.tune import StopRule
    from supervisor.config import StopConfig

    rule = StopRule(StopConfig(timesteps=4000, time_s=60))
    assert rule.reason({"training_iteration": 99}) is None  # no iterations limit in this file
    assert rule.reason({"num_env_steps_sampled_lifetime": np.int64(4000)}) == "timesteps"  # numpy counts too
    assert rule.reason({"num_env_steps_sampled_lifetime": 3999, "time_total_s": 61.0}) == "time_s"  # Tune's clock
    # supervise run: the driver's wall time, not the (restarted) algorithm's own clock
    assert rule.reason({"num_env_steps_sampled_lifetime": 10, "time_total_s": 61.0}, elapsed_s=5.0) is None
    assert rule.reason({"num_env_steps_sampled_lifetime": 10, "time_total_s": 1.0}, elapsed_s=60.0) == "time_s"
    assert rule("t", {"num_env_steps_sampled_lifetime": 5000}) is True
    ret = StopRule(StopConfig(episode_return_mean=400, iterations=3))
    assert ret.reason({"training_iteration": 1, "env_runners": {"episode_return_mean": 400.0}}) == \
        "episode_return_mean"
    assert ret.reason({"training_iteration": 3, "env_runners": {"episode_return_mean": float("nan")}}) == \
        "iterations"
    assert ret.reason({"training_iteration": 2, "env_runners": {"episode_return_mean": float("nan")}}) is None


# ---------------------------------------------------------------------------
# unit: trial ids, statuses, the helper for your own Tune script
# ---------------------------------------------------------------------------


def _trial_info(tid):
    return SimpleNamespace(trial_id=tid, trial_name=f"SupervisedPPO_CartPole-v1_{tid}")


def test_trainable_takes_tunes_real_trial_id_and_sampled_values():
    from ray.tune.result import TRIAL_INFO

    from actors.callback import CONFIG_KEY, with_trial
    from actors.tune import SEARCH_KEY, SupervisedPPO, _prepare_trial_config, build_sweep_space
    from supervisor.config import load_sweep

    sweep = load_sweep(ROOT / "experiments" / "cartpole_sweep.yaml")
    info = {"run_id": "r", "run_info": {"run_dir": "/tmp/x"}, "trial_config": dict(sweep.config),
            "search_keys": []}  # what the driver publishes for the run (actors.run_registry)
    space, _ = build_sweep_space(sweep, "cartpole_sweep.yaml", "r")
    assert space[SEARCH_KEY]["lr"] == {"grid_search": sweep.search["config.lr"]["grid"]}
    # what Tune hands the trainable: the resolved dict plus its _TrialInfo
    trial = {**space, SEARCH_KEY: {"lr": 5.0}, TRIAL_INFO: _trial_info("ab12c_00003")}
    cfg, ti, this = _prepare_trial_config(SupervisedPPO, trial)
    assert ti.trial_id == "ab12c_00003"
    assert cfg.lr == 5.0 and cfg.train_batch_size_per_learner == 1000
    assert cfg.learner_config_dict[CONFIG_KEY] == {"run_id": "r"}  # all RLlib's config (a checkpoint) holds
    sup = with_trial(info, this)
    assert sup["trial_id"] == "ab12c_00003"  # what SupervisorCallback.on_algorithm_init registers
    assert sup["trial_config"]["lr"] == 5.0
    assert TRIAL_INFO not in trial or trial[TRIAL_INFO] is not None  # the caller's dict is not consumed


def test_driver_callback_statuses_and_exit_codes(monkeypatch):
    from actors.tune import SupervisorTuneCallback

    calls = []
    from actors.bootstrap import RunInfo
    from supervisor.config import SupervisorConfig

    cb = SupervisorTuneCallback(RunInfo("run", Path("/tmp/x"), "n", "sweep", SupervisorConfig()), quiet=True)
    # the controller never waits: calls are sent, their answers handed to ``then`` when collected
    monkeypatch.setattr(cb, "_fire", lambda m, *a, then=None, **k: calls.append((m, *a)) or (
        then and then(a[2] if m == "finish_trial" else None)))
    t = lambda tid: SimpleNamespace(trial_id=tid, config={}, checkpoint=None, error_file=None,
                                    get_pickled_error=lambda: RuntimeError("RestartRequested: supervisor asked"))
    cb.on_trial_result(0, [], t("a"), {"training_iteration": 3, "supervisor": {"stop": False}})
    cb.on_trial_complete(0, [], t("a"))
    cb.on_trial_result(0, [], t("b"), {"training_iteration": 2, "supervisor": {"stop": True}})
    cb.on_trial_complete(0, [], t("b"))
    cb.on_trial_recover(0, [], t("c"))
    cb.on_trial_complete(0, [], t("c"))
    cb.on_trial_error(0, [], t("d"))
    assert cb.status == {"a": "completed", "b": "stopped", "c": "recovered", "d": "errored"}
    assert ("finish_trial", "run", "b", "stopped") in calls
    assert cb.exit_code() == 1  # a trial errored
    cb.status = {"b": "stopped", "e": "stopped"}
    assert cb.exit_code() == 3  # the supervisor stopped every trial
    cb.status = {"a": "completed", "b": "stopped", "c": "recovered"}
    assert cb.exit_code() == 0


def test_helper_for_your_own_tune_script(tmp_path):
    from ray import tune
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.tune.result import TRIAL_INFO

    from actors.callback import CONFIG_KEY, SupervisorCallback, with_trial
    from actors.tune import StabilityStopper, SupervisedPPO, _prepare_trial_config, stability_stopper_of
    from actors.tune import supervised_trainable_config

    config = PPOConfig().environment("CartPole-v1").training(lr=tune.grid_search([3e-4, 5.0]))
    sup = supervised_trainable_config(config, run_dir=tmp_path / "mine", settings={"checkpoint_every": 2})
    assert sup.trainable is SupervisedPPO
    assert sup.param_space["lr"] == {"grid_search": [3e-4, 5.0]}
    assert sup.param_space["callbacks"] is SupervisorCallback
    rc = sup.run_config(stop={"training_iteration": 3})
    assert isinstance(stability_stopper_of(rc.stop), StabilityStopper)
    assert rc.failure_config.max_failures == 2 and rc.checkpoint_config.checkpoint_frequency == 0
    assert sup.callback in rc.callbacks and rc.storage_path == str(tmp_path / "mine")
    cfg, _, trial = _prepare_trial_config(SupervisedPPO, {**sup.param_space, "lr": 5.0,
                                                          TRIAL_INFO: _trial_info("x_00001")})
    assert cfg.learner_config_dict[CONFIG_KEY] == {"run_id": sup.callback.run_id}
    info = with_trial(sup.callback.run.callback_info(), trial)  # the run as published, for this trial
    assert info["trial_id"] == "x_00001" and info["trial_config"] == {"lr": 5.0}
    assert info["run_info"]["kind"] == "sweep"


# ---------------------------------------------------------------------------
# unit: bad input is exit 2, before Ray starts
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("search,key", [
    ("{config.not_a_param: {grid: [1, 2]}}", "search.config.not_a_param"),
    ("{supervisor.cooldown: {grid: [1, 2]}}", "search.supervisor.cooldown"),
    ("{config.lr: {grid: [0.001, -1.0]}}", "search.config.lr"),
    ("{config.lr: {uniform: [1, 0]}}", "config.lr.uniform"),  # key named by supervisor/config.py
])
def test_sweep_bad_search_is_exit_2(tmp_path, capsys, search, key):
    from supervisor.cli import main

    f = tmp_path / "bad.yaml"
    f.write_text(f"name: bad\nenv: CartPole-v1\nsearch: {search}\nstop: {{iterations: 2}}\n")
    assert main(["sweep", str(f), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(f) in err[0] and key in err[0], err
    assert not (tmp_path / "run").exists()


def test_sweep_missing_file_and_bad_flag_are_exit_2(tmp_path, capsys):
    from supervisor.cli import main

    assert main(["sweep", str(tmp_path / "nope.yaml")]) == 2
    assert main(["sweep", str(ROOT / "experiments" / "cartpole_sweep.yaml"), "--max-concurrent", "0"]) == 2


# ---------------------------------------------------------------------------
# end to end: the CLI, real Tune, real PPO
# ---------------------------------------------------------------------------

SWEEP = """\
name: tune-e2e
env: CartPole-v1
seed: 1
config:
  lr: 0.0003
  train_batch_size_per_learner: 500
  minibatch_size: 250
  num_epochs: 2
  num_env_runners: 0
search:
  config.lr: {grid: [0.0003, [[0, 0.0003], [1499, 0.0003], [1500, 5.0]], 100000.0]}
max_concurrent: 2
max_failures: 2
stop:
  iterations: 6
supervisor:
  checkpoint_every: 2
  report_timeout_s: 60  # a loaded machine's slow verdict still gates Tune's checkpoints
  ladders:
    non_finite: [[reduce_lr, restart_trial], [stop_trial]]
  action_params:
    reduce_lr: {factor: 0.0001}
"""


def supervise(*args, timeout=900):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "supervisor", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


def tune_results(run_dir: Path) -> dict:
    """Tune's own view: trial id -> (its sampled values, every result it logged, restarts included)."""
    out = {}
    for f in (run_dir / "tune").glob("*/result.json"):
        rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        params = json.loads((f.parent / "params.json").read_text())
        if rows:
            out[rows[0]["trial_id"]] = (params["_supervisor_search"], rows)
    return out


def restarted_at(store, trial_id: str, seq: int) -> tuple[list[dict], list[dict]]:
    """A trial's stored reports up to the restart decided at ``seq``, and after it; every seq stored once."""
    reps = store.reports(trial_id)
    assert [r["seq"] for r in reps] == list(range(len(reps))), "a report lost or stored twice"
    return [r for r in reps if r["seq"] <= seq], [r for r in reps if r["seq"] > seq]


@pytest.mark.slow
def test_sweep_cli_stops_repairs_and_restarts_through_tune(tmp_path):
    f = tmp_path / "sweep.yaml"
    f.write_text(SWEEP)
    out = tmp_path / "run"
    p = supervise("sweep", str(f), "--out", str(out), "--max-concurrent", "2")
    log = p.stdout[-4000:] + p.stderr[-4000:]
    assert p.returncode == 0, log
    assert "restarting from checkpoint" in p.stdout and "stopped" in p.stdout, log
    assert "Traceback" not in p.stdout

    rep = json.loads(supervise("report", str(out), "--format", "json").stdout)
    trials = {t["trial_id"]: t for t in rep["trials"]}
    tune = tune_results(out)
    # the supervisor knows every trial under Tune's real trial id (never "default")
    assert set(trials) == set(tune) and len(trials) == 3, (set(trials), set(tune))
    by_lr = {}
    for tid, (search, _) in tune.items():
        lr = search["lr"]
        by_lr["healthy" if lr == 0.0003 else "jump" if isinstance(lr, list) else "huge"] = tid

    # the healthy trial ran to completion untouched
    h = trials[by_lr["healthy"]]
    assert h["status"] == "completed" and h["iterations"] == 6
    assert h["interventions"] == [] and [x for x in h["findings"] if x["severity"] != "info"] == []
    assert [r["training_iteration"] for r in tune[by_lr["healthy"]][1]] == [1, 2, 3, 4, 5, 6]

    # the lr jump: caught, reduce_lr + restart_trial, Tune restarted it from a health-gated checkpoint
    # in a new process, and the restarted trial trains with the reduced lr. Judged on what the store
    # recorded around the restart, not on when Tune's results happened to arrive.
    store = Store(out / "supervisor.db", readonly=True)
    j, rows = trials[by_lr["jump"]], tune[by_lr["jump"]][1]
    acts = [i["action"] for i in j["interventions"]]
    assert acts == ["reduce_lr", "restart_trial"], j["interventions"]
    assert j["status"] == "recovered" and j["health"]["worst_severity"] == "critical"
    restart = store.interventions(by_lr["jump"])[1]
    assert restart["action"] == "restart_trial"
    before, after = restarted_at(store, by_lr["jump"], restart["seq"])
    failed_at, resumed = restart["iteration"], after[0]["iteration"]
    assert before[-1]["iteration"] == failed_at
    assert 1 < resumed <= failed_at and (resumed - 1) % 2 == 0, (failed_at, resumed)  # from a checkpoint
    assert after[0]["metrics"]["env_steps_lifetime"] == resumed * 500  # Tune restored the counters too
    assert before[-1]["metrics"]["lr"] == pytest.approx(5.0)
    assert all(r["metrics"]["lr"] == pytest.approx(5.0 * 1e-4) for r in after), [r["metrics"]["lr"] for r in after]
    assert [r["iteration"] for r in after] == list(range(resumed, 7))  # then on to the end, each once
    pids = list(dict.fromkeys(r["pid"] for r in rows))
    # a new process: Tune's results after the restart come from it (Tune sometimes rewrites the trial's
    # result.json from the restored checkpoint on: then only the new process's rows are left)
    assert len(pids) == 2 or min(r["training_iteration"] for r in rows) == resumed, [
        (r["training_iteration"], r["pid"]) for r in rows]
    assert min(r["training_iteration"] for r in rows if r["pid"] == pids[-1]) == resumed

    # lr=1e5: restarted from scratch with lr 10, diverged again, stopped by the StabilityStopper early
    s, rows = trials[by_lr["huge"]], tune[by_lr["huge"]][1]
    assert s["status"] == "stopped"
    assert [i["action"] for i in s["interventions"]] == ["reduce_lr", "restart_trial", "stop_trial"]
    assert rows[-1]["supervisor"]["stop"] is True and rows[-1]["training_iteration"] < 6
    _, after = restarted_at(store, by_lr["huge"], store.interventions(by_lr["huge"])[1]["seq"])
    assert after[0]["iteration"] == 1 and after[0]["metrics"]["lr"] == pytest.approx(10.0)  # with the override
    store.close()

    assert rep["run"]["status"] == "recovered" and rep["run"]["ended"]
    # the compute account: what each trial used, and what the stop saved of the stopped trial's budget
    assert h["compute"]["env_steps"] == 6 * 500 and h["compute"]["saved_env_steps"] == 0
    used = s["compute"]["env_steps"]
    assert 0 < used < 6 * 500 and s["compute"]["saved_env_steps"] == 6 * 500 - used
    assert rep["run"]["compute"]["env_steps"] == sum(t["compute"]["env_steps"] for t in trials.values())
    assert rep["run"]["compute"]["saved_env_steps"] == s["compute"]["saved_env_steps"]
    assert j["recovery"]["fault_iteration"] == failed_at
    text = supervise("report", str(out)).stdout
    assert all(tid in text for tid in trials)
    assert f"the stop saved {6 * 500 - used:,} env steps" in text and "total compute:" in text
    assert len(list((out / "tensorboard").iterdir())) == 3  # one TensorBoard run per trial
    assert "totals: " in p.stdout  # plain lines (not a terminal): totals as trials finish
