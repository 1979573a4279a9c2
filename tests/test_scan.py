"""``supervise scan``: offline forensics of TRL/CleanRL/RLDK JSONL logs, Tune folders, result.json, progress.csv."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor.cli import main
from benchmarks.synthetic import faulty_stream, healthy_stream
from supervisor.scan import load, lookup, scan

DATA = Path(__file__).parent / "data"
TUNE = DATA / "tune_exp"
_spec = importlib.util.spec_from_file_location("make_fixtures", DATA / "make_fixtures.py")
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)

STYLES = {"trl": fx.TRL_KEYS, "cleanrl": fx.CLEANRL_KEYS, "rldk": fx.RLDK_KEYS}
STEP_KEY = {"trl": "step", "cleanrl": "global_step", "rldk": "step"}
N, ONSET = 120, 80


def steps_of(n):
    return [1000 + 512 * i for i in range(n)]  # the log's own step numbers: not 0..n


def write_style(tmp_path, style, stream, name=None):
    recs = fx.styled(stream, STYLES[style], STEP_KEY[style], step=512)
    for rec, s in zip(recs, steps_of(len(recs))):
        rec[STEP_KEY[style]] = s
        rec["some_unknown_key"] = 1.0
    return fx.write_jsonl(tmp_path / (name or f"{style}.jsonl"), recs)


def bad(findings):
    return [f for f in findings if f["severity"] in ("warning", "critical")]


# (style, fault, mode, detector that must fire); CleanRL logs no gradient norms or advantages
PLANTED = [
    ("trl", "nan", "persistent", "non_finite"),
    ("trl", "kl_spike", "spike", "kl_spike"),
    ("trl", "gradient_explosion", "explode", "gradient_explosion"),
    ("trl", "entropy_collapse", "zero", "entropy_collapse"),
    ("cleanrl", "kl_spike", "spike", "kl_spike"),
    ("cleanrl", "reward_collapse", "min", "reward_collapse"),
    ("cleanrl", "value_collapse", "ev", "value_collapse"),
    ("rldk", "gradient_explosion", "explode", "gradient_explosion"),
    ("rldk", "advantage_anomaly", "std_collapse", "advantage_anomaly"),
    ("rldk", "loss_explosion", "explode", "loss_explosion"),
]


@pytest.mark.parametrize("style,fault,mode,detector", PLANTED, ids=[f"{p[0]}-{p[1]}" for p in PLANTED])
def test_planted_fault_found_at_its_step(tmp_path, style, fault, mode, detector):
    stream = faulty_stream(fault, N, ONSET, seed=7 + PLANTED.index((style, fault, mode, detector)), mode=mode)
    path = write_style(tmp_path, style, stream)
    res = scan(path)
    steps = steps_of(N)
    trial = res["trials"][0]
    assert trial["format"] == "jsonl" and trial["step_key"] == STEP_KEY[style]
    assert trial["first_step"] == steps[0] and trial["last_step"] == steps[-1]
    early = [f for f in bad(res["findings"]) if f["step"] < steps[ONSET]]
    assert not early, early[:3]
    mine = [f for f in res["findings"] if f["detector"] == detector]
    assert mine, f"{detector} never fired: {res['findings'][:3]}"
    assert mine[0]["step"] in steps[ONSET:ONSET + 3], (mine[0]["step"], steps[ONSET])
    assert mine[0]["severity"] in ("warning", "critical")
    assert res["health"]["worst_severity"] in ("warning", "critical")
    assert "some_unknown_key" in trial["ignored_keys"]
    json.dumps(res, allow_nan=False)  # non-finite values are null


@pytest.mark.parametrize("style", sorted(STYLES))
def test_healthy_logs_raise_nothing(tmp_path, style):
    for seed in (11, 12, 13):
        res = scan(write_style(tmp_path, style, healthy_stream(N, seed), f"{style}-{seed}.jsonl"))
        assert not bad(res["findings"]), bad(res["findings"])[:3]
        assert res["health"]["worst_severity"] in ("ok", "info")
        assert res["trials"][0]["steps"] == N


def test_tune_folder_scans_every_trial():
    res = scan(TUNE)
    assert {"source", "findings", "health", "trials"} <= set(res)
    assert res["format"] == "tune" and res["source"] == str(TUNE)
    by_id = {t["trial_id"]: t for t in res["trials"]}
    assert set(by_id) == {"PPO_CartPole-v1_00000", "PPO_CartPole-v1_00001"}
    healthy, diverged = by_id["PPO_CartPole-v1_00000"], by_id["PPO_CartPole-v1_00001"]
    assert healthy["format"] == "result.json" and diverged["format"] == "progress.csv"
    assert not bad(healthy["findings"]) and healthy["health"]["worst_severity"] in ("ok", "info")
    # divergence planted at index 35 = training_iteration 36: inf total loss and KL
    first = diverged["findings"][0]
    assert (first["step"], first["detector"], first["severity"]) == (36, "non_finite", "critical")
    assert first["value"] is None  # inf -> null
    assert {f["detector"] for f in diverged["findings"]} >= {"entropy_collapse", "reward_collapse"}
    assert res["health"]["worst_severity"] == "critical" and res["health"]["unhealthy_trials"] == 1
    assert all(f["trial"] == "PPO_CartPole-v1_00001" for f in res["findings"])
    json.dumps(res, allow_nan=False)


def test_result_json():
    path = TUNE / "PPO_CartPole-v1_00000" / "result.json"
    res = scan(path)
    t = res["trials"][0]
    assert res["format"] == "result.json" and t["step_key"] == "training_iteration"
    assert (t["steps"], t["first_step"], t["last_step"]) == (45, 1, 45)
    assert {"episode_return_mean", "entropy", "kl", "kl_coeff", "grad_norm", "vf_loss"} <= set(t["metrics"])
    assert not bad(res["findings"])
    assert t["final"]["episode_return_mean"] > 400


def test_progress_csv():
    res = scan(TUNE / "PPO_CartPole-v1_00001" / "progress.csv")
    t = res["trials"][0]
    assert res["format"] == "progress.csv" and t["step_key"] == "training_iteration"
    assert "learners/default_policy/entropy" not in t["metrics"] and "entropy" in t["metrics"]
    assert res["findings"][0]["step"] == 36 and res["findings"][0]["detector"] == "non_finite"


def test_cleanrl_jsonl_fixture():
    res = scan(DATA / "cleanrl_kl_spike.jsonl")
    t = res["trials"][0]
    assert t["step_key"] == "global_step" and t["ignored_keys"] == ["charts/SPS"]
    assert [(f["step"], f["detector"]) for f in bad(res["findings"])][0] == (512 * 31, "kl_spike")


def test_alias_table():
    cases = {
        "objective/kl": "kl", "objective/kl_coef": "kl_coeff", "objective/entropy": "entropy",
        "ppo/mean_scores": "episode_return_mean", "train/loss": "total_loss", "losses/approx_kl": "approx_kl",
        "charts/episodic_return": "episode_return_mean", "clipfrac": "clip_fraction",
        "losses/explained_variance": "explained_variance", "grad_norm_policy": "grad_norm_policy",
        "advantage_std": "advantage_std", "reward_mean": "episode_return_mean", "rollout/ep_rew_mean":
        "episode_return_mean", "info/learner/default_policy/learner_stats/cur_kl_coeff": "kl_coeff",
        "Train/Learning_Rate": "lr", "episode_reward_mean": "episode_return_mean",
    }
    for key, name in cases.items():
        assert (lookup(key) or (None,))[0] == name, key
    assert lookup("train/entropy_loss")[2] is True  # SB3 logs -entropy
    for key in ("eval/reward", "charts/SPS", "losses/old_approx_kl", "epoch"):
        assert lookup(key) is None, key


def test_jsonl_details(tmp_path):
    # no step column: the line index; a truncated last line is tolerated; lines with the same step merge
    p = tmp_path / "log.jsonl"
    lines = [json.dumps({"kl": 0.01 * (1 + i % 3), "entropy": 0.6}) for i in range(12)]
    p.write_text("\n".join(lines) + '\n{"kl": 0.0')
    t = load(p)[1][0]
    assert t.step_key is None and t.steps == list(range(12))
    p.write_text(json.dumps({"step": 5, "kl": 0.01}) + "\n" + json.dumps({"step": 5, "reward": 3.0}) + "\n"
                 + json.dumps({"step": 6, "loss": float("nan")}) + "\n")
    t = load(p)[1][0]
    assert t.steps == [5, 6] and t.metrics[0] == {"kl": 0.01, "episode_return_mean": 3.0}
    res = scan(p)
    assert res["findings"][0]["step"] == 6 and res["findings"][0]["detector"] == "non_finite"
    assert "NaN" not in json.dumps(res, allow_nan=False)
    assert math.isnan(t.metrics[1]["total_loss"])


def supervise(*args):
    return subprocess.run([sys.executable, "-m", "supervisor", *args], capture_output=True, text=True, timeout=60)


def test_cli_json_and_text():
    r = supervise("scan", str(TUNE), "--format", "json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert {"source", "findings", "health", "trials"} <= set(res) and res["health"]["worst_severity"] == "critical"
    f = res["findings"][0]
    assert set(f) >= {"step", "detector", "severity", "metric", "value", "message"}


def test_cli_text(capsys):
    assert main(["scan", str(DATA / "cleanrl_kl_spike.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "kl_spike" in out and "step    15872" in out


def _bad_inputs(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "notes.txt").write_text("hello\nworld\n")
    (tmp_path / "broken.jsonl").write_text('{"kl": 0.1}\n{"kl": oops}\n{"kl": 0.1}\n')
    (tmp_path / "unknown.jsonl").write_text('{"foo": 1, "bar": 2}\n{"foo": 2, "bar": 3}\n')
    (tmp_path / "empty.jsonl").write_text("")
    return [
        (tmp_path / "nope", "no such file"),
        (tmp_path / "empty", "no result.json"),
        (tmp_path / "blob.bin", "not a text file"),
        (tmp_path / "notes.txt", "unrecognized format"),
        (tmp_path / "broken.jsonl", "line 2"),
        (tmp_path / "unknown.jsonl", "no known metric keys"),
        (tmp_path / "empty.jsonl", "empty"),
    ]


def test_bad_paths_exit_2_with_one_line(tmp_path, capsys):
    for i, (path, must) in enumerate(_bad_inputs(tmp_path)):
        if i % 2 == 0:  # half through a real process (exit status, stderr), half in-process (faster)
            r = supervise("scan", str(path))
            rc, err, out = r.returncode, r.stderr, r.stdout
        else:
            rc = main(["scan", str(path)])
            out, err = capsys.readouterr()
        assert rc == 2, (path, rc, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err, err
        assert str(path) in lines[0] and must in lines[0], lines[0]
        assert out == ""
