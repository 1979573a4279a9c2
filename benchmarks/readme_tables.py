"""The README's benchmark tables, generated from ``benchmarks/results/*.json`` (never typed by hand).

    python benchmarks/readme_tables.py           # rewrite the marked regions of README.md and docs/
    python benchmarks/readme_tables.py --check   # exit 1 and print a diff when a file differs

README.md holds each table between two markers (docs/api.md and docs/benchmarks.md may repeat one)::

    <!-- table:NAME -->
    ...generated, replaced on every run...
    <!-- /table:NAME -->

and :data:`TABLES` maps NAME to a function that reads the result files and
returns the Markdown between the markers. ``tests/test_docs.py`` fails when
README.md differs from what this script generates, so a benchmark re-run
that changes a figure changes the README in the same commit.

How a branch adds a table:

1. the benchmark writes its figures as JSON next to its Markdown, with
   :func:`benchmarks.results_io.write_results` (``results/NAME.json``:
   ``command``, ``date``, ``machine`` and the ``figures`` it chooses);
2. add ``def table_NAME() -> str`` here, reading ``_figures("NAME")``, and
   an entry in :data:`TABLES`;
3. put the two markers in README.md where the table goes, run this script,
   and commit the README with the result file.

Prose next to a table that repeats one of its figures goes inside the
markers too (generated), or is reworded so it does not repeat it.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
README = REPO / "README.md"
#: the files whose marked regions are generated; README.md must mark every table, the others may repeat some
FILES = (README, REPO / "docs" / "api.md", REPO / "docs" / "benchmarks.md")
sys.path.insert(0, str(REPO))


def _figures(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text())["figures"]


def _meta(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text())


def _n(x: float, digits: int = 0) -> str:
    return f"{x:,.{digits}f}"


def _row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _loaded(*names: str) -> str:
    """Where a result was taken on a busy machine, its load average (2 cores: above 2 is contention)."""
    loads = [(n, _meta(n)["machine"].get("load_average_1m")) for n in names]
    busy = [f"{n} {la:g}" for n, la in loads if isinstance(la, (int, float)) and la > 2.5]
    return ("" if not busy else
            f"\n\n*Taken with other work on the machine (1-minute load average: {', '.join(busy)} on 2 cores):"
            " times taken under it are pessimistic.*")


# --------------------------------------------------------------------------------------------- tables


_WAYS = {"rldk_ppo_scan": "RLDK ppo_scan", "llm_foundry_kill_loss_spike": "llm-foundry KillLossSpike",
         "megatron_loss_checks": "Megatron loss checks"}


#: The detection figures before issue 25's detection work (benchmarks/detection.py shows them beside its own).
BEFORE_25 = "detection_before_issue25"


def table_detection() -> str:
    """The supervisor beside the published rule sets on the recorded real runs (benchmarks/detection.py)."""
    f = _figures("detection")
    iters = f["totals"][0]["healthy_iterations"]
    out = [f"| way (same real runs) | mid-run faults found | median delay | PPO configs bad from the start, flagged "
           f"by iteration 3 | false alarms (healthy runs and before onsets, {iters:,} iterations) |",
           "|---|---:|---:|---:|---:|"]
    before = _figures(BEFORE_25) if (RESULTS / f"{BEFORE_25}.json").is_file() else None
    rows = _detection_rows(f)
    if before:  # right under today's supervisor row
        then = before["totals"][0]["healthy_iterations"]
        rows[1:1] = _detection_rows(before, " (before issue 25" + (f", on the {then:,} iterations recorded then)"
                                                                  if then != iters else ")"), only_ours=True)
    return "\n".join(out + rows)


def _detection_rows(f: dict, suffix: str = "", only_ours: bool = False) -> list[str]:
    ppo_bad = [b for b in f["bad_start"] if b["algorithm"] == "PPO"]
    flagged = sum(b["flagged"] for b in ppo_bad)
    named = sum(b["flagged"] and b["cause_named"] and b["acted"] for b in ppo_bad)
    out = []
    for t in f["totals"]:
        if only_ours and t["way"] != "supervisor":
            continue
        k, n = (int(x) for x in t["mid_run_recall"].split("/"))
        delay = "n/a" if t["median_delay"] is None else f"{t['median_delay']:g}"
        if t["way"] == "supervisor":
            how = ("each by the detector naming the cause, each acted on" if named == flagged
                   else f"{named} by the detector naming the cause and acted on")
            bad = f"{flagged} / {len(ppo_bad)} ({how})"
        else:
            bad = f"{sum(b['baselines'][t['way']] for b in ppo_bad)} / {len(ppo_bad)}"
        out.append(_row(_WAYS.get(t["way"], t["way"]) + suffix, f"{k} / {n}", delay, bad,
                        f"{t['false_alarms']:,}"))
    return out


def table_corpus() -> str:
    """Other people's logs, tuning and held-out halves apart (benchmarks/corpus.py, in detection.py's run)."""
    c = _figures("detection")["corpus"]
    before = (_figures(BEFORE_25)["corpus"]["halves"] if (RESULTS / f"{BEFORE_25}.json").is_file() else {})
    out = ["| half (runs behind it) | way | healthy runs with a warning / a critical | healthy runs with any alarm "
           "| labelled faults flagged |", "|---|---|---:|---:|---:|"]
    for h, d in c["halves"].items():
        b = before.get(h)
        if b is not None:
            x = b["ways"]["supervisor"]
            half = f"{h.replace('_', '-')} ({d['healthy']} healthy, {d['faulty']} faulty, {d['unknown']} unknown)"
            out.append(_row(half, "supervisor before issue 25",
                            f"{x['healthy_warned']} / {x['healthy_critical']} of {b['healthy']}",
                            f"{x['healthy_alarmed']} of {b['healthy']}", f"{x['faults_flagged']} of {b['faulty']}"))
        for i, w in enumerate(c["ways"]):
            x = d["ways"][w]
            half = f"{h.replace('_', '-')} ({d['healthy']} healthy, {d['faulty']} faulty, {d['unknown']} unknown)"
            label = half if i == 0 and b is None else ""
            warn = (f"{x['healthy_warned']} / {x['healthy_critical']} of {d['healthy']}" if w == c["ways"][0]
                    else "-")
            out.append(_row(label, _WAYS.get(w, w), warn, f"{x['healthy_alarmed']} of {d['healthy']}",
                            f"{x['faults_flagged']} of {d['faulty']}"))
    return "\n".join(out)


def table_multi_agent() -> str:
    """Recorded multi-agent runs, every policy its own stream (benchmarks/multi_agent_runs.py, in detection.py)."""
    f = _figures("detection")["multi_agent"]
    out = [f"Per-module recall **{f['detected']} of {f['faulty_modules']}** faulty policies; false alarms on healthy "
           f"policies: **{f['false_alarms']}** in {_n(f['healthy_module_iterations'])} module-iterations.", "",
           "| run | faulty policy: flagged (delay, by) | healthy policies: false alarms |", "|---|---|---|"]
    for r in f["runs"]:
        sick = r["modules"].get(r["fault_module"]) if r["fault_module"] else None
        det = ("- (healthy run)" if sick is None else
               f"{r['fault_module']}: yes ({sick['delay']}, {', '.join(sick['by'])})" if sick["detected"]
               else f"{r['fault_module']}: **no**")
        fa = ", ".join(f"{m}{'' if v['trained'] else ' (frozen)'}: {v['false_alarms']}"
                       for m, v in r["modules"].items() if v["role"] == "healthy")
        out.append(_row(f"{r['name']}" + (f" ({r['fault']})" if r["fault"] else ""), det, fa))
    return "\n".join(out)


def table_detection_synthetic() -> str:
    """The synthetic half of the detection benchmark, in one sentence."""
    f = _figures("detection")
    syn = f["synthetic"]
    recall = min(d["recall"] for d in f["synthetic_detectors"] if d["cases"])
    per10k = 1e4 * syn["false_alarms"] / syn["healthy_iterations"]
    return (f"*Synthetic streams* (each fault at a known onset, abrupt and gradual, held-out seeds): every detector "
            f"at >= {int(100 * recall)} %\nrecall, {per10k:.2f} false alarms per 10,000 healthy iterations "
            f"({syn['healthy_iterations']:,} judged).")


def table_sweep() -> str:
    """FIFO, ASHA, the supervisor, both: env steps and outcomes (benchmarks/sweep_efficiency.py)."""
    from benchmarks.sweep_efficiency import _mean_spread, summarize

    def _ms(xs, fmt="{:,.0f}") -> str:  # mean ± half the spread over the repetitions (no "± 0")
        m, s = _mean_spread(xs)
        if m != m:
            return "-"
        return fmt.format(m) + (f" ± {fmt.format(s / 2)}" if s > 0 else "")

    raw = json.loads((RESULTS / "sweep_efficiency.json").read_text())
    results = raw["results"]
    modes = list(dict.fromkeys(r["mode"] for r in results))
    reps = sorted({r["rep"] for r in results})
    envs = list(dict.fromkeys(r["env"] for r in results))
    summ = {(m, rep): summarize([r for r in results if r["mode"] == m and r["rep"] == rep])
            for m in modes for rep in reps}
    names = {"fifo": "FIFO", "asha": "ASHA", "supervisor": "supervisor", "supervisor+asha": "supervisor + ASHA"}
    out = ["| way | env steps | vs FIFO | " + " | ".join(f"best return {e.split('-')[0]}" for e in envs)
           + " | healthy stopped by the supervisor | healthy ended early by ASHA | bad caught | bad recovered |",
           "|---|---:|---:|" + "---:|" * len(envs) + "---:|---:|---:|---:|"]
    for m in modes:
        ss = [summ[(m, rep)] for rep in reps]
        ratio = [summ[(m, rep)]["steps"] / summ[("fifo", rep)]["steps"] for rep in reps]
        sup, asha = m.startswith("supervisor"), "asha" in m
        h, b = ss[0]["healthy"], ss[0]["bad"]
        out.append(_row(names.get(m, m), _ms([s["steps"] for s in ss]), _ms([100 * x for x in ratio], "{:.0f} %"),
                        *(_ms([s["best"].get(e) for s in ss], "{:.1f}") for e in envs),
                        f"{_ms([s['killed_by_supervisor'] for s in ss], '{:g}')} / {h}" if sup else "-",
                        f"{_ms([s['ended_by_asha'] for s in ss], '{:g}')} / {h}" if asha else "-",
                        f"{_ms([s['caught'] for s in ss], '{:g}')} / {b}",
                        f"{_ms([s['recovered'] for s in ss], '{:g}')} / {b}" if sup else "-"))
    return "\n".join(out)


def table_faults() -> str:
    """Records through actor kills, a full disk, a locked database, dropped calls (benchmarks/faults.py)."""
    f = _figures("faults")
    return "\n".join(["| records expected | stored | lost | duplicates | trials hung |",
                      "|---:|---:|---:|---:|---:|",
                      _row(f["expected"], f["stored"], f["lost"], f["duplicates"], f["hung"])])


def table_load() -> str:
    """Ingestion, latency, memory and PPO overhead (benchmarks/ingestion.py, memory.py, overhead.py)."""
    ing, mem, ovh = _figures("ingestion"), _figures("memory"), _figures("overhead")

    def goal(ok: bool, text: str) -> str:
        return text + (": met" if ok else ": **not met**")

    p50, p99 = ing["actor_latency_p50_ms"], ing["actor_latency_p99_ms"]
    lat_goal = ("<= 5 ms: met" if p99 <= 5 else "<= 5 ms: p50 met, **p99 not met**" if p50 <= 5
                else "<= 5 ms: **not met**")
    rows = [
        _row(f"ingestion, reports/s (batches of {ing['batch']}, every detector on; a no-op actor: "
             f"{_n(ing['noop_reports_per_s'])})", _n(ing["reports_per_s"]),
             goal(ing["reports_per_s"] >= 20_000, ">= 20,000")),
        *([_row("judging time per report inside the actor in the latency test (of which the engine thread's CPU; "
                f"the store's commits, one fsync per batch of {ing['reports_per_batch']:.1f})",
                f"{ing['judging_ms_per_report']:.3f} ms ({ing['judging_cpu_ms_per_report']:.3f}; "
                f"{ing['commit_ms_per_report']:.3f})",
                goal(ing["judging_ms_per_report"] <= 0.2, "<= 0.2 ms"))] if "judging_cpu_ms_per_report" in ing else []),
        _row(f"verdict latency inside the actor, p50 / p99, {ing['concurrent_trials']:,} trials at 1 report/s",
             f"{p50:.2f} / {p99:.2f} ms", lat_goal),
        _row("verdict round trip seen by the trials, p50 / p99 (a no-op actor: "
             f"{ing['noop_round_trip_p50_ms']:.1f} / {ing['noop_round_trip_p99_ms']:.1f} ms)",
             f"{ing['round_trip_p50_ms']:.1f} / {ing['round_trip_p99_ms']:.1f} ms",
             goal(ing["round_trip_p99_ms"] <= 5, "<= 5 ms")),
        _row(f"heap per supervised trial after {mem['iterations']:,} iterations",
             f"{mem['heap_per_trial_kib']:.0f} KiB", goal(mem["heap_per_trial_kib"] <= 1024, "<= 1 MiB")),
        _row("PPO iteration time, supervised / plain", f"{ovh['ratio']:.3f}", goal(ovh["ratio"] <= 1.01, "<= 1.01")),
    ]
    when = "; ".join(f"{n} {_meta(n)['date'][:10]}" for n in ("ingestion", "memory", "overhead"))
    note = f"\n\nMeasured: {when}."
    if ing.get("synchronous", "FULL") != "FULL":
        note += (f" The ingestion and latency rows predate the store's `synchronous=FULL` (measured with "
                 f"`{ing['synchronous']}`); FULL against NORMAL side by side: `benchmarks/results/ingestion_sync.md`. "
                 "A re-run on a quiet machine is due (`benchmarks/results/ingestion.json`, its note).")
    return "\n".join(["| measure | supervisor | goal |", "|---|---:|---|", *rows]) + note + _judging() + \
        _loaded("ingestion", "memory", "overhead", "judging_profile")


def _judging() -> str:
    """What the actor does per report (benchmarks/judging_profile.py), next to the load figures."""
    if not (RESULTS / "judging_profile.json").exists():
        return ""
    j = _figures("judging_profile")
    parts = ", ".join(f"{g} {x:.0%}" for g, x in j["profile_shares"].items() if x >= 0.01)
    top = ", ".join(f"`{t['function']}` {t['share']:.0%}" for t in j["profile_top"][:5])
    base = ""
    if "baseline_cpu_us_per_report" in j:
        r = j["speedup"]  # baseline / this version
        how = (f"{r:.2f}x less" if r >= 1.03 else f"{1 / r:.2f}x more" if r <= 0.97
               else f"unchanged (ratio {r:.2f})")
        base = (f" against {_n(j['baseline_cpu_us_per_report'], 1)} µs for {j['baseline']} in the same run "
                f"(interleaved): {how}")
    off = ""
    if "cpu_us_per_report_detectors_off" in j:
        ing = _figures("ingestion")
        ray_us = 1e6 / ing["noop_reports_per_s"]
        fixed, budget = j["cpu_us_per_report_detectors_off"] + ray_us, 1e6 / 20_000
        off = (f" With every detector switched off the same path costs {_n(j['cpu_us_per_report_detectors_off'], 1)} "
               f"µs (normalization, history, policy, store, verdict), and Ray's own call {ray_us:.1f} µs per report "
               f"(the no-op actor's {_n(ing['noop_reports_per_s'])}/s): {_n(fixed, 1)} µs "
               + (f"against the {_n(budget)} µs per report that 20,000 reports/s allows, before any detector runs; "
                  "meeting the goal needs the engine rebuilt (a batch's trials judged together), not faster "
                  "detectors." if fixed >= budget else
                  f"of the {_n(budget)} µs per report that 20,000 reports/s allows, leaving "
                  f"{_n(budget - fixed, 1)} µs for every detector."))
    return (f"\n\nWhat the actor does per report (`{_meta('judging_profile')['command']}`, in-process, "
            f"{j['workload']}, {_meta('judging_profile')['date'][:10]}): {_n(j['cpu_us_per_report'], 1)} µs of CPU "
            f"per report{base}.{off} Its share of the time: {parts}. Costliest functions: {top}.")


def table_api() -> str:
    """Supervisor.observe against a CleanRL update (benchmarks/api_overhead.py)."""
    f = _figures("api_overhead")
    return (f"**Python API** (`python benchmarks/api_overhead.py`): `Supervisor.observe` median "
            f"{f['observe_median_us']:,.0f} µs per report (p99 {f['observe_p99_us']:,.0f} µs), "
            f"{f['median_share_percent']:.3f} % of a CleanRL CartPole PPO update ({f['update_median_ms']:.1f} ms); "
            f"a fixed pure-Python control loop interleaved with it: median {f['control_median_us']:.0f} µs, p99 "
            f"{f['control_p99_us']:.0f} µs. Each report is committed with `synchronous=FULL` (a flush to disk) "
            "before its verdict returns: the figure depends on the disk, which other jobs were using.") + _loaded("api_overhead")


def table_learner() -> str:
    """The instrumented learner against RLlib's stock one, same episodes (benchmarks/learner_overhead.py)."""
    f = _figures("learner_overhead")
    rows = [_row(f"batch {c['batch']}, minibatch {c['minibatch']}, {c['epochs']} epochs",
                 f"{c['wall_overhead_percent']:+.1f} %", f"{c['cpu_overhead_percent']:+.1f} %") for c in f["configs"]]
    return "\n".join(["| config | wall time overhead | CPU time overhead |", "|---|---:|---:|", *rows]) + \
        f"\n\nMeasured {_meta('learner_overhead')['date'][:10]} (`benchmarks/results/learner_overhead.json`)." + \
        _loaded("learner_overhead")


