"""Alerts through Apprise to a real HTTP endpoint: latches, digests, failures, masking, env expansion."""

import time

import pytest

from supervisor.alerts import AlertSender, check_url, mask_url
from supervisor.config import SupervisorConfig
from supervisor.store import Store
from tests.alert_server import Hook, fields, refused_port


@pytest.fixture
def hook():
    h = Hook()
    yield h
    h.close()


def kl(sev="warning"):
    return {"detector": "kl_spike", "severity": sev, "message": "approx_kl 0.4 > 0.1", "iteration": 0}


def sender(tmp_path, dests, **kw):
    store = Store(tmp_path / "supervisor.db")
    s = AlertSender(dests, store.record_alert, run="unit", dashboard_url="http://dash:8266", quiet=3, **kw)
    return s, store


def test_one_alert_per_latch_then_again_after_quiet(tmp_path, hook):
    s, store = sender(tmp_path, [{"url": hook.url}])
    for seq in range(5):  # the same detector firing 5 iterations in a row: one latch
        s.observe("t1", seq, seq + 1, [kl()], [{"action": "raise_kl_coeff"}])
    assert s.flush(10)
    assert len(hook.received) == 1
    f = fields(hook.received[0]["message"])
    assert f == {"run": "unit", "trial": "t1", "iteration": "1", "detector": "kl_spike", "severity": "warning",
                 "message": "approx_kl 0.4 > 0.1", "action": "raise_kl_coeff", "dashboard": "http://dash:8266/#/trial/t1"}
    assert hook.received[0]["type"] == "warning"
    s.observe("t1", 7, 8, [kl()], [])  # quiet for 2 iterations (< 3): still the same latch
    s.observe("t1", 8, 9, [kl("critical")], [])  # severity rose: alert again
    s.observe("t1", 20, 21, [kl()], [])  # quiet for 11 iterations: a new latch
    s.observe("t2", 20, 21, [kl()], [])  # another trial: its own latch
    assert s.flush(10)
    got = [(fields(r["message"]).get("trial"), fields(r["message"]).get("iteration")) for r in hook.received]
    assert got == [("t1", "1"), ("t1", "9"), ("t1", "21"), ("t2", "21")]
    rows = store.alerts()
    assert [r["status"] for r in rows] == ["sent"] * 4 and all(r["attempts"] == 1 for r in rows)


def test_filters_severity_and_detectors(tmp_path, hook):
    s, _ = sender(tmp_path, [{"url": hook.url, "min_severity": "critical"},
                             {"url": hook.url.replace("/hook", "/nonfinite"), "detectors": ["non_finite"]}])
    s.observe("t", 0, 1, [kl()], [])  # warning: neither destination wants it
    s.observe("t", 1, 2, [{"detector": "non_finite", "severity": "critical", "message": "nan"}], [])
    assert s.flush(10)
    assert sorted(r["_path"] for r in hook.received) == ["/hook", "/nonfinite"]


def test_many_trials_at_once_become_one_digest(tmp_path, hook):
    s, store = sender(tmp_path, [{"url": hook.url}])
    for i in range(6):
        s.observe(f"trial_{i}", 3, 4, [kl("critical")], [{"action": "stop_trial"}])
    assert s.flush(10)
    assert len(hook.received) == 1
    msg = hook.received[0]
    assert "6 findings on 6 trials" in msg["title"] and msg["type"] == "failure"
    assert all(f"trial_{i} iteration 4: kl_spike" in msg["message"] for i in range(6))
    (row,) = store.alerts()
    assert row["kind"] == "digest" and row["items"] == 6


def test_refused_destination_is_retried_then_recorded_failed_without_blocking(tmp_path, hook):
    bad = f"json://127.0.0.1:{refused_port()}/hook"
    s, store = sender(tmp_path, [{"url": bad}, {"url": hook.url}], retries=3, backoff_s=0.1)
    t0 = time.perf_counter()
    s.observe("t", 0, 1, [kl()], [])
    s.summary("completed", [{"trial_id": "t", "status": "completed", "iterations": 3, "health_score": 0.9}])
    enqueue_s = time.perf_counter() - t0
    assert s.flush(20)
    rows = store.alerts()
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 2 and all(r["attempts"] == 3 for r in failed)
    assert {r["kind"] for r in failed} == {"finding", "summary"}
    assert [r["kind"] for r in rows if r["status"] == "sent"] == ["finding", "summary"]
    assert [fields(r["message"]).get("status") for r in hook.received] == [None, "completed"]
    print(f"enqueue took {enqueue_s * 1000:.2f} ms")  # the caller never waits for a delivery


