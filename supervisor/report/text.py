"""The text renderings: ``supervise report`` (:func:`render_text`), ``supervise scan`` (:func:`render_scan`)
and ``supervise status`` (:func:`render_status`)."""

from __future__ import annotations

import functools
import re
from typing import Any, Mapping

from supervisor.detectors.metrics_missing import blind_line

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def terminal_safe(text: str) -> str:
    """Control characters from logs, trial ids or messages are shown escaped (``\\x1b``), never
    interpreted by the terminal (colors, cursor moves, a title change, a carriage return hiding a line)."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), text)


def _safe(fn):
    @functools.wraps(fn)
    def wrapper(*a, **k):
        return terminal_safe(fn(*a, **k))
    return wrapper


@_safe
def render_text(rep: dict) -> str:
    """``supervise report`` as text."""
    r = rep["run"]
    lines = [f"run {r['name']}: {r['status']} (started {r['started']}, ended {r['ended'] or '-'})", ""]
    for t in rep["trials"]:
        ret = t["final"].get("episode_return_mean")
        ret_s = f"{ret:.1f}" if isinstance(ret, (int, float)) else "-"
        lines.append(f"trial {t['trial_id']}: {t['status']}, {t['iterations']} iterations, final return {ret_s}, "
                     f"health {t['health']['score']:.2f} (worst {t['health']['worst_severity']})")
        lines.append("  compute: " + compute_line(t.get("compute") or {}))
        lines += ["  " + x for x in extras_lines(t)]
        rec = t.get("recovery")
        if rec and rec.get("return_at_fault") is not None:
            lines.append(f"  recovered: return {_num(rec['return_at_fault'])} when the supervisor acted (iteration "
                         f"{rec['fault_iteration']}), {_num(rec['return_reached'])} at the end")
        multi = any(m["module"] != "default_policy" for m in t.get("modules") or [])
        if multi:
            lines.append("  modules:")
            for m in t["modules"]:
                h = m.get("health") or {}
                score = f"{h['score']:.2f}" if isinstance(h.get("score"), (int, float)) else "-"
                lines.append(f"    {m['module']:<20} {'trained' if m.get('trained', True) else 'frozen':<8} health "
                             f"{score} (worst {h.get('worst_severity') or 'ok'}), final return "
                             f"{_num((m.get('final') or {}).get('episode_return_mean'))}")
        lines += _findings_lines(t["findings"], "iter", "iteration", 4, multi)
        if t["interventions"]:
            lines.append("  interventions:")
            for i in t["interventions"]:
                params = ", ".join(f"{k}={v}" for k, v in i["params"].items() if k not in ("hparams",))
                ver = {True: "verified", False: "NOT verified", None: "unverified"}[i["verified"]]
                lines.append(f"    iter {i['iteration']:>4}  {_tag(i, multi)}{i['action']:<18} {params}")
                lines.append(f"               outcome {i['outcome']}, {ver}; reason: {i['reason']}")
        else:
            lines.append("  interventions: none")
        lines.append("")
    if len(rep["trials"]) > 1 and rep["run"].get("compute"):
        lines.append("total compute: " + compute_line(rep["run"]["compute"]))
        lines.append("")
    if rep.get("alerts"):
        sent = sum(a["status"] == "sent" for a in rep["alerts"])
        lines.append(f"alerts: {sent} sent, {len(rep['alerts']) - sent} failed or dropped")
        for a in rep["alerts"]:
            what = a["detector"] or a["kind"]
            lines.append(f"  {a['time']}  {a['status']:<7} {what:<20} {a['trial_id'] or '-'}  -> {a['destination']}"
                         + (f"  ({a['error']}, {a['attempts']} attempts)" if a["status"] != "sent" else ""))
        lines.append("")
    if rep["nodes"]:
        lines.append("nodes:")
        for n in rep["nodes"]:
            lines.append(f"  {n['node_id'][:12]}  {'alive' if n['alive'] else 'DEAD'}  {n.get('address') or ''}")
    return "\n".join(lines).rstrip() + "\n"


def extras_lines(t: dict) -> list[str]:
    """The blind-detector, evaluation and best-checkpoint lines of a trial (plain text; renderers escape them)."""
    out = [line] if (line := blind_line(t.get("blind") or [])) else []
    ev = t.get("evaluation")
    if ev:
        out.append(f"evaluation: return {_num(t['final'].get('eval_return_mean'))} at iteration "
                   f"{ev['last_iteration']} ({ev['evaluations']} evaluations, best {_num(ev['best'])})")
    crash = t.get("crash")
    if crash:
        n = f" (crash {crash['crashes']})" if crash.get("crashes", 1) > 1 else ""
        where = ", ".join(x for x in (f"iteration {crash['iteration']}" if crash.get("iteration") is not None else "",
                                      f"node {str(crash['node_id'])[:12]}" if crash.get("node_id") else "",
                                      f"phase {crash['phase']}" if crash.get("phase") else "") if x)
        out.append(f"crashed{n}: {crash['exception']}: {crash.get('message') or ''} ({where})")
        out.append(f"cause: {crash.get('cause_text') or crash.get('cause')}")
        for ev in (crash.get("evidence") or [])[1:]:
            out.append(f"  evidence: {ev}")
        for origin, frames in (crash.get("frames") or {}).items():
            shown = "; ".join(f"{str(fr.get('file', '?')).rsplit('/', 1)[-1]}:{fr.get('line')} {fr.get('function')}"
                              for fr in frames)
            out.append(f"  {origin} frames (innermost first): {shown}")
    best = t.get("best_checkpoint")
    if best:
        out.append(f"best checkpoint: {best['path']} (iteration {best['iteration']}, {best['metric']} "
                   f"{_num(best['value'])})")
    return out


def _findings_lines(findings: list, label: str, key: str, width: int, multi: bool = False) -> list[str]:
    """A trial's findings, one line each, under the run report's or the scan's step label (a multi-agent
    trial's: each with its module, or "trial")."""
    if not findings:
        return ["  findings: none"]
    return ["  findings:"] + [f"    {label} {f[key]!s:>{width}}  {_tag(f, multi)}{f['severity']:<8} {f['detector']:<20} "
                              f"{f['message']}" for f in findings]


