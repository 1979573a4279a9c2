"""Run storage (``supervisor.storage``) on a real S3 API server (moto's server mode on 127.0.0.1) and on a
local folder: addresses, whole-file writes, the store's snapshots taken while it is written, and
``supervise report`` / ``supervise dashboard --run`` reading a run from its storage URI."""

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from supervisor.storage import (SNAPSHOT_NAME, Storage, StorageError, StoreSnapshots, join, snapshot_store,
                                storage_problem)
from supervisor.store import Store
from tests.nodisk import AWS, S3Server

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def s3():
    saved = {k: os.environ.get(k) for k in AWS}
    os.environ.update(AWS)
    server = S3Server()
    try:
        yield server
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_storage_values_are_checked_offline_in_one_line():
    assert storage_problem("/mnt/nfs/runs") is None and storage_problem("relative/runs") is None
    assert storage_problem("s3://bucket/prefix?endpoint_override=127.0.0.1:9000&scheme=http") is None
    assert storage_problem("gs://bucket/prefix") is None
    assert "unknown URI scheme 'ftp'" in storage_problem("ftp://host/x")
    assert "names no bucket" in storage_problem("s3:///prefix")
    secret = storage_problem("s3://AKIA:topsecret@bucket/x")
    assert "credentials" in secret and "topsecret" not in secret
    assert storage_problem("") and storage_problem(" s3://b/x")


def test_join_keeps_the_query_at_the_end_and_for_run_adds_the_run_folder_name(tmp_path):
    uri = "s3://b/runs?endpoint_override=127.0.0.1:9&scheme=http"
    assert join(uri, "ppo-1", "checkpoints/") == "s3://b/runs/ppo-1/checkpoints?endpoint_override=127.0.0.1:9&scheme=http"
    assert Storage.for_run(uri, tmp_path / "ppo-1").root == join(uri, "ppo-1")
    local = Storage.for_run(None, tmp_path / "ppo-1")  # the default: the run folder itself
    assert local.is_local and local.is_run_dir(tmp_path / "ppo-1") and local.root == str(tmp_path / "ppo-1")
    nfs = Storage.for_run(str(tmp_path / "nfs"), tmp_path / "ppo-1")
    assert nfs.root == str(tmp_path / "nfs" / "ppo-1") and not nfs.is_run_dir(tmp_path / "ppo-1")
    assert Storage("file://" + str(tmp_path)).is_local


@pytest.mark.parametrize("where", ["s3", "local"])
def test_files_round_trip_and_uris_name_them(where, s3, tmp_path):
    st = Storage(s3.uri("rt/run-a") if where == "s3" else tmp_path / "store" / "run-a")
    st.probe()
    uri = st.write_bytes(b"one", "checkpoints", "t", "best.json")
    assert uri == join(st.root, "checkpoints/t/best.json") and st.exists("checkpoints", "t", "best.json")
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "sub" / "f.bin").write_bytes(b"x" * 3000)
    st.upload(tmp_path / "d", "tensorboard")
    st.download(tmp_path / "back.bin", "tensorboard", "sub", "f.bin")
    assert (tmp_path / "back.bin").read_bytes() == b"x" * 3000
    assert st.uri_of(st.path("tensorboard", "sub")) == join(st.root, "tensorboard/sub")
    st.delete("tensorboard")
    st.delete("tensorboard")  # a missing folder is no error
    assert not st.exists("tensorboard", "sub", "f.bin")
    if where == "s3":
        assert [k for k in s3.keys("rt/run-a/") if not k.endswith("/")] == ["rt/run-a/checkpoints/t/best.json"]


def test_unreachable_storage_is_one_line(s3):
    with pytest.raises(StorageError) as e:
        Storage(f"s3://no-such-bucket/x?endpoint_override=127.0.0.1:{s3.port}&scheme=http").probe()
    msg = str(e.value)
    assert "\n" not in msg and "s3://no-such-bucket/x: cannot write there" in msg and "'no-such-bucket' not found" in msg
    assert "Request ID" not in msg


def _fill(store: Store, trial: str, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        store.insert_reports([{"trial_id": trial, "seq": i, "iteration": i + 1, "node_id": None,
                               "metrics": {"episode_return_mean": float(i)}, "time": time.time()}])


def _report(trial: str, i: int) -> dict:
    return {"trial_id": trial, "iteration": i + 1, "node_id": None, "time": time.time(),
            "metrics": {"episode_return_mean": float(i)}}


def test_snapshot_is_a_consistent_copy_taken_while_the_store_is_written(s3, tmp_path):
    """SQLite's online backup: the copy is one moment of the store, whole, however busy the writer."""
    store = Store(tmp_path / SNAPSHOT_NAME, background_checkpoints=True)
    store.upsert_run("r", "r", "run", "running")
    store.upsert_trial("t", "r", "running")
    stop = threading.Event()
    written = [0]

    def writer():
        while not stop.is_set():
            store.record_iteration(_report("t", written[0]), written[0], [], [])
            written[0] += 1

    th = threading.Thread(target=writer)
    th.start()
    try:
        while written[0] < 200:
            time.sleep(0.01)
        st = Storage(s3.uri("snap/run-b"))
        uri = snapshot_store(tmp_path / SNAPSHOT_NAME, st)
        during = written[0]
    finally:
        stop.set()
        th.join()
        store.close()
    assert uri == st.uri(SNAPSHOT_NAME)
    got = st.download(tmp_path / "copy" / SNAPSHOT_NAME, SNAPSHOT_NAME)
    db = sqlite3.connect(got)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        seqs = [r[0] for r in db.execute("SELECT seq FROM reports ORDER BY seq")]
        assert 200 <= len(seqs) <= during and seqs == list(range(len(seqs)))  # a prefix: no hole, no torn row
        assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)  # one file, nothing beside it
    finally:
        db.close()
    assert not (tmp_path / "copy" / f"{SNAPSHOT_NAME}-wal").exists()


