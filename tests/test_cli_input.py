"""Every kind of bad input exits 2 with one plain line naming the file, the key and the problem."""

import subprocess
import sys
import textwrap

import pytest

GOOD = textwrap.dedent("""\
    name: t
    env: CartPole-v1
    config: {lr: 0.001, num_env_runners: 0}
    stop: {iterations: 2}
""")


def supervise(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "supervisor", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def write(tmp_path, text, name="exp.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


CASES = [
    # (yaml text or None for a missing file, extra args, what the line must mention)
    (None, [], ["no such file"]),
    ("name: [unclosed\n", [], ["malformed YAML", "line"]),
    ("- just\n- a list\n", [], ["mapping"]),
    (GOOD.replace("name: t\n", ""), [], ["name", "required key is missing"]),
    (GOOD.replace("CartPole-v1", "NoSuchEnv-v7"), [], ["env", "unknown environment", "NoSuchEnv-v7"]),
    (GOOD.replace("CartPole-v1", "no_such_pkg.mod:Env"), [], ["env", "cannot import"]),
    (GOOD.replace("lr: 0.001", "lr: 0.001, not_a_ppo_key: 3"), [], ["config.not_a_ppo_key", "unknown PPOConfig"]),
    (GOOD + "bogus: 1\n", [], ["bogus", "unknown key"]),
    (GOOD.replace("lr: 0.001", "lr: -0.5"), [], ["config.lr", "must be > 0"]),
    (GOOD.replace("iterations: 2", "iterations: 0"), [], ["stop.iterations", "greater than 0"]),
    (GOOD + "supervisor: {checkpoint_every: -1}\n", [], ["supervisor.checkpoint_every"]),
    (GOOD + "algorithm: DQN\n", [], ["algorithm", "unknown algorithm", "DQN"]),
    (GOOD, ["--set", "config.gamma=7"], ["config.gamma", "between 0 and 1"]),
    (GOOD, ["--set", "nokeyvalue"], ["--set", "KEY=VALUE"]),
    (GOOD, ["--iterations", "-4"], ["--iterations", "must be > 0"]),
    (GOOD + "supervisor: {ladders: {non_finite: [[explode]]}}\n", [], ["supervisor.ladders", "unknown action"]),
    (GOOD + "supervisor: {detectors: {kl_spike: {window: -1}}}\n", [],
     ["supervisor.detectors.kl_spike.window", "must be >= 2 (got -1)"]),
    (GOOD + "supervisor: {detectors: {no_such: {}}}\n", [], ["supervisor.detectors.no_such", "unknown detector"]),
    (GOOD, ["--set", "supervisor.detectors.entropy_collapse.fraction=1.5"],
     ["supervisor.detectors.entropy_collapse.fraction", "must be < 1 (got 1.5)"]),
]


@pytest.mark.parametrize("text,extra,must", CASES, ids=[c[2][0] + str(i) for i, c in enumerate(CASES)])
def test_bad_input_exits_2_with_one_line(tmp_path, text, extra, must):
    path = str(tmp_path / "missing.yaml") if text is None else write(tmp_path, text)
    p = supervise("run", path, "--out", str(tmp_path / "run"), *extra, cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr
    for word in must:
        assert word in lines[0], lines[0]
    if text is not None and not extra[:1] == ["--set"] and "--iterations" not in extra:
        assert lines[0].startswith(path), lines[0]  # names the file
    assert not (tmp_path / "run").exists()  # nothing started, nothing written


def test_usage_errors_exit_2(tmp_path):
    p = supervise("frobnicate")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    p = supervise("report", str(tmp_path))
    assert p.returncode == 2 and "not a run folder" in p.stderr and len(p.stderr.strip().splitlines()) == 1