def table_sweep_post_onset() -> str:
    """The bad trials the supervisor cannot save: env steps after their fault's onset against FIFO's
    (benchmarks/sweep_efficiency.py, ``post_onset``)."""
    from benchmarks.sweep_efficiency import post_onset

    raw = json.loads((RESULTS / "sweep_efficiency_post_onset.json").read_text())
    results = raw["results"]
    out = ["| way | bad trials it cannot save | their env steps after onset | FIFO's on the same trials | ratio "
           "(goal <= 0.2) | healthy trials stopped |", "|---|---:|---:|---:|---:|---:|"]
    for way in [m for m in dict.fromkeys(r["mode"] for r in results) if m.startswith("supervisor")]:
        po = post_onset(results, way)
        if po is None:
            continue
        goal = "met" if po["ratio"] <= 0.2 and not po["healthy_stopped"] else "**not met**"
        healthy = sum(t["kind"] == "healthy" for r in results if r["mode"] == way for t in r["trials"])
        out.append(_row(way, len(po["trials"]), _n(po["steps"]), _n(po["fifo_steps"]), f"{po['ratio']:.2f} ({goal})",
                        f"{po['healthy_stopped']} / {healthy}"))
    load = raw["args"].get("load") or []
    return "\n".join(out) + (f"\n\n`python benchmarks/sweep_efficiency.py {' '.join(raw['args'].get('argv') or [])}`, "
                             f"1-minute load average {' / '.join(f'{x:.1f}' for x in load)} at the start / end "
                             "(env steps do not depend on it). Per trial: "
                             "`benchmarks/results/sweep_efficiency_post_onset.md`." if load else "")


