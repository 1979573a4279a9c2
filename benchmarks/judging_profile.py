"""What the supervisor actor does per report, and what it costs: in-process, no Ray.

    python benchmarks/judging_profile.py [--trials 100] [--iterations 100] [--batch 100] [--reps 5]
                                         [--baseline DIR]

The ingestion benchmark's workload (``benchmarks/ingestion.py``: healthy streams, every detector on,
batches of 100 reports from 100 trials) through ``SupervisorService.report_batch``, the call the
actor makes on its engine thread (normalization, detectors, policy, the store's one transaction per
batch with synchronous=FULL, the wire form of the verdicts):

1. CPU time per report (``time.process_time``: what the engine thread spends, robust to other load
   on the machine), median of ``--reps`` fresh runs; with ``--baseline DIR`` (a checkout of another
   version, e.g. ``git worktree add /tmp/before main``) the same workload through that version, the
   two interleaved, each in a child process of its own, and their ratio.
2. A cProfile of one run, its time grouped by what the actor does per report (each detector, the
   history, the engine's bookkeeping, the store, ...) and the functions that cost the most.
Writes benchmarks/results/judging_profile.md and .json.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def workload(trials: int, iterations: int, batch: int, prefix: str) -> list[list[dict]]:
    from benchmarks.ingestion import batches

    return batches(trials, iterations, batch, prefix)


def cpu_per_report(trials: int, iterations: int, batch: int) -> float:
    """Microseconds of CPU per report through a fresh service and store (this process's code)."""
    from actors.supervisor_actor import SupervisorService

    bs = workload(trials, iterations, batch, "t")
    with tempfile.TemporaryDirectory(prefix="judging-") as tmp:
        svc = SupervisorService()
        svc.open_run("bench", tmp, "bench", "bench")
        c0 = time.process_time()
        for b in bs:
            svc.report_batch("bench", b)
        cpu = time.process_time() - c0
        svc.runs["bench"].store.close()
    return 1e6 * cpu / sum(map(len, bs))


def child(root: Path, args) -> float:
    """``cpu_per_report`` of the code under ``root``, in a process of its own."""
    out = subprocess.run([sys.executable, __file__, "--child", str(root), "--trials", str(args.trials),
                          "--iterations", str(args.iterations), "--batch", str(args.batch)],
                         capture_output=True, text=True, check=True, cwd=root)
    return float(out.stdout.strip().splitlines()[-1])


# What a function's file says it does, for grouping the profile
GROUPS = (("supervisor/detectors/suite.py", "detector suite (running them, corroboration, alarms)"),
          ("supervisor/detectors/base.py", "alarms and hysteresis (Latch, Alarm)"),
          ("supervisor/detectors/_common.py", "shared detector statistics (references, spikes)"),
          ("supervisor/detectors/", "detector: {stem}"),
          ("supervisor/history.py", "history (bounded series, rolling views)"),
          ("supervisor/stats.py", "robust statistics (median, MAD)"),
          ("supervisor/engine.py", "engine bookkeeping (seq, verdict, checkpoint, best)"),
          ("supervisor/policy.py", "escalation policy"),
          ("supervisor/health.py", "health score"),
          ("supervisor/store.py", "store: SQL and JSON of the rows"),
          ("supervisor/verdict.py", "verdict wire form"),
          ("supervisor/findings.py", "findings"),
          ("actors/supervisor_actor.py", "actor service (routing, alerts, counters)"),
          ("sqlite3", "SQLite (inserts, commit with fsync)"),
          ("orjson", "JSON encoding"))


def group_of(path: str, func: str) -> str:
    where = f"{path}:{func}"
    for key, label in GROUPS:
        if key in where:
            return label.format(stem=Path(path).stem)
    return "Python built-ins and other"


def profile(trials: int, iterations: int, batch: int) -> tuple[dict, list, float]:
    from actors.supervisor_actor import SupervisorService

    bs = workload(trials, iterations, batch, "p")
    n = sum(map(len, bs))
    with tempfile.TemporaryDirectory(prefix="judging-") as tmp:
        svc = SupervisorService()
        svc.open_run("bench", tmp, "bench", "bench")
        pr = cProfile.Profile()
        pr.enable()
        for b in bs:
            svc.report_batch("bench", b)
        pr.disable()
        svc.runs["bench"].store.close()
    st = pstats.Stats(pr).stats
    total = sum(v[2] for v in st.values())  # tottime
    groups: dict[str, float] = {}
    for (path, _, func), (_, _, tt, _, _) in st.items():
        g = group_of(path.replace(str(ROOT) + "/", ""), func)
        groups[g] = groups.get(g, 0.0) + tt
    top = sorted(((tt, ct, nc, f"{Path(path).name}:{line}({func})")
                  for (path, line, func), (_, nc, tt, ct, _) in st.items()), reverse=True)[:15]
    return {g: t / total for g, t in sorted(groups.items(), key=lambda kv: -kv[1])}, top, total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--baseline", type=Path, help="a checkout of the version to compare with")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # measure the code under this root, print
    args = ap.parse_args()
    if args.child:
        sys.path.insert(0, str(args.child.resolve()))
        print(cpu_per_report(args.trials, args.iterations, args.batch))
        return
    sys.path.insert(0, str(ROOT))

    ours, base = [], []
    for _ in range(args.reps):  # interleaved: load on the machine hits both alike
        ours.append(child(ROOT, args))
        if args.baseline:
            base.append(child(args.baseline.resolve(), args))
    us = statistics.median(ours)
    rows = [("CPU per report, us (this version)", f"{us:.1f}", f"{1e6 / us:,.0f} reports/s of engine CPU")]
    figures = {"cpu_us_per_report": round(us, 2), "engine_reports_per_cpu_s": round(1e6 / us),
               "reps": args.reps, "workload": f"{args.trials} trials x {args.iterations} iterations, "
                                              f"batches of {args.batch}, every detector on"}
    if base:
        b = statistics.median(base)
        rows.append(("CPU per report, us (baseline)", f"{b:.1f}", f"{1e6 / b:,.0f} reports/s of engine CPU"))
        rows.append(("baseline / this version", f"{b / us:.2f}x", ""))
        figures.update(baseline_cpu_us_per_report=round(b, 2), speedup=round(b / us, 2),
                       baseline=str(args.baseline))

    shares, top, total_tt = profile(args.trials, args.iterations, args.batch)
    figures["profile_shares"] = {g: round(s, 4) for g, s in shares.items()}
    figures["profile_top"] = [{"function": f, "calls": nc, "share": round(tt / total_tt, 4)} for tt, _, nc, f in top]
    lines = ["| measure | value | |", "|---|---|---|", *[f"| {a} | {b} | {c} |" for a, b, c in rows], "",
             "What the actor does per report (cProfile of one run, share of its time, own time per group):", "",
             "| part | share |", "|---|---|", *[f"| {g} | {s:.1%} |" for g, s in shares.items()], "",
             "Costliest functions (own time):", "", "| function | calls | share |", "|---|---|---|",
             *[f"| `{f}` | {nc} | {tt / total_tt:.1%} |" for tt, _, nc, f in top]]
    text = "\n".join(lines)
    print(text)
    from benchmarks.results_io import write_results

    write_results("judging_profile", text, figures)


if __name__ == "__main__":
    main()