def _tag(item: dict, multi: bool) -> str:
    return f"[{item.get('module') or 'trial'}] " if multi else ""


def _num(x) -> str:
    return f"{x:.1f}" if isinstance(x, (int, float)) else "-"


def compute_line(c: dict) -> str:
    """Env steps and wall time used, and what a stop saved."""
    out = f"{c.get('env_steps', 0):,} env steps, {c.get('wall_s', 0.0):.0f} s"
    if c.get("saved_env_steps"):
        out += f"; the stop saved {c['saved_env_steps']:,} env steps of its budget"
    return out


@_safe
def render_scan(res: dict) -> str:
    """``supervise scan`` as text."""
    from supervisor.detectors._common import fmt

    trials = res["trials"]
    h = res["health"]
    head = f"scan {res['source']} ({res['format']}"
    head += f", {len(trials)} trials)" if res["format"] in ("tune", "folder") else ")"
    score = "-" if h["score"] is None else f"{h['score']:.2f}"
    unread = sum(s.get("files", 1) for s in res.get("skipped") or [])
    lines = [head, f"health {score} (worst {h['worst_severity']})"
             + (f"; {unread} file{'s' if unread != 1 else ''} not read (listed below)" if unread else ""), ""]
    for t in trials:
        if t.get("error"):
            lines += [f"trial {t['trial_id']}: skipped: {t['error']}  [{t['source']}]", ""]
            continue
        th = t["health"]
        step = t["step_key"] or "line index"
        score = "-" if th["score"] is None else f"{th['score']:.2f}"
        ret = t["final"].get("episode_return_mean")
        lines.append(f"trial {t['trial_id']}: {t['format']} [{t.get('source_kind', 'generic')}], "
                     f"{t['steps']} iterations (step '{step}' "
                     f"{t['first_step']}..{t['last_step']}), {len(t['metrics'])} metrics, "
                     f"final return {fmt(ret) if ret is not None else '-'}, health {score} "
                     f"(worst {th['worst_severity']})")
        lines += _findings_lines(_runs(t["findings"]), "step", "step", 8)
        for w in t.get("warnings", ()):
            lines.append(f"  warning: {w}")
        for n in t.get("notes", ()):
            lines.append(f"  note: {n}")
        if t["ignored_keys"] or t.get("ignored_config"):
            more = [f"{t['ignored_more']} more"] if t.get("ignored_more") else []
            more += [f"{t['ignored_config']} config/hyperparameter keys"] if t.get("ignored_config") else []
            tail = f" (+ {', '.join(more)})" if more else ""
            lines.append(f"  ignored keys: {', '.join(t['ignored_keys'])}{tail}")
        lines.append("")
    lines += _skipped_lines(res.get("skipped") or [], res["source"])
    return "\n".join(lines).rstrip() + "\n"


def _runs(findings: list) -> list:
    """A finding one detector repeats on consecutive rows: once, with its range (``step`` "a..b (n rows)")."""
    out: list = []
    open_runs: dict = {}  # (detector, severity, metric) -> the run it may extend
    for f in findings:
        key = (f["detector"], f["severity"], f.get("metric"))
        run = open_runs.get(key)
        if run is not None and f.get("row") is not None and f["row"] == run["last_row"] + 1:
            run.update(last_row=f["row"], last_step=f["step"], n=run["n"] + 1)
            continue
        run = {"f": dict(f), "last_row": f.get("row", -2), "last_step": f["step"], "n": 1}
        open_runs[key] = run
        out.append(run)
    for run in out:
        if run["n"] > 1:
            run["f"]["step"] = f"{run['f']['step']}..{run['last_step']} ({run['n']} rows)"
    return [run["f"] for run in out]


