"""One run folder, one writer; run ids that two folders of the same name never share."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

from actors.bootstrap import LOCK_FILE, run_id_for
from actors.supervisor_actor import SupervisorService
from benchmarks.synthetic import healthy_stream
from supervisor.store import Store

ROOT = Path(__file__).resolve().parents[1]
EXP = textwrap.dedent("""\
    name: ident
    env: CartPole-v1
    config: {lr: 3e-4, num_env_runners: 0, train_batch_size_per_learner: 200, minibatch_size: 100, num_epochs: 1}
    stop: {iterations: 1}
""")


def test_same_folder_name_different_paths_get_different_engines_and_stores(tmp_path):
    a, b = tmp_path / "a" / "x", tmp_path / "b" / "x"
    ra, rb = run_id_for(a), run_id_for(b)
    assert ra != rb and ra.startswith("x-") and rb.startswith("x-")
    assert run_id_for(a) == ra == run_id_for(tmp_path / "a" / ".." / "a" / "x")  # one folder, one id
    svc = SupervisorService()  # the actor's own class, in this process
    for rid, d in ((ra, a), (rb, b)):
        svc.open_run(rid, str(d), "x", "run")
        svc.register_trial(rid, rid)
    stream = list(healthy_stream(3, seed=1))
    svc.report_batch(ra, [{"trial_id": ra, "seq": s, "iteration": s + 1, "metrics": stream[s]} for s in range(3)])
    svc.report_batch(rb, [{"trial_id": rb, "seq": 0, "iteration": 1, "metrics": stream[0]}])
    assert svc.runs[ra] is not svc.runs[rb]
    for rid in (ra, rb):
        svc.close_run(rid, "completed")
    # finished, still listed by their folder: the live dashboard opens their history from there
    assert [(r["run_id"], r["run_dir"], r["status"]) for r in svc.snapshot()["runs"]] == [
        (ra, str(a), "completed"), (rb, str(b), "completed")]
    sa, sb = Store.open_readonly(a / "supervisor.db"), Store.open_readonly(b / "supervisor.db")
    assert [len(sa.reports(ra)), len(sb.reports(rb))] == [3, 1]
    assert sa.trials()[0]["trial_id"] == ra and sb.trials()[0]["trial_id"] == rb
    sa.close()
    sb.close()


def test_a_second_run_on_a_folder_in_use_exits_2_with_one_line(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from actors.bootstrap import lock_run_dir; "
         f"lock_run_dir({str(out)!r}); print('held', flush=True); sys.stdin.readline()"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        exp = tmp_path / "exp.yaml"
        exp.write_text(EXP)
        t0 = time.monotonic()
        p = subprocess.run([sys.executable, "-m", "supervisor", "run", str(exp), "--out", str(out), "--quiet"],
                           capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and "another run is writing to this folder" in lines[0], p.stderr
        assert str(out) in lines[0] and f"pid {holder.pid}" in lines[0]
        assert not (out / "supervisor.db").exists() and not (out / "experiment.yaml").exists()
        assert time.monotonic() - t0 < 300
    finally:
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(30)
    assert (out / LOCK_FILE).exists()


def test_the_python_api_names_its_run_as_the_cli_does(tmp_path):
    """``Supervisor(run_dir)`` in this process: the run id the CLI would give the folder (on a cluster,
    two folders named alike then never share the actor's engine or a store: tests/test_detached_actor.py)."""
    from supervisor import Supervisor

    for d in (tmp_path / "a" / "ppo", tmp_path / "b" / "ppo"):
        sup = Supervisor(d)
        assert sup.run_id == run_id_for(d) and sup.trial_id == "ppo"
        sup.observe(1, {"charts/episodic_return": 20.0})
        sup.close()
        st = Store.open_readonly(d / "supervisor.db")
        assert [r["run_id"] for r in st.runs()] == [run_id_for(d)]
        st.close()
