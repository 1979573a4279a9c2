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
    (GOOD.replace("iterations: 2", "iterations: 0"), [], ["stop.iterations", "must be > 0 (got 0)"]),
    (GOOD + "supervisor: {checkpoint_every: -1}\n", [], ["supervisor.checkpoint_every"]),
    (GOOD + "algorithm: TD3\n", [], ["algorithm", "unknown algorithm", "TD3", "supported: PPO, APPO, IMPALA, DQN, SAC"]),
    (GOOD, ["--set", "config.gamma=7"], ["--set: config.gamma=7", "between 0 and 1"]),
    (GOOD, ["--set", "nokeyvalue"], ["--set", "KEY=VALUE"]),
    (GOOD, ["--set", "config.not_a_ppo_key=3"], ["--set: config.not_a_ppo_key=3: unknown PPOConfig parameter"]),
    (GOOD, ["--iterations", "-4"], ["--iterations", "must be > 0 (got '-4')"]),
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


# In-process (no interpreter start per case): the battery's runtime stays flat as cases are added.
IN_PROCESS = [
    # (argv after the file, what the one line must say)
    (["--set", "config.lr=abc"], "--set: config.lr=abc: must be a number (got 'abc')"),
    (["--set", "config.num_env_runners=1.5"], "--set: config.num_env_runners=1.5: must be a whole number (got 1.5)"),
    (["--set", "stop.iterations=2.5"], "--set: stop.iterations=2.5: must be a whole number (got 2.5)"),
    (["--set", "env=NoSuchEnv-v7"], "--set: env=NoSuchEnv-v7: unknown environment 'NoSuchEnv-v7'"),
    (["--set", "supervisor.report_timeout_s=.inf"], "--set: supervisor.report_timeout_s=.inf: must be a finite"),
    (["--iterations", "nan"], "supervise run: --iterations: must be an integer (got 'nan')"),
]


@pytest.mark.parametrize("extra,must", IN_PROCESS, ids=[" ".join(c[0]) for c in IN_PROCESS])
def test_set_errors_name_set_and_numbers_are_checked(tmp_path, capsys, extra, must):
    from supervisor.cli import main

    path = write(tmp_path, GOOD)
    rc = main(["run", path, "--out", str(tmp_path / "run"), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert must in err and path not in err, err  # --set's mistake is not blamed on the file
    assert not (tmp_path / "run").exists()


def test_registered_env_whose_package_is_missing_is_bad_input(tmp_path, capsys):
    """A registered id whose module cannot be imported (MuJoCo, Box2D or Atari not installed) is refused before
    Ray starts, not found inside an env runner."""
    import gymnasium

    from supervisor.cli import main

    gymnasium.register("SupervisorTestMissingDep-v0", entry_point="no_such_pkg_for_the_test.envs:Env")
    try:
        path = write(tmp_path, GOOD.replace("CartPole-v1", "SupervisorTestMissingDep-v0"))
        rc = main(["run", path, "--out", str(tmp_path / "run")])
    finally:
        gymnasium.registry.pop("SupervisorTestMissingDep-v0", None)
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"{path}: env: environment 'SupervisorTestMissingDep-v0' is registered but cannot be "
                          "loaded here (ModuleNotFoundError: No module named 'no_such_pkg_for_the_test')"), err
    assert not (tmp_path / "run").exists()


def test_integer_keys_refuse_fractions_in_the_file(tmp_path):
    from supervisor.config import load_experiment
    from supervisor.errors import InputError

    path = write(tmp_path, GOOD.replace("num_env_runners: 0", "num_env_runners: 1.5"))
    with pytest.raises(InputError) as e:
        load_experiment(path)
    assert str(e.value) == f"{path}: config.num_env_runners: must be a whole number (got 1.5)"
    ok = load_experiment(write(tmp_path, GOOD.replace("num_env_runners: 0", "num_env_runners: 2.0"), "ok.yaml"))
    assert ok.config["num_env_runners"] == 2 and isinstance(ok.config["num_env_runners"], int)


NUMERIC_OPTIONS = [  # every numeric option of every command: NaN and infinities refused, bounds named
    (["calibrate", "r", "--out", "p.yaml", "--widen", "inf"], "--widen: must be a finite number (got 'inf')"),
    (["calibrate", "r", "--out", "p.yaml", "--quantile", "nan"], "--quantile: must be a finite number (got 'nan')"),
    (["calibrate", "r", "--out", "p.yaml", "--quantile", "0.7"], "--quantile: must be < 0.5 (got '0.7')"),
    (["calibrate", "r", "--out", "p.yaml", "--min-samples", "1.5"], "--min-samples: must be an integer (got '1.5')"),
    (["dashboard", "--poll=-inf"], "--poll: must be a finite number (got '-inf')"),
    (["dashboard", "--port", "70000"], "--port: must be <= 65535 (got '70000')"),
    (["status", "--timeout", "NaN"], "--timeout: must be a finite number (got 'NaN')"),
    (["sweep", "s.yaml", "--max-concurrent", "inf"], "--max-concurrent: must be an integer (got 'inf')"),
    (["run", "e.yaml", "--iterations", "0"], "--iterations: must be > 0 (got '0')"),
]


def test_every_numeric_option_refuses_nan_and_infinity(capsys, tmp_path):
    import argparse

    from supervisor.cli import build_parser, main

    parser, _ = build_parser()
    numeric = {(name, a.option_strings[0]) for name, sub in parser._subparsers._group_actions[0].choices.items()
               for a in sub._actions if a.option_strings and isinstance(a, argparse.Action)
               and getattr(a.type, "__name__", None) in ("int", "float")}
    tested = {(argv[0], next(x.split("=")[0] for x in argv if x.startswith("--") and x != "--out"))
              for argv, _ in NUMERIC_OPTIONS}
    assert numeric == tested, numeric ^ tested  # a new numeric option gets a case here
    for argv, must in NUMERIC_OPTIONS:
        rc = main(argv)
        err = capsys.readouterr().err
        assert rc == 2 and len(err.strip().splitlines()) == 1 and must in err, (argv, err)
    assert not (tmp_path / "p.yaml").exists()


def test_version(capsys):
    from importlib.metadata import version

    from supervisor.cli import main

    assert main(["--version"]) == 0 and capsys.readouterr().out.strip() == f"supervise {version('rl-supervisor')}"