def table_data_guard() -> str:
    """The env runners' data guard: its cost, how soon it flags, healthy runs (benchmarks/data_guard.py)."""
    f = _figures("data_guard")
    out = ["| environment (1,000 env steps a sample) | sampling, guard off / on | the guard's own time | share of "
           "sampling | goal |", "|---|---:|---:|---:|---|"]
    for c in f.get("cost", []):
        share = 100 * c["check_share"]
        out.append(_row(c["env"], f"{c['sample_ms_off']:.1f} / {c['sample_ms_on']:.1f} ms", f"{c['check_ms']:.2f} ms",
                        f"{share:.2f} %", "<= 1 %: " + ("met" if share <= 1.0 else "**not met**")))
    delay = f.get("delay", [])
    if delay:
        out += ["", "| algorithm, env, fault (from iteration 3) | first finding | delay (iterations) | what the supervisor "
                    "did | learner or replay buffer saw it |", "|---|---|---:|---|---|"]
        for d in delay:
            acts = ", ".join(f"{i}: {a}" for i, a in d["actions"]) or "-"
            saw = "yes: " + ", ".join(d["learner_nan"]) if d["learner_nan"] else "no"
            if d.get("buffer_nan_episodes"):
                saw += f"; {d['buffer_nan_episodes']} NaN episodes in the buffer"
            out.append(_row(f"{d['algorithm']}, {d['env'].split('-')[0]}, {d['fault']}",
                            (d["detector"] or "-") + (f" ({d['crash_cause']})" if d["detector"] == "trial_crashed"
                                                      else ""),
                            "-" if d["delay"] is None else d["delay"], acts, saw))
    healthy = f.get("healthy", [])
    if healthy:
        quiet = [h for h in healthy if not h["guard_findings"]]
        out += ["", f"Healthy runs without a data-guard finding: {len(quiet)} of {len(healthy)} "
                    f"({', '.join(h['algorithm'] + ' ' + h['env'] + ' x' + str(h['iterations']) for h in healthy)})."]
    return "\n".join(out) + _loaded("data_guard")


