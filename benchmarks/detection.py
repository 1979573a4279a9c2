"""Detection benchmark: recall, precision, delay and false alarms of every training detector.

    python benchmarks/detection.py [--split report|tune] [--seeds 30] [--healthy 240] [--workers 2] [--corpus-only]

Replays two kinds of metric streams through the detectors exactly as the
supervisor runs them (``build_detectors()`` with its defaults, each iteration
judged against the history before it):

* synthetic PPO streams (:mod:`benchmarks.synthetic`): healthy runs
  of several characters (default, long runs that outlive the history ring,
  slow learners that never solve, fast learners, noisy runs), and every fault
  of ``FAULT_CASES`` planted at a random onset (iteration 30..110), abrupt
  and gradual (growing over 8 iterations, full strength at onset + 7);
* recorded real RLlib 2.60 runs (``benchmarks/data/``, written by
  ``benchmarks/record_runs.py``), reported separately: healthy runs of
  several environments and algorithms, configs that are bad from the first
  iteration, and faults planted mid-run, replayed through the real engine
  with each trial's priors, beside the published rule sets of
  ``benchmarks/baselines.py`` (see ``benchmarks/real_runs.py``);
* the third-party corpus (``benchmarks/corpus/``: other people's logs of several writers, labelled, split
  by source repository into a tuning and a held-out half), each file judged as ``supervise scan`` judges
  it, beside the same published rule sets, the two halves reported apart (``benchmarks/corpus.py``).
  ``--corpus-only`` runs just that section and replaces it in the results file;
* recorded multi-agent runs (``benchmarks/data/multi_agent/``), each policy judged as its own stream:
  per-module recall and false alarms (``benchmarks/multi_agent_runs.py``); ``--multi-agent-only`` runs
  just that section and replaces it.

Definitions (warning and critical findings only; ``plateau`` reports info, so
for the plateau fault its info findings count as its detections):

* a fault case is *detected* when its designated detector (``FAULT_CASES``)
  reports at or after the onset, within ``HORIZON`` iterations (plateau:
  its window + HORIZON); *delay* = first such report - onset. "any" recall:
  any detector at all reported in that span (what the supervisor reacts to).
* a *false alarm* is a finding before the onset of a faulty stream, or on a
  healthy stream; the rate is per 10,000 healthy iterations (healthy streams
  plus the pre-onset part of faulty streams).
* *precision* of a detector = its findings at or after an onset on faulty
  streams / all its findings.

Seeds: ``--split report`` (default) draws every stream from seeds that
neither the unit tests (seeds < 2,000) nor detector tuning (``--split
tune``, seeds from 500,000) use, so the reported figures are not fitted.
Prints markdown and writes ``benchmarks/results/detection.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import statistics
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import corpus as corpus_bench  # noqa: E402
from benchmarks import multi_agent_runs  # noqa: E402
from benchmarks import real_runs  # noqa: E402
from supervisor.detectors import build_detectors  # noqa: E402
from benchmarks.synthetic import faulty_stream, healthy_stream, run_detectors  # noqa: E402

DATA = REPO / "benchmarks" / "data"
RESULTS = REPO / "benchmarks" / "results" / "detection.md"
#: The figures before issue 25's detection work, for the before/after table.
BEFORE = REPO / "benchmarks" / "results" / "detection_before_issue25.json"

SEED_BASE = {"report": 1_000_000, "tune": 500_000}
CORPUS_HEADING = "## Third-party corpus"
HORIZON = 30          # iterations after the onset in which a detection counts
RAMP = 8              # gradual faults reach full strength at onset + RAMP - 1
ONSETS = (30, 110)    # onset drawn uniformly in this range (inclusive)
POST = 60             # iterations after the onset in a faulty stream (plateau: its window + POST)
PLATEAU_WINDOW = 50

# (fault, mode, magnitude, designated detector). Magnitudes: None = the stream's default (a strong
# fault); a number = a weaker variant that should still be caught (at warning level).
FAULT_CASES: list[tuple[str, str, float | None, str]] = [
    ("loss_explosion", "explode", None, "loss_explosion"),
    ("loss_explosion", "explode", 30.0, "loss_explosion"),
    ("gradient_explosion", "explode", None, "gradient_explosion"),
    ("gradient_explosion", "explode", 30.0, "gradient_explosion"),
    ("gradient_vanishing", "vanish", None, "gradient_vanishing"),
    ("gradient_vanishing", "zero", None, "gradient_vanishing"),
    ("kl_spike", "spike", None, "kl_spike"),
    ("kl_spike", "spike", 30.0, "kl_spike"),
    ("kl_controller_stuck", "down", None, "kl_controller_stuck"),
    ("kl_controller_stuck", "up", None, "kl_controller_stuck"),
    ("kl_controller_stuck", "zero", None, "kl_controller_stuck"),
    ("entropy_collapse", "low", None, "entropy_collapse"),
    ("entropy_collapse", "zero", None, "entropy_collapse"),
    ("value_collapse", "ev", None, "value_collapse"),
    ("value_collapse", "ev", -1.5, "value_collapse"),
    ("value_collapse", "pinned", None, "value_collapse"),
    ("advantage_anomaly", "std_collapse", None, "advantage_anomaly"),
    ("advantage_anomaly", "std_zero", None, "advantage_anomaly"),
    ("advantage_anomaly", "std_explosion", None, "advantage_anomaly"),
    ("advantage_anomaly", "std_explosion", 30.0, "advantage_anomaly"),
    ("advantage_anomaly", "bias", None, "advantage_anomaly"),
    ("advantage_anomaly", "shape", None, "advantage_anomaly"),
    ("reward_collapse", "min", None, "reward_collapse"),
    ("reward_collapse", "partial", None, "reward_collapse"),
    ("plateau", "stall", None, "plateau"),
    ("nan", "persistent", None, "non_finite"),
    ("nan", "once", None, "non_finite"),
    ("divergence", "ray", None, "non_finite"),
]
NO_GRADUAL = {"nan", "divergence"}

# Median delay goal (iterations after the onset, abrupt faults): 2, 0 for non-finite values. Two
# rules need a run of iterations by construction; their goal is that floor (+2), stated in the table.
DELAY_GOAL: dict[str, tuple[int, str]] = {
    "nan": (0, ""), "divergence": (0, ""),
    "kl_controller_stuck": (11, "rule floor 9: needs patience=10 same-way moves of kl_coeff"),
    "plateau": (PLATEAU_WINDOW + 1, f"rule floor {PLATEAU_WINDOW - 1}: needs window={PLATEAU_WINDOW} "
                                    "iterations without improvement"),
}

# Healthy run characters: name -> (count share, RunParams overrides drawn per seed, length)
HEALTHY_KINDS = {
    "default": (0.45, None, 150),
    "long": (0.10, None, 600),
    "slow learner": (0.15, "slow", 150),
    "fast learner": (0.15, "fast", 150),
    "noisy": (0.15, "noisy", 150),
}


def _overrides(style: str | None, rng: np.random.Generator) -> dict:
    u = rng.uniform
    if style == "slow":   # still far from solved at the end: learning midpoint 80..250
        return {"mid": u(80, 250), "width": u(15, 40)}
    if style == "fast":   # solved within ~15 iterations, sharp early transients
        return {"mid": u(5, 10), "width": u(2, 4), "kl_boost": u(1.5, 3.0), "g_trans": u(2.0, 4.0)}
    if style == "noisy":  # noisy returns with frequent dips, noisy KL and gradients
        return {"ret_noise": u(0.08, 0.15), "dip_rate": u(0.04, 0.08), "kl_noise": u(0.35, 0.5),
                "g_noise": u(0.3, 0.45), "ev_noise": u(0.08, 0.12)}
    return {}


# --------------------------------------------------------------------------------------------
@dataclass
class Case:
    source: str            # "synthetic" | "recorded"
    name: str              # e.g. "kl_spike/spike" or a recorded run's name
    fault: str | None      # None: healthy
    shape: str             # "abrupt" | "gradual" | "healthy" | "real"
    detector: str | None   # designated detector (None: any detector counts)
    onset: int | None
    n: int
    findings: list = field(default_factory=list)  # (detector, iteration, severity)


def _task_synthetic(spec):
    kind, args = spec
    if kind == "healthy":
        style_name, style, n, seed = args
        rng = np.random.default_rng([seed, 17])
        stream = healthy_stream(n, seed, **_overrides(style, rng))
        case = Case("synthetic", f"healthy/{style_name}", None, "healthy", None, None, n)
    else:
        fault, mode, magnitude, detector, gradual, seed = args
        rng = np.random.default_rng([seed, 23])
        onset = int(rng.integers(ONSETS[0], ONSETS[1] + 1))
        post = POST + (PLATEAU_WINDOW if fault == "plateau" else 0)
        n = onset + post
        extra = {}
        if fault == "plateau":  # learning half done at the onset, then stalling short of the cap
            extra = {"mid": float(onset + rng.uniform(-5, 10)), "width": float(rng.uniform(8, 14))}
        stream = faulty_stream(fault, n, onset, seed, gradual=gradual, ramp=RAMP, mode=mode,
                               magnitude=magnitude, **extra)
        name = f"{fault}/{mode}" + (f" x{magnitude:g}" if magnitude is not None else "")
        case = Case("synthetic", name, fault, "gradual" if gradual else "abrupt", detector, onset, n)
    findings = run_detectors(build_detectors(), stream)
    case.findings = [(f.detector, f.iteration, f.severity) for f in findings]
    return case


def synthetic_specs(split: str, n_seeds: int, n_healthy: int) -> list:
    base = SEED_BASE[split]
    specs = []
    k = 0
    for name, (share, style, n) in HEALTHY_KINDS.items():
        for i in range(max(1, round(share * n_healthy))):
            specs.append(("healthy", (name, style, n, base + 10_000 * k + i)))
        k += 1
    for ci, (fault, mode, magnitude, detector) in enumerate(FAULT_CASES):
        for gradual in (False, True):
            if gradual and fault in NO_GRADUAL:
                continue
            for s in range(n_seeds):
                seed = base + 100_000 + 1000 * (2 * ci + gradual) + s
                specs.append(("fault", (fault, mode, magnitude, detector, gradual, seed)))
    return specs


# --------------------------------------------------------------------------------------------
def _alarm(sev: str) -> bool:
    return sev in ("warning", "critical")


def _span(case: Case) -> tuple[int, int]:
    end = case.onset + HORIZON + (PLATEAU_WINDOW if case.fault == "plateau" else 0)
    return case.onset, end


def _detection(case: Case, detector: str | None):
    """First finding counting as a detection of ``case`` (by ``detector``, or any detector when
    None): (iteration, detector, severity), or None."""
    lo, hi = _span(case)
    for det, it, sev in case.findings:
        if not lo <= it <= hi:
            continue
        if detector is not None and det != detector:
            continue
        if _alarm(sev) or (case.fault == "plateau" and det == "plateau" and detector == "plateau"):
            return it, det, sev
    return None


def _healthy_iterations(case: Case) -> int:
    return case.n if case.fault is None else case.onset


def _false_alarms(case: Case) -> list:
    lim = case.n if case.fault is None else case.onset
    return [(d, it, s) for d, it, s in case.findings if _alarm(s) and it < lim]


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _med(xs) -> str:
    return f"{statistics.median(xs):g}" if xs else "n/a"


def _p90(xs) -> str:
    return f"{float(np.percentile(xs, 90)):g}" if xs else "n/a"


def analyse(cases: list[Case], detectors: list[str]) -> dict:
    syn = [c for c in cases if c.source == "synthetic"]
    healthy_iters = sum(_healthy_iterations(c) for c in cases)
    fa = Counter()
    fa_examples: dict[str, list] = defaultdict(list)
    for c in cases:
        for d, it, s in _false_alarms(c):
            fa[d] += 1
            if len(fa_examples[d]) < 3:
                fa_examples[d].append(f"{c.name} ({c.shape}) it {it} {s}")
    # per fault type (synthetic), abrupt and gradual
    by_type: dict[tuple[str, str], list[Case]] = defaultdict(list)
    for c in syn:
        if c.fault is not None:
            by_type[(c.fault, c.shape)].append(c)
    rows = []
    for (fault, shape), cs in by_type.items():
        det = cs[0].detector
        hits = [_detection(c, det) for c in cs]
        anyhits = [_detection(c, None) for c in cs]
        delays = [h[0] - c.onset for h, c in zip(hits, cs) if h]
        sev = Counter(h[2] for h in hits if h)
        rows.append({"fault": fault, "shape": shape, "detector": det, "cases": len(cs),
                     "recall": sum(1 for h in hits if h) / len(cs),
                     "recall_any": sum(1 for h in anyhits if h) / len(cs),
                     "median_delay": statistics.median(delays) if delays else None,
                     "delays": delays, "p90": _p90(delays), "severity": dict(sev)})
    # per variant (mode/magnitude), for the detail table
    by_variant: dict[tuple[str, str], list[Case]] = defaultdict(list)
    for c in syn:
        if c.fault is not None:
            by_variant[(c.name, c.shape)].append(c)
    variants = []
    for (name, shape), cs in by_variant.items():
        hits = [_detection(c, cs[0].detector) for c in cs]
        delays = [h[0] - c.onset for h, c in zip(hits, cs) if h]
        variants.append({"name": name, "shape": shape, "cases": len(cs), "detector": cs[0].detector,
                         "recall": sum(1 for h in hits if h) / len(cs),
                         "median_delay": statistics.median(delays) if delays else None,
                         "max_delay": max(delays) if delays else None,
                         "severity": dict(Counter(h[2] for h in hits if h))})
    # per detector
    per_det = []
    for d in detectors:
        mine = [c for c in syn if c.detector == d]
        hits = [_detection(c, d) for c in mine]
        abrupt = [h[0] - c.onset for h, c in zip(hits, mine) if h and c.shape == "abrupt"]
        all_alarms = sum(1 for c in cases for det, it, s in c.findings if det == d and _alarm(s))
        true = sum(1 for c in cases if c.fault is not None
                   for det, it, s in c.findings if det == d and _alarm(s) and it >= c.onset)
        per_det.append({"detector": d, "cases": len(mine),
                        "recall": (sum(1 for h in hits if h) / len(mine)) if mine else None,
                        "median_delay_abrupt": statistics.median(abrupt) if abrupt else None,
                        "alarms": all_alarms, "precision": (true / all_alarms) if all_alarms else None,
                        "false_alarms": fa[d],
                        "fa_per_10k": 1e4 * fa[d] / healthy_iters if healthy_iters else None,
                        "fa_examples": fa_examples[d]})
    return {"healthy_iterations": healthy_iters, "healthy_streams": sum(1 for c in cases if c.fault is None),
            "faulty_streams": sum(1 for c in cases if c.fault is not None), "false_alarms": sum(fa.values()),
            "types": rows, "variants": variants, "detectors": per_det}


def _goal_delay(fault: str) -> tuple[int, str]:
    return DELAY_GOAL.get(fault, (2, ""))


def render(res: dict, args, elapsed: float) -> str:
    L = []
    L.append("# Detection benchmark")
    L.append("")
    L.append(f"`python benchmarks/detection.py --split {args.split} --seeds {args.seeds} --healthy {args.healthy}` "
             f"({elapsed:.0f} s). Synthetic seeds of the `{args.split}` split (base {SEED_BASE[args.split]:,}); "
             "detectors with their defaults (`build_detectors()`, as the engine builds them). "
             "Warning and critical findings only (plateau: info).")
    L.append("")
    hi = res["healthy_iterations"]
    goal_fa = 1e4 * res["false_alarms"] / hi if hi else math.nan
    L.append(f"Synthetic streams. Healthy iterations judged: {hi:,} (in {res['healthy_streams']} healthy streams "
             f"plus the pre-onset part of {res['faulty_streams']} faulty ones). "
             f"False alarms: {res['false_alarms']} = **{goal_fa:.2f} per 10,000 healthy iterations** (goal <= 1).")
    L.append("")
    L.append("## Per fault type (synthetic)")
    L.append("")
    L.append("Recall: the designated detector reported (warning/critical) within "
             f"{HORIZON} iterations of the onset; \"any\": any detector did. Delay: iterations from the onset "
             f"to its first report (gradual faults reach full strength at onset + {RAMP - 1}).")
    L.append("")
    L.append("| fault | shape | detector | cases | recall | recall (any) | median delay | p90 delay | goal | severities |")
    L.append("|---|---|---|---:|---:|---:|---:|---:|---|---|")
    for r in sorted(res["types"], key=lambda r: (r["fault"], r["shape"])):
        goal, why = _goal_delay(r["fault"])
        goal_txt = f"recall >= 95 %, delay <= {goal}" if r["shape"] == "abrupt" else "recall >= 95 %"
        if why and r["shape"] == "abrupt":
            goal_txt += f" ({why})"
        ok = r["recall"] >= 0.95 and (r["shape"] != "abrupt" or (r["median_delay"] is not None and
                                                                 r["median_delay"] <= goal))
        sev = ", ".join(f"{k} {v}" for k, v in sorted(r["severity"].items()))
        L.append(f"| {r['fault']} | {r['shape']} | {r['detector']} | {r['cases']} | {_pct(r['recall'])} | "
                 f"{_pct(r['recall_any'])} | {r['median_delay'] if r['median_delay'] is not None else 'n/a'} | "
                 f"{r['p90']} | {goal_txt}{'' if ok else ' **NOT MET**'} | {sev} |")
    L.append("")
    L.append("## Per detector")
    L.append("")
    L.append("Recall over the synthetic faults it is designated for (abrupt and gradual); precision = its "
             "findings at or after an onset on faulty streams / all its findings; "
             "false alarms: its findings before an onset or on healthy streams.")
    L.append("")
    L.append("| detector | fault cases | recall | median delay (abrupt) | alarms | precision | false alarms | per 10k healthy it |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for d in res["detectors"]:
        L.append(f"| {d['detector']} | {d['cases']} | {_pct(d['recall']) if d['recall'] is not None else 'n/a'} | "
                 f"{d['median_delay_abrupt'] if d['median_delay_abrupt'] is not None else 'n/a'} | {d['alarms']} | "
                 f"{_pct(d['precision']) if d['precision'] is not None else 'n/a'} | {d['false_alarms']} | "
                 f"{d['fa_per_10k']:.2f} |")
    ex = [(d["detector"], e) for d in res["detectors"] for e in d["fa_examples"]]
    if ex:
        L.append("")
        L.append("False alarm examples: " + "; ".join(f"{d}: {e}" for d, e in ex[:12]))
    L.append("")
    L.append("## Variants (synthetic)")
    L.append("")
    L.append("| variant | shape | cases | recall | median delay | max delay | severities |")
    L.append("|---|---|---:|---:|---:|---:|---|")
    for v in sorted(res["variants"], key=lambda v: (v["name"], v["shape"])):
        sev = ", ".join(f"{k} {n}" for k, n in sorted(v["severity"].items()))
        L.append(f"| {v['name']} | {v['shape']} | {v['cases']} | {_pct(v['recall'])} | "
                 f"{v['median_delay'] if v['median_delay'] is not None else 'n/a'} | "
                 f"{v['max_delay'] if v['max_delay'] is not None else 'n/a'} | {sev} |")
    return "\n".join(L) + "\n"


def render_totals(rows: list[dict]) -> str:
    """The one comparison table: the supervisor beside each published rule set, on the same real runs."""
    out = ["### The supervisor against the published rule sets (same real runs)", "",
           "| way | mid-run faults detected | median delay | bad-from-the-start flagged by iteration 3 "
           "| false alarms (healthy runs + before onsets) | healthy iterations judged |",
           "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        d = "n/a" if r["median_delay"] is None else f"{r['median_delay']:g}"
        out.append(f"| {r['way']} | {r['mid_run_recall']} | {d} | {r['bad_start_flagged']} | {r['false_alarms']} "
                   f"| {r['healthy_iterations']} |")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", choices=sorted(SEED_BASE), default="report")
    ap.add_argument("--seeds", type=int, default=30, help="seeds per fault variant and shape")
    ap.add_argument("--healthy", type=int, default=240, help="healthy synthetic streams")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--json", default=None, help="also write the raw results here")
    ap.add_argument("--data", default=str(DATA), help="recorded runs (runs.json and one JSONL per run)")
    ap.add_argument("--corpus-only", action="store_true",
                    help="only the third-party corpus section (benchmarks/corpus.py); replaces it in --out")
    ap.add_argument("--multi-agent-only", action="store_true",
                    help="only the multi-agent section (benchmarks/multi_agent_runs.py); replaces it in --out")
    args = ap.parse_args()
    t0 = time.time()
    if args.multi_agent_only:
        ma = multi_agent_runs.run()
        section = multi_agent_runs.render(ma)
        print(section)
        out = Path(args.out)
        before = out.read_text() if out.exists() else ""
        head, _, rest = before.partition(multi_agent_runs.HEADING)
        tail = CORPUS_HEADING + rest.split(CORPUS_HEADING, 1)[1] if CORPUS_HEADING in rest else ""
        if not tail and CORPUS_HEADING in head:  # first time: the section goes before the corpus
            head, _, corpus = head.partition(CORPUS_HEADING)
            tail = CORPUS_HEADING + corpus
        out.write_text(head.rstrip("\n") + "\n\n" + section + ("\n" + tail if tail else ""))
        if out.resolve() == RESULTS.resolve():
            js = RESULTS.with_suffix(".json")
            doc = json.loads(js.read_text())
            doc["figures"]["multi_agent"] = multi_agent_runs.figures(ma)
            js.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
        return
    if args.corpus_only:
        res, runs = corpus_bench.run_corpus()
        section = corpus_bench.render(res, time.time() - t0)
        print(section)
        out = Path(args.out)
        before = out.read_text() if out.exists() else ""
        head, _, rest = before.partition(CORPUS_HEADING)
        head = head.rstrip("\n")
        nxt = rest.find("\n## ")  # the sections after the corpus's (before/after) stay as they are
        after = rest[nxt:] if nxt >= 0 else ""
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text((head + "\n\n" if head else "") + section.rstrip("\n") + "\n" + after.rstrip("\n") + "\n"
                       if after else (head + "\n\n" if head else "") + section)
        if out.resolve() == RESULTS.resolve():  # keep the published figures in step with the Markdown
            js = RESULTS.with_suffix(".json")
            doc = json.loads(js.read_text())
            doc["figures"]["corpus"] = _corpus_figures(res)
            js.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
        if args.json:
            Path(args.json).write_text(json.dumps({"corpus": res, "corpus_runs": runs}, indent=1, default=str))
        return
    specs = synthetic_specs(args.split, args.seeds, args.healthy)
    cases: list[Case]
    if args.workers > 1:
        try:
            ctx = multiprocessing.get_context("fork")
        except ValueError:
            ctx = None
    else:
        ctx = None
    if ctx is not None:
        with ProcessPoolExecutor(max_workers=args.workers, mp_context=ctx) as pool:
            cases = list(pool.map(_task_synthetic, specs, chunksize=16))
    else:
        cases = [_task_synthetic(s) for s in specs]
    detectors = [d.name for d in build_detectors()]
    res = analyse(cases, detectors)
    text = render(res, args, time.time() - t0)
    # Real recorded runs, separately: replayed through the engine with each trial's priors, beside the
    # published rule sets (benchmarks/real_runs.py, benchmarks/baselines.py).
    reps = [real_runs.replay(name, meta, rows) for name, meta, rows in real_runs.load_runs(Path(args.data))]
    real = real_runs.summarize(reps)
    text += "\n" + real_runs.render(real) + "\n" + render_totals(real_runs.totals(real))
    res["real"] = real
    # Multi-agent recorded runs, each policy its own stream (benchmarks/multi_agent_runs.py).
    ma = multi_agent_runs.run()
    text += "\n" + multi_agent_runs.render(ma)
    res["multi_agent"] = ma
    # Third-party corpus (other people's logs), tuning and held-out halves apart (benchmarks/corpus.py).
    t1 = time.time()
    corpus_res, _ = corpus_bench.run_corpus()
    text += "\n" + corpus_bench.render(corpus_res, time.time() - t1)
    res["corpus"] = corpus_res
    figures = {
        "synthetic": {k: res[k] for k in ("healthy_iterations", "healthy_streams", "faulty_streams",
                                          "false_alarms")},
        "synthetic_detectors": [{k: d[k] for k in ("detector", "cases", "recall", "alarms", "false_alarms")}
                                for d in res["detectors"]],
        "totals": real_runs.totals(real),
        "bad_start": [{**{k: b[k] for k in ("name", "algorithm", "env", "fault", "first", "flagged",
                                            "cause_named", "acted")},
                       "baselines": {n: v["flagged"] for n, v in b["baselines"].items()}}
                      for b in real["bad_start"]],
        "mid_run": [{k: r[k] for k in ("name", "algorithm", "env", "fault", "detected", "delay", "by")}
                    for r in real["faulty"]],
        "corpus": _corpus_figures(corpus_res),
        "multi_agent": multi_agent_runs.figures(ma)}
    if BEFORE.is_file():
        text += "\n" + render_before_after(json.loads(BEFORE.read_text())["figures"], figures)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    if Path(args.out).resolve() == RESULTS.resolve():  # the published run: its figures for readme_tables.py
        from benchmarks.results_io import write_results

        write_results("detection", text, figures)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str))


def _headline(f: dict) -> dict:
    """The supervisor's headline figures from one run's figures (as written to detection.json)."""
    sup = next(t for t in f["totals"] if t["way"] == "supervisor")
    out = {"mid-run faults found (recorded RLlib runs)": sup["mid_run_recall"].replace("/", " / "),
           "median delay (iterations)": f"{sup['median_delay']:g}" if sup["median_delay"] is not None else "n/a",
           "bad from the start: flagged by iteration 3": sup["bad_start_flagged"].replace("/", " / "),
           "bad from the start: acted on by then": f"{sum(b['acted'] for b in f['bad_start'])} / "
                                                   f"{len(f['bad_start'])}",
           "false alarms, recorded healthy runs and before onsets": f"{sup['false_alarms']:,}",
           "synthetic false alarms per 10,000 healthy iterations":
               f"{1e4 * f['synthetic']['false_alarms'] / f['synthetic']['healthy_iterations']:.2f}"}
    for half, d in f["corpus"]["halves"].items():
        x = d["ways"]["supervisor"]
        name = half.replace("_", "-")
        out[f"corpus {name}: healthy runs with a warning / a critical"] = (
            f"{x['healthy_warned']} / {x['healthy_critical']} of {d['healthy']}")
        out[f"corpus {name}: labelled faults flagged"] = f"{x['faults_flagged']} of {d['faulty']}"
        out[f"corpus {name}: alarms before an onset"] = f"{x['pre_onset_alarms']}"
    return out


def render_before_after(before: dict, now: dict) -> str:
    """The supervisor's figures before issue 25's detection work (``BEFORE``) beside this run's."""
    b, n = _headline(before), _headline(now)
    rows = [f"| {k} | {b.get(k, '-')} | {v} |" for k, v in n.items()]
    return ("## Before and after issue 25 (the unit of judgement, writer semantics, when a finding acts)\n\n"
            f"Before: `{BEFORE.relative_to(REPO)}` (the detectors and policy before issue 25, same recorded runs, "
            "synthetic seeds and corpus). The corpus rows of a half count the runs it held then and now.\n\n"
            "| figure (supervisor) | before | now |\n|---|---:|---:|\n" + "\n".join(rows) + "\n")


def _corpus_figures(corpus_res: dict) -> dict:
    """The corpus section's figures as readme_tables.py reads them."""
    return {"ways": corpus_res["ways"],
            "halves": {h: {k: d[k] for k in ("runs", "healthy", "faulty", "unknown", "ways")}
                       for h, d in corpus_res["halves"].items()}}


if __name__ == "__main__":
    main()
