"""Docs that cannot drift: docs/reference.md against the code it describes (the CLI's parsers, the
experiment and sweep schema, the report's JSON keys, the detector and action registries), the README's
benchmark tables against benchmarks/results/, and the README's Python snippets run as written."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import textwrap
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = (ROOT / "docs" / "reference.md").read_text()
README = (ROOT / "README.md").read_text()


def section(text: str, title: str) -> str:
    """The text of the '## title' section (up to the next heading of the same level)."""
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert m, f"docs/reference.md has no '## {title}' section"
    return m.group(1)


def mentioned(word: str, text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


# ------------------------------------------------------------------ the CLI


def test_reference_lists_every_command_and_flag():
    from supervisor.cli import build_parser

    parser, _ = build_parser()
    commands = section(REFERENCE, "Commands")
    missing = [o for a in parser._actions for o in a.option_strings if o.startswith("--") and o != "--help"
               and not mentioned(o, commands)]
    subs = parser._subparsers._group_actions[0].choices
    for name, sub in subs.items():
        if f"### `supervise {name}`" not in commands:
            missing.append(f"supervise {name} (its section)")
        m = re.search(rf"### `supervise {name}`\n(.*?)(?=^### |\Z)", commands, re.S | re.M)
        own = m.group(1) if m else ""
        table_row = re.search(rf"^\| `supervise {name}\b[^\n]*", commands, re.M)
        for a in sub._actions:
            for o in a.option_strings:
                if o.startswith("--") and o != "--help" and not (mentioned(o, own) or
                                                                  (table_row and mentioned(o, table_row.group()))):
                    missing.append(f"supervise {name} {o}")
            if choices := (a.choices if a.option_strings and isinstance(a.choices, (list, tuple)) else None):
                missing += [f"supervise {name} {a.option_strings[0]} {c}" for c in choices
                            if not mentioned(str(c), own + (table_row.group() if table_row else ""))]
    assert not missing, f"docs/reference.md does not document: {missing}"


# ------------------------------------------------------------------ the experiment and sweep files


def _model_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, f in model.model_fields.items():
        key = f"{prefix}{f.alias or name}"
        out.append(key)
        for t in [f.annotation, *typing.get_args(f.annotation)]:
            for inner in [t, *typing.get_args(t)]:
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    out += _model_keys(inner, key + ".")
    return out


def test_reference_lists_every_experiment_and_sweep_key():
    from supervisor.config import Sweep

    text = "\n".join(section(REFERENCE, t) for t in ("Experiment file", "Sweep file", "The `supervisor:` section"))
    missing = [k for k in dict.fromkeys(_model_keys(Sweep)) if not mentioned(k.rsplit(".", 1)[-1], text)]
    assert not missing, f"docs/reference.md does not document the keys {missing}"


# ------------------------------------------------------------------ the report JSON


def _keys(obj, path="", out=None, dynamic=("final", "params", "components", "counts", "hparams", "details",
                                            "settings", "spec", "resources", "gpus_detail")):
    """Every key of a JSON document as path -> key; maps keyed by data (metric names, detector ids) stop."""
    out = {} if out is None else out
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.setdefault(f"{path}.{k}".lstrip("."), k)
            if k not in dynamic:
                _keys(v, f"{path}.{k}", out, dynamic)
    elif isinstance(obj, list):
        for v in obj:
            _keys(v, f"{path}[]", out, dynamic)
    return out


@pytest.fixture(scope="module")
def api_run(tmp_path_factory):
    """The README's Python API snippet, run as written (it is also a real supervised run to report on)."""
    cwd = tmp_path_factory.mktemp("snippet")
    (block,) = [b for b in python_blocks(README) if "from supervisor import Supervisor" in b]
    p = subprocess.run([sys.executable, "-c", block], cwd=cwd, capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return cwd / "runs" / "my-run", p


def test_reference_lists_every_report_key(api_run):
    from supervisor.report import build_report

    run_dir, _ = api_run
    rep = build_report(run_dir)
    text = section(REFERENCE, "Report JSON")
    missing = sorted({f"{path} ({k})" for path, k in _keys(rep).items() if not mentioned(k, text)})
    assert not missing, f"docs/reference.md's Report JSON does not name: {missing}"


# ------------------------------------------------------------------ ids


def test_reference_lists_every_detector_and_action():
    from supervisor.actions import ACTIONS
    from supervisor.detectors import CLUSTER_DETECTORS, DETECTORS

    det, act = section(REFERENCE, "Detectors"), section(REFERENCE, "Actions")
    missing = [f"detector {d}" for d in [*DETECTORS, *CLUSTER_DETECTORS] if not mentioned(d, det)]
    missing += [f"action {a}" for a in ACTIONS if not mentioned(a, act)]
    assert not missing, f"docs/reference.md does not document: {missing}"


def test_dashboard_doc_lists_its_manual_actions():
    from supervisor.dashboard.server import ACTIONS

    line = next(x for x in (ROOT / "docs" / "dashboard.md").read_text().splitlines() if x.startswith("Actions"))
    named = [n for n in re.findall(r"`([a-z_]+)`", line) if n not in ("lr", "reduce_lr", "increase_lr")]
    assert sorted(named) == sorted(ACTIONS), (line, ACTIONS)


# ------------------------------------------------------------------ README


def test_readme_benchmark_tables_are_generated_from_the_results():
    sys.path.insert(0, str(ROOT))
    from benchmarks import readme_tables

    for path in readme_tables.FILES:
        text = path.read_text()
        assert readme_tables.generate(text, require_all=path == readme_tables.README) == text, (
            f"{path.relative_to(ROOT)}'s benchmark tables differ from benchmarks/results/: "
            "run python benchmarks/readme_tables.py")


_NOT_RUN = re.compile(r"<!-- snippet not run: (?P<why>[^>]*?) -->\s*\n```python\n", re.S)


def python_blocks(text: str) -> list[str]:
    """The README's ```python blocks, except those marked ``<!-- snippet not run: WHY -->`` just above."""
    skipped = {m.end() for m in _NOT_RUN.finditer(text)}
    return [textwrap.dedent(m.group(1)) for m in re.finditer(r"```python\n(.*?)```", text, re.S)
            if m.start() + len("```python\n") not in skipped]


def test_readme_python_snippets_run(api_run):
    """Every ```python block runs as written; the one not run says why and names the test that runs it."""
    run_dir, p = api_run
    assert python_blocks(README), "the README lost its Python snippets"
    from supervisor.report import build_report

    (t,) = build_report(run_dir)["trials"]
    assert t["iterations"] > 0 and t["status"] in ("completed", "recovered", "stopped")
    for m in _NOT_RUN.finditer(README):
        ref = re.search(r"(tests/\w+\.py)::(\w+)", m.group("why"))
        assert ref, f"a snippet not run must name the test that runs its calls: {m.group('why')!r}"
        assert f"def {ref.group(2)}(" in (ROOT / ref.group(1)).read_text(), ref.group()
    others = [b for b in python_blocks(README) if "from supervisor import Supervisor" not in b]
    for block in others:  # (none today; a new one is run here)
        q = subprocess.run([sys.executable, "-c", block], cwd=run_dir.parent, capture_output=True, text=True,
                           timeout=300, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
        assert q.returncode == 0, q.stderr[-2000:]


def test_cli_help_names_what_it_supervises():
    from supervisor.cli import build_parser

    text = build_parser()[0].format_help()
    assert "PPO training" not in text and all(a in text for a in ("PPO", "APPO", "IMPALA", "DQN", "SAC"))
    assert isinstance(build_parser()[0], argparse.ArgumentParser)