def _skipped_lines(skipped: list, root: str, examples: int = 3) -> list[str]:
    """The files a folder scan did not read, grouped by reason (a few paths each; the JSON has them all)."""
    if not skipped:
        return []
    by: dict[str, list] = {}
    for s in skipped:
        by.setdefault(s["reason"], []).append(s)
    n = sum(s.get("files", 1) for s in skipped)
    lines = [f"not read: {n} file{'s' if n != 1 else ''}"]
    prefix = root.rstrip("/") + "/"
    for reason, items in by.items():
        files = sum(s.get("files", 1) for s in items)
        paths = [s["path"][len(prefix):] if s["path"].startswith(prefix) else s["path"] for s in items]
        more = f", +{len(paths) - examples} more" if len(paths) > examples else ""
        lines.append(f"  {reason}: {files} file{'s' if files != 1 else ''} ({', '.join(paths[:examples])}{more})")
    return lines


def _gib(b) -> str:
    return f"{b / 2**30:.1f}" if isinstance(b, (int, float)) else "-"


def _pct(x) -> str:
    return f"{x:5.1f}" if isinstance(x, (int, float)) else "    -"


@_safe
def render_status(st: Mapping[str, Any]) -> str:
    """``supervise status`` as text."""
    nodes = st.get("nodes") or []
    alive = sum(1 for n in nodes if n.get("alive"))
    lines = [f"nodes: {len(nodes)} ({alive} alive)",
             f"  {'NODE':<12}  {'ADDRESS':<15}  {'STATE':<5}  {'CPU%':>5}  {'MEM%':>5}  {'GPUS':>4}  HEALTH"]
    for n in nodes:
        ngpu = len(n.get("gpus") or []) or int((n.get("resources") or {}).get("GPU", 0) or 0)
        note = "" if n.get("monitor") else "  (no monitor)"
        lines.append(f"  {str(n.get('node_id'))[:12]:<12}  {str(n.get('address') or '-'):<15}  "
                     f"{'alive' if n.get('alive') else 'DEAD':<5}  {_pct(n.get('cpu_percent'))}  "
                     f"{_pct(n.get('memory_percent'))}  {ngpu:>4}  {n.get('health') or '-'}{note}")
        for g in n.get("gpus") or []:
            util = f"{g['utilization']:.0f}%" if isinstance(g.get("utilization"), (int, float)) else "-"
            temp = f"{g['temperature']:.0f}C" if isinstance(g.get("temperature"), (int, float)) else "-"
            lines.append(f"      gpu {g.get('index')} {g.get('name') or ''}: util {util}, memory "
                         f"{_gib(g.get('memory_used'))}/{_gib(g.get('memory_total'))} GiB, {temp}")
    trials = st.get("trials") or []
    lines.append(f"trials: {len(trials)}")
    if trials:
        lines.append(f"  {'TRIAL':<28}  {'STATUS':<10}  {'ITER':>5}  {'HEALTH':>6}  {'WORST':<8}  NODE")
        for t in trials:
            h = t.get("health") or {}
            score = f"{h['score']:.2f}" if isinstance(h.get("score"), (int, float)) else "-"
            lines.append(f"  {str(t.get('trial_id'))[:28]:<28}  {str(t.get('status')):<10}  "
                         f"{t.get('iteration') if t.get('iteration') is not None else '-':>5}  {score:>6}  "
                         f"{str(h.get('worst_severity') or '-'):<8}  {str(t.get('node_id') or '-')[:12]}")
            mods = t.get("modules") or []
            if len(mods) > 1 or any(m.get("module") != "default_policy" for m in mods):
                for m in mods:  # a multi-agent trial: each policy's own health
                    mh = m.get("health") or {}
                    ms = f"{mh['score']:.2f}" if isinstance(mh.get("score"), (int, float)) else "-"
                    lines.append(f"    module {str(m.get('module'))[:19]:<19}  {'trained' if m.get('trained', True) else 'frozen':<10}"
                                 f"  {'':>5}  {ms:>6}  {str(mh.get('worst_severity') or '-'):<8}")
    finds = st.get("findings") or []
    if finds:
        lines.append("recent cluster findings:")
        for f in finds[-10:]:
            lines.append(f"  {f.get('severity', ''):<8} {f.get('detector', ''):<16} {f.get('message', '')}")
    return "\n".join(lines) + "\n"
