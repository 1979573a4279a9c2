"""``supervise report --format md|html``: Markdown tables and one self-contained, escaped HTML page."""

import base64
import re

import pytest

from supervisor.cli import main
from supervisor.config import SupervisorConfig
from benchmarks.synthetic import faulty_stream, healthy_stream
from supervisor.engine import Engine
from supervisor.report import build_report
from supervisor.store import Store

EVIL = "PPO_<script>alert('x')</script>&1"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run with a diverging trial (findings, rollback + reduce_lr, stop), a healthy one and one never reporting."""
    folder = tmp_path_factory.mktemp("run")
    store = Store(folder / "supervisor.db")
    store.upsert_run("r", "demo <b>run</b>", "run", "running")
    eng = Engine(store, SupervisorConfig(checkpoint_every=5, cooldown=1))
    for tid, stream in ((EVIL, faulty_stream("divergence", 60, 40, seed=4)), ("PPO_healthy", healthy_stream(40, 3))):
        eng.register_trial(tid, "r")
        for seq, m in enumerate(stream):
            v = eng.observe({"trial_id": tid, "seq": seq, "iteration": seq + 1, "metrics": m})
            if v.checkpoint:
                eng.record_checkpoint(tid, seq, seq + 1, f"/ckpt/{seq}", {"lr": 3e-4})
            if v.stop:
                store.set_trial(tid, status="stopped")
                break
    eng.register_trial("PPO_silent", "r")
    store.upsert_run("r", "demo <b>run</b>", "run", "stopped")
    store.close()
    return folder


@pytest.fixture(scope="module")
def html_page(run_dir, tmp_path_factory):
    pytest.importorskip("matplotlib")  # a dependency of the html format (pyproject)
    out = tmp_path_factory.mktemp("html") / "report.html"
    assert main(["report", str(run_dir), "--format", "html", "-o", str(out)]) == 0
    return out.read_text(encoding="utf-8")


def test_the_fixture_has_findings_and_interventions(run_dir):
    rep = build_report(run_dir)
    t = next(t for t in rep["trials"] if t["trial_id"] == EVIL)
    assert t["findings"] and {i["action"] for i in t["interventions"]} >= {"rollback", "reduce_lr"}


def test_markdown(run_dir, capsys):
    assert main(["report", str(run_dir), "--format", "md"]) == 0
    md = capsys.readouterr().out
    assert md.startswith("# Run demo &lt;b&gt;run&lt;/b&gt;")
    assert "| trial | status | iterations | final return | health | worst severity | findings | interventions |" in md
    rows = [ln for ln in md.splitlines() if ln.startswith("| ") and "PPO_" in ln]
    assert len(rows) >= 3 and all(ln.count(" | ") >= 7 for ln in rows[:3])
    assert "<script>" not in md and "&lt;script&gt;" in md
    assert "non_finite" in md and "rollback" in md and "reduce_lr" in md
    assert "### Findings" in md and "### Interventions" in md
    # table rows keep their column count: pipes in text are escaped
    header = "| iteration | module | severity | detector | metric | value | message |"
    assert header in md


def test_html_is_self_contained_and_escaped(html_page):
    page = html_page
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&amp;1" in page
    assert "demo &lt;b&gt;run&lt;/b&gt;" in page
    assert not re.search(r"https?://", page), re.search(r".{40}https?://.{40}", page)
    assert not re.search(r"<(link|iframe|object|embed)\b", page, re.I)
    srcs = re.findall(r'src="([^"]*)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    for s in srcs:
        assert base64.b64decode(s.split(",", 1)[1]).startswith(b"\x89PNG")
    assert len(srcs) == 2  # the two trials that reported; the silent one says so
    assert "no metrics reported yet" in page


def test_html_tables(html_page):
    for text in ("Findings", "Interventions", "non_finite", "rollback", "reduce_lr", "stop_trial",
                 "critical", "PPO_healthy", "PPO_silent"):
        assert text in html_page, text
    assert html_page.count("<img") == 2


def test_plot_marks_and_panels(run_dir):
    pytest.importorskip("matplotlib")
    from supervisor.report import load_series
    from supervisor.report.html import PANELS, plot_trial

    series = load_series(run_dir)
    assert set(series) == {EVIL, "PPO_healthy", "PPO_silent"}
    s = series[EVIL]
    assert s["iteration"][0] == 1 and any(v == float("inf") for v in s["total_loss"])
    shown = {m for _, ms, _ in PANELS for m in ms}
    assert {"episode_return_mean", "total_loss", "policy_loss", "vf_loss", "entropy", "kl", "kl_coeff", "lr",
            "grad_norm", "explained_variance", "advantage_mean", "advantage_std"} <= shown
    assert plot_trial(series["PPO_silent"], [], []) is None


def test_other_formats_still_work(run_dir, capsys):
    assert main(["report", str(run_dir), "--format", "json"]) == 0
    assert '"trials"' in capsys.readouterr().out
    assert main(["report", str(run_dir / "nope"), "--format", "html"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