def table_actor_stall() -> str:
    """Report round trip with node monitoring and alerts on, against off (benchmarks/actor_stall.py)."""
    f = _figures("actor_stall")
    rows = []
    for label, r in (("before this round (baseline checkout)", f.get("baseline")), ("now", f["current"])):
        if r:
            goal = "met" if r["p99_ratio"] <= 1.25 else "**not met**"
            rows.append(_row(label, f"{r['on']['p50_ms']:.2f} / {r['on']['p99_ms']:.2f} / {r['on']['max_ms']:,.0f}",
                             f"{r['off']['p50_ms']:.2f} / {r['off']['p99_ms']:.2f} / {r['off']['max_ms']:,.0f}",
                             f"{r['p50_ratio']:.2f}", f"{r['p99_ratio']:.2f} ({goal})", f"{r['on']['n']:,}"))
    cur = f["current"]
    head = ("| actor | monitoring and alerts on: p50 / p99 / max ms | off: p50 / p99 / max ms | p50 on/off "
            "| p99 on/off (goal <= 1.25) | reports each |")
    return ("\n".join([head, "|---|---:|---:|---:|---:|---:|", *rows]) +
            f"\n\n{cur['nodes']} Ray nodes (`ray.cluster_utils.Cluster`), a monitor heartbeating from each; alerts to a "
            f"json:// endpoint on 127.0.0.1 that answers in 0.3 s ({cur['alert_posts']} posts); short runs opened "
            f"and closed beside the measured ones every 2 s on both actors. Measured {_meta('actor_stall')['date']}, "
            f"load average {cur['load_1m'][0]:g} / {cur['load_1m'][1]:g} before / after (2 cores)." +
            _loaded("actor_stall"))


