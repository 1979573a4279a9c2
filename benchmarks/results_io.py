"""Where a benchmark's results go: ``benchmarks/results/NAME.md`` for people, ``NAME.json`` for
``benchmarks/readme_tables.py`` (the README's tables are generated from the JSON, never typed)."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def write_results(name: str, markdown: str, figures: dict, results: Path = RESULTS) -> Path:
    """Write NAME.md (as given) and NAME.json: the command, when, on what, and ``figures``."""
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{name}.md").write_text(markdown if markdown.endswith("\n") else markdown + "\n")
    doc = {"benchmark": name,
           "command": "python " + shlex.join([f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
           "date": time.strftime("%Y-%m-%d %H:%M"),
           "machine": {"cpus": os.cpu_count(), "arch": platform.machine(),
                       "load_average_1m": round(os.getloadavg()[0], 2)},
           "figures": figures}
    out = results / f"{name}.json"
    out.write_text(json.dumps(doc, indent=1, sort_keys=False, allow_nan=False) + "\n")
    return out
