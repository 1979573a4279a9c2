"""The third-party corpus section of the detection benchmark (issue 25).

    python benchmarks/corpus.py [--json OUT]   # the corpus figures alone (also: detection.py --corpus-only)
    python benchmarks/corpus.py --provenance   # re-render benchmarks/corpus/PROVENANCE.md from corpus.json
    python benchmarks/corpus.py --assign       # place newly added files' repositories (append-only split)

Every file of ``benchmarks/corpus/corpus.json`` (other people's training logs, see its README) is read by
``supervise scan``'s own readers and judged exactly as ``supervise scan`` judges it
(:func:`supervisor.scan.scan`: the shipped default profile, each iteration against the history before it).
The same normalized iterations go, one at a time, through the published rule sets of
:mod:`benchmarks.baselines` (RLDK ``ppo_scan``, llm-foundry ``KillLossSpike``, Megatron's loss checks).

Counting, per half of the split (tuning, held-out: never one figure for both):

* healthy runs: a run *warned* / *criticised* when ours reported >= 1 warning / >= 1 critical finding on it
  (info findings are allowed); a baseline *alarms* on a run when any of its rules fired at least once;
* faulty runs: *flagged* when a warning or critical finding (a baseline: any rule) comes at or after the
  labelled onset; *delay* = that finding's step - the onset, in the file's own steps (an onset of 0 means
  "from the first logged step", which is then the onset); findings before the onset are counted apart;
* unknown runs: listed with what fired, never scored.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.baselines import BASELINES  # noqa: E402

CORPUS = REPO / "benchmarks" / "corpus"
HALVES = ("tuning", "held_out")
LABELS = ("healthy", "faulty", "unknown")
OURS = "supervisor"
#: RLDK's stuck-controller case (issue 25): the doctored log must be flagged, the clean one stay silent.
RLDK_CASE = ("rldk/doctored_kl_spike_training.jsonl", "rldk/clean_training.jsonl")


# --------------------------------------------------------------------------- corpus file, split, provenance


def load_corpus(root: Path = CORPUS) -> dict:
    return json.loads((root / "corpus.json").read_text())


def repo_hash(repo: str) -> str:
    return hashlib.sha256(repo.encode()).hexdigest()


def assign_split(entries: list[dict], split: dict | None = None) -> dict:
    """{repo: half}: keeps ``split``'s assignments (append-only) and places the other repositories in
    sha256 order, each where it leaves the per-writer run counts (then the total) most even; ties by the
    hash's parity."""
    split = dict(split or {})
    counts = {h: Counter() for h in HALVES}
    totals: Counter = Counter()
    for e in entries:
        if e["repo"] in split:
            counts[split[e["repo"]]][e["writer"]] += 1
            totals[split[e["repo"]]] += 1
    for repo in sorted({e["repo"] for e in entries} - set(split), key=repo_hash):
        mine = Counter(e["writer"] for e in entries if e["repo"] == repo)
        n = sum(mine.values())

        def cost(h: str) -> tuple[int, int]:
            o = HALVES[1 - HALVES.index(h)]
            return (sum(abs(counts[h][w] + k - counts[o][w]) for w, k in mine.items()),
                    abs(totals[h] + n - totals[o]))

        ca, cb = cost(HALVES[0]), cost(HALVES[1])
        half = HALVES[0] if ca < cb else HALVES[1] if cb < ca else HALVES[int(repo_hash(repo), 16) % 2]
        split[repo] = half
        counts[half].update(mine)
        totals[half] += n
    return split


def replay_split(doc: dict) -> dict:
    """The split the rule gives when the files arrive batch by batch (``doc["split_batches"]``, in order): each
    batch places only its new repositories, by :func:`assign_split` over the files known by then."""
    by_file = {e["file"]: e for e in doc["files"]}
    split, known = dict(doc["pinned"]), []
    for batch in doc["split_batches"]:
        known += [by_file[f] for f in batch]
        split = assign_split(known, split)
    return split


def assign_new_batch(doc: dict) -> list[str]:
    """Appends the files no batch holds yet as one new batch and places their new repositories (append-only);
    sets every entry's half. Returns the new batch."""
    batched = {f for b in doc["split_batches"] for f in b}
    batch = [e["file"] for e in doc["files"] if e["file"] not in batched]
    if batch:
        doc["split_batches"].append(batch)
    doc["split"] = replay_split(doc)
    for e in doc["files"]:
        e["half"] = doc["split"][e["repo"]]
    return batch


def _cell(x) -> str:
    return str(x if x is not None else "-").replace("|", "\\|").replace("\n", " ")


