"""Crash forensics, the data guard and hung trials in the Ray-free core: synthetic crashes, batches and clocks
with a known answer."""

import math

import numpy as np
import pytest

from supervisor import crash
from supervisor.config import SupervisorConfig
from supervisor.data_guard import DataGuard
from supervisor.detectors import DataPoisoned, ObsOutOfRange
from supervisor.detectors.trial_hung import TrialHung, node_hung
from supervisor.engine import Engine
from supervisor.history import History
from supervisor.report import build_report
from supervisor.report.text import render_text
from supervisor.store import Store

SITE = "/usr/lib/python3.11/site-packages"
ENV_STEP = [
    {"file": f"{SITE}/ray/tune/trainable/trainable.py", "line": 326, "function": "train"},
    {"file": f"{SITE}/ray/rllib/algorithms/algorithm.py", "line": 3802, "function": "_run_one_training_iteration"},
    {"file": f"{SITE}/ray/rllib/env/single_agent_env_runner.py", "line": 360, "function": "_sample"},
    {"file": f"{SITE}/gymnasium/wrappers/common.py", "line": 125, "function": "step"},
    {"file": "/home/me/project/envs/robot.py", "line": 41, "function": "step", "code": "raise SensorFault(...)"},
]
SEGMENT_TREE = [
    {"file": f"{SITE}/ray/rllib/algorithms/dqn/dqn.py", "line": 688, "function": "_training_step_new_api_stack"},
    {"file": f"{SITE}/ray/rllib/utils/replay_buffers/prioritized_episode_buffer.py", "line": 473,
     "function": "sample"},
    {"file": f"{SITE}/ray/rllib/execution/segment_tree.py", "line": 191, "function": "find_prefixsum_idx"},
]


def report(exc, msg, frames, **kw):
    return {"exception": exc, "message": msg, "frames": crash.tag(frames), "chain": [exc], **kw}


def test_frame_origins_and_the_innermost_frames_by_origin():
    fr = crash.tag(ENV_STEP + [{"file": "/work/repo/actors/callback.py", "line": 1, "function": "guarded"}],
                   own_roots=("/work/repo/actors",))
    assert [f["origin"] for f in fr] == ["ray", "rllib", "rllib", "library", "user", "supervisor"]
    split = crash.by_origin(fr)
    assert list(split) == ["user", "rllib", "ray", "library"]  # the supervisor's own frames are left out
    assert split["user"][0]["function"] == "step" and split["rllib"][0]["function"] == "_sample"  # innermost first


def test_env_exception_is_named_with_its_frame():
    c = crash.classify(report("SensorFault", "lidar returned garbage at step 250", ENV_STEP))
    assert c.kind == "env_exception" and not c.actionable
    assert "robot.py:41 in step" in c.evidence[0]
    msg = crash.message({"exception": "SensorFault", "message": "lidar returned garbage at step 250",
                         "iteration": 3, "node_id": "abcdef1234567890"}, c)
    assert msg.startswith("SensorFault: lidar returned garbage at step 250") and "iteration 3" in msg


def test_dqn_replay_assertion_with_nan_in_the_data_is_non_finite_data():
    rep = report("AssertionError", "", SEGMENT_TREE, guard={"nonfinite_rewards": 480})
    c = crash.classify(rep)
    assert c.kind == "non_finite_data" and c.where == "env data" and not c.actionable
    assert any("segment_tree.py:191 in find_prefixsum_idx" in e for e in c.evidence)
    # without the guard's counts but with NaN returns in the newest reports: the same cause
    c = crash.classify(report("AssertionError", "", SEGMENT_TREE), [{"episode_return_mean": math.nan}])
    assert c.kind == "non_finite_data"
    # and with nothing to show for it: an assertion inside RLlib
    assert crash.classify(report("AssertionError", "", SEGMENT_TREE)).kind == "rllib_assertion"


