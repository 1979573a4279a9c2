"""A bounded detached actor, without Ray: runs whose driver died are closed as lost, nodes long gone
are forgotten, and runs and nodes coming and going leave nothing behind in the actor's memory. (The
real actor doing the same by itself: ``tests/test_detached_actor.py``; a thousand runs and two hundred
node joins and leaves through one actor: ``benchmarks/soak.py``.)"""

from __future__ import annotations

import time
from collections import deque

from actors.node_monitor import ClusterWatch
from actors.supervisor_actor import SupervisorService
from supervisor.cluster import ClusterSettings, ClusterState
from supervisor.store import Store
from tests.test_restart import healthy


def _reports(tid: str, n: int, it_s: float) -> list[dict]:
    return [{"trial_id": tid, "seq": s, "iteration": s + 1, "metrics": {**healthy(s), "time_this_iter_s": it_s}}
            for s in range(n)]


def test_a_run_silent_for_ten_median_iterations_and_the_floor_is_closed_as_lost(tmp_path):
    svc = SupervisorService()
    fast, slow = tmp_path / "fast", tmp_path / "slow"
    for rid, d in (("fast", fast), ("slow", slow)):
        svc.open_run(rid, str(d), rid, "run", {"lost_after_s": 600})
        svc.register_trial(f"{rid}-t", rid)
    svc.report_batch("fast", _reports("fast-t", 5, 2.0))  # 10 x 2 s < the 600 s floor
    svc.report_batch("slow", _reports("slow-t", 5, 100.0))  # 10 x 100 s = 1000 s > the floor
    assert svc.lost_after_s("fast") == 600 and svc.lost_after_s("slow") == 1000
    t0 = time.time()
    assert svc.housekeeping(t0 + 590) == [] and set(svc.runs) == {"fast", "slow"}
    svc.housekeeping(t0 + 700)
    assert set(svc.runs) == {"slow"}  # the fast run's driver is gone; the slow one may still be training
    svc.housekeeping(t0 + 1100)
    assert svc.runs == {} and svc.specs == {} and svc.last_seen == {} and svc.run_of == {}
    for rid, d in (("fast", fast), ("slow", slow)):
        st = Store.open_readonly(d / "supervisor.db")
        assert st.runs()[0]["status"] == "lost" and st.runs()[0]["ended"] is not None
        assert [t["status"] for t in st.trials()] == ["lost"]
        st.close()
    assert {t["status"] for t in svc.snapshot()["trials"]} == {"lost"}  # `supervise status` shows them


def test_a_finished_trial_keeps_its_status_when_its_run_is_lost(tmp_path):
    svc = SupervisorService()
    svc.open_run("r", str(tmp_path), "r", "sweep", {"lost_after_s": 1})
    for tid in ("done", "cut"):
        svc.register_trial(tid, "r")
        svc.report_batch("r", _reports(tid, 3, 0.01))
    assert svc.finish_trial("r", "done", "completed") == "completed"
    svc.housekeeping(time.time() + 5)
    st = Store.open_readonly(tmp_path / "supervisor.db")
    assert {t["trial_id"]: t["status"] for t in st.trials()} == {"done": "completed", "cut": "lost"}
    st.close()


def test_nodes_down_for_an_hour_are_forgotten():
    cs = ClusterState(ClusterSettings(node_prune_s=3600))
    up = [{"NodeID": n, "Alive": True, "NodeManagerAddress": "10.0.0.1"} for n in ("a", "b")]
    cs.sync_ray_nodes(up, 0.0)
    cs.heartbeat({"node_id": "b", "memory_percent": 99.0}, 0.0)
    assert any(k[0] == "b" for k in cs.conditions.active)  # memory_pressure latched on b
    (f,) = cs.sync_ray_nodes([up[0], {**up[1], "Alive": False}], 10.0)
    assert f["detector"] == "node_down" and f["node_id"] == "b"
    assert cs.prune(10.0) == [] and cs.prune(3000.0) == [] and "b" in cs.nodes
    assert cs.prune(3611.0) == ["b"]
    assert set(cs.nodes) == {"a"} and not any(k[0] == "b" for k in cs.conditions.active)
    # Ray lists dead nodes for long after: one forgotten is not taken in again
    assert cs.sync_ray_nodes([up[0], {**up[1], "Alive": False}], 3612.0) == []
    assert [r["node_id"] for r in cs.node_rows(3612.0)] == ["a"]


