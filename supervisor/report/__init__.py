"""Reports: every text, JSON, Markdown and HTML rendering the CLI prints.

* :mod:`supervisor.report.build`: the run report, built from a run folder's
  store (:func:`build_report`), and the metric series its plots draw;
* :mod:`supervisor.report.text`: text of the run report, of ``supervise
  scan`` and of ``supervise status``;
* :mod:`supervisor.report.markdown` and :mod:`supervisor.report.html`: the
  run report as Markdown tables and as one self-contained HTML page;
* :func:`render_json`: the JSON of any of them (non-finite numbers as null).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from supervisor.jsonsafe import json_safe
from supervisor.report.build import build_report, load_series, open_store

FORMATS = ("text", "json", "md", "html")

__all__ = ["FORMATS", "build_report", "load_series", "open_store", "render", "render_json"]


def render_json(obj: Any) -> str:
    return json.dumps(json_safe(obj), indent=2, allow_nan=False, default=str) + "\n"


def render(rep: dict, fmt: str, run_dir: str | Path | None = None) -> str:
    """The run report ``rep`` in format ``fmt``; ``html`` reads ``run_dir``'s metric series for its plots."""
    if fmt == "json":
        return render_json(rep)
    if fmt == "md":
        from supervisor.report.markdown import render_markdown

        from supervisor.report.text import terminal_safe

        return terminal_safe(render_markdown(rep))
    if fmt == "html":
        from supervisor.report.html import render_html

        return render_html(rep, load_series(run_dir) if run_dir is not None else None)
    from supervisor.report.text import render_text

    return render_text(rep)
