"""Fuzzing with hypothesis: malformed reports never crash the supervisor; malformed
experiment files always give exit 2 and one line."""

import subprocess
import sys

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor.config import SupervisorConfig, load_experiment
from supervisor.engine import Engine
from supervisor.errors import InputError
from supervisor.metrics import RESULT_PATHS, normalize_result
from supervisor.store import Store

NAMES = sorted(RESULT_PATHS)
leaf = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
                 st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
                 st.sampled_from(["nan", "inf", "-inf"]))
nested = st.recursive(leaf, lambda c: st.one_of(st.lists(c, max_size=4),
                                                st.dictionaries(st.text(max_size=8), c, max_size=4)), max_leaves=20)
metrics = st.dictionaries(st.one_of(st.sampled_from(NAMES), st.text(max_size=12)), nested, max_size=25)
report = st.fixed_dictionaries({}, optional={
    "trial_id": st.one_of(st.sampled_from(["a", "b"]), st.text(max_size=5), st.integers(), st.none()),
    "seq": st.one_of(st.integers(min_value=-5, max_value=10**6), st.floats(), st.text(max_size=3), st.none()),
    "iteration": st.one_of(st.integers(min_value=-5, max_value=10**9), st.floats(), st.text(max_size=3)),
    "metrics": st.one_of(metrics, nested),
    "applied": nested,
    "node_id": nested,
})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reports=st.lists(st.one_of(report, nested), min_size=1, max_size=12))
def test_malformed_reports_never_crash_the_engine(tmp_path_factory, reports):
    store = Store(tmp_path_factory.mktemp("f") / "s.db")
    try:
        eng = Engine(store, SupervisorConfig(checkpoint_every=2, cooldown=0))
        out = eng.observe_batch(reports)
        for r in reports:  # what a trial says it applied is as untrusted as its reports
            if isinstance(r, dict) and "applied" in r:
                eng.acknowledge(str(r.get("trial_id") or "default"), r["applied"])
        assert len(out) == len(reports)
        for v in out:
            assert isinstance(v.actions, list)
            assert v.error is None, v  # malformed input is sanitized, not an internal error
        # the store stays readable and JSON-safe
        for t in store.trials():
            for r in store.reports(t["trial_id"]):
                assert isinstance(r["metrics"], dict)
    finally:
        store.close()


@settings(max_examples=200, deadline=None)
@given(result=st.dictionaries(st.sampled_from(["env_runners", "learners", "training_iteration", "x"]),
                              nested, max_size=4))
def test_normalize_result_tolerates_any_shape(result):
    rep = normalize_result(result, "t")
    assert all(isinstance(v, float) for v in rep["metrics"].values())


good = {"name": "t", "env": "CartPole-v1", "config": {"lr": 0.001}, "stop": {"iterations": 2}}
yaml_value = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
                          lambda c: st.one_of(st.lists(c, max_size=3),
                                              st.dictionaries(st.text(max_size=8), c, max_size=3)), max_leaves=10)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["name", "env", "env_config", "algorithm", "config", "stop", "supervisor", "seed",
                            "extra", "config.lr", "stop.iterations", "supervisor.checkpoint_every",
                            "supervisor.ladders", "config.gamma"]),
       value=yaml_value)
def test_malformed_experiment_files_raise_one_line_input_errors(tmp_path_factory, key, value):
    data = {**good, "config": dict(good["config"]), "stop": dict(good["stop"])}
    node, parts = data, key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    path = tmp_path_factory.mktemp("y") / "e.yaml"
    path.write_text(yaml.safe_dump(data))
    try:
        load_experiment(path)
    except InputError as e:
        assert "\n" not in str(e) and str(e).startswith(str(path))
    # accepted files are valid by construction; anything else than InputError fails the test


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_arbitrary_file_text_is_input_error_or_valid(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("t") / "e.yaml"
    path.write_text(text)
    try:
        load_experiment(path)
    except InputError as e:
        assert "\n" not in str(e)


def test_cli_exit_2_on_garbage_file(tmp_path):
    p = tmp_path / "g.yaml"
    p.write_bytes(b"\xff\xfe\x00garbage: [")
    r = subprocess.run([sys.executable, "-m", "supervisor", "run", str(p)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
