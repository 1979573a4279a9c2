"""metrics_missing: a detector whose metric never arrives says so, once; configs and writers that legitimately
lack a metric are never taken for blind; the engine never acts on it; the report and dashboard list the blind
detectors. Streams are real recorded RLlib runs (benchmarks/data) with a key taken away at a known iteration."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from supervisor import algorithms
from supervisor.config import SupervisorConfig
from supervisor.detectors import build_detectors
from supervisor.engine import Engine
from supervisor.findings import Finding
from supervisor.history import History
from supervisor.metrics import LEARNER_METRICS, drop_no_data
from supervisor.policy import EscalationPolicy, PolicyState
from supervisor.store import Store

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.real_runs import _priors, load_runs  # noqa: E402

PPO = {"algorithm": "PPO", "reporter": "rllib", "instrumented": True, "use_kl_loss": True, "kl_target": 0.01,
       "clip_param": 0.3, "vf_clip_param": 10.0, "action_kind": "discrete", "action_dim": 2}


@pytest.fixture(scope="module")
def runs():
    return {name: (meta, rows) for name, meta, rows in load_runs()}


def replay(rows, priors, without=(), overrides=None):
    """Every finding of the suite over ``rows`` (the keys ``without`` taken away), as (index, finding)."""
    suite = build_detectors(overrides, priors=priors)
    suite.catch_errors = False
    hist, out = History(256), []
    for i, row in enumerate(rows):
        m = {k: v for k, v in drop_no_data(dict(row)).items() if k not in without}
        out += [(i, f) for f in suite.observe(i, m, hist)]
    return out


def missing(found):
    return [(i, f) for i, f in found if f.detector == "metrics_missing"]


# ------------------------------------------------------------------ a renamed key, per algorithm

# run, key renamed away, the report it must be named at (1-based), the detectors it blinds
RENAMED = [
    ("healthy_s1", "entropy", 3, {"entropy_collapse", "entropy_saturated", "premature_convergence"}),
    ("appo_ex_healthy", "entropy", 6, {"entropy_collapse", "entropy_saturated", "premature_convergence"}),
    ("impala_ex_healthy", "vf_loss", 6, {"value_collapse"}),
    ("dqn_ex_healthy", "td_error_mean", 3, {"td_error_explosion"}),
    # SAC learns from its 400th env step (report 2 here): due 3 reports later
    ("sac_ex_healthy", "alpha", 4, {"alpha_collapse", "alpha_runaway"}),
]


@pytest.mark.parametrize("name,key,at,blind", RENAMED, ids=[r[0] for r in RENAMED])
def test_a_renamed_key_warns_once_naming_key_and_detectors(runs, name, key, at, blind):
    meta, rows = runs[name]
    found = missing(replay(rows, _priors(meta, rows), without={key}))
    assert len(found) == 1, found
    i, f = found[0]
    assert i + 1 == at and f.severity == "warning"
    assert f.details["keys"] == [key] and set(f.details["detectors"]) == blind
    assert f.details["paths"][key].startswith("learners/<module>/")
    assert key in f.message and all(d in f.message for d in blind)


def test_every_recorded_run_is_judged_and_none_is_blind(runs):
    judged = 0
    for name, (meta, rows) in runs.items():
        pri = _priors(meta, rows)
        suite = build_detectors(priors=pri)
        (mm,) = [d for d in suite if d.name == "metrics_missing"]
        judged += bool(mm._pending)
        assert missing(replay(rows, pri)) == [], name
    assert judged >= len(runs) - 2  # all but the two DQN recordings without the callback's epsilon


def test_a_whole_learner_renamed_off_policy_is_found_once_learning_starts(runs):
    meta, rows = runs["sac_healthy"]  # learning_starts unknown: RLlib's default 1500 (reached at report 10)
    gone = set(LEARNER_METRICS) | {"entropy", "lr"}
    (found,) = missing(replay(rows, _priors(meta, rows), without=gone))
    i, f = found
    first = next(j for j, r in enumerate(rows) if r.get("env_steps_lifetime", 0) >= 1500)
    assert i == first + algorithms.ALGORITHMS["SAC"].metrics_by - 1
    assert {"q_divergence", "td_error_explosion", "alpha_collapse", "alpha_runaway", "loss_explosion"} <= set(
        f.details["detectors"])


# ------------------------------------------------------------------ never a false alarm


def test_configs_that_turn_a_statistic_off_are_not_blind(runs):
    meta, rows = runs["healthy_s1"]
    pri = _priors(meta, rows)
    # PPO without the KL penalty reports no KL coefficient; without the instrumented learner no sup_* values
    assert missing(replay(rows, {**pri, "use_kl_loss": False}, without={"kl_coeff"})) == []
    sup = set(algorithms.INSTRUMENTED)
    assert missing(replay(rows, {**pri, "instrumented": False}, without=sup)) == []
    # ... but with the penalty on, a missing coefficient is a blind kl_controller_stuck
    (f,) = [f for _, f in missing(replay(rows, pri, without={"kl_coeff"}))]
    assert f.details["blind"] == {"kl_controller_stuck": ["kl_coeff"]}
    # the gradient norm only with grad_clip (or log_gradients)
    meta, rows = runs["sac_ex_healthy"]
    pri = _priors(meta, rows)
    assert pri.get("grad_clip") is None and "grad_norm" not in {k for r in rows for k in r}
    assert missing(replay(rows, pri)) == []
    (f,) = [f for _, f in missing(replay(rows, {**pri, "grad_clip": 40.0}))]
    assert f.details["keys"] == ["grad_norm"] and f.details["detectors"] == ["gradient_explosion"]


def test_episodes_that_never_finish_and_a_learner_that_has_not_started_are_no_data(runs):
    meta, rows = runs["healthy_s1"]
    long_episodes = [{**r, "num_episodes": 0.0} for r in rows]  # episodes longer than the whole run so far
    assert missing(replay(long_episodes, _priors(meta, rows), without=set(EPISODES))) == []
    meta, rows = runs["sac_ex_healthy"]
    late = {**_priors(meta, rows), "learning_starts": 10**9}  # no update yet: no learner values either
    assert missing(replay(rows, late, without=set(LEARNER_METRICS) | {"entropy", "lr"})) == []


EPISODES = ("episode_return_mean", "episode_return_max", "episode_return_min", "episode_len_mean")


def test_appo_results_every_broadcast_interval_updates_are_not_missing(runs):
    # RLlib 2.60's APPO/IMPALA learner hands back its results once every broadcast_interval updates: with
    # broadcast_interval 24 and 500-step batches the first learner values come with the 12,000th env step
    meta, rows = runs["appo_ex_healthy"]
    first = next(i for i, r in enumerate(rows) if r["env_steps_lifetime"] >= 24 * 500)
    learner = set(LEARNER_METRICS) | {"entropy", "lr"}
    sparse = [r if i == first else {k: v for k, v in r.items() if k not in learner} for i, r in enumerate(rows)]
    pri = _priors(meta, rows)
    assert missing(replay(sparse, {**pri, "learning_starts": 24 * 500})) == []
    # not knowing the interval, the learner's values are due by report metrics_by (6): they are late
    (i, f), = missing(replay(sparse, pri))
    assert i + 1 == algorithms.ALGORITHMS["APPO"].metrics_by < first + 1


def test_writers_that_report_what_their_user_logs_expect_nothing(tmp_path, runs):
    from supervisor import Supervisor
    from supervisor.scan import scan

    _, rows = runs["healthy_s1"]
    bare = [{"loss": r["total_loss"]} for r in rows]
    for pri in (None, {"algorithm": "PPO"}, {**PPO, "reporter": None}):  # no reporter: not RLlib's callback
        assert missing(replay(bare, pri)) == []
    with Supervisor(tmp_path / "api", algorithm="ppo") as sup:
        for i, m in enumerate(bare):
            assert all(f["detector"] != "metrics_missing" for f in sup.observe(i + 1, m).findings)
    log = tmp_path / "progress.csv"
    log.write_text("step,loss\n" + "".join(f"{i},{m['loss']}\n" for i, m in enumerate(bare)))
    assert all(f["detector"] != "metrics_missing" for f in scan(log)["findings"])


# ------------------------------------------------------------------ records only


def test_the_engine_never_acts_on_it_and_it_does_not_block_checkpoints(tmp_path, runs):
    meta, rows = runs["healthy_s1"]
    store = Store(tmp_path / "supervisor.db")
    store.upsert_run("r", "r", "run", "running")
    # every rule that could act, at its most eager: no cooldown, rollback available from the start
    eng = Engine(store, SupervisorConfig(checkpoint_every=1, cooldown=0, max_interventions=1, intensity_window=1))
    eng.register_trial("t", "r", config={"priors": _priors(meta, rows)})
    eng.record_checkpoint("t", -1, 0, "/ckpt/0", {"lr": 3e-4})
    verdicts = []
    for i, row in enumerate(rows[:8]):
        m = {k: v for k, v in drop_no_data(dict(row)).items() if k != "entropy"}
        verdicts.append(eng.observe({"trial_id": "t", "seq": i, "iteration": i + 1, "metrics": m}))
    flagged = [v for v in verdicts if any(f["detector"] == "metrics_missing" for f in v.findings)]
    assert len(flagged) == 1 and flagged[0].iteration == 3
    assert all(not v.actions and not v.stop and not v.restart for v in verdicts)
    assert all(v.checkpoint for v in verdicts)  # checkpoint_every=1: a blind detector is no trouble
    assert store.interventions("t") == []
    # the next engine on the same store (a restarted supervisor) does not warn again
    eng2 = Engine(store, SupervisorConfig(checkpoint_every=1))
    eng2.register_trial("t", "r")
    for i, row in enumerate(rows[8:14], start=8):
        m = {k: v for k, v in drop_no_data(dict(row)).items() if k != "entropy"}
        v = eng2.observe({"trial_id": "t", "seq": i, "iteration": i + 1, "metrics": m})
        assert all(f["detector"] != "metrics_missing" for f in v.findings)
    assert [f["detector"] for f in store.findings("t")].count("metrics_missing") == 1
    store.close()


def test_no_ladder_or_severity_makes_it_act():
    f = Finding("metrics_missing", "critical", "entropy", None, "blind")
    policy = EscalationPolicy(cooldown=0)
    assert policy.decide(PolicyState(), 5, [f], algorithm="PPO") is None
    with pytest.raises(ValueError, match="records only"):
        SupervisorConfig(ladders={"metrics_missing": [["stop_trial"]]})
    # with a real fault in the same iteration, the fault is what is acted on
    d = policy.decide(PolicyState(), 5, [f, Finding("non_finite", "critical", "total_loss", math.nan, "nan")])
    assert d.finding.detector == "non_finite"


def test_a_rollback_does_not_judge_again(runs):
    meta, rows = runs["healthy_s1"]
    suite = build_detectors(priors=_priors(meta, rows))
    hist, n = History(256), 0
    for i, row in enumerate(rows * 2):  # a rollback: the detectors reset, the stream starts over
        if i == len(rows):
            suite.reset()
            hist = History(256)
        m = {k: v for k, v in drop_no_data(dict(row)).items() if k != "entropy"}
        n += sum(f.detector == "metrics_missing" for f in suite.observe(i, m, hist))
    assert n == 1


# ------------------------------------------------------------------ where it shows


def test_report_and_dashboard_list_the_blind_detectors(tmp_path, runs):
    from supervisor.dashboard.data import RunView
    from supervisor.report import build_report, render

    meta, rows = runs["healthy_s1"]
    run = tmp_path / "run"
    run.mkdir()
    store = Store(run / "supervisor.db")
    store.upsert_run("run", "run", "run", "running")
    eng = Engine(store, SupervisorConfig())
    eng.register_trial("t", "run", config={"priors": _priors(meta, rows)})
    for i, row in enumerate(rows[:5]):
        m = {k: v for k, v in drop_no_data(dict(row)).items() if k != "entropy"}
        eng.observe({"trial_id": "t", "seq": i, "iteration": i + 1, "metrics": m})
    eng.finish_trial("t", "completed")
    store.close()
    rep = build_report(run)
    (t,) = rep["trials"]
    assert {b["detector"] for b in t["blind"]} == {"entropy_collapse", "entropy_saturated", "premature_convergence"}
    assert all(b["metrics"] == ["entropy"] and b["iteration"] == 3 for b in t["blind"])
    for fmt in ("text", "md", "html"):
        out = render(rep, fmt)
        assert "blind detectors" in out and "entropy_saturated (entropy)" in out, fmt
    assert json.loads(render(rep, "json"))["trials"][0]["blind"] == t["blind"]
    view = RunView(run)
    try:
        d = view.trial_detail("t")
    finally:
        view.close()
    assert d["blind"] == t["blind"]
    (f,) = [f for f in d["findings"] if f["detector"] == "metrics_missing"]
    assert f["blind"]["entropy_collapse"] == ["entropy"]