def test_learner_nan_and_blowups_are_actionable():
    torch_frames = SEGMENT_TREE[:1] + [{"file": f"{SITE}/torch/distributions/distribution.py", "line": 68,
                                        "function": "__init__"}]
    c = crash.classify(report("ValueError", "Expected parameter logits ... found invalid values: tensor([nan])",
                              torch_frames))
    assert c.kind == "non_finite_update" and c.actionable
    c = crash.classify(report("RuntimeError", "boom", torch_frames), [{"total_loss": math.inf}])
    assert c.kind == "non_finite_update"
    c = crash.classify(report("RuntimeError", "boom", torch_frames), [{"total_loss": 3.0}],
                       [{"detector": "gradient_explosion", "severity": "critical", "iteration": 7, "message": "x"}])
    assert c.kind == "update_blowup" and c.actionable


@pytest.mark.parametrize("exc,msg,kind", [
    ("OutOfMemoryError", "Task was killed due to the node running low on memory", "out_of_memory"),
    ("OutOfMemoryError", "CUDA out of memory. Tried to allocate 2.00 GiB", "out_of_memory"),
    ("ActorDiedError", "The actor died unexpectedly before finishing this task", "worker_died"),
    ("DistBackendError", "NCCL error in: ... unhandled system error", "collective_timeout"),
    ("GetTimeoutError", "Get timed out: some object(s) not ready", "collective_timeout"),
])
def test_resource_and_infrastructure_causes(exc, msg, kind):
    c = crash.classify(report(exc, msg, SEGMENT_TREE))
    assert c.kind == kind
    if "CUDA" in msg:
        assert c.where == "GPU"


def test_report_from_a_tune_error_file_unwraps_ray_task_errors():
    text = ("Failure # 1 (occurred at 2026-12-06_20-00-00)\n"
            "ray::SupervisedPPO.train() (pid=123, ip=10.0.0.2, actor_id=abc)\n"
            '  File "/x/site-packages/ray/tune/trainable/trainable.py", line 329, in train\n'
            "    raise skipped from exception_cause(skipped)\n"
            '  File "/home/me/envs/robot.py", line 41, in step\n'
            "    raise SensorFault(f'lidar at step {n}')\n"
            "robot.SensorFault: lidar at step 250\n")
    rep = crash.report_from_text(text)
    assert rep["exception"] == "SensorFault" and rep["message"] == "lidar at step 250"
    assert rep["frames"][-1] == {"file": "/home/me/envs/robot.py", "line": 41, "function": "step",
                                 "code": "raise SensorFault(f'lidar at step {n}')"}
    rep = crash.report_from_text("RayTaskError(ZeroDivisionError): ray::f() (pid=1)\nZeroDivisionError: division by zero")
    assert rep["exception"] == "ZeroDivisionError"
    # RLlib's env runner re-raises an env's error bare (``raise RuntimeError from e``): the cause tells
    chained = ("Traceback (most recent call last):\n"
               '  File "/home/me/envs/robot.py", line 41, in step\n'
               "robot.SensorFault: lidar at step 250\n\n"
               "The above exception was the direct cause of the following exception:\n\n"
               "Traceback (most recent call last):\n"
               '  File "/x/site-packages/ray/rllib/env/env_runner.py", line 291, in _try_env_step\n'
               "    raise RuntimeError from e\n"
               "RuntimeError\n")
    rep = crash.report_from_text(chained)
    assert (rep["exception"], rep["message"]) == ("SensorFault", "lidar at step 250")


def test_a_nan_observation_that_breaks_the_policy_is_the_environments_data():
    # the policy's forward pass raises on a NaN observation before the guard sees the sample; the trial's
    # probe of its episodes in progress found it (and the weights finite)
    torch_frames = SEGMENT_TREE[:1] + [{"file": f"{SITE}/torch/distributions/distribution.py", "line": 68,
                                        "function": "__init__"}]
    rep = report("ValueError", "Expected parameter logits ... found invalid values: tensor([nan])", torch_frames,
                 guard={"nonfinite_obs": 1}, weights_finite=True)
    c = crash.classify(rep)
    assert c.kind == "non_finite_data" and not c.actionable
    c = crash.classify(report("ValueError", "found invalid values", torch_frames, weights_finite=False))
    assert c.kind == "non_finite_update" and "weights are non-finite" in " ".join(c.evidence)


