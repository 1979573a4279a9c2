"""Bounded resources: a long-lived actor forgets closed runs; the WAL stays bounded; old stores migrate."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.synthetic import healthy_stream
from supervisor.store import SCHEMA_VERSION, Store

STREAM = list(healthy_stream(40, seed=5))


def _proc(pid: int) -> dict:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    fds = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            fds.append(os.readlink(fd))
        except OSError:
            pass
    return {"threads": int(fields["Threads"]), "rss_kb": int(fields["VmRSS"].split()[0]),
            "db_files": sum("supervisor.db" in f for f in fds)}


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_fifty_runs_through_one_actor_leave_threads_connections_and_memory_flat(tmp_path):
    import ray

    os.environ["RL_SUPERVISOR_NODE_MONITORS"] = "0"
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        from actors.supervisor_actor import get_or_create_supervisor

        sup = get_or_create_supervisor()
        pid = ray.get(sup.ping.remote())["pid"]
        seen = []
        for i in range(50):
            run_id, run_dir = f"run-{i}", tmp_path / f"run-{i}"
            ray.get(sup.open_run.remote(run_id, str(run_dir), run_id, "run"))
            for t in ("a", "b"):
                ray.get(sup.register_trial.remote(f"{run_id}-{t}", run_id))
                ray.get(sup.report_batch.remote(run_id, [
                    {"trial_id": f"{run_id}-{t}", "seq": s, "iteration": s + 1, "metrics": STREAM[s]}
                    for s in range(20)]))
                ray.get(sup.finish_trial.remote(run_id, f"{run_id}-{t}", "completed"))
            if i == 0:
                during = _proc(pid)
                assert during["db_files"] >= 1  # an open run holds its database
            ray.get(sup.close_run.remote(run_id, "completed"))
            seen.append(_proc(pid))
        base, last = seen[9], seen[-1]
        assert last["db_files"] == 0, last  # every connection (and its WAL/SHM maps) closed
        # checkpoint threads joined (a leak would add one per run: +40 here; Ray's own pool moves a few)
        assert max(s["threads"] for s in seen[10:]) <= base["threads"] + 8, [s["threads"] for s in seen]
        assert last["rss_kb"] - base["rss_kb"] < 30_000, (base, last)  # engines and trial state dropped
        ping = ray.get(sup.ping.remote())
        assert ping["runs"] == []
        closed = ray.get(sup.snapshot.remote())["trials"]  # what status shows of ended runs: bounded
        assert 0 < len(closed) <= 256 and all(t["status"] == "completed" for t in closed)
        # closed runs are complete on disk
        st = Store.open_readonly(tmp_path / "run-49" / "supervisor.db")
        assert st.runs()[0]["status"] == "completed" and len(st.reports("run-49-a")) == 20
        st.close()
    finally:
        ray.shutdown()
        os.environ.pop("RL_SUPERVISOR_NODE_MONITORS", None)


def test_wal_is_bounded_under_saturating_writes_with_a_reader_polling(tmp_path, monkeypatch):
    import threading

    monkeypatch.setattr(Store, "WAL_LIMIT_BYTES", 1 << 20)
    monkeypatch.setattr(Store, "CHECKPOINT_S", 0.05)
    path = tmp_path / "supervisor.db"
    st = Store(path, background_checkpoints=True)
    st.upsert_run("r", "r", "run", "running")
    wal = Path(str(path) + "-wal")
    stop = threading.Event()

    def poll():  # the dashboard: a reader taking a fresh snapshot every few ms
        db = sqlite3.connect(path)
        while not stop.is_set():
            db.execute("SELECT COUNT(*) FROM reports").fetchall()
            time.sleep(0.005)
        db.close()

    reader = threading.Thread(target=poll)
    reader.start()
    biggest = 0
    pad = {f"k{i}": float(i) for i in range(200)}
    try:
        for seq in range(4000):
            st.record_iteration({"trial_id": "t", "iteration": seq, "metrics": pad}, seq, [], [])
            biggest = max(biggest, wal.stat().st_size if wal.exists() else 0)
    finally:
        stop.set()
        reader.join()
    db_size = path.stat().st_size
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and wal.stat().st_size > Store.WAL_LIMIT_BYTES:
        st.record_iteration({"trial_id": "u", "iteration": 0, "metrics": {}}, int(time.monotonic() * 1e3), [], [])
        time.sleep(0.1)
    settled = wal.stat().st_size
    assert st.db.execute("SELECT COUNT(*) FROM reports WHERE trial_id='t'").fetchone()[0] == 4000
    st.close()
    assert db_size > 12 << 20  # the writes were far larger than the limit ...
    assert biggest < db_size / 2, (biggest, db_size)  # ... the WAL stayed a fraction of the database ...
    assert settled <= 1 << 20, settled  # ... and went back under the limit once the writes calmed down
    assert Store.SYNCHRONOUS == "FULL"


OLD_SCHEMA = subprocess.run(["git", "show", "ca3a9a8:supervisor/store.py"], capture_output=True, text=True,
                            cwd=Path(__file__).parents[1]).stdout


def _old_store(path: Path) -> None:
    """A store as the first release wrote it (no user_version, no requests table)."""
    import re

    schema = re.search(r'SCHEMA = """(.*?)"""', OLD_SCHEMA, re.S)
    assert schema, "the first release's store.py is in git history"
    db = sqlite3.connect(path)
    db.executescript(schema.group(1))
    db.execute("INSERT INTO runs VALUES ('r', 'old', 'run', 'completed', 1.0, 2.0, NULL)")
    db.execute("INSERT INTO trials (trial_id, run_id, status, started, iterations, last_seq) "
               "VALUES ('t', 'r', 'completed', 1.0, 3, 2)")
    for s in range(3):
        db.execute("INSERT INTO reports VALUES ('t', ?, ?, 1.0, NULL, ?)", (s, s + 1, '{"total_loss": 1.0}'))
    db.commit()
    db.close()


def test_a_store_from_an_older_version_is_read_and_migrated(tmp_path):
    run = tmp_path / "old-run"
    run.mkdir()
    _old_store(run / "supervisor.db")
    # read-only: the report opens it (migrated in memory; the file is untouched)
    p = subprocess.run([sys.executable, "-m", "supervisor", "report", str(run), "--format", "json"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert '"old"' in p.stdout and "no such" not in p.stderr
    assert sqlite3.connect(run / "supervisor.db").execute("PRAGMA user_version").fetchone()[0] == 0
    # a writer migrates it on disk
    st = Store(run / "supervisor.db")
    assert st.migrated_from == 0
    assert st.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert st.db.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 0
    assert len(st.reports("t")) == 3
    st.close()


def test_a_store_from_a_newer_version_is_refused_in_one_line(tmp_path):
    run = tmp_path / "new-run"
    run.mkdir()
    st = Store(run / "supervisor.db")
    st.upsert_run("r", "new", "run", "completed")
    st.db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 5}")
    st.close()
    p = subprocess.run([sys.executable, "-m", "supervisor", "report", str(run)], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "newer" in lines[0] and "supervisor.db" in lines[0], p.stderr


def test_a_supervisor_left_open_stops_its_checkpointer_at_exit(tmp_path):
    """A ``Supervisor`` never closed (its loop raised, the user forgot): its store's checkpoint thread is stopped
    by the exit handlers, before the interpreter tears SQLite down under it; what was observed is on disk."""
    script = f"""
import atexit, threading
from supervisor import Supervisor
sup = Supervisor({str(tmp_path / 'run')!r})
sup.observe(0, {{"total_loss": 1.0, "entropy": 0.5}})
print(sorted(t.name for t in threading.enumerate()))
atexit._run_exitfuncs()
print(sorted(t.name for t in threading.enumerate()))
"""
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                       cwd=Path(__file__).resolve().parents[1])
    assert p.returncode == 0, p.stderr[-2000:]
    before, after = p.stdout.strip().splitlines()[-2:]
    assert "wal-checkpoint" in before and "wal-checkpoint" not in after, p.stdout
    db = sqlite3.connect(tmp_path / "run" / "supervisor.db")
    assert db.execute("SELECT COUNT(*) FROM reports").fetchone()[0] == 1
