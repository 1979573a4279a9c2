"""One place per concept: SQL only in supervisor/store.py, and the store's named reads against real SQLite."""

import ast
import re
import sqlite3
from pathlib import Path

import pytest

from supervisor.store import Store

ROOT = Path(__file__).resolve().parent.parent
SQL = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|CREATE TABLE)\b")


def _sources():
    for pkg in ("supervisor", "actors"):
        yield from sorted((ROOT / pkg).rglob("*.py"))


def test_sql_lives_only_in_the_store():
    found = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}" for p in _sources() if p.name != "store.py"
             for i, line in enumerate(p.read_text().splitlines(), 1) if SQL.search(line)]
    assert found == [], "SQL outside supervisor/store.py:\n" + "\n".join(found)
    assert SQL.search((ROOT / "supervisor" / "store.py").read_text())  # the check can see SQL at all


def test_nobody_calls_the_stores_private_query():
    found = [f"{p.relative_to(ROOT)}:{i}" for p in _sources() if p.name != "store.py"
             for i, line in enumerate(p.read_text().splitlines(), 1) if "._rows(" in line or ".db.execute" in line]
    assert found == []


def _store(tmp_path) -> Store:
    st = Store(tmp_path / "supervisor.db")
    st.upsert_run("r", "run", "single", "running")
    for tid in ("a", "b"):
        st.upsert_trial(tid, "r", "running")
    for seq in range(3):
        st.record_iteration({"trial_id": "a", "iteration": seq, "metrics": {"loss": float(seq)}}, seq,
                            [{"iteration": seq, "detector": "kl_spike", "severity": "warning" if seq else "critical",
                              "message": "m"}],
                            [{"iteration": seq, "action": "reduce_lr", "params": {"factor": 0.5}, "reason": "r"}])
    st.record_iteration({"trial_id": "b", "iteration": 0, "metrics": {"loss": float("nan")}}, 0, [], [])
    st.record_finding(None, {"detector": "node_down", "severity": "critical", "message": "gone"})
    return st


def test_named_reads(tmp_path):
    st = _store(tmp_path)
    try:
        ro = Store.open_readonly(tmp_path / "supervisor.db")
        with pytest.raises(sqlite3.Error):  # read-only really is
            ro.upsert_run("x", "x", "single", "running")
        assert [r["trial_id"] for r in ro.reports_after(0)] == ["a", "a", "a", "b"]
        rid = ro.reports_after(0)[1]["rid"]
        assert [r["seq"] for r in ro.reports_after(rid, limit=1)] == [2]
        assert ro.last_report_rowid() == ro.reports_after(0)[-1]["rid"]
        assert set(ro.last_report_times()) == {"a", "b"}
        assert ro.latest_report("a")["metrics"] == {"loss": 2.0}
        assert isinstance(ro.latest_report("b", raw=True)["metrics"], str)
        fs = ro.findings_after(0)
        assert [f["detector"] for f in fs] == ["kl_spike"] * 3 + ["node_down"]
        assert [f["id"] for f in ro.findings_after(fs[0]["id"], trials_only=True)] == [fs[1]["id"], fs[2]["id"]]
        assert len(ro.findings_after(0, exclude_detectors=("node_down", "gpu_fault"))) == 3
        assert ro.last_finding_id() == fs[-1]["id"]
        assert [f["id"] for f in ro.newest_findings(2)] == [fs[3]["id"], fs[2]["id"]]
        ivs = ro.interventions_after(0)
        assert len(ivs) == 3 and ivs[0]["params"] == {"factor": 0.5}
        assert ro.interventions_after(ivs[1]["id"])[0]["id"] == ivs[2]["id"]
        assert ro.newest_interventions(1)[0]["id"] == ivs[2]["id"]
        assert ro.intervention_states() == {iv["id"]: ("pending", None) for iv in ivs}
        assert ro.newest_finding_per_trial()["a"]["id"] == fs[2]["id"]
        assert {k: (v["critical"], v["warning"]) for k, v in ro.severity_counts_per_trial().items()} == {"a": (1, 2)}
        assert ro.intervention_counts_per_trial() == {"a": 3}
        v0 = ro.data_version()
        st.set_trial("a", status="completed")
        assert ro.data_version() != v0  # another connection committed
        ro.close()
    finally:
        st.close()


def test_open_readonly_refuses_what_is_not_a_store(tmp_path):
    p = tmp_path / "other.db"
    sqlite3.connect(p).close()
    with pytest.raises(sqlite3.Error):
        Store.open_readonly(p)


def test_the_reference_names_every_detector_option_action_and_setting():
    """docs/reference.md stays complete: a new detector, option, action or supervisor key must be documented."""
    from supervisor.config import ACTIONS, SupervisorConfig
    from supervisor.detectors import DETECTORS, detector_options
    from supervisor.policy import DEFAULT_LADDERS

    doc = (ROOT / "docs" / "reference.md").read_text()
    missing = [f"supervisor.{k}" for k in SupervisorConfig.model_fields if f"`{k}`" not in doc]
    missing += [f"action {a}" for a in ACTIONS if f"`{a}`" not in doc]
    missing += [f"detector {d}" for d in set(DETECTORS) | set(DEFAULT_LADDERS) if f"`{d}`" not in doc]
    for d in DETECTORS:
        row = next((line for line in doc.splitlines() if line.startswith(f"| `{d}` | `")), "")
        missing += [f"{d}.{o}" for o in detector_options(d) if f"`{o}`" not in row]
    assert missing == [], "not in docs/reference.md: " + ", ".join(missing)
    assert "../shared/" not in (ROOT / "README.md").read_text()  # a clone has no such folder


def _imports(pkg: str) -> dict[str, set[str]]:
    """Module -> the modules of ``pkg`` it imports, at the top or inside a function."""
    mods = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
            for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, ast.ImportFrom) and n.module and not n.level:
                names = [n.module, *(f"{n.module}.{a.name}" for a in n.names)]
            elif isinstance(n, ast.Import):
                names = [a.name for a in n.names]
            else:
                continue
            graph[m] |= {x for x in names if x in mods and x != m}
    return graph


def test_the_ray_side_has_no_import_cycle():
    graph = _imports("actors")
    assert "actors.appliers.rllib.rollback" in graph["actors.appliers.rllib.applier"]  # the check sees imports

    done: set[str] = set()  # modules from which no cycle is reachable

    def cycle_from(m: str, path: list[str]) -> list[str] | None:
        for n in sorted(graph[m] - done):
            if n in path:
                return path[path.index(n):] + [n]
            found = cycle_from(n, path + [n])
            if found:
                return found
        done.add(m)
        return None

    cycles = [c for m in sorted(graph) if (c := cycle_from(m, [m]))]
    assert cycles == [], "import cycle: " + " -> ".join(cycles[0])