def table_soak() -> str:
    """A thousand runs and two hundred node joins/leaves through one actor (benchmarks/soak.py), beside what a
    node costs a plain Ray actor (benchmarks/ray_node_overhead.py) when that was measured."""
    f = _figures("soak")
    fl = f["flat"]
    s = f["samples"]
    start = next(x for x in s if x["runs_done"] == fl["from_runs"])
    calm = next(x for x in s if x["nodes_joined"] == f["nodes_joined"])  # the last node has joined
    churn_kib = 1024 * (calm["uss_mb"] - start["uss_mb"]) / max(calm["nodes_joined"] - start["nodes_joined"], 1)
    runs_kib = 1024 * (s[-1]["uss_mb"] - calm["uss_mb"]) / max(s[-1]["runs_done"] - calm["runs_done"], 1)
    text = (f"\n\n{f['runs']:,} runs ({f['lost_runs']} abandoned by their driver, {f['lost_closed_as_lost']} of them "
            f"closed as `lost` by the actor) and {f['nodes_joined']} nodes joining and leaving, "
            f"{f['wall_s'] / 60:.0f} minutes. While nodes joined and left (runs {start['runs_done']} to "
            f"{calm['runs_done']}) the actor's memory grew {churn_kib:.0f} KiB per node that joined; after the last "
            f"node ({calm['runs_done']} to {s[-1]['runs_done']} runs) {runs_kib:.1f} KiB per run.")
    if (RESULTS / "ray_node_overhead.json").exists():
        y = _figures("ray_node_overhead")["kib_per_node"]
        text += (f" The yardstick (`python benchmarks/ray_node_overhead.py`, plain Ray actors, none of them the "
                 f"supervisor): a node that joins and leaves costs an idle actor {y['idle']:g} KiB, one polling "
                 f"`ray.nodes()` {y['polls']:g}, one starting an actor on every node {y['starts']:g}, one called by "
                 f"an actor on every node {y['called']:g} KiB.")
    text += (" The supervisor's own per-run and per-node state is bounded (`tests/test_bounded_actor.py`). "
             "Every sample: `benchmarks/results/soak.md`.")
    return "\n".join([
        "| measure | after " + f"{fl['from_runs']} runs | after {f['runs']} runs |", "|---|---:|---:|",
        _row("threads", fl["threads"][0], fl["threads"][1]),
        _row("open file descriptors", fl["fds"][0], fl["fds"][1]),
        _row("memory (USS), MB", f"{fl['uss_mb'][0]:.0f}", f"{fl['uss_mb'][1]:.0f}"),
        _row("runs held", start["runs_held"], s[-1]["runs_held"]),
        _row("nodes known", start["nodes_known"], s[-1]["nodes_known"])]) + text + _loaded("soak")


