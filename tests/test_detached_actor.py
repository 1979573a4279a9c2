"""The detached supervisor actor for real (one local Ray for the module): killed between a repair and its
outcome it judges the outcome on the trial's real next reports; a run whose driver died is closed as lost
by the actor itself, its store let go; and every entry point gives two folders named alike their own run.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from actors.supervisor_actor import get_or_create_supervisor  # noqa: E402
from supervisor.config import SupervisorConfig  # noqa: E402
from actors.bootstrap import run_id_for  # noqa: E402  (the CLI's run id)
from supervisor.store import Store  # noqa: E402
from tests.test_restart import N, SETTINGS, SimTrial, _verdict, healthy, judge  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gcs():
    before = os.environ.get("RL_SUPERVISOR_NODE_MONITORS")
    os.environ["RL_SUPERVISOR_NODE_MONITORS"] = "0"  # one node, nothing to watch: no monitor process to start
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        if before is None:
            os.environ.pop("RL_SUPERVISOR_NODE_MONITORS", None)
        else:
            os.environ["RL_SUPERVISOR_NODE_MONITORS"] = before


def _call(method: str, *args, run=None, timeout_s: float = 60.0, **kwargs):
    """Call the supervisor actor as a trial does: through a restart (the call fails while Ray brings it
    back) and an unknown run (reopened with what the trial carries)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            out = ray.get(getattr(get_or_create_supervisor(), method).remote(*args, **kwargs), timeout=30)
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
            continue
        if run is not None and (out is False or isinstance(out, dict) and out.get("unknown_run")):
            ray.get(get_or_create_supervisor().open_run.remote(run["run_id"], **run["info"]), timeout=30)
            continue
        return out


def test_killing_the_actor_between_a_repair_and_its_outcome_changes_nothing(gcs, tmp_path):
    reference = judge(tmp_path / "reference.db", False)  # one engine, never restarted
    run_dir = tmp_path / "run"
    run = {"run_id": run_id_for(run_dir),
           "info": {"run_dir": str(run_dir), "name": "mid-repair", "kind": "run",
                    "settings": SupervisorConfig(**SETTINGS).model_dump(mode="json"), "spec": None,
                    "profile": None}}
    rid = run["run_id"]
    _call("open_run", rid, **run["info"])
    _call("register_trial", "t", rid, None, None, run["info"])
    trial, verdicts, kill_at, pids = SimTrial(), [], None, []
    for seq in range(N):
        applied = trial.take_applied()
        if applied:  # what the trial did, before its next report (the client's one route for it)
            assert _call("acknowledge", rid, "t", applied, run=run) is True
        v = _call("report", rid, {"trial_id": "t", "seq": seq, "iteration": trial.progress + 1,
                                  "metrics": trial.metrics(seq)}, run=run)
        verdicts.append(_verdict(v))
        if v["checkpoint"]:
            _call("record_checkpoint", rid, "t", seq, trial.progress + 1, trial.save(seq), dict(trial.hp))
        trial.apply(v["actions"])
        trial.step()
        if kill_at is None and any(a["action"] == "raise_kl_coeff" for a in v["actions"]):
            kill_at = seq + 1  # after the report that shows it applied, inside its outcome window
        if seq == kill_at:
            pids.append(_call("ping")["pid"])
            ray.kill(get_or_create_supervisor(), no_restart=False)  # Ray restarts it
    assert kill_at is not None
    _call("acknowledge", rid, "t", trial.take_applied(), run=run)
    final = _call("finish_trial", rid, "t", "completed", run=run)
    pids.append(_call("ping")["pid"])
    assert pids[0] != pids[1], "the actor really died and came back"
    assert verdicts == reference[0][:len(verdicts)] and len(verdicts) == len(reference[0])
    st = Store.open_readonly(run_dir / "supervisor.db")
    ivs = [(i["seq"], i["action"], i["outcome"], i["verified"], i["judged_seq"]) for i in st.interventions("t")]
    st.close()
    assert ivs == reference[1]
    (kl,) = [i for i in ivs if i[1] == "raise_kl_coeff"]
    assert kl[2] == "ineffective" and kl[4] > kill_at  # judged on the reports after the restart
    assert final == reference[2]
    _call("close_run", rid, "completed")