def test_snapshots_are_rate_limited_off_the_caller_and_the_final_one_holds_the_end(s3, tmp_path):
    store = Store(tmp_path / SNAPSHOT_NAME)
    store.upsert_run("r", "r", "run", "running")
    st = Storage(s3.uri("snap/run-c"))
    snaps = StoreSnapshots(tmp_path / SNAPSHOT_NAME, st, interval_s=3600)
    assert snaps.maybe() is True  # the first one at once
    assert snaps.maybe() is False  # then at most one an hour
    store.upsert_run("r", "r", "run", "completed", ended=time.time())
    store.close()
    snaps.final()
    out = snaps.wait(60)
    assert out == {"ok": True, "uri": st.uri(SNAPSHOT_NAME), "error": None} and snaps.count == 2
    got = Store.open_readonly(st.download(tmp_path / "c" / SNAPSHOT_NAME, SNAPSHOT_NAME))
    try:
        assert got.runs()[0]["status"] == "completed"
    finally:
        got.close()
    # an unreachable storage costs the snapshot, is reported, and raises nowhere
    bad = StoreSnapshots(tmp_path / SNAPSHOT_NAME, Storage(f"s3://nope/x?endpoint_override=127.0.0.1:{s3.port}"
                                                           "&scheme=http"), 1)
    bad.final()
    out = bad.wait(60)
    assert out["ok"] is False and "'nope' not found" in out["error"]


def _supervise(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "supervisor", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def test_report_and_dashboard_read_a_run_from_its_storage_uri(s3, tmp_path):
    from supervisor import Supervisor
    from supervisor.dashboard.data import StorageRunView

    run = tmp_path / "api-run"
    sup = Supervisor(run, trial_id="t1", settings={"tensorboard": False})
    for i in range(1, 9):
        sup.observe(i, {"episode_return_mean": 10.0 * i, "policy_loss": 0.1, "entropy": 0.6})
    st = Storage(s3.uri("reports/api-run"))
    snapshot_store(run / SNAPSHOT_NAME, st)
    view = StorageRunView(st.root, tmp_path / "cache", refresh_s=0)
    view.poll()  # the first snapshot: what is there is the starting point (as a run folder's view)
    assert view.error is None and [t["trial_id"] for t in view.trials] == ["t1"]
    for i in range(9, 12):
        sup.observe(i, {"episode_return_mean": 10.0 * i, "policy_loss": 0.1, "entropy": 0.6})
    sup.close("completed")
    time.sleep(1.1)  # the view tells snapshots apart by (mtime, size); S3 mtimes are whole seconds
    snapshot_store(run / SNAPSHOT_NAME, st)
    events = view.poll()  # the new snapshot: only what is new comes out
    assert [d["iteration"] for e, d in events if e == "report"] == [9, 10, 11]
    assert view.trials[0]["status"] == "completed" and view.runs[0]["run_dir"] == st.root.split("?")[0]
    view.close()

    local = _supervise("report", str(run), "--format", "json")
    remote = _supervise("report", st.root, "--format", "json")
    assert local.returncode == 0 and remote.returncode == 0, remote.stderr
    assert json.loads(remote.stdout) == json.loads(local.stdout)
    # the same through AWS_ENDPOINT_URL instead of the URI's endpoint_override
    plain = _supervise("report", "s3://runs/reports/api-run", "--format", "json", env={"AWS_ENDPOINT_URL": s3.endpoint})
    assert plain.returncode == 0 and json.loads(plain.stdout) == json.loads(local.stdout), plain.stderr
    # no snapshot there: exit 2, one line naming the URI
    none = _supervise("report", s3.uri("reports/nothing-here"))
    assert none.returncode == 2 and none.stderr.count("\n") == 1, none.stderr
    assert "s3://runs/reports/nothing-here: no store snapshot there" in none.stderr


def test_a_storage_the_driver_cannot_write_is_bad_input_before_anything_trains(s3, tmp_path):
    bad = f"s3://no-such-bucket/runs?endpoint_override=127.0.0.1:{s3.port}&scheme=http"
    p = _supervise("run", "experiments/cartpole_ppo.yaml", "--out", str(tmp_path / "r"), "--storage", bad,
                   env={"RAY_ADDRESS": ""})
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr[-2000:]
    assert "s3://no-such-bucket/runs/r: cannot write there" in p.stderr and "not found" in p.stderr
    assert not (tmp_path / "r" / "supervisor.db").exists()
