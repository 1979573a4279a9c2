"""Nothing is lost when the store fails: a full disk, a lock another process holds.

A report whose write did not commit gets no verdict (an error instead); the
trial keeps it and sends it again, and the replay is judged and stored, not
taken for a duplicate. Real SQLite limits (``max_page_count``), a real tmpfs
that fills up, a real ``BEGIN EXCLUSIVE`` in another process; the real Engine
and the real supervisor actor.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from supervisor.config import SupervisorConfig
from benchmarks.faults import Locker  # another process holding BEGIN EXCLUSIVE until released
from benchmarks.synthetic import healthy_stream
from supervisor.engine import Engine
from supervisor.store import Store

STREAM = list(healthy_stream(200, seed=3))


def metrics(seq: int, pad: int = 0) -> dict:
    m = dict(STREAM[seq])
    m.update({f"pad_{i}": float(seq * 1000 + i) for i in range(pad)})  # big reports fill pages fast
    return m


def rep(seq: int, trial: str = "t", pad: int = 0, **extra) -> dict:
    return {"trial_id": trial, "seq": seq, "iteration": seq + 1, "metrics": metrics(seq, pad), **extra}


def stored_seqs(path: Path, trial: str = "t") -> list[int]:
    db = sqlite3.connect(path)
    try:
        return [r[0] for r in db.execute("SELECT seq FROM reports WHERE trial_id=? ORDER BY seq", (trial,))]
    finally:
        db.close()


def new_engine(path: Path) -> tuple[Store, Engine]:
    store = Store(path)
    store.upsert_run("r", "r", "run", "running")
    eng = Engine(store, SupervisorConfig(checkpoint_every=3))
    eng.register_trial("t", "r")
    return store, eng


def fill(store: Store) -> None:
    """The database may not grow by one more page: SQLite answers SQLITE_FULL, as on a full disk."""
    n = store.db.execute("PRAGMA page_count").fetchone()[0]
    store.db.execute(f"PRAGMA max_page_count={n}")


def unfill(store: Store) -> None:
    store.db.execute("PRAGMA max_page_count=1073741823")


def test_a_write_on_a_full_database_is_not_lost_nor_taken_for_a_duplicate(tmp_path):
    store, eng = new_engine(tmp_path / "supervisor.db")
    for s in range(5):
        assert not eng.observe(rep(s)).duplicate
    fill(store)
    failed = None
    for s in range(5, 60):  # the first big reports may still fit the last page's free space
        try:
            eng.observe(rep(s, pad=300))
        except sqlite3.OperationalError as e:
            assert "full" in str(e)
            failed = s
            break
    assert failed is not None, "the database never filled up"
    with pytest.raises(sqlite3.OperationalError):  # still full: the replay fails again, not "duplicate"
        eng.observe(rep(failed, pad=300))
    unfill(store)
    v = eng.observe(rep(failed, pad=300))
    assert not v.duplicate and v.seq == failed
    assert eng.observe(rep(failed, pad=300)).duplicate  # now it is stored: a replay is a replay
    assert not eng.observe(rep(failed + 1)).duplicate
    assert stored_seqs(tmp_path / "supervisor.db") == list(range(failed + 2))
    eng.flush(force=True)
    assert store.trial("t")["last_seq"] == failed + 1
    store.close()


def test_a_failed_batch_stores_nothing_and_its_replay_stores_everything_once(tmp_path):
    store, eng = new_engine(tmp_path / "supervisor.db")
    eng.observe_batch([rep(s, trial) for s in range(3) for trial in ("t", "u")])
    fill(store)
    batch = [rep(s, trial, pad=400) for s in range(3, 9) for trial in ("t", "u")]
    with pytest.raises(sqlite3.OperationalError):
        eng.observe_batch(batch)
    assert stored_seqs(tmp_path / "supervisor.db", "u") == [0, 1, 2]  # all of the batch or nothing
    unfill(store)
    out = eng.observe_batch(batch)
    assert len(out) == len(batch) and not any(v.duplicate or v.error for v in out)
    for trial in ("t", "u"):
        assert stored_seqs(tmp_path / "supervisor.db", trial) == list(range(9))
    store.close()


def test_a_decision_whose_write_failed_is_decided_again_and_stored_once(tmp_path):
    """A NaN report decides an intervention; the write fails; the replay decides and stores it once."""
    store, eng = new_engine(tmp_path / "supervisor.db")
    for s in range(6):
        eng.observe(rep(s))
    fill(store)
    bad = {"trial_id": "t", "seq": 6, "iteration": 7,
           "metrics": {**metrics(6, pad=600), "total_loss": float("nan")}}
    with pytest.raises(sqlite3.OperationalError):
        for _ in range(30):  # until the pages run out
            eng.observe(bad)
            bad = {**bad, "seq": bad["seq"] + 1, "iteration": bad["iteration"] + 1}
    unfill(store)
    v = eng.observe(bad)
    assert not v.duplicate and v.actions, v
    ivs = [iv for iv in store.interventions("t") if iv["seq"] == bad["seq"]]
    assert len(ivs) == len(v.actions) >= 1
    store.close()


def test_manual_requests_survive_a_failed_write(tmp_path):
    store, eng = new_engine(tmp_path / "supervisor.db")
    eng.observe(rep(0))
    assert eng.request_action("t", "alert", {}, "by hand")
    fill(store)
    with pytest.raises(sqlite3.OperationalError):
        for s in range(1, 40):
            eng.observe(rep(s, pad=600))
    unfill(store)
    v = eng.observe(rep(s, pad=600))
    assert [a["action"] for a in v.actions] == ["alert"] and v.actions[0]["reason"] == "by hand"
    store.close()


def test_a_lock_held_by_another_process_loses_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(Store, "BUSY_TIMEOUT_S", 0.3)
    store, eng = new_engine(tmp_path / "supervisor.db")
    for s in range(3):
        eng.observe(rep(s))
    lock = Locker(tmp_path / "supervisor.db")
    try:
        for _ in range(2):
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                eng.observe(rep(3))
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            eng.observe_batch([rep(3), rep(4)])
    finally:
        lock.release()
    out = eng.observe_batch([rep(3), rep(4)])
    assert not any(v.duplicate or v.error for v in out)
    assert stored_seqs(tmp_path / "supervisor.db") == list(range(5))
    store.close()


# ---------------------------------------------------------------- through the real actor and client

@pytest.fixture(scope="module")
def ray_local():
    import ray

    old = {k: os.environ.get(k) for k in ("RL_SUPERVISOR_DB_BUSY_S", "RL_SUPERVISOR_NODE_MONITORS")}
    os.environ["RL_SUPERVISOR_DB_BUSY_S"] = "0.5"  # the actor's writes give up on a lock quickly
    os.environ["RL_SUPERVISOR_NODE_MONITORS"] = "0"
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _client(ray, run_id: str, run_dir: Path):
    from actors.client import SupervisorClient
    from actors.supervisor_actor import get_or_create_supervisor

    run_info = {"run_dir": str(run_dir), "name": run_id, "kind": "run", "settings": {}, "spec": None,
                "profile": None}
    sup = get_or_create_supervisor()
    ray.get(sup.open_run.remote(run_id, **run_info))
    return sup, SupervisorClient(run_id, run_info, timeout_s=10.0, retry_after_s=0.0)


def test_actor_every_waiting_call_hears_the_error_and_the_client_keeps_its_reports(ray_local, tmp_path):
    ray = ray_local
    sup, client = _client(ray, "lock-run", tmp_path)
    for s in range(3):
        assert client.report(rep(s)) is not None
    lock = Locker(tmp_path / "supervisor.db")
    try:
        # many trials waiting in one micro-batch of the async path: each call must fail, none hang
        refs = [sup.report.remote("lock-run", rep(0, f"other{i}")) for i in range(20)]
        errors = 0
        for r in refs:
            with pytest.raises(ray.exceptions.RayTaskError, match="StoreUnavailable|locked"):
                ray.get(r, timeout=60)
            errors += 1
        assert errors == 20
        assert client.report(rep(3)) is None  # the single-report (async) path
        assert client.report(rep(4)) is None  # the batch path: [3, 4]
        assert [r["seq"] for r in client.buffer] == [3, 4]
    finally:
        lock.release()
    verdicts = client.report(rep(5))
    assert [v.seq for v in verdicts] == [3, 4, 5] and not any(v.duplicate for v in verdicts)
    assert not client.buffer
    assert stored_seqs(tmp_path / "supervisor.db") == list(range(6))
    assert client.drain() == []
    ray.get(sup.close_run.remote("lock-run", "completed"))


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"), reason="mounting a tmpfs needs root")
def test_actor_on_a_disk_that_fills_up_loses_nothing(ray_local, tmp_path):
    ray = ray_local
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)]).returncode:
        pytest.skip("tmpfs mount refused here")
    try:
        sup, client = _client(ray, "full-run", mnt)
        for s in range(3):
            assert client.report(rep(s)) is not None
        filler = mnt / "filler"
        with open(filler, "wb") as f:  # take every free block of the filesystem
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        lost_from = None
        for s in range(3, 200):
            if client.report(rep(s, pad=300)) is None:
                lost_from = s
                break
        assert lost_from is not None, "the disk never filled up"
        assert client.report(rep(lost_from + 1, pad=300)) is None
        assert [r["seq"] for r in client.buffer] == [lost_from, lost_from + 1]
        filler.unlink()
        verdicts = client.report(rep(lost_from + 2))
        assert [v.seq for v in verdicts][-3:] == [lost_from, lost_from + 1, lost_from + 2]
        assert not any(v.duplicate or v.error for v in verdicts)
        assert stored_seqs(mnt / "supervisor.db") == list(range(lost_from + 3))
        ray.get(sup.close_run.remote("full-run", "completed"))
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def test_manual_requests_are_kept_across_an_actor_restart(tmp_path):
    """Queued by hand (dashboard), then the actor restarts before the trial's next report; one more is
    queued while the trial is not registered again yet. The next report hands out both, once."""
    store, eng = new_engine(tmp_path / "supervisor.db")
    eng.observe(rep(0))
    assert eng.request_action("t", "alert", {}, "first, before the restart")
    store.close()
    store2 = Store(tmp_path / "supervisor.db")  # the restarted actor: a fresh engine on the same store
    eng2 = Engine(store2, SupervisorConfig(checkpoint_every=3))
    assert "t" not in eng2.trials
    assert eng2.request_action("t", "alert", {}, "second, trial not registered yet")
    assert not eng2.request_action("nobody", "alert", {}, "unknown trial")
    v = eng2.observe(rep(1))
    assert [a["reason"] for a in v.actions] == ["first, before the restart", "second, trial not registered yet"]
    assert eng2.observe(rep(2)).actions == []  # handed out once
    store2.close()
