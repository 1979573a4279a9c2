"""Memory per supervised trial with a 10,000-iteration history.

    python benchmarks/memory.py [--trials 5] [--iterations 10000]

Feeds each trial ``--iterations`` reports through the real Engine (every
detector on, SQLite store on disk) and measures, with tracemalloc, the
Python heap the engine holds per trial afterwards: history ring buffers,
detector state, health, policy. Side by side: the same with an empty
engine (baseline). Writes benchmarks/results/memory.md.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from supervisor.config import SupervisorConfig  # noqa: E402
from benchmarks.synthetic import healthy_stream  # noqa: E402
from supervisor.engine import Engine  # noqa: E402
from supervisor.store import Store  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=10_000)
    args = ap.parse_args()
    stream = healthy_stream(500, seed=7)
    store = Store(Path(tempfile.mkdtemp()) / "s.db")
    eng = Engine(store, SupervisorConfig())
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    t0 = time.perf_counter()
    for t in range(args.trials):
        eng.register_trial(f"t{t}", "r")
        batch = []
        for s in range(args.iterations):
            batch.append({"trial_id": f"t{t}", "seq": s, "iteration": s + 1, "metrics": stream[s % 500]})
            if len(batch) == 500:
                eng.observe_batch(batch)
                batch = []
        eng.observe_batch(batch)
    elapsed = time.perf_counter() - t0
    gc.collect()
    after = tracemalloc.take_snapshot()
    held = sum(s.size_diff for s in after.compare_to(before, "filename"))
    per_trial = held / args.trials
    hist = sum(st.history.nbytes for st in eng.trials.values()) / args.trials
    rows = [("heap held per trial after %d iterations" % args.iterations, f"{per_trial / 1024:.1f} KiB",
             f"{per_trial / 2**20:.4f} of the 1 MiB goal"),
            ("of which history ring buffers", f"{hist / 1024:.1f} KiB", f"capacity {eng.settings.history} iterations"),
            ("ingest rate while measuring (tracemalloc on)", f"{args.trials * args.iterations / elapsed:,.0f} reports/s", "")]
    text = "\n".join(["| measure | value | note |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows])
    print(text)
    from benchmarks.results_io import write_results

    write_results("memory", text, {"iterations": args.iterations, "trials": args.trials,
                                   "heap_per_trial_kib": per_trial / 1024, "history_kib": hist / 1024,
                                   "reports_per_s": args.trials * args.iterations / elapsed})


if __name__ == "__main__":
    main()
