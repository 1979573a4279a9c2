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



def _ray_internals():
    """What only actors/compat.py may touch: the private attributes its items name, the markers of the other
    items (strings, imports, keyword arguments whose place moved between Ray releases)."""
    from actors import compat

    attrs = {m for item in compat.ITEMS for m in re.findall(r"\.(_[a-z]\w*)", item)}
    strings = attrs | {"__internal_head__", compat.ERROR_FILE_MARK, "internal_kv", "TRIAL_INFO", "__trial_info__"}
    keywords = {m for item in compat.ITEMS for m in re.findall(r"\((\w+)=\)", item)}
    return attrs, strings, keywords


def _internal_uses(path: Path, attrs, strings, keywords) -> list[str]:
    tree = ast.parse(path.read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    found = []
    for n in ast.walk(tree):
        what = None
        if isinstance(n, ast.Attribute) and n.attr in attrs:
            what = n.attr
        elif isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings:
            what = next((s for s in strings if re.search(rf"(?<!\w){re.escape(s)}(?!\w)", n.value)), None)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in n.names] + ([n.module] if isinstance(n, ast.ImportFrom) and n.module else [])
            what = next((x for x in names if x.split(".")[-1] in ("internal_kv", "TRIAL_INFO")), None)
        elif isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute):
            if n.func.attr == "log_value":
                what = "MetricsLogger.log_value"
            elif n.func.attr in ("learners", "training"):
                what = next((k.arg for k in n.keywords if k.arg in keywords), None)
        if what:
            found.append(f"{path.relative_to(ROOT)}:{n.lineno}: {what}")
    return found


def test_ray_internals_are_touched_only_in_the_compat_module():
    """Every Ray/RLlib/Tune private item goes through actors/compat.py, where a canary guards it
    (tests/test_compat.py); a new one belongs there too."""
    pytest.importorskip("ray")
    found = [f for p in _sources() if p != ROOT / "actors" / "compat.py"
             for f in _internal_uses(p, *_ray_internals())]
    assert found == [], "Ray internals outside actors/compat.py (add an accessor and a canary there):\n" + \
        "\n".join(found)
    seen = _internal_uses(ROOT / "actors" / "compat.py", *_ray_internals())  # the check sees them at all
    for marker in ("_optimizer_lr_schedules", "_weights_seq_no", "_rl_modules", "__internal_head__", "internal_kv",
                   "_learner_class", "MetricsLogger.log_value", "TRIAL_INFO"):
        assert any(f.endswith(f": {marker}") for f in seen), marker


def test_every_ray_facing_test_module_is_on_the_floor_list_or_says_why_not():
    """tests/conftest.py: RAY_FLOOR (run on the oldest supported Ray in CI) or NOT_ON_FLOOR (with the reason).
    A module that imports ray or actors must be in one of them; every entry names a real module and test."""
    import conftest

    tests = {p.stem: p for p in (ROOT / "tests").glob("test_*.py")}
    touching = []
    for stem, p in tests.items():
        for n in ast.walk(ast.parse(p.read_text())):
            names = ([a.name for a in n.names] if isinstance(n, ast.Import) else
                     [n.module] if isinstance(n, ast.ImportFrom) and n.module and not n.level else [])
            if any(x.split(".")[0] in ("ray", "actors", "rllib_helpers") for x in names):
                touching.append(stem)
                break
    listed = {e.split("::")[0] for e in conftest.RAY_FLOOR} | set(conftest.NOT_ON_FLOOR)
    assert "test_interventions" in touching  # the check sees imports
    assert sorted(set(touching) - listed) == [], "add to RAY_FLOOR or NOT_ON_FLOOR in tests/conftest.py"
    for entry in conftest.RAY_FLOOR:
        module, _, test = entry.partition("::")
        assert module in tests, entry
        if test:
            assert re.search(rf"^def {test}\(", tests[module].read_text(), re.M), entry
    assert set(conftest.NOT_ON_FLOOR) <= set(tests)
    for module, (param, why) in conftest.FLOOR_SKIPS.items():  # a parameter id of a floor module's tests
        assert module in conftest.RAY_FLOOR and f'"{param}"' in tests[module].read_text() and why, module
