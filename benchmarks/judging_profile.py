"""What the supervisor actor does per report, and what it costs: in-process, no Ray.

    python benchmarks/judging_profile.py [--trials 100] [--iterations 100] [--batch 100] [--reps 5]
                                         [--baseline DIR [--baseline-label TEXT]]

The ingestion benchmark's workload (``benchmarks/ingestion.py``: healthy streams, every detector on,
batches of 100 reports from 100 trials) through ``SupervisorService.report_batch``, the call the
actor makes on its engine thread (normalization, detectors, policy, the store's one transaction per
batch with synchronous=FULL, the wire form of the verdicts):

1. CPU time per report (``time.process_time``: what the engine thread spends, robust to other load
   on the machine), median of ``--reps`` fresh runs, and the same with every detector switched off (what
   the path around them costs); with ``--baseline DIR`` (a checkout of another
   version, e.g. ``mkdir /tmp/before && git archive 755dcef supervisor actors benchmarks | tar -x -C
   /tmp/before``) the same workload through that version, the two interleaved, each in a child
   process of its own, and their ratio.
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


def cpu_per_report(trials: int, iterations: int, batch: int, detectors_off: bool = False) -> float:
    """Microseconds of CPU per report through a fresh service and store (this process's code); with
    ``detectors_off`` every detector is switched off (``enabled: false``): what the path costs around them."""
    from actors.supervisor_actor import SupervisorService
    from supervisor.detectors import DETECTORS

    bs = workload(trials, iterations, batch, "t")
    settings = {"detectors": {d: {"enabled": False} for d in DETECTORS}} if detectors_off else None
    with tempfile.TemporaryDirectory(prefix="judging-") as tmp:
        svc = SupervisorService()
        svc.open_run("bench", tmp, "bench", "bench", settings)
        c0 = time.process_time()
        for b in bs:
            svc.report_batch("bench", b)
        cpu = time.process_time() - c0
        svc.runs["bench"].store.close()
    return 1e6 * cpu / sum(map(len, bs))


def child(root: Path, args, detectors_off: bool = False) -> float:
    """``cpu_per_report`` of the code under ``root``, in a process of its own."""
    out = subprocess.run([sys.executable, __file__, "--child", str(root), "--trials", str(args.trials),
                          "--iterations", str(args.iterations), "--batch", str(args.batch),
                          *(["--detectors-off"] if detectors_off else [])],
                         capture_output=True, text=True, check=True, cwd=root)
    return float(out.stdout.strip().splitlines()[-1])


# What the actor does per report, by the file a function lives in (first match wins)
GROUPS = (("<method '__exit__' of 'sqlite3.Connection'", "storing: the commit (fsync, synchronous=FULL)"),
          ("supervisor/detectors/suite.py", "running the detectors (the suite: calls, corroboration, alarm table)"),
          ("supervisor/detectors/", "the detectors' rules (every detector class, their shared statistics and alarms)"),
          ("supervisor/stats.py", "the detectors' rules (every detector class, their shared statistics and alarms)"),
          ("supervisor/history.py", "the trial's history (bounded series, log views, rolling medians)"),
          ("supervisor/store.py", "storing: the rows' SQL and JSON"),
          ("sqlite3", "storing: the rows' SQL and JSON"),
          ("orjson", "storing: the rows' SQL and JSON"),
          ("supervisor/jsonsafe.py", "storing: the rows' SQL and JSON"),
          ("json/", "storing: the rows' SQL and JSON"),
          ("supervisor/engine.py", "the engine's bookkeeping (seq, normalization, verdict, checkpoint, best)"),
          ("supervisor/policy.py", "the engine's bookkeeping (seq, normalization, verdict, checkpoint, best)"),
          ("supervisor/health.py", "the engine's bookkeeping (seq, normalization, verdict, checkpoint, best)"),
          ("supervisor/verdict.py", "the engine's bookkeeping (seq, normalization, verdict, checkpoint, best)"),
          ("supervisor/findings.py", "the engine's bookkeeping (seq, normalization, verdict, checkpoint, best)"),
          ("actors/", "the actor's service (routing, alerts, counters)"))


def group_of(where: str) -> str | None:
    for key, label in GROUPS:
        if key in where:
            return label
    return None


def profile(trials: int, iterations: int, batch: int) -> tuple[dict, list, float]:
    """(share of CPU per group, the costliest functions, total CPU s) of one run under cProfile. A built-in's
    time (sorted, min, a list's append, ...) is its callers', split as they called it; the commit's own."""
    from actors.supervisor_actor import SupervisorService

    bs = workload(trials, iterations, batch, "p")
    with tempfile.TemporaryDirectory(prefix="judging-") as tmp:
        svc = SupervisorService()
        svc.open_run("bench", tmp, "bench", "bench")
        pr = cProfile.Profile(time.process_time)
        pr.enable()
        for b in bs:
            svc.report_batch("bench", b)
        pr.disable()
        svc.runs["bench"].store.close()
    own: dict[tuple, float] = {}
    calls: dict[tuple, int] = {}
    for key, (_, nc, tt, _, callers) in pstats.Stats(pr).stats.items():
        calls[key] = nc
        if key[0] == "~" and callers and group_of(key[2]) is None:
            total = sum(c[2] for c in callers.values()) or 1.0
            for ck, c in callers.items():
                own[ck] = own.get(ck, 0.0) + tt * c[2] / total
        else:
            own[key] = own.get(key, 0.0) + tt
    total = sum(own.values())
    groups: dict[str, float] = {}
    for (path, _, func), t in own.items():
        g = group_of(f"{path.replace(str(ROOT) + '/', '')}:{func}") or "other"
        groups[g] = groups.get(g, 0.0) + t
    top = sorted(((t, calls.get(k, 0), f"{Path(k[0]).name}:{k[1]}({k[2]})") for k, t in own.items()), reverse=True)
    return ({g: t / total for g, t in sorted(groups.items(), key=lambda kv: -kv[1])},
            [(t / total, nc, f) for t, nc, f in top[:12]], total)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--baseline", type=Path, help="a checkout of the version to compare with")
    ap.add_argument("--baseline-label", default=None, help="what the baseline is (e.g. a commit), for the results")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # measure the code under this root, print
    ap.add_argument("--detectors-off", action="store_true", help=argparse.SUPPRESS)  # (with --child)
    args = ap.parse_args()
    if args.child:
        sys.path.insert(0, str(args.child.resolve()))
        print(cpu_per_report(args.trials, args.iterations, args.batch, args.detectors_off))
        return
    sys.path.insert(0, str(ROOT))

    ours, off, base = [], [], []
    for _ in range(args.reps):  # interleaved: load on the machine hits all alike
        ours.append(child(ROOT, args))
        off.append(child(ROOT, args, detectors_off=True))
        if args.baseline:
            base.append(child(args.baseline.resolve(), args))
    us, us_off = statistics.median(ours), statistics.median(off)
    rows = [("CPU per report, us (this version)", f"{us:.1f}", f"{1e6 / us:,.0f} reports/s of engine CPU"),
            ("CPU per report, us (this version, every detector switched off)", f"{us_off:.1f}",
             "the path around the detectors: normalization, history, policy, store, verdict")]
    figures = {"cpu_us_per_report": round(us, 2), "engine_reports_per_cpu_s": round(1e6 / us),
               "cpu_us_per_report_detectors_off": round(us_off, 1),
               "reps": args.reps, "workload": f"{args.trials} trials x {args.iterations} iterations, "
                                              f"batches of {args.batch}, every detector on"}
    if base:
        b = statistics.median(base)
        rows.append(("CPU per report, us (baseline)", f"{b:.1f}", f"{1e6 / b:,.0f} reports/s of engine CPU"))
        rows.append(("baseline / this version", f"{b / us:.2f}x", ""))
        figures.update(baseline_cpu_us_per_report=round(b, 2), speedup=round(b / us, 2),
                       baseline=args.baseline_label or str(args.baseline))

    shares, top, _ = profile(args.trials, args.iterations, args.batch)
    reports = args.trials * args.iterations
    figures["profile_shares"] = {g: round(x, 4) for g, x in shares.items()}
    figures["profile_top"] = [{"function": f, "calls_per_report": round(nc / reports, 2), "share": round(x, 4)}
                              for x, nc, f in top]
    lines = ["| measure | value | |", "|---|---|---|", *[f"| {a} | {b} | {c} |" for a, b, c in rows], "",
             "What the actor does per report (cProfile of one run; CPU share; a built-in's time is its caller's):",
             "", "| part | share |", "|---|---:|", *[f"| {g} | {x:.1%} |" for g, x in shares.items()], "",
             "Costliest functions (own CPU, built-ins they call included):", "",
             "| function | calls per report | share |", "|---|---:|---:|",
             *[f"| `{f}` | {nc / reports:.2f} | {x:.1%} |" for x, nc, f in top]]
    text = "\n".join(lines)
    print(text)
    from benchmarks.results_io import write_results

    write_results("judging_profile", text, figures)


if __name__ == "__main__":
    main()