def test_env_expansion_and_masking(tmp_path, hook, monkeypatch):
    monkeypatch.setenv("HOOK_PORT", str(hook.port))
    monkeypatch.setenv("HOOK_PASS", "s3cret-token")
    url = "json://alice:${HOOK_PASS}@127.0.0.1:${HOOK_PORT}/hook"
    check_url(url)
    assert mask_url(url) == url  # names, not values
    literal = f"json://alice:s3cret-token@127.0.0.1:{hook.port}/hook"
    assert "s3cret-token" not in mask_url(literal) and "alice" in mask_url(literal)
    assert "T1JJ3T3L2" not in mask_url("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ")
    s, store = sender(tmp_path, [{"url": url}])
    s.observe("t", 0, 1, [kl()], [])
    assert s.flush(10)
    assert len(hook.received) == 1
    assert all("s3cret" not in str(r) for r in store.alerts())
    monkeypatch.delenv("HOOK_PASS")
    with pytest.raises(ValueError, match="environment variable HOOK_PASS is not set"):
        SupervisorConfig.model_validate({"alerts": [{"url": url}]})
    with pytest.raises(ValueError, match="not a URL Apprise"):
        SupervisorConfig.model_validate({"alerts": [{"url": "nosuchscheme://x"}]})
    assert SupervisorConfig.model_validate({"alerts": [{"url": hook.url}]}).alerts[0].min_severity == "warning"


def test_secrets_stay_out_of_logs_on_failure(tmp_path, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    url = f"json://alice:s3cret-token@127.0.0.1:{refused_port()}/hook?-token=t0ps3cret"
    s, store = sender(tmp_path, [{"url": url}], retries=2, backoff_s=0.05)
    s.observe("t", 0, 1, [kl()], [])
    assert s.flush(20)
    (row,) = store.alerts()
    assert row["status"] == "failed" and row["attempts"] == 2
    shown = str(row) + caplog.text
    assert "s3cret" not in shown and "t0ps3cret" not in shown, shown


def test_unset_variable_is_bad_input_exit_2(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    exp = tmp_path / "e.yaml"
    exp.write_text("name: x\nenv: CartPole-v1\nstop: {iterations: 1}\n"
                   "supervisor:\n  alerts:\n    - url: slack://${NO_SUCH_TOKEN_VAR}\n")
    env = {k: v for k, v in os.environ.items() if k != "NO_SUCH_TOKEN_VAR"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    p = subprocess.run([sys.executable, "-m", "supervisor", "run", str(exp)], capture_output=True, text=True,
                       env=env, timeout=120)
    assert p.returncode == 2, p.stderr
    (line,) = p.stderr.strip().splitlines()
    assert "supervisor.alerts.0.url" in line and "NO_SUCH_TOKEN_VAR is not set" in line


def test_python_api_alerts_and_sends_the_summary(tmp_path, hook):
    from supervisor import Supervisor

    sup = Supervisor(tmp_path / "api-run", settings={"alerts": [{"url": hook.url}]})
    for it in range(1, 6):
        m = {"episode_return_mean": 20.0 + it, "total_loss": 1.0, "kl": 0.01}
        if it >= 4:
            m["total_loss"] = float("nan")  # a planted fault: non_finite, critical
        sup.observe(it, m)
    sup.close()
    msgs = [fields(r["message"]) for r in hook.received]
    finding = [m for m in msgs if m.get("detector") == "non_finite"]
    assert len(finding) == 1 and finding[0]["iteration"] == "4" and finding[0]["severity"] == "critical"
    assert msgs[-1]["status"] in ("completed", "recovered", "stopped")