def render_provenance(doc: dict) -> str:
    """corpus.json -> PROVENANCE.md (the table people read; corpus.json is the source)."""
    files = doc["files"]
    L = ["# Corpus provenance", "",
         "Generated from `corpus.json` by `python benchmarks/corpus.py --provenance`; edit corpus.json, not this file.", "",
         doc["about"], "", "Split: " + doc["split_rule"], ""]
    halves = ("tuning", "held_out")
    L += ["| half | runs | healthy | faulty | unknown | repositories |", "|---|---:|---:|---:|---:|---:|"]
    for h in halves:
        es = [e for e in files if e["half"] == h]
        c = Counter(e["label"] for e in es)
        L.append(f"| {h} | {len(es)} | {c['healthy']} | {c['faulty']} | {c['unknown']} | {len({e['repo'] for e in es})} |")
    L += ["", "| writer | tuning | held_out |", "|---|---:|---:|"]
    for w in sorted({e["writer"] for e in files}):
        n = [sum(e["writer"] == w and e["half"] == h for e in files) for h in halves]
        L.append(f"| {w} | {n[0]} | {n[1]} |")
    L += ["", "| algorithm | runs |", "|---|---:|"]
    for a, n in sorted(Counter(e["algorithm"] for e in files).items()):
        L.append(f"| {_cell(a)} | {n} |")
    L += ["", "## Files", "",
          "| file | half | repository | commit | path | license | writer | algorithm | env | label | why | cut |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in files:
        label = e["label"] if e["label"] != "faulty" else f"faulty: {e['fault']} from step {e['onset_step']}"
        L.append("| " + " | ".join(_cell(x) for x in (
            f"`{e['file']}`", e["half"], e["repo"], e["commit"][:12], f"`{e['path']}`", e["license"], e["writer"],
            e["algorithm"], e["env"], label, e["why"], e["cut"])) + " |")
    return "\n".join(L) + "\n"


# --------------------------------------------------------------------------- judging


def _alarm(sev: str) -> bool:
    return sev in ("warning", "critical")


def judge(entry: dict, root: Path = CORPUS) -> dict:
    """One corpus file through ``supervise scan`` and the published rule sets: what fired, at which step."""
    from supervisor.scan import load, scan

    path = root / entry["file"]
    res = scan(path)  # exactly `supervise scan --format json`
    (log,) = load(path)[1]
    fired: dict[str, list] = {OURS: [(f["step"], f["detector"], f["severity"]) for f in res["findings"]]}
    for cls in BASELINES:
        b = cls()
        fired[cls.name] = [(step, rule, "alarm") for step, m in zip(log.steps, log.metrics) for rule in b.step(m)]
    out = {k: entry[k] for k in ("file", "half", "writer", "algorithm", "label", "fault", "onset_step")}
    out.update(iterations=len(log.steps), first_step=log.steps[0], fired=fired)
    return out


def _flag(run: dict, way: str) -> dict:
    """For one run and one way: alarms, warning/critical counts, first alarm at/after the onset, pre-onset alarms."""
    alarms = [(s, d, sev) for s, d, sev in run["fired"][way] if way != OURS or _alarm(sev)]
    info = {"warned": any(sev == "warning" for _, _, sev in alarms),
            "critical": any(sev == "critical" for _, _, sev in alarms),
            "alarmed": bool(alarms), "alarms": alarms}
    if run["label"] == "faulty":
        onset = max(run["onset_step"] or 0, run["first_step"])
        after = [(s, d) for s, d, _ in alarms if s >= onset]
        info.update(onset=onset, flagged=bool(after), first=after[0] if after else None,
                    delay=(after[0][0] - onset) if after else None, before=sum(s < onset for s, _, _ in alarms))
    return info


def summarize(runs: list[dict]) -> dict:
    ways = [OURS] + [cls.name for cls in BASELINES]
    res: dict = {"ways": ways, "halves": {}}
    for h in HALVES:
        rs = [r for r in runs if r["half"] == h]
        healthy = [r for r in rs if r["label"] == "healthy"]
        faulty = [r for r in rs if r["label"] == "faulty"]
        per_way = {}
        for w in ways:
            hf = [_flag(r, w) for r in healthy]
            ff = [_flag(r, w) for r in faulty]
            delays = [f["delay"] for f in ff if f["flagged"]]
            per_way[w] = {"healthy_warned": sum(f["warned"] for f in hf), "healthy_critical": sum(f["critical"] for f in hf),
                          "healthy_alarmed": sum(f["alarmed"] for f in hf),
                          "healthy_alarms": sum(len(f["alarms"]) for f in hf),
                          "faults_flagged": sum(f["flagged"] for f in ff),
                          "median_delay": statistics.median(delays) if delays else None,
                          "pre_onset_alarms": sum(f["before"] for f in ff)}
        writers = {}
        for wr in sorted({r["writer"] for r in rs}):
            wh = [r for r in healthy if r["writer"] == wr]
            wf = [r for r in faulty if r["writer"] == wr]
            writers[wr] = {"runs": sum(r["writer"] == wr for r in rs), "healthy": len(wh), "faulty": len(wf),
                           "ways": {w: {"healthy_alarmed": sum(_flag(r, w)["alarmed"] for r in wh),
                                        "healthy_warned": sum(_flag(r, w)["warned"] for r in wh),
                                        "healthy_critical": sum(_flag(r, w)["critical"] for r in wh),
                                        "faults_flagged": sum(_flag(r, w)["flagged"] for r in wf)} for w in ways}}
        res["halves"][h] = {"runs": len(rs), "healthy": len(healthy), "faulty": len(faulty),
                            "unknown": len(rs) - len(healthy) - len(faulty), "ways": per_way, "writers": writers,
                            "healthy_findings": {r["file"]: _detector_counts(r) for r in healthy if _detector_counts(r)},
                            "faults": [_fault_row(r, ways) for r in faulty],
                            "unknown_findings": {r["file"]: _detector_counts(r) for r in rs
                                                 if r["label"] == "unknown" and _detector_counts(r)}}
    res["rldk_case"] = _rldk_case(runs)
    return res


def _detector_counts(run: dict) -> dict:
    """Our warning/critical findings on a run: {detector: [count, first step, worst severity]}."""
    out: dict = {}
    for s, d, sev in run["fired"][OURS]:
        if not _alarm(sev):
            continue
        if d not in out:
            out[d] = [0, s, sev]
        out[d][0] += 1
        if sev == "critical":
            out[d][2] = "critical"
    return out


def _fault_row(run: dict, ways: list[str]) -> dict:
    row = {"file": run["file"], "writer": run["writer"], "fault": run["fault"], "onset": _flag(run, OURS)["onset"]}
    for w in ways:
        f = _flag(run, w)
        row[w] = {"first": f["first"], "delay": f["delay"], "before": f["before"]}
    return row


def _rldk_case(runs: list[dict]) -> dict | None:
    by = {r["file"]: r for r in runs}
    if not all(f in by for f in RLDK_CASE):
        return None
    doctored, clean = (by[f] for f in RLDK_CASE)
    onset = max(doctored["onset_step"], doctored["first_step"])

    def first(run, way, rule, after=None):
        hits = [s for s, d, sev in run["fired"][way] if d == rule and (way != OURS or _alarm(sev))
                and (after is None or s >= after)]
        return hits[0] if hits else None

    return {"onset": onset,
            "ours_stuck_first": first(doctored, OURS, "kl_controller_stuck", onset),
            "ours_doctored_detectors": sorted({d for s, d, sev in doctored["fired"][OURS] if _alarm(sev) and s >= onset}),
            "ours_clean_alarms": sum(_alarm(sev) for _, _, sev in clean["fired"][OURS]),
            "rldk_stuck_first": first(doctored, "rldk_ppo_scan", "kl_controller_stuck", onset),
            "rldk_clean_alarms": len(clean["fired"]["rldk_ppo_scan"])}


def run_corpus(root: Path = CORPUS, files: list[str] | None = None) -> tuple[dict, list[dict]]:
    doc = load_corpus(root)
    entries = [e for e in doc["files"] if files is None or e["file"] in files]
    runs = [judge(e, root) for e in entries]
    return summarize(runs), runs


# --------------------------------------------------------------------------- rendering


def _n(x, of) -> str:
    return f"{x} of {of}"


def render(res: dict, elapsed: float | None = None) -> str:
    ways = res["ways"]
    L = ["## Third-party corpus (benchmarks/corpus, issue 25)", "",
         "`python benchmarks/corpus.py` (or `python benchmarks/detection.py --corpus-only`)"
         + (f", {elapsed:.0f} s" if elapsed is not None else "") + ". Other people's logs (provenance and labels: "
         "`benchmarks/corpus/PROVENANCE.md`), each judged exactly as `supervise scan` judges it (ours: warning and "
         "critical findings; info allowed) and fed to the published rule sets (any rule firing is an alarm). "
         "Delays in the file's own steps. The two halves are never pooled: tune on `tuning` only.", ""]
    for h in HALVES:
        d = res["halves"][h]
        L += [f"### {h} half: {d['runs']} runs ({d['healthy']} healthy, {d['faulty']} faulty, {d['unknown']} unknown)", "",
              "| way | healthy runs with >=1 warning | with >=1 critical | with any alarm | alarms on healthy runs "
              "| labelled faults flagged | median delay | alarms before an onset |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for w in ways:
            x = d["ways"][w]
            warn = _n(x["healthy_warned"], d["healthy"]) if w == OURS else "-"
            crit = _n(x["healthy_critical"], d["healthy"]) if w == OURS else "-"
            delay = "n/a" if x["median_delay"] is None else f"{x['median_delay']:g}"
            L.append(f"| {w} | {warn} | {crit} | {_n(x['healthy_alarmed'], d['healthy'])} | {x['healthy_alarms']} | "
                     f"{_n(x['faults_flagged'], d['faulty'])} | {delay} | {x['pre_onset_alarms']} |")
        L += ["", f"Per writer ({h}): healthy runs with an alarm (ours: warning/critical) / healthy runs; faults flagged / "
              "faulty runs.", "",
              "| writer | runs | " + " | ".join(f"{w}: healthy alarmed | {w}: faults" for w in ways) + " |",
              "|---|---:|" + "---:|---:|" * len(ways)]
        for wr, x in d["writers"].items():
            cells = []
            for w in ways:
                y = x["ways"][w]
                cells += [f"{y['healthy_alarmed']}/{x['healthy']}", f"{y['faults_flagged']}/{x['faulty']}"]
            L.append(f"| {wr} | {x['runs']} | " + " | ".join(cells) + " |")
        if d["healthy_findings"]:
            L += ["", f"Our findings on healthy runs ({h}): " + "; ".join(
                f"`{f}`: " + ", ".join(f"{det} x{c} (first at step {s}, worst {sev})" for det, (c, s, sev) in dets.items())
                for f, dets in d["healthy_findings"].items())]
        if d["faults"]:
            L += ["", f"Labelled faults ({h}): first alarm at or after the onset (step, rule), delay in steps.", "",
                  "| file | fault | onset | " + " | ".join(ways) + " |", "|---|---|---:|" + "---|" * len(ways)]
            for r in d["faults"]:
                cells = []
                for w in ways:
                    x = r[w]
                    c = "-" if x["first"] is None else f"{x['first'][0]} ({x['first'][1]}), +{x['delay']:g}"
                    cells.append(c + (f"; {x['before']} before" if x["before"] else ""))
                L.append(f"| `{r['file']}` | {r['fault']} | {r['onset']} | " + " | ".join(cells) + " |")
        if d["unknown_findings"]:
            L += ["", f"Unknown-label runs with our warnings/criticals ({h}, not scored): " + "; ".join(
                f"`{f}`: " + ", ".join(f"{det} x{c}" for det, (c, _, _) in dets.items())
                for f, dets in d["unknown_findings"].items())]
        L.append("")
    c = res.get("rldk_case")
    if c:
        ours = ("not flagged as kl_controller_stuck" if c["ours_stuck_first"] is None
                else f"kl_controller_stuck from step {c['ours_stuck_first']}")
        rldk = ("not flagged" if c["rldk_stuck_first"] is None else f"kl_controller_stuck from step {c['rldk_stuck_first']}")
        L += ["### RLDK's stuck-controller case", "",
              f"`{RLDK_CASE[0]}` (KL leaves its target at step {c['onset']} while kl_coef stays flat): ours: {ours} "
              f"(what did fire after the onset: {', '.join(c['ours_doctored_detectors']) or 'nothing'}); "
              f"RLDK's ppo_scan: {rldk}. `{RLDK_CASE[1]}`: ours {c['ours_clean_alarms']} warnings/criticals, "
              f"RLDK {c['rldk_clean_alarms']} alarms.", ""]
    return "\n".join(L)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--provenance", action="store_true", help="re-render PROVENANCE.md from corpus.json and exit")
    ap.add_argument("--assign", action="store_true",
                    help="put the files no split batch holds yet into a new batch, place their new repositories "
                         "(append-only), write corpus.json and PROVENANCE.md, and exit")
    ap.add_argument("--json", default=None, help="also write the per-run results here")
    args = ap.parse_args()
    if args.assign:
        doc = load_corpus()
        batch = assign_new_batch(doc)
        (CORPUS / "corpus.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
        (CORPUS / "PROVENANCE.md").write_text(render_provenance(doc))
        print(f"{len(batch)} file(s) in a new batch: " + ", ".join(f"{f} -> {doc['split'][e['repo']]}"
              for f in batch for e in doc["files"] if e["file"] == f))
        return
    if args.provenance:
        (CORPUS / "PROVENANCE.md").write_text(render_provenance(load_corpus()))
        return
    t0 = time.time()
    res, runs = run_corpus()
    print(render(res, time.time() - t0))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": res, "runs": runs}, indent=1, default=str))


if __name__ == "__main__":
    main()