# ---------------------------------------------------------------------------------------------- the data guard
def batch(rng, n=4, T=40, nan_reward=None, nan_obs=None, garbage=None, feature=None):
    r, o, a = [], [], []
    for i in range(n):
        rr = np.ones(T)
        oo = rng.normal(0, 1, (T + 1, 4)).astype(np.float32)
        if nan_reward == i:
            rr[T // 2] = np.nan
        if nan_obs == i:
            oo[3, 2] = np.inf
        if garbage == i:
            cols = slice(None) if feature is None else slice(feature, feature + 1)
            oo[T // 2:, cols] = 5e3
        r.append(rr), o.append(oo), a.append(rng.integers(0, 2, T))
    return r, o, a


def test_guard_holds_non_finite_episodes_and_judges_the_range_after_warmup():
    rng = np.random.default_rng(0)
    g = DataGuard(range_factor=10, warmup_steps=100)
    assert g.check(*batch(rng, n=2))[1].out_of_range_steps == 0  # 80 steps: the range is not judged yet
    keep, st = g.check(*batch(rng))
    assert keep.all() and st.out_of_range_steps == 0
    keep, st = g.check(*batch(rng, nan_reward=0, nan_obs=2))
    assert keep.tolist() == [False, True, False, True]
    assert (st.nonfinite_rewards, st.nonfinite_obs, st.poisoned_episodes, st.dropped_steps) == (1, 1, 2, 80)
    keep, st = g.check(*batch(rng, garbage=3, feature=2))
    assert keep.all()  # out of range: reported, kept until quarantine
    assert st.out_of_range_episodes == 1 and st.out_of_range_features == [2] and st.range_excess > 10
    g.quarantine = True
    keep, st = g.check(*batch(rng, garbage=3, feature=2))
    assert keep.tolist() == [True, True, True, False] and st.dropped_episodes == 1
    assert g.hi[2] < 100  # the range never grows with what was flagged


def test_guard_hold_off_reports_without_dropping():
    g = DataGuard(hold=False)
    keep, st = g.check(*batch(np.random.default_rng(1), nan_reward=1))
    assert keep.all() and st.poisoned_episodes == 1 and st.dropped_episodes == 0


def test_data_poisoned_every_iteration_and_names_the_cause_after_quarantine():
    det, h = DataPoisoned(), History(16)
    assert det(1, {"data_guard_nan_rewards": 0.0}, h) == []
    f = det(2, {"data_guard_nan_rewards": 480.0, "data_guard_poisoned": 12.0, "data_guard_dropped": 12.0}, h)
    assert f[0].severity == "critical" and "non-finite rewards" in f[0].message and "held out" in f[0].message
    f = det(3, {"data_guard_nan_rewards": 500.0, "data_guard_quarantine": 1.0}, h)
    assert "the environment produces non-finite rewards" in f[0].message and "rollback cannot help" in f[0].message


def test_obs_out_of_range_is_a_warning_with_the_feature():
    det, h = ObsOutOfRange(), History(16)
    assert det(1, {"data_guard_out_of_range": 3.0, "data_guard_steps": 1000.0}, h) == []  # 0.3 %: below 1 %
    f = det(2, {"data_guard_out_of_range": 400.0, "data_guard_steps": 1000.0, "data_guard_range_feature": 2.0,
                "data_guard_range_features": 1.0, "data_guard_range_excess": 250.0}, h)
    assert f[0].severity == "warning" and "feature 2" in f[0].message and f[0].details["feature"] == 2


# ---------------------------------------------------------------------------------------------- the engine
@pytest.fixture
def engine(tmp_path):
    store = Store(tmp_path / "supervisor.db")
    store.upsert_run("r", "r", "run", "running")
    eng = Engine(store, SupervisorConfig(checkpoint_every=2, hang={"factor": 10, "floor_s": 2.0}))
    eng.register_trial("t", "r", node_id="node-a")
    yield eng
    store.close()


def good(i):
    return {"episode_return_mean": 20.0 + i, "total_loss": 1.0, "lr": 1e-3, "time_this_iter_s": 0.1,
            "data_guard_steps": 1000.0, "data_guard_nan_rewards": 0.0, "data_guard_out_of_range": 0.0}


def feed(eng, n, start=0):
    for s in range(start, start + n):
        v = eng.observe({"trial_id": "t", "seq": s, "iteration": s + 1, "metrics": good(s)})
        if v.checkpoint:
            eng.record_checkpoint("t", s, s + 1, f"/ckpt/{s}", {"lr": 1e-3})


def test_env_crash_is_retried_once_then_stopped_with_the_cause(engine, tmp_path):
    feed(engine, 4)
    rep = report("SensorFault", "lidar returned garbage", ENV_STEP, iteration=5, node_id="node-a")
    d1 = engine.crash("t", rep)
    assert d1["action"] == "restart" and d1["finding"]["severity"] == "critical"
    assert d1["finding"]["message"].startswith("SensorFault: lidar returned garbage")
    reg = engine.register_trial("t", "r")  # Tune's restart
    assert reg["next_seq"] == d1["seq"] + 1 and reg["stop"] is None  # the crash took a seq of its own
    # the driver's copy of a crash the trial told is the same crash
    again = engine.crash("t", {**crash.report_from_text("x\nSensorFault: lidar"), "source": "driver"})
    assert again["duplicate"] and again["seq"] == d1["seq"]
    d2 = engine.crash("t", {**rep, "iteration": 5})
    assert d2["action"] == "stop" and "repeats the same way" in d2["reason"]
    assert engine.register_trial("t", "r")["stop"] == d2["reason"]  # a restarted process stops at once
    assert engine.finish_trial("t", "completed") == "stopped"
    t = build_report(tmp_path)["trials"][0]
    assert [f["detector"] for f in t["findings"]].count("trial_crashed") == 2
    assert [i["action"] for i in t["interventions"]] == ["restart_trial", "stop_trial"]
    assert t["crash"]["exception"] == "SensorFault" and t["crash"]["cause"] == "env_exception"
    assert t["crash"]["frames"]["user"][0]["function"] == "step" and t["crash"]["crashes"] == 2
    text = render_text(build_report(tmp_path))
    assert "crashed (crash 2): SensorFault: lidar returned garbage" in text and "user frames" in text


def test_actionable_crash_restarts_with_a_lower_lr_for_the_restarted_trial(engine):
    feed(engine, 4)
    torch_frames = [{"file": f"{SITE}/torch/distributions/distribution.py", "line": 68, "function": "__init__"}]
    d = engine.crash("t", report("ValueError", "found invalid values: tensor([nan, nan])", torch_frames))
    assert d["action"] == "restart" and d["cause"]["kind"] == "non_finite_update"
    assert d["overrides"]["lr"] == pytest.approx(1e-4)  # reduce_lr (x0.1), applied on the supervisor side
    reg = engine.register_trial("t", "r")
    assert reg["overrides"]["lr"] == pytest.approx(1e-4) and reg["checkpoint"]["iteration"] == 4
    # the restarted trial's first report verifies the change
    v = engine.observe({"trial_id": "t", "seq": reg["next_seq"], "iteration": 5, "metrics": {**good(5), "lr": 1e-4}})
    assert v.reported
    ivs = {i["action"]: i for i in engine.store.interventions("t")}
    assert ivs["reduce_lr"]["verified"] == 1 and ivs["restart_trial"]["detector"] == "trial_crashed"


def test_non_finite_env_data_crash_stops_at_once(engine):
    feed(engine, 2)
    d = engine.crash("t", report("AssertionError", "", SEGMENT_TREE, guard={"nonfinite_rewards": 300}))
    assert d["action"] == "stop" and "outside the weights" in d["reason"]


def test_hung_iteration_on_the_supervisors_clock(engine):
    feed(engine, 3)  # median iteration 0.1 s: 10 x that is under the floor, 2 s
    st = engine.trials["t"]
    t0 = st.iter_started
    assert engine.heartbeat("t", {"iteration": 4, "phase": "sampling"}, now=t0 + 0.5) == {}
    assert engine.hung(now=t0 + 1.9) == []
    out = engine.hung(now=t0 + 2.5)
    assert len(out) == 1 and out[0]["action"] == "restart" and out[0]["node_id"] == "node-a"
    f = out[0]["finding"]
    assert f["detector"] == "trial_hung" and f["details"]["phase"] == "sampling" and "node node-a" in f["message"]
    assert engine.hung(now=t0 + 10) == []  # once per iteration
    assert engine.heartbeat("t", {"iteration": 4, "phase": "sampling"}, now=t0 + 3)["restart"]  # told once
    assert engine.heartbeat("t", {"iteration": 4, "phase": "sampling"}, now=t0 + 4) == {}
    # the killed process's death is no crash of its own
    assert engine.crash("t", {**crash.report_from_text("x\nActorDiedError: died"), "source": "driver"})["duplicate"]
    reg = engine.register_trial("t", "r")  # Tune restarted it
    assert reg["stop"] is None
    st = engine.trials["t"]
    assert st.iter_started is None and engine.hung(now=t0 + 100) == []  # restoring is no iteration
    engine.heartbeat("t", {"iteration": 4, "phase": "between"}, now=t0 + 100)
    assert engine.hung(now=t0 + 200) == []
    engine.heartbeat("t", {"iteration": 4, "phase": "sampling"}, now=t0 + 200)  # its clock starts here
    assert engine.hung(now=t0 + 201.9) == []
    out = engine.hung(now=t0 + 202.5)  # hung again: the ladder's next rung stops it
    assert out[0]["action"] == "stop"


def test_many_trials_hung_on_one_node_is_a_node_finding():
    hung = [{"trial_id": f"t{i}", "node_id": "n1", "phase": "sampling"} for i in range(3)]
    hung.append({"trial_id": "t9", "node_id": "n2", "phase": "learning"})
    out = node_hung(hung, {"n1": 4, "n2": 6})
    assert [f["node_id"] for f in out] == ["n1"] and "3 of 4 trials" in out[0]["message"]


def test_hang_bound_is_k_times_the_median_never_under_the_floor():
    det = TrialHung(10, 300)
    assert det.bound(2.0) == 300 and det.bound(60.0) == 600 and det.bound(None) == 3000


def test_trials_hung_on_one_node_within_their_bound_make_one_node_finding(tmp_path):
    from actors.supervisor_actor import SupervisorService

    svc = SupervisorService()  # the actor's own class, in this process
    svc.open_run("r", str(tmp_path), "r", "sweep", settings={"hang": {"factor": 10, "floor_s": 2.0}})
    nodes = {"a": "n1", "b": "n1", "c": "n1", "d": "n2"}
    for tid, node in nodes.items():
        svc.register_trial(tid, "r", node_id=node)
    eng, t0 = svc.runs["r"], 1000.0
    # no iteration finished yet: the bound is factor x floor = 20 s; iterations that started a second apart
    for i, tid in enumerate(nodes):
        eng.heartbeat(tid, {"iteration": 1, "phase": "sampling"}, now=t0 + i)
    found, node = svc.check_hung(now=t0 + 20.5)
    assert [h["trial_id"] for h in found] == ["a"] and node == []  # one trial of three: its own fault
    found, node = svc.check_hung(now=t0 + 21.5)
    assert [h["trial_id"] for h in found] == ["b"]
    (f,) = node  # a and b, a second apart, are hung at once: the node
    assert f["detector"] == "trial_hung" and f["node_id"] == "n1" and "2 of 3 trials" in f["message"]
    assert f["details"]["trials"] == ["a", "b"]
    found, node = svc.check_hung(now=t0 + 22.5)
    assert [h["trial_id"] for h in found] == ["c"] and node == []  # the node is found once
    found, node = svc.check_hung(now=t0 + 23.5)
    assert [h["trial_id"] for h in found] == ["d"] and node == []  # n2's one trial: its own
    svc.close_run("r", "completed")
