"""``supervise calibrate``: healthy run folders in, a profile of per-metric bands out, detectors built on it."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from supervisor.calibrate import band, load_profile
from supervisor.cli import main
from supervisor.config import SupervisorConfig
from supervisor.detectors import build_detectors
from benchmarks.synthetic import faulty_stream, healthy_stream, run_detectors
from supervisor.engine import Engine
from supervisor.errors import InputError
from supervisor.store import Store

DATA = Path(__file__).parent / "data"
N = 120


def make_run(folder: Path, streams: dict) -> Path:
    """A run folder as `supervise run` leaves it: the engine judged and stored every report."""
    store = Store(folder / "supervisor.db")
    store.upsert_run("r", folder.name, "run", "running")
    eng = Engine(store, SupervisorConfig())
    for tid, stream in streams.items():
        eng.register_trial(tid, "r")
        for seq, m in enumerate(stream):
            v = eng.observe({"trial_id": tid, "seq": seq, "iteration": seq + 1, "metrics": m})
            if v.checkpoint:
                eng.record_checkpoint(tid, seq, seq + 1, f"/ckpt/{tid}/{seq}", {"lr": 3e-4})
            if v.stop:
                break
    store.upsert_run("r", folder.name, "run", "completed")
    store.close()
    return folder


@pytest.fixture(scope="module")
def healthy_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("healthy"), {"t1": healthy_stream(N, 1), "t2": healthy_stream(N, 2)})


@pytest.fixture(scope="module")
def diverged_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("diverged"), {"t": faulty_stream("divergence", 60, 40, seed=3)})


def not_ok(findings):
    return [(f.iteration, f.detector, f.severity, f.message) for f in findings if f.severity != "info"]


def test_round_trip(healthy_run, tmp_path, capsys):
    out = tmp_path / "profiles" / "cartpole.yaml"
    assert main(["calibrate", str(healthy_run), "--out", str(out)]) == 0
    assert "metric bands" in capsys.readouterr().out
    doc = yaml.safe_load(out.read_text())
    assert doc["version"] == 1 and doc["source"] == [str(healthy_run)]
    assert doc["runs"][0]["trials"] == 2 and doc["runs"][0]["iterations"] == 2 * N
    bands = doc["metrics"]
    assert {"episode_return_mean", "entropy", "kl", "kl_coeff", "grad_norm", "explained_variance",
            "advantage_std", "total_loss"} <= set(bands)
    assert "env_steps_lifetime" not in bands  # a counter
    for name, b in bands.items():
        assert set(b) >= {"low", "high", "median", "n"} and b["n"] == 2 * N, name
        assert b["low"] <= b["median"] <= b["high"], name
        assert all(isinstance(b[k], float) for k in ("low", "high", "median")), name
    # the bands hold the healthy values they were learned from
    values = {}
    for s in (healthy_stream(N, 1), healthy_stream(N, 2)):
        for m in s:
            for k, v in m.items():
                values.setdefault(k, []).append(v)
    for name, b in bands.items():
        inside = sum(b["low"] <= v <= b["high"] for v in values[name]) / len(values[name])
        assert inside >= 0.98, (name, inside, b)
    assert bands["grad_norm"]["space"] == "log" and bands["grad_norm"]["low"] > 0
    assert bands["explained_variance"]["high"] <= 1.0
    assert bands["entropy"]["change"]["kind"] == "difference"

    profile = load_profile(out)  # what an experiment's supervisor.profile loads
    assert profile == bands
    for seed in (31, 32, 33, 34):  # a fresh healthy run: nothing
        assert not not_ok(run_detectors(build_detectors(profile=profile), healthy_stream(150, seed)))
    # a faulty one fires; before the detector's own warm-up, on the strength of the profile
    early = faulty_stream("gradient_explosion", 30, onset=3, seed=21)
    mine = [f for f in run_detectors(build_detectors(profile=profile), early) if f.detector == "gradient_explosion"]
    assert mine and mine[0].iteration == 3 and mine[0].details["source"] == "profile"
    assert not [f for f in run_detectors(build_detectors(), early)
                if f.detector == "gradient_explosion" and f.iteration < 10]
    late = run_detectors(build_detectors(profile=profile), faulty_stream("kl_spike", 150, 90, seed=22))
    assert [f.iteration for f in late if f.detector == "kl_spike"][0] in (90, 91, 92)


def test_unhealthy_runs_refused_unless_asked(diverged_run, healthy_run, tmp_path):
    out = tmp_path / "p.yaml"
    r = subprocess.run([sys.executable, "-m", "supervisor", "calibrate", str(healthy_run), str(diverged_run),
                        "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert str(diverged_run) in r.stderr and "critical" in r.stderr and "--include-unhealthy" in r.stderr
    assert not out.exists()
    assert main(["calibrate", str(diverged_run), "--out", str(out), "--include-unhealthy"]) == 0
    doc = yaml.safe_load(out.read_text())
    run = doc["runs"][0]
    assert run["critical_findings"] > 0 and run["iterations"] == 40 and run["iterations_left_out"] > 0
    assert doc["metrics"]["total_loss"]["high"] < 1e3  # the diverged iterations are not in the bands


def test_calibrate_from_logs_and_scan_with_the_profile(tmp_path, capsys):
    out = tmp_path / "p.yaml"
    assert main(["calibrate", str(DATA / "tune_exp" / "PPO_CartPole-v1_00000" / "result.json"),
                 str(DATA / "cleanrl_kl_spike.jsonl"), "--out", str(out), "--include-unhealthy"]) == 0
    doc = yaml.safe_load(out.read_text())
    assert [r["kind"] for r in doc["runs"]] == ["result.json", "jsonl"]
    assert doc["metrics"]["entropy"]["n"] == 45 + 30  # the JSONL up to its critical kl spike
    capsys.readouterr()
    assert main(["scan", str(DATA / "tune_exp"), "--profile", str(out), "--format", "json"]) == 0
    assert '"non_finite"' in capsys.readouterr().out


def test_bad_input(tmp_path, healthy_run, capsys):
    (tmp_path / "empty").mkdir()
    cases = [
        ([str(tmp_path / "nope")], "no such file"),
        ([str(tmp_path / "empty")], "empty folder"),
        ([str(healthy_run), "--quantile", "0.7"], "--quantile"),
        ([str(healthy_run), "--min-samples", "1000"], "no metric has 1000"),
    ]
    for args, must in cases:
        assert main(["calibrate", *args, "--out", str(tmp_path / "x.yaml")]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and must in err[0], (args, err)
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nmetrics:\n  kl: {low: 2.0, high: 1.0, median: 1.5}\n")
    with pytest.raises(InputError, match="metrics.kl"):
        load_profile(bad)
    bad.write_text("metrics: [1, 2]\n")
    with pytest.raises(InputError, match="metrics"):
        load_profile(bad)


def test_band_rules():
    assert band("kl", [[0.01] * 5]) is None  # too few values
    g = np.random.default_rng(0).lognormal(0.0, 0.5, 200)
    b = band("grad_norm", [g[:100], g[100:]])
    assert b["space"] == "log" and 0 < b["low"] < g.min() and b["high"] > g.max() and b["change"]["kind"] == "ratio"
    assert band("kl_coeff", [[0.2 * 1.5, 0.1] * 10])["high"] >= 0.2 * 1.5  # edges rounded outward
    r = band("episode_return_mean", [list(range(10, 510, 10))])
    assert r["high"] <= 500 and r["low"] >= 0  # the return's high is what healthy runs reach: not widened
    ev = band("explained_variance", [[0.9, 0.95, 0.99, 0.97] * 5])
    assert ev["high"] <= 1.0
