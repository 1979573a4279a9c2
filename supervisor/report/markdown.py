"""``supervise report --format md``: a summary table per trial (status, health, findings, interventions),
then each trial's findings and interventions."""

from __future__ import annotations

from supervisor.report.text import compute_line, extras_lines

import html
from typing import Any

from supervisor.report.cells import (MODULE_HEAD, _actions, _counts, _fmt, _module, _module_rows, _params, _score,
                                     _verified)


def _md(x: Any) -> str:
    """A Markdown table cell: HTML-escaped (raw HTML would pass through a renderer), pipes escaped, one line."""
    s = html.escape(_fmt(x) if not isinstance(x, str) else x, quote=False)
    return s.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _md_table(head: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    out += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return out


def render_markdown(rep: dict) -> str:
    r = rep["run"]
    lines = [f"# Run {_md(r['name'])}", "",
             f"status **{_md(r['status'])}**, started {_md(r['started'] or '-')}, ended {_md(r['ended'] or '-')}",
             "", "## Trials", ""]
    lines += _md_table(
        ["trial", "status", "iterations", "final return", "health", "worst severity", "findings", "interventions",
         "env steps", "saved env steps"],
        [[t["trial_id"], t["status"], t["iterations"], t["final"].get("episode_return_mean"), _score(t["health"]),
          t["health"].get("worst_severity") or "ok", _counts(t["findings"]), _actions(t["interventions"]),
          t["compute"]["env_steps"], t["compute"]["saved_env_steps"]]
         for t in rep["trials"]])
    lines += ["", "Compute: " + compute_line(r["compute"])]
    for t in rep["trials"]:
        lines += ["", f"## Trial {_md(t['trial_id'])}", ""]
        lines.append(f"{_md(t['status'])}, {_md(t['iterations'])} iterations, health {_score(t['health'])} "
                     f"(worst {_md(t['health'].get('worst_severity') or 'ok')}); {compute_line(t['compute'])}")
        lines += ["", *(_md(x) for x in extras_lines(t))] if extras_lines(t) else []
        lines += ["", "### Modules", ""]
        lines += _md_table(MODULE_HEAD, _module_rows(t))
        lines += ["", "### Findings", ""]
        if t["findings"]:
            lines += _md_table(["iteration", "module", "severity", "detector", "metric", "value", "message"],
                               [[f["iteration"], _module(f.get("module")), f["severity"], f["detector"],
                                 f["metric"] or "-", f["value"], f["message"]] for f in t["findings"]])
        else:
            lines.append("none")
        lines += ["", "### Interventions", ""]
        if t["interventions"]:
            lines += _md_table(["iteration", "module", "action", "params", "outcome", "verified", "reason"],
                               [[i["iteration"], _module(i.get("module")), i["action"], _params(i["params"]),
                                 i["outcome"], _verified(i.get("verified")), i["reason"]] for i in t["interventions"]])
        else:
            lines.append("none")
    if rep.get("nodes"):
        lines += ["", "## Nodes", ""]
        lines += _md_table(["node", "alive", "address", "last seen"],
                           [[n["node_id"], "yes" if n["alive"] else "DEAD", n.get("address") or "-",
                             n.get("last_seen") or "-"] for n in rep["nodes"]])
    if rep.get("cluster_findings"):
        lines += ["", "## Cluster findings", ""]
        lines += _md_table(["time", "severity", "detector", "message"],
                           [[f.get("time") or "-", f["severity"], f["detector"], f["message"]]
                            for f in rep["cluster_findings"]])
    return "\n".join(lines) + "\n"

