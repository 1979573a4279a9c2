"""Security basics: YAML is loaded safely, SQL is parameterized, nothing from a report is executed,
HTTP endpoints bind to loopback unless told otherwise."""

import math

import pytest

from supervisor.commands import dashboard as dashboard_cmd
from supervisor.config import SupervisorConfig, load_experiment
from supervisor.engine import Engine
from supervisor.errors import InputError
from supervisor.report import build_report
from supervisor.store import Store


def test_yaml_python_tags_are_refused_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "e.yaml"
    p.write_text("name: !!python/object/apply:os.system ['touch %s']\nenv: CartPole-v1\n"
                 "stop: {iterations: 1}\n" % marker)
    with pytest.raises(InputError) as e:
        load_experiment(p)
    assert "malformed YAML" in str(e.value)
    assert not marker.exists()


def test_sql_injection_in_report_fields_is_stored_literally(tmp_path):
    store = Store(tmp_path / "supervisor.db")
    store.upsert_run("r", "r", "run", "running")
    eng = Engine(store, SupervisorConfig())
    evil = "t'); DROP TABLE reports; --"
    for s in range(3):
        eng.observe({"trial_id": evil, "seq": s, "metrics": {"entropy": 0.6, "'); DELETE FROM trials; --": 1.0,
                                                             "lr": math.nan}})
    store.close()
    rep = build_report(tmp_path)
    assert [t["trial_id"] for t in rep["trials"]] == [evil]
    assert rep["trials"][0]["iterations"] >= 2


def test_report_content_is_never_executed(tmp_path):
    store = Store(tmp_path / "supervisor.db")
    store.upsert_run("r", "r", "run", "running")
    eng = Engine(store, SupervisorConfig())
    marker = tmp_path / "pwned"
    payload = f"__import__('os').system('touch {marker}')"
    eng.observe({"trial_id": payload, "seq": 0, "metrics": {payload: 1.0}, "node_id": payload})
    eng.acknowledge(payload, [{"id": 1, "after": {"lr": payload}}])
    store.close()
    build_report(tmp_path)
    assert not marker.exists()


def test_dashboard_binds_to_loopback_by_default():
    import argparse

    p = argparse.ArgumentParser()
    dashboard_cmd.add_arguments(p)
    args = p.parse_args(["--run", "x"])
    assert args.host == "127.0.0.1" and args.port == 8266
