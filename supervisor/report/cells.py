"""Cell formatting shared by the Markdown and HTML reports."""

from __future__ import annotations

import math
from typing import Any, Mapping


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, float):
        if not math.isfinite(x):
            return str(x)
        return f"{x:.{digits}g}"
    return str(x)


def _params(p: Mapping | None) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in (p or {}).items() if k != "hparams")


def _module(x) -> str:
    """A finding's or intervention's module: "-" for the trial's own."""
    return "-" if x is None else str(x)


def _module_rows(t: Mapping) -> list[list]:
    """A trial's modules: module, trained, health, worst severity, final return."""
    return [[m["module"], "yes" if m.get("trained", True) else "no (frozen)", _score(m.get("health") or {}),
             (m.get("health") or {}).get("worst_severity") or "ok", (m.get("final") or {}).get("episode_return_mean")]
            for m in t.get("modules") or []]


MODULE_HEAD = ["module", "trained", "health", "worst severity", "final return"]


def _verified(v) -> str:
    return {True: "yes", False: "NO", None: "-"}.get(v, str(v))


def _score(h: Mapping) -> str:
    s = h.get("score")
    return "-" if s is None else f"{s:.2f}"


def _counts(findings: list[dict]) -> str:
    if not findings:
        return "0"
    c: dict[str, int] = {}
    for f in findings:
        c[f["severity"]] = c.get(f["severity"], 0) + 1
    parts = [f"{c[s]} {s}" for s in ("critical", "warning", "info") if s in c]
    return f"{len(findings)} ({', '.join(parts)})"


def _actions(ivs: list[dict]) -> str:
    if not ivs:
        return "0"
    c: dict[str, int] = {}
    for i in ivs:
        c[i["action"]] = c.get(i["action"], 0) + 1
    return f"{len(ivs)} ({', '.join(f'{a} x{n}' if n > 1 else a for a, n in c.items())})"

