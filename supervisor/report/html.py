"""``supervise report --format html``: one HTML file with no external resources.

The same tables as the Markdown report plus, per trial, a plot of every key
metric over iterations (return, losses, entropy, KL, KL coefficient, lr,
gradient norms, explained variance, advantage statistics; those the trial
reported) with findings (vertical lines coloured by severity, labelled with
the detector) and interventions (dashed lines, labelled with the action)
marked on the time axis, and non-finite values as red crosses at the top
edge. Plots are matplotlib PNGs (Agg backend) embedded as base64 ``data:``
URIs. Every piece of text is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
import math
from typing import Any, Mapping

from supervisor.report.text import compute_line, extras_lines
from supervisor.report.cells import MODULE_HEAD, _module, _module_rows, _actions, _counts, _fmt, _params, _score, _verified

# (panel title, metrics drawn in it, log y-axis when all values are positive)
PANELS: list[tuple[str, tuple[str, ...], bool]] = [
    ("episode return", ("episode_return_mean", "eval_return_mean"), False),
    ("total loss", ("total_loss",), False),
    ("policy loss", ("policy_loss",), False),
    ("value loss", ("vf_loss", "vf_loss_unclipped"), True),
    ("entropy", ("entropy",), False),
    ("KL", ("kl", "approx_kl"), True),
    ("KL coefficient", ("kl_coeff",), True),
    ("learning rate", ("lr",), True),
    ("gradient norm", ("grad_norm", "grad_norm_policy", "grad_norm_value", "grad_norm_max"), True),
    ("explained variance", ("explained_variance",), False),
    ("advantages", ("advantage_mean", "advantage_std"), False),
]
SEVERITY_COLORS = {"info": "#7f7f7f", "warning": "#e69500", "critical": "#d62728"}
INTERVENTION_COLOR = "#6a3d9a"
_LABEL_BOX = {"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.8}

# --------------------------------------------------------------------------------------- plots


def _finite(xs, ys):
    return [(x, y) for x, y in zip(xs, ys) if x is not None and y is not None and math.isfinite(y)]


def plot_trial(series: Mapping[str, list], findings: list[dict], interventions: list[dict],
               title: str = "") -> bytes | None:
    """One PNG: a panel per key metric the trial reported, with findings and interventions marked."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.transforms import blended_transform_factory

    its = series.get("iteration") or []
    panels = [(t, [m for m in ms if any(v is not None for v in series.get(m) or [])], lg) for t, ms, lg in PANELS]
    panels = [p for p in panels if p[1]]
    if not panels or not its:
        return None
    metric_panel = {m: i for i, (_, ms, _) in enumerate(panels) for m in ms}
    cols = 2 if len(panels) > 1 else 1
    rows = math.ceil(len(panels) / cols)
    height = 2.3 * rows + 0.7
    fig, axes = plt.subplots(rows, cols, figsize=(6.0 * cols, height), dpi=80, squeeze=False)
    flat_axes = [a for row in axes for a in row]
    xs = [int(i) if i is not None else None for i in its]
    lo, hi = min(x for x in xs if x is not None), max(x for x in xs if x is not None)
    span = max(hi - lo, 1)

    # findings: one line per (iteration, severity), labelled once per detector episode
    marks: dict[tuple[int, str], list[dict]] = {}
    for f in findings:
        if isinstance(f.get("iteration"), int) and f["iteration"] >= 0:
            marks.setdefault((f["iteration"], f["severity"]), []).append(f)

    for ax_i, (ptitle, ms, logscale) in enumerate(panels):
        ax = flat_axes[ax_i]
        edge = blended_transform_factory(ax.transData, ax.transAxes)
        allpos = True
        for m in ms:
            pts = _finite(xs, series[m])
            if pts and m == "eval_return_mean":  # only on evaluation iterations: join the points
                ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1.2, label="evaluation", marker="o", ms=3)
            elif pts:
                # a gap where the value is missing or non-finite, rather than a line across it
                ys = [y if y is not None and math.isfinite(y) else math.nan for y in series[m]]
                ax.plot(xs, ys, lw=1.2, label=m, marker="o" if len(xs) <= 40 else None, ms=2.5)
                allpos &= all(p[1] > 0 for p in pts)
            bad = [x for x, y in zip(xs, series[m]) if y is not None and not math.isfinite(y)]
            if bad:
                ax.plot(bad, [0.97] * len(bad), "x", color="#d62728", ms=6, mew=1.5, transform=edge, clip_on=False)
        if ms == ("episode_return_mean",) or ms[0] == "episode_return_mean":
            lo_s, hi_s = series.get("episode_return_min"), series.get("episode_return_max")
            if lo_s and hi_s:
                band = [(x, a, b) for x, a, b in zip(xs, lo_s, hi_s)
                        if None not in (x, a, b) and math.isfinite(a) and math.isfinite(b)]
                if band:
                    ax.fill_between([b[0] for b in band], [b[1] for b in band], [b[2] for b in band],
                                    alpha=0.15, lw=0, label="min..max")
        vals = [y for m in ms for _, y in _finite(xs, series[m])]
        if logscale and allpos and vals and max(vals) > 20 * min(vals):  # log only where it spans decades
            ax.set_yscale("log")
        last_label: dict[str, int] = {}
        for (it, sev), fs in sorted(marks.items()):
            ax.axvline(it, color=SEVERITY_COLORS.get(sev, "#7f7f7f"), lw=2.2, alpha=0.35, zorder=0)
            for f in fs:
                here = metric_panel.get(f.get("metric") or "", 0)
                if here != ax_i:
                    continue
                if it - last_label.get(f["detector"], -10**9) < 0.08 * span:
                    continue
                last_label[f["detector"]] = it
                ax.text(it, 0.03, f['detector'], transform=edge, rotation=90, fontsize=7, va="bottom",
                        ha="right", color=SEVERITY_COLORS.get(sev, "#7f7f7f"), bbox=_LABEL_BOX, zorder=5)
        last_iv = -10**9
        for iv in interventions:
            it = iv.get("iteration")
            if not isinstance(it, int):
                continue
            ax.axvline(it, color=INTERVENTION_COLOR, lw=1.0, ls="--", alpha=0.8, zorder=0)
            if ax_i == 0 and it - last_iv >= 0.08 * span:
                last_iv = it
                ax.text(it, 0.97, iv["action"], transform=edge, rotation=90, fontsize=7, va="top",
                        ha="left", color=INTERVENTION_COLOR, bbox=_LABEL_BOX, zorder=5)
        ax.set_title(ptitle, fontsize=10)
        ax.grid(alpha=0.25)
        ax.tick_params(labelsize=8)
        if len(ms) > 1 or ms[0] == "episode_return_mean":
            ax.legend(fontsize=7, loc="best", framealpha=0.6)
    for ax in flat_axes[len(panels):]:
        ax.set_visible(False)
    for ax in flat_axes[:len(panels)]:
        ax.set_xlim(lo - 0.01 * span, hi + 0.01 * span)
    for ax in flat_axes[max(len(panels) - cols, 0):len(panels)]:
        ax.set_xlabel("iteration", fontsize=8)
    handles = [Line2D([], [], color=c, lw=1.5, label=f"{s} finding") for s, c in SEVERITY_COLORS.items()]
    handles.append(Line2D([], [], color=INTERVENTION_COLOR, ls="--", lw=1.5, label="intervention"))
    handles.append(Line2D([], [], color="#d62728", marker="x", ls="", label="non-finite value"))
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 1.0))
    # fixed margins: tight_layout costs seconds on a dozen log-scaled panels
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.45 / height, top=1 - 0.6 / height, wspace=0.2,
                        hspace=0.42 * 2.3 / (2.3 - 0.4))
    if title:
        fig.suptitle(title, y=1.0 - 0.05 / height, fontsize=9, color="#444444")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return _shrink(buf.getvalue())