TABLES: dict[str, Callable[[], str]] = {
    "data_guard": table_data_guard,
    "detection": table_detection,
    "detection_synthetic": table_detection_synthetic,
    "corpus": table_corpus,
    "multi_agent": table_multi_agent,
    "sweep_efficiency": table_sweep,
    "sweep_post_onset": table_sweep_post_onset,
    "faults": table_faults,
    "supervisor_load": table_load,
    "api_overhead": table_api,
    "learner_overhead": table_learner,
    "soak": table_soak,
    "actor_stall": table_actor_stall,
}

_REGION = re.compile(r"(<!-- table:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(\n<!-- /table:(?P=name) -->)", re.S)


def generate(text: str, require_all: bool = True) -> str:
    """``text`` with every marked region regenerated; KeyError for an unknown table, or (``require_all``,
    the README) for a table it does not mark."""
    seen = set()

    def sub(m: re.Match) -> str:
        name = m.group("name")
        if name not in TABLES:
            raise KeyError(f"README.md marks a table {name!r} that benchmarks/readme_tables.py does not know "
                           f"(known: {', '.join(TABLES)})")
        seen.add(name)
        return m.group(1) + TABLES[name]().rstrip("\n") + m.group(4)

    out = _REGION.sub(sub, text)
    missing = set(TABLES) - seen
    if missing and require_all:
        raise KeyError(f"README.md has no markers for the table(s) {', '.join(sorted(missing))}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 (with a diff) when a file is not as generated")
    args = ap.parse_args(argv)
    stale = 0
    for path in FILES:
        old = path.read_text()
        new = generate(old, require_all=path == README)
        if new == old:
            continue
        if args.check:
            stale += 1
            sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), new.splitlines(True), str(path),
                                                       "generated"))
        else:
            path.write_text(new)
            print(f"rewrote {path}")
    if stale:
        print(f"\n{stale} file(s) differ from benchmarks/results/: run python benchmarks/readme_tables.py")
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
