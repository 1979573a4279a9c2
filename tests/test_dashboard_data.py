"""The dashboard's data layer against a real store: each trial row carries the report's compute account."""

from __future__ import annotations

from supervisor.config import SupervisorConfig
from supervisor.dashboard.data import Hub, RunView
from supervisor.engine import Engine
from supervisor.report import build_report
from supervisor.store import Store


def _run(folder, stop: dict, trials: dict[str, tuple[int, int, str]]) -> None:
    """trials: id -> (iterations, env steps per iteration, final status), written through the real engine."""
    store = Store(folder / "supervisor.db")
    store.upsert_run("r", "compute", "sweep", "running", {"name": "compute", "stop": stop})
    eng = Engine(store, SupervisorConfig())
    for tid, (iters, per_iter, status) in trials.items():
        eng.register_trial(tid, "r")
        for seq in range(iters):
            eng.observe({"trial_id": tid, "seq": seq, "iteration": seq + 1,
                         "metrics": {"episode_return_mean": 10.0 + seq, "env_steps_lifetime": per_iter * (seq + 1),
                                     "time_total_s": 1.5 * (seq + 1)}})
        eng.finish_trial(tid, status)
    store.close()


def _rows(folder) -> dict[str, dict]:
    view = RunView(folder)
    try:
        view.poll()
        return {t["trial_id"]: t for t in view.trials}
    finally:
        view.close()


def test_a_stopped_trial_shows_what_it_used_and_what_its_iteration_budget_kept(tmp_path):
    _run(tmp_path, {"iterations": 10}, {"stopped": (5, 200, "stopped"), "full": (10, 300, "completed")})
    rows = _rows(tmp_path)
    assert rows["stopped"]["compute"] == {"env_steps": 1000, "wall_s": 7.5, "saved_env_steps": 1000}
    assert rows["full"]["compute"] == {"env_steps": 3000, "wall_s": 15.0, "saved_env_steps": 0}
    # the very figures `supervise report` prints
    rep = {t["trial_id"]: t["compute"] for t in build_report(tmp_path)["trials"]}
    assert {tid: r["compute"] for tid, r in rows.items()} == rep


def test_a_timestep_budget_and_the_hubs_merged_rows(tmp_path):
    _run(tmp_path, {"timesteps": 5000}, {"stopped": (3, 400, "stopped")})
    hub = Hub("run", str(tmp_path), [RunView(tmp_path)])
    try:
        hub.tick()
        (row,) = hub.state()["trials"]
    finally:
        hub.stop()
    assert row["compute"] == {"env_steps": 1200, "wall_s": 4.5, "saved_env_steps": 3800}


def test_no_stop_in_the_spec_saves_nothing_and_a_damaged_row_has_no_account(tmp_path):
    _run(tmp_path, {}, {"stopped": (2, 100, "stopped"), "bad": (2, 100, "completed")})
    st = Store(tmp_path / "supervisor.db")
    st.set_trial("bad", final={"env_steps_lifetime": "lots"})
    st.close()
    rows = _rows(tmp_path)
    assert rows["stopped"]["compute"] == {"env_steps": 200, "wall_s": 3.0, "saved_env_steps": 0}
    assert rows["bad"]["compute"] is None