def _shrink(png: bytes) -> bytes:
    """A palette PNG (a plot has few colours): about a quarter of the size. As is if Pillow cannot."""
    try:
        from PIL import Image

        img = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE)
        out = io.BytesIO()
        img.save(out, format="PNG", optimize=True)
        return out.getvalue() if out.tell() < len(png) else png
    except Exception:
        return png


# --------------------------------------------------------------------------------------- HTML

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1280px;
 padding:0 16px;color:#222}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}
table{border-collapse:collapse;margin:6px 0 12px;font-size:13px}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.sev-critical{color:#b00020;font-weight:600}.sev-warning{color:#a66300;font-weight:600}.sev-info{color:#666}
.sev-ok{color:#2a7a2a}.muted{color:#777}.msg{max-width:640px}
img.plot{max-width:100%;height:auto;border:1px solid #eee}
"""


def _e(x: Any) -> str:
    return html.escape(x if isinstance(x, str) else _fmt(x), quote=True)


def _sev(s: str | None) -> str:
    s = s or "ok"
    return f'<span class="sev-{_e(s)}">{_e(s)}</span>'


def _table(head: list[str], rows: list[list[str]], num: set[int] = frozenset()) -> str:
    """``rows`` hold already-escaped HTML."""
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if i in num else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def render_html(rep: dict, series: Mapping[str, Mapping[str, list]] | None = None, plots: bool = True) -> str:
    """One self-contained HTML page (no external resources, everything escaped)."""
    r = rep["run"]
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>supervise report: {_e(r['name'])}</title><style>{_CSS}</style></head><body>",
           f"<h1>Run {_e(r['name'])}</h1>",
           f'<p>status <b>{_e(r["status"])}</b> <span class="muted">started {_e(r["started"] or "-")}, '
           f'ended {_e(r["ended"] or "-")}</span></p>', "<h2>Trials</h2>"]
    rows = []
    for t in rep["trials"]:
        anchor = _anchor(t["trial_id"])
        rows.append([f'<a href="#{anchor}">{_e(t["trial_id"])}</a>', _e(t["status"]), _e(t["iterations"]),
                     _e(t["final"].get("episode_return_mean")), _e(_score(t["health"])),
                     _sev(t["health"].get("worst_severity")), _e(_counts(t["findings"])),
                     _e(_actions(t["interventions"])), _e(t["compute"]["env_steps"]),
                     _e(t["compute"]["saved_env_steps"])])
    out.append(_table(["trial", "status", "iterations", "final return", "health", "worst severity", "findings",
                       "interventions", "env steps", "saved env steps"], rows, num={2, 3, 4, 8, 9}))
    out.append(f"<p>Compute: {_e(compute_line(r['compute']))}</p>")
    for t in rep["trials"]:
        tid = t["trial_id"]
        out.append(f'<h2 id="{_anchor(tid)}">Trial {_e(tid)}</h2>')
        out.append(f"<p>{_e(t['status'])}, {_e(t['iterations'])} iterations, health {_e(_score(t['health']))} "
                   f"(worst {_sev(t['health'].get('worst_severity'))}); {_e(compute_line(t['compute']))}</p>")
        out += [f"<p>{_e(x)}</p>" for x in extras_lines(t)]
        if plots and series is not None:
            png = None
            s = series.get(tid)
            if s:
                try:
                    png = plot_trial(s, t["findings"], t["interventions"])
                except ImportError:  # matplotlib is optional: the tables still make a report
                    out.append('<p class="muted">plots need matplotlib (pip install matplotlib)</p>')
                    plots = False
            if png:
                b64 = base64.b64encode(png).decode("ascii")
                out.append(f'<img class="plot" alt="{_e("metrics of trial " + str(tid))}" '
                           f'src="data:image/png;base64,{b64}">')
            elif plots:
                out.append('<p class="muted">no metrics reported yet</p>')
        out.append("<h3>Modules</h3>")
        out.append(_table(MODULE_HEAD, [[_e(c) for c in row] for row in _module_rows(t)], num={2, 4}))
        out.append("<h3>Findings</h3>")
        if t["findings"]:
            out.append(_table(["iteration", "module", "severity", "detector", "metric", "value", "threshold",
                               "message"],
                              [[_e(f["iteration"]), _e(_module(f.get("module"))), _sev(f["severity"]),
                                _e(f["detector"]), _e(f["metric"] or "-"), _e(f["value"]), _e(f.get("threshold")),
                                f'<span class="msg">{_e(f["message"])}</span>']
                               for f in t["findings"]], num={0, 5, 6}))
        else:
            out.append('<p class="muted">none</p>')
        out.append("<h3>Interventions</h3>")
        if t["interventions"]:
            out.append(_table(["iteration", "module", "action", "params", "outcome", "verified", "reason"],
                              [[_e(i["iteration"]), _e(_module(i.get("module"))), _e(i["action"]),
                                _e(_params(i["params"])), _e(i["outcome"]), _e(_verified(i.get("verified"))),
                                f'<span class="msg">{_e(i["reason"])}</span>']
                               for i in t["interventions"]], num={0}))
        else:
            out.append('<p class="muted">none</p>')
    if rep.get("nodes"):
        out.append("<h2>Nodes</h2>")
        out.append(_table(["node", "alive", "address", "last seen"],
                          [[_e(n["node_id"]), _e("yes" if n["alive"] else "DEAD"), _e(n.get("address") or "-"),
                            _e(n.get("last_seen") or "-")] for n in rep["nodes"]]))
    if rep.get("cluster_findings"):
        out.append("<h2>Cluster findings</h2>")
        out.append(_table(["time", "severity", "detector", "message"],
                          [[_e(f.get("time") or "-"), _sev(f["severity"]), _e(f["detector"]), _e(f["message"])]
                           for f in rep["cluster_findings"]]))
    out.append('<p class="muted">generated by supervise report</p></body></html>')
    return "\n".join(out) + "\n"


def _anchor(trial_id: str) -> str:
    """An id attribute value: only [A-Za-z0-9_-], unique enough for a page."""
    import hashlib

    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in str(trial_id))[:40]
    return f"trial-{safe}-{hashlib.sha1(str(trial_id).encode()).hexdigest()[:6]}"
