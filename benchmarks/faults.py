"""Fault injection: a real supervised PPO trial while the supervisor's world breaks around it.

    python benchmarks/faults.py [--iterations 32] [--seed 0]

One RLlib PPO trial on CartPole (small batches) trains with the real
supervisor actor and callback, while this script, at fixed iterations:

* kills the supervisor actor (Ray restarts it; it rebuilds from the store),
* fills the disk the run folder is on (a small tmpfs filled to the last block;
  without root, SQLite's ``max_page_count`` cannot be reached from here, so
  that fault is skipped and said so),
* locks the database from another process (``BEGIN EXCLUSIVE``, held for
  several iterations),
* drops calls: for a few iterations every other report call is lost on the
  way (never sent) or its answer is lost (sent, stored, answer discarded).

Then it counts, from the store: records expected (one per trained
iteration), stored, lost (must be 0), duplicates (must be 0: reports,
findings and interventions each once), and trials hung (an iteration that
took over 60 s, or a trial whose end never reached the supervisor: must be
0). Writes benchmarks/results/faults.md.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HANG_S = 60.0


class Locker:
    """Another process holding ``BEGIN EXCLUSIVE`` on the database until released."""

    def __init__(self, db: Path):
        code = ("import sqlite3, sys\n"
                f"db = sqlite3.connect({str(db)!r}, isolation_level=None, timeout=30)\n"
                "db.execute('BEGIN EXCLUSIVE')\n"
                "print('locked', flush=True)\n"
                "sys.stdin.readline()\n")
        self.p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True)
        assert self.p.stdout.readline().strip() == "locked"

    def release(self) -> None:
        self.p.stdin.write("\n")
        self.p.stdin.flush()
        self.p.wait(timeout=30)


def small_disk(size_mb: int) -> tuple[Path, bool]:
    """A folder on a tmpfs of ``size_mb`` (root), else a plain temporary folder (no disk-full fault)."""
    d = Path(tempfile.mkdtemp(prefix="faults-"))
    if os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(d)],
                                            capture_output=True).returncode == 0:
        return d, True
    return d, False


def fill(folder: Path) -> Path:
    filler = folder / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 16))
                f.flush()
        except OSError:
            pass
    return filler


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    random.seed(args.seed)
    os.environ.setdefault("RL_SUPERVISOR_DB_BUSY_S", "1")  # a locked write fails after 1 s, not 10
    os.environ.setdefault("RL_SUPERVISOR_NODE_MONITORS", "0")

    import ray

    from actors import run_registry
    from actors.algo_config import build_config
    from actors.callback import find_callback
    from actors.supervisor_actor import get_or_create_supervisor
    from supervisor.config import Experiment

    n = args.iterations
    kill_at = {4, n - 6}
    full = set(range(8, 11))
    locked = set(range(14, 17))
    dropping = set(range(20, 24))

    run_dir, on_tmpfs = small_disk(48)
    db = run_dir / "supervisor.db"
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    events: list[str] = []
    slow = 0
    try:
        exp = Experiment.model_validate({
            "name": "faults", "env": "CartPole-v1", "stop": {"iterations": n}, "seed": args.seed,
            "config": {"lr": 3e-4, "train_batch_size_per_learner": 500, "minibatch_size": 250, "num_epochs": 1,
                       "num_env_runners": 0},
            "supervisor": {"checkpoint_every": 4, "report_timeout_s": 2.0, "keep_checkpoints": 1}})
        run_info = {"run_dir": str(run_dir), "name": "faults", "kind": "run",
                    "settings": exp.supervisor.model_dump(), "spec": None, "profile": None}
        sup = get_or_create_supervisor()
        ray.get(sup.open_run.remote("faults", **run_info))
        run_registry.publish("faults", {"run_id": "faults", "trial_id": "faults-trial", "run_info": run_info,
                                        "timeout_s": 2.0, "keep_checkpoints": 1})
        algo = build_config(exp, "faults", "faults").build_algo()
        cb = find_callback(algo)
        cb.client.retry_after_s = 0.5
        real_call = cb.client.call
        dropped = {"request": 0, "answer": 0}

        def flaky_call(method, *a, **k):
            if dropping_now[0] and method in ("report", "report_batch") and random.random() < 0.5:
                if random.random() < 0.5:
                    dropped["request"] += 1
                    return None  # lost on the way: never reached the supervisor
                real_call(method, *a, **k)
                dropped["answer"] += 1
                return None  # stored, but the answer was lost
            return real_call(method, *a, **k)

        dropping_now = [False]
        cb.client.call = flaky_call
        filler = lock = None
        try:
            for it in range(n):
                if it in kill_at:
                    ray.kill(sup, no_restart=False)
                    events.append(f"iteration {it}: killed the supervisor actor")
                if on_tmpfs and it == min(full):
                    filler = fill(run_dir)
                    events.append(f"iterations {min(full)}-{max(full)}: disk full (tmpfs filled)")
                if filler is not None and it == max(full) + 1:
                    filler.unlink()
                    filler = None
                if it == min(locked):
                    lock = Locker(db)
                    events.append(f"iterations {min(locked)}-{max(locked)}: database locked by another process")
                if lock is not None and it == max(locked) + 1:
                    lock.release()
                    lock = None
                dropping_now[0] = it in dropping
                if it == min(dropping):
                    events.append(f"iterations {min(dropping)}-{max(dropping)}: half the report calls dropped")
                t0 = time.monotonic()
                algo.train()
                slow += time.monotonic() - t0 > HANG_S
        finally:
            if filler is not None:
                filler.unlink()
            if lock is not None:
                lock.release()
        dropping_now[0] = False
        deadline = time.monotonic() + 120
        extra = 0
        while cb.client.buffer and time.monotonic() < deadline:  # the trial goes on: its buffer drains
            time.sleep(1)
            algo.train()
            extra += 1
        iterations = algo.iteration
        ended = cb.on_trial_end("completed")
        algo.stop()
        pids = ray.get(sup.ping.remote())["pid"]
        ray.get(sup.close_run.remote("faults", "completed"))

        con = sqlite3.connect(db)
        seqs = [r[0] for r in con.execute("SELECT seq FROM reports WHERE trial_id='faults-trial' ORDER BY seq")]
        f_rows, f_keys = con.execute("SELECT COUNT(*), COUNT(DISTINCT seq || '/' || detector) FROM findings "
                                     "WHERE trial_id='faults-trial'").fetchone()
        i_rows, i_keys = con.execute("SELECT COUNT(*), COUNT(DISTINCT seq || '/' || action) FROM interventions "
                                     "WHERE trial_id='faults-trial'").fetchone()
        status = con.execute("SELECT status FROM trials WHERE trial_id='faults-trial'").fetchone()
        con.close()
    finally:
        ray.shutdown()
        if on_tmpfs:
            subprocess.run(["umount", "-l", str(run_dir)])

    expected = iterations
    stored = len(set(seqs))
    lost = len(set(range(expected)) - set(seqs))
    duplicates = (len(seqs) - stored) + (f_rows - f_keys) + (i_rows - i_keys)
    hung = int(slow > 0) + int(ended is None) + int(not status or status[0] == "running")
    rows = [("records expected (trained iterations)", expected), ("records stored", stored),
            ("records lost", lost), ("duplicates (reports, findings, interventions)", duplicates),
            ("trials hung", hung), ("report calls dropped on the way", dropped["request"]),
            ("report answers dropped", dropped["answer"]), ("iterations to drain the buffer", extra),
            ("findings stored", f_rows), ("interventions stored", i_rows)]
    width = max(len(k) for k, _ in rows)
    print("\n".join(events))
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    if not on_tmpfs:
        print("note: not root (no tmpfs): the disk-full fault was skipped")
    from benchmarks.results_io import write_results

    keys = ("expected", "stored", "lost", "duplicates", "hung", "calls_dropped", "answers_dropped",
            "drain_iterations", "findings", "interventions")
    write_results("faults", "# Fault injection (benchmarks/faults.py)\n\n"
                   f"`python benchmarks/faults.py --iterations {n} --seed {args.seed}`: one real RLlib PPO trial "
                   "(CartPole, 500 steps an iteration) under the real supervisor actor, "
                   f"{'on a 48 MB tmpfs' if on_tmpfs else 'on a temporary folder (disk-full fault skipped)'}.\n\n"
                   + "".join(f"- {e}\n" for e in events) + "\n| measure | value |\n|---|---|\n"
                   + "".join(f"| {k} | {v} |\n" for k, v in rows),
                  {**dict(zip(keys, (v for _, v in rows))), "events": events, "tmpfs": on_tmpfs})
    return 0 if lost == 0 and duplicates == 0 and hung == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