def test_a_run_whose_driver_died_is_closed_as_lost_and_let_go(gcs, tmp_path):
    import psutil

    run_dir = tmp_path / "orphan"
    rid = run_id_for(run_dir)
    info = {"run_dir": str(run_dir), "name": "orphan", "kind": "run", "spec": None, "profile": None,
            "settings": SupervisorConfig(lost_after_s=1.0).model_dump(mode="json")}
    _call("open_run", rid, **info)
    for tid in ("t0", "t1"):
        _call("register_trial", tid, rid, None, None, info)
        for s in range(3):
            _call("report", rid, {"trial_id": tid, "seq": s, "iteration": s + 1,
                                  "metrics": {**healthy(s), "time_this_iter_s": 0.01}})
    pid = _call("ping")["pid"]
    # the driver is gone: nothing more is heard of the run
    deadline = time.monotonic() + 30
    while rid in _call("ping")["runs"] and time.monotonic() < deadline:
        time.sleep(0.25)
    assert rid not in _call("ping")["runs"], "the actor did not close the orphaned run by itself"
    st = Store.open_readonly(run_dir / "supervisor.db")
    assert st.runs()[0]["status"] == "lost" and [t["status"] for t in st.trials()] == ["lost", "lost"]
    st.close()
    held = [f.path for f in psutil.Process(pid).open_files() if f.path.startswith(str(run_dir))]
    assert held == [], f"the actor still holds the lost run's files: {held}"
    trials = {t["trial_id"]: t["status"] for t in _call("snapshot")["trials"]}
    assert trials.get("t0") == trials.get("t1") == "lost"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "supervisor", "report", str(run_dir), "--format", "json"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    assert rep["run"]["status"] == "lost" and {t["status"] for t in rep["trials"]} == {"lost"}


def test_the_api_gives_folders_named_alike_their_own_run_and_store(gcs, tmp_path):
    from supervisor import Supervisor

    a, b = tmp_path / "a" / "ppo", tmp_path / "b" / "ppo"
    sa = Supervisor(a, address=gcs, trial_id="ta")
    sb = Supervisor(b, address=gcs, trial_id="tb")
    assert (sa.run_id, sb.run_id) == (run_id_for(a), run_id_for(b)) and sa.run_id != sb.run_id
    for i in range(3):
        sa.observe(i, {"charts/episodic_return": 20.0 + i, "losses/approx_kl": 0.01})
        sb.observe(i, {"charts/episodic_return": 30.0 + i, "losses/approx_kl": 0.01})
    assert sa.close() == sb.close() == "completed"
    for d, tid in ((a, "ta"), (b, "tb")):
        st = Store.open_readonly(d / "supervisor.db")
        assert [r["run_id"] for r in st.runs()] == [run_id_for(d)]
        assert [t["trial_id"] for t in st.trials()] == [tid] and len(st.reports(tid)) == 3
        st.close()


def test_rllib_supervise_gives_folders_named_alike_their_own_run_and_store(gcs, tmp_path):
    from ray.rllib.algorithms.ppo import PPOConfig

    from actors.rllib import supervise

    a, b = tmp_path / "a" / "ppo", tmp_path / "b" / "ppo"
    for d in (a, b):
        supervise(PPOConfig().environment("CartPole-v1"), run_dir=d)
    for d in (a, b):  # each folder's own store, opened by the actor under the folder's path-derived id
        st = Store.open_readonly(d / "supervisor.db")
        assert [r["run_id"] for r in st.runs()] == [run_id_for(d)]
        st.close()
        assert run_id_for(d) in _call("ping")["runs"]
        _call("close_run", run_id_for(d), "completed")


def test_the_tune_driver_callback_sends_and_collects_later(gcs, tmp_path):
    """Tune's controller never waits on the supervisor while trials run: a trial's closing call is sent,
    its answer (the final status) taken at a later controller step."""
    from types import SimpleNamespace

    from actors.bootstrap import RunInfo
    from actors.tune.callback import SupervisorTuneCallback

    run_dir = tmp_path / "sweep"
    run = RunInfo(run_id_for(run_dir), run_dir, "sweep", "sweep", SupervisorConfig())
    cb = SupervisorTuneCallback(run, quiet=True)
    cb.setup(total_num_samples=1)
    assert cb._inflight and cb._pid is None  # open_run sent, not waited for
    cb._collect(timeout=60)
    assert cb._pid == _call("ping")["pid"] and (run_dir / "supervisor.db").exists()
    _call("register_trial", "t0", run.run_id, None, None, run.actor_args())
    cb.on_trial_complete(0, [], SimpleNamespace(trial_id="t0", config={}))
    assert "t0" in cb._unsure and len(cb._inflight) == 1  # sent; Tune's controller goes on
    deadline = time.monotonic() + 60
    while cb._inflight and time.monotonic() < deadline:
        cb.on_step_begin(0, [])
        time.sleep(0.05)
    assert not cb._unsure and cb.status == {"t0": "completed"}
    cb.on_experiment_end([])
    st = Store.open_readonly(run_dir / "supervisor.db")
    assert st.runs()[0]["status"] == "completed" and st.trials()[0]["status"] == "completed"
    st.close()
