"""The detection benchmark (benchmarks/detection.py) on a tiny sample, and the recorded RLlib runs.

The full benchmark (``python benchmarks/detection.py``) takes a minute or two; this
checks its plumbing on one seed per fault variant, and that the recorded real
runs in benchmarks/data behave: no warning or critical finding on the healthy
ones, every broken one caught at or after its onset.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import detection as bench  # noqa: E402
from supervisor.detectors import build_detectors  # noqa: E402


def test_benchmark_plumbing_on_a_tiny_sample():
    specs = bench.synthetic_specs("tune", 1, 5)
    cases = [bench._task_synthetic(s) for s in specs]
    res = bench.analyse(cases, [d.name for d in build_detectors()])
    faults = {r["fault"] for r in res["types"]}
    assert faults == {f for f, *_ in bench.FAULT_CASES}
    for r in res["types"]:
        assert 0.0 <= r["recall"] <= r["recall_any"] or r["fault"] == "plateau"
    assert res["healthy_iterations"] > 0
    text = bench.render(res, type("A", (), {"split": "tune", "seeds": 1, "healthy": 5})(), 0.0)
    assert "| fault | shape |" in text and "| detector |" in text


def test_report_and_tune_seeds_are_disjoint():
    rep = {s[1][-1] for s in bench.synthetic_specs("report", 30, 240)}
    tune = {s[1][-1] for s in bench.synthetic_specs("tune", 30, 240)}
    assert not rep & tune
    assert min(rep | tune) >= 2000  # the unit tests use seeds below this


@pytest.mark.skipif(not (REPO / "benchmarks" / "data" / "runs.json").exists(), reason="no recorded runs")
def test_recorded_runs():
    meta = json.loads((REPO / "benchmarks" / "data" / "runs.json").read_text())
    cases = bench.recorded_cases()
    assert {c.name for c in cases} == {k for k in meta if not k.startswith("_")}
    for c in cases:
        alarms = [(d, it, s) for d, it, s in c.findings if s in ("warning", "critical")]
        if c.fault is None:
            assert not alarms, (c.name, alarms)
        else:
            assert c.onset is not None
            assert not [a for a in alarms if a[1] < c.onset], (c.name, alarms)
            first = bench._detection(c, None)
            assert first is not None and first[0] - c.onset <= 3, (c.name, first)


def test_recorded_files_are_small():
    data = REPO / "benchmarks" / "data"
    total = sum(p.stat().st_size for p in data.iterdir()) if data.exists() else 0
    assert total < 2 * 2**20, total
