"""A real supervised run (real Ray, real RLlib PPO, the real CLI) alerting a real HTTP endpoint on 127.0.0.1
(``divergent_run`` in tests/conftest.py, the run test_run_e2e judges the repair of)."""

import os
import sqlite3

import pytest

from tests.alert_server import fields
from tests.test_run_e2e import FAST, report
from tests.test_run_e2e import supervise as _supervise

pytestmark = pytest.mark.slow

def supervise(*args):
    # one OpenMP thread: on a shared, oversubscribed machine GOMP's spinning threads stall training for minutes
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return _supervise(*args)


def iteration_times(run_dir):
    db = sqlite3.connect(run_dir / "supervisor.db")
    rows = db.execute("SELECT seq, time, json_extract(metrics, '$.time_this_iter_s') FROM reports ORDER BY seq")
    return [(seq, t, it) for seq, t, it in rows]


def test_planted_fault_alerts_once_per_latch_then_summary(divergent_run):
    out, p, received = divergent_run  # tests/conftest.py: the sabotaged run, alerting the webhook and a refused port
    assert p.returncode in (0, 3), p.stdout[-3000:] + p.stderr[-3000:]
    (t,) = report(out)["trials"]
    worth = [f for f in t["findings"] if f["severity"] in ("warning", "critical")]
    assert worth, t["findings"]
    msgs = [fields(r["message"]) for r in received]
    finding_msgs = [m for m in msgs if "detector" in m]
    # exactly once per latch: one alert per detector unless it went quiet for alert_quiet (10) iterations,
    # or its severity rose; no iteration spans 10 here, so per detector: one, plus one if it escalated
    per_det = {}
    for m in finding_msgs:
        per_det.setdefault(m["detector"], []).append(m)
    for det, ms in per_det.items():
        sevs = [m["severity"] for m in ms]
        assert sevs in (["warning"], ["critical"], ["info"], ["warning", "critical"]), (det, sevs)
    assert {f["detector"] for f in worth} == set(per_det)
    first = min(worth, key=lambda f: f["iteration"])
    m0 = next(m for m in finding_msgs if m["detector"] == first["detector"])
    assert m0["run"] == "cartpole-divergent" and m0["trial"] == t["trial_id"]
    assert int(m0["iteration"]) == first["iteration"] and m0["message"] == first["message"]
    acts = [i["action"] for i in t["interventions"] if i["iteration"] == first["iteration"]]
    assert m0["action"] == (", ".join(acts) or "none")
    assert m0["dashboard"].startswith("http://127.0.0.1:8266/#/trial/")
    # within one iteration of the finding: before the report two iterations later was made
    times = iteration_times(out)
    db = sqlite3.connect(out / "supervisor.db")
    fseq = db.execute("SELECT MIN(seq) FROM findings WHERE detector=? AND severity IN ('warning','critical')",
                      (first["detector"],)).fetchone()[0]
    later = [tm for seq, tm, _ in times if seq == fseq + 2]
    arrived = next(r["_t"] for r in received if fields(r["message"]).get("detector") == first["detector"])
    if later:
        assert arrived < later[0], (arrived, later[0])
    # the run-end summary comes last
    assert "status" in msgs[-1] and msgs[-1]["status"] in ("completed", "recovered", "stopped")
    assert msgs[-1]["status"] == t["status"] or (t["status"] == "recovered" and msgs[-1]["status"] == "completed")
    # the refused destination: every alert recorded as failed after its retries, and the URL masked
    rows = db.execute("SELECT destination, status, attempts, kind FROM alerts").fetchall()
    down = [r for r in rows if r[0].endswith("/down")]
    assert down and all(r[1] == "failed" and r[2] == 3 for r in down)
    assert {r[3] for r in down} >= {"summary"}
    sent = [r for r in rows if r[0].endswith("/hook")]
    assert all(r[1] == "sent" for r in sent) and len(sent) == len(received)
