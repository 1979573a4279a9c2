"""Numbers parse as people write them, in every file the project reads and in ``--set``.

PyYAML follows YAML 1.1, where ``3e-4`` is a string; the project's loader reads
floats as YAML 1.2 and JSON do (``json.dumps(1e-9)`` is ``1e-09``).
"""

import json

import pytest

from supervisor.calibrate import load_profile
from supervisor.config import SupervisorConfig, load_experiment, load_sweep, load_yaml
from supervisor.errors import InputError

WRITTEN = [("3e-4", 3e-4), ("1e-09", 1e-9), ("5E-5", 5e-5), (".5", 0.5), ("1_000", 1000), ("1.5e+3", 1500.0),
           ("-2e-3", -2e-3), ("1.0E4", 1e4), (json.dumps(1e-9), 1e-9), (json.dumps(2.5e-07), 2.5e-7)]


@pytest.mark.parametrize("text,value", WRITTEN)
def test_experiment_numeric_fields(tmp_path, text, value):
    p = tmp_path / "exp.yaml"
    p.write_text(f"name: t\nenv: CartPole-v1\nconfig: {{lr: {text.lstrip('-')}, num_env_runners: 0}}\n"
                 f"stop: {{iterations: 2, episode_return_mean: {text}}}\n"
                 f"supervisor: {{retry_after_s: {text.lstrip('-') if abs(value) <= 3600 else 5},"
                 f" action_params: {{reduce_lr: {{min_lr: {text.lstrip('-')}}}}}}}\n")
    exp = load_experiment(p)
    assert exp.config["lr"] == pytest.approx(abs(value))
    assert exp.stop.episode_return_mean == pytest.approx(value)
    if abs(value) <= 3600:
        assert exp.supervisor.retry_after_s == pytest.approx(abs(value))
    assert exp.supervisor.action_params["reduce_lr"]["min_lr"] == pytest.approx(abs(value))


@pytest.mark.parametrize("text,value", WRITTEN)
def test_set_values(tmp_path, text, value):
    p = tmp_path / "exp.yaml"
    p.write_text("name: t\nenv: CartPole-v1\nconfig: {lr: 0.1}\nstop: {iterations: 2}\n")
    exp = load_experiment(p, [f"config.lr={text.lstrip('-')}", f"stop.episode_return_mean={text}"])
    assert exp.config["lr"] == pytest.approx(abs(value)) and isinstance(exp.config["lr"], (int, float))
    assert exp.stop.episode_return_mean == pytest.approx(value)


def test_sweep_search_bounds(tmp_path):
    p = tmp_path / "sweep.yaml"
    p.write_text("name: s\nenv: CartPole-v1\nstop: {iterations: 2}\n"
                 "search: {config.lr: {loguniform: [1e-5, 3e-4]}, config.gamma: {choice: [.9, 1_000e-3]}}\n")
    sw = load_sweep(p)
    assert sw.search["config.lr"]["loguniform"] == [1e-5, 3e-4]
    assert sw.search["config.gamma"]["choice"] == [0.9, 1.0]


def test_profile_bands(tmp_path):
    p = tmp_path / "profile.yaml"
    p.write_text("metrics:\n  approx_kl: {low: 1e-4, high: 5E-2, median: 3e-3, n: 1_000}\n")
    assert load_profile(p)["approx_kl"] == {"low": 1e-4, "high": 5e-2, "median": 3e-3, "n": 1000}


def test_what_is_not_a_number_stays_a_string_and_is_refused(tmp_path):
    assert load_yaml("a: e5\nb: 1e\nc: 1.2.3\nd: 0x1F\ne: '3e-4'") == {"a": "e5", "b": "1e", "c": "1.2.3",
                                                                         "d": 31, "e": "3e-4"}
    p = tmp_path / "exp.yaml"
    p.write_text("name: t\nenv: CartPole-v1\nconfig: {lr: 3e-4x}\nstop: {iterations: 2}\n")
    with pytest.raises(InputError, match="config.lr: must be a number"):
        load_experiment(p)
    assert SupervisorConfig.model_validate(load_yaml("history: 1_024")).history == 1024