def _sizes(*objs) -> dict[str, int]:
    """The length of every container each object holds (bounded deques excepted: they cannot grow)."""
    out = {}
    for o in objs:
        for k, v in vars(o).items():
            if isinstance(v, deque) and v.maxlen is not None:
                continue
            if isinstance(v, (dict, set, list, deque)):
                out[f"{type(o).__name__}.{k}"] = len(v)
    return out


def test_runs_and_nodes_coming_and_going_leave_nothing_behind(tmp_path, monkeypatch):
    """One run after another, each while a node joins and another leaves (Ray keeps listing the dead ones):
    after warming up, no container in the actor's state grows."""
    import ray

    listed: dict[str, bool] = {}
    monkeypatch.setattr(ray, "nodes", lambda: [{"NodeID": n, "Alive": a, "NodeManagerAddress": "10.0.0.1",
                                                "Resources": {"CPU": 1.0}} for n, a in listed.items()])
    svc = SupervisorService()
    watch = ClusterWatch(svc)
    watch.monitors_enabled = False  # no Ray here to start monitors on
    watch.settings.node_prune_s = 0.0

    def one_run(i: int) -> None:
        rid = f"run{i}"
        svc.open_run(rid, str(tmp_path / rid), rid, "run")
        for k in range(3):
            svc.register_trial(f"{rid}-{k}", rid)
            svc.report_batch(rid, _reports(f"{rid}-{k}", 4, 1.0 + k))
        listed[f"n{i}"] = True
        watch.heartbeat({"node_id": f"n{i}", "address": "10.0.0.1", "memory_percent": 40.0, "cpu_percent": 5.0})
        watch.tick()
        if i >= 2:
            listed[f"n{i - 2}"] = False  # a node leaves; Ray goes on listing it, dead
        watch.tick()
        watch.tick()
        svc.close_run(rid, "completed")
        watch.tick()

    for i in range(8):
        one_run(i)
    before = _sizes(svc, watch, watch.state, watch.state.conditions)
    for i in range(8, 30):
        one_run(i)
    after = _sizes(svc, watch, watch.state, watch.state.conditions)
    grew = {k: (before.get(k, 0), n) for k, n in after.items() if n > before.get(k, 0)}
    assert not grew, f"per-run or per-node state grew from run 8 to run 30: {grew}"
    assert len(watch.state.nodes) <= 3


def test_a_lost_run_that_reports_again_is_running_again(tmp_path):
    """A driver taken for dead (a long pause, a partition) that comes back: its next report reopens the
    run (the trial's client does so on ``unknown_run``) and the trial runs again."""
    svc = SupervisorService()
    svc.open_run("r", str(tmp_path), "r", "run", {"lost_after_s": 1})
    svc.register_trial("t", "r")
    svc.report_batch("r", _reports("t", 3, 0.01))
    svc.housekeeping(time.time() + 5)
    assert svc.report_batch("r", _reports("t", 4, 0.01)[3:])[0]["unknown_run"]
    svc.open_run("r", str(tmp_path), "r", "run", {"lost_after_s": 1})
    (v,) = svc.report_batch("r", _reports("t", 4, 0.01)[3:])
    assert v["seq"] == 3 and not v.get("duplicate")
    st = Store.open_readonly(tmp_path / "supervisor.db")
    assert st.runs()[0]["status"] == "running" and st.trials()[0]["status"] == "running"
    st.close()
    assert svc.finish_trial("r", "t", "completed") == "completed"
