"""The live web dashboard in a real headless Chromium (Playwright driving Debian's /usr/bin/chromium).

The dashboard runs as a real subprocess (``python -m supervisor dashboard``);
the tests write into a real run folder through ``Store`` + ``Engine.observe``
while the page is open, and watch the page change without a reload. The
live-mode test starts a small private Ray (``address="local"``) with the real
supervisor actor.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (browser: apt-get install chromium)")
expect = sync_api.expect

from supervisor.config import SupervisorConfig  # noqa: E402
from supervisor.engine import Engine  # noqa: E402
from supervisor.store import Store  # noqa: E402

CHROMIUM = os.environ.get("SUPERVISOR_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
XSS_ID = "<img src=x onerror=alert(1)>"
XSS_METRIC = "<svg onload=alert(2)>"
TOKEN = "s3cret-token-for-tests"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="no chromium (apt-get install chromium)")


# ---------------------------------------------------------------------- helpers
def healthy(i: int) -> dict:
    w = 1 + 0.05 * math.sin(i * 1.7)
    return {"episode_return_mean": 20.0 + 6 * i * w, "episode_return_max": 30.0 + 8 * i, "episode_return_min": 9.0 + 3 * i,
            "total_loss": 5.0 * w, "policy_loss": -0.02 * w, "vf_loss": 4.0 * w, "entropy": 0.69 - 0.002 * i,
            "entropy_coeff": 0.0, "kl": 0.01 * w, "kl_coeff": 0.2, "lr": 3e-4, "grad_norm": 1.5 * w,
            "grad_norm_max": 0.8 * w, "explained_variance": 0.3 * w, "advantage_mean": 0.0, "advantage_std": 1.0 * w,
            "env_steps_lifetime": 2000.0 * (i + 1)}


class Writer:
    """Plays the supervisor's part: a writable store and an engine, in this process."""

    def __init__(self, run_dir: Path, run_id: str = "dash-run", spec: dict | None = None):
        self.store = Store(run_dir / "supervisor.db")
        self.run_id = run_id
        self.store.upsert_run(run_id, "dashboard-test", "run", "running", spec)
        self.engine = Engine(self.store, SupervisorConfig(checkpoint_every=3, cooldown=1))
        self.seq: dict[str, int] = {}

    def report(self, trial_id: str, metrics: dict) -> dict:
        seq = self.seq.get(trial_id, -1) + 1
        self.seq[trial_id] = seq
        return self.engine.observe({"trial_id": trial_id, "run_id": self.run_id, "seq": seq, "iteration": seq + 1,
                                    "metrics": metrics})

    def close(self) -> None:
        self.store.close()


def http(url: str, method: str = "GET", body: dict | None = None, headers: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    h = {"Content-Type": "application/json"} if body is not None else {}
    h.update(headers or {})
    req = urllib.request.Request(url, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def dashboard():
    """Start ``supervise dashboard`` in a subprocess; returns its base URL."""
    procs = []

    def start(*args: str, env: dict | None = None) -> str:
        e = {k: v for k, v in os.environ.items() if k not in ("SUPERVISOR_DASHBOARD_TOKEN", "RAY_ADDRESS")}
        e.update(env or {})
        p = subprocess.Popen([sys.executable, "-m", "supervisor", "dashboard", "--port", "0", "--poll", "0.2", *args],
                             cwd=ROOT, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(p)
        line = p.stdout.readline()
        m = re.search(r"(http://\S+/)", line)
        assert m, f"dashboard did not start: {line}{p.stdout.read() if p.poll() is not None else ''}"
        if "generate" in args:  # --token generate: the URL to open, token included, comes next
            return m.group(1), p.stdout.readline().strip()
        return m.group(1)

    yield start
    for p in procs:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1600, "height": 1000})
    pg = ctx.new_page()
    pg.dialogs, pg.errors, pg.requests = [], [], []
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
    pg.on("request", lambda r: pg.requests.append(r.url))
    yield pg
    ctx.close()


def shot(pg, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / name))


# ---------------------------------------------------------------------- tests
def test_page_loads_offline_with_strict_headers(tmp_path, dashboard, page):
    w = Writer(tmp_path)
    for i in range(5):
        w.report("trial-a", healthy(i))
    url = dashboard("--run", str(tmp_path))

    status, headers, body = http(url)
    assert status == 200 and b"app.js" in body
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "<script>" not in body.decode()  # no inline script
    status, headers, _ = http(url + "static/vendor/uPlot.iife.min.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    assert http(url + "static/../server.py")[0] == 404
    assert http(url, headers={"Host": "evil.example:80"})[0] == 403  # DNS rebinding guard on loopback

    page.goto(url)
    expect(page).to_have_title(re.compile("RL Supervisor"))
    expect(page.locator("#trials-table tr[data-trial='trial-a'] td.iter")).to_have_text("5")
    expect(page.locator("#nodes-empty")).to_be_visible()  # no node records: an empty state
    expect(page.locator("#conn")).to_have_class(re.compile(r"\blive\b"))
    expect(page.locator("#ctl-badge")).to_have_text("read-only")
    assert all(u.startswith(url) for u in page.requests), [u for u in page.requests if not u.startswith(url)]
    assert not page.errors, page.errors
    w.close()


def test_new_trial_appears_live_and_iteration_updates(tmp_path, dashboard, page):
    w = Writer(tmp_path)
    url = dashboard("--run", str(tmp_path))
    page.goto(url)
    expect(page.locator("#trials-empty")).to_be_visible()
    page.evaluate("window.__noReload = 1")

    for i in range(3):
        w.report("PPO_live_00000", healthy(i))
    row = page.locator("#trials-table tr[data-trial='PPO_live_00000']")
    expect(row.locator("td.iter")).to_have_text("3")
    for i in range(3, 7):
        w.report("PPO_live_00000", healthy(i))
    expect(row.locator("td.iter")).to_have_text("7")
    w.report("PPO_live_00001", healthy(0))
    expect(page.locator("#trials-table tbody tr")).to_have_count(2)

    # sorting and filtering
    page.fill("#trial-filter", "00001")
    expect(page.locator("#trials-table tbody tr")).to_have_count(1)
    page.fill("#trial-filter", "")
    page.click("#trials-table th[data-key='iteration']")  # descending first
    expect(page.locator("#trials-table tbody tr").first).to_have_attribute("data-trial", "PPO_live_00000")
    page.click("#trials-table th[data-key='iteration']")
    expect(page.locator("#trials-table tbody tr").first).to_have_attribute("data-trial", "PPO_live_00001")

    # the trial page's chart grows with each new iteration
    page.click("#trials-table a:text('PPO_live_00000')")
    expect(page.locator("#trial-title")).to_have_text("PPO_live_00000")
    w.report("PPO_live_00000", healthy(7))
    expect(page.locator("#trial-iteration")).to_have_text("8")
    expect(page.locator("#charts")).to_have_attribute("data-points", "8")
    assert page.evaluate("window.__noReload") == 1  # no reload happened
    assert not page.errors, page.errors
    w.close()


def test_planted_fault_shows_in_feed_and_on_chart(tmp_path, dashboard, page):
    w = Writer(tmp_path)
    for i in range(12):
        v = w.report("PPO_fault_00000", healthy(i))
        if v.checkpoint:
            w.engine.record_checkpoint("PPO_fault_00000", i, i + 1, f"/ckpt/{i}", {"lr": 3e-4})
    url = dashboard("--run", str(tmp_path))
    page.goto(url + "#/trial/PPO_fault_00000")
    expect(page.locator("#chart-losses canvas")).to_have_count(1)
    expect(page.locator("#feed .alert.critical")).to_have_count(0)

    bad = healthy(12)
    bad["vf_loss"] = float("nan")
    verdict = w.report("PPO_fault_00000", bad)
    assert any(f["detector"] == "non_finite" and f["severity"] == "critical" for f in verdict.findings)
    for i in range(13, 16):
        w.report("PPO_fault_00000", {**healthy(i), "lr": 3e-5})

    alert = page.locator("#feed .alert.critical").filter(has_text="non_finite")
    expect(alert).to_have_count(1)
    expect(alert).to_contain_text("vf_loss=nan")
    expect(page.locator("#chart-losses .mk[data-severity='critical']")).to_have_count(1)
    expect(page.locator("#chart-losses .mk[data-kind='intervention']").first).to_be_attached()
    expect(page.locator("#findings tbody tr").filter(has_text="non_finite")).to_have_count(1)
    expect(page.locator("#trial-health")).to_have_class(re.compile(r"\bcrit\b"))
    page.wait_for_timeout(300)  # let the canvases paint
    shot(page, "dashboard_trial.png")
    page.goto(url)
    expect(page.locator("#trials-table tr[data-trial='PPO_fault_00000'] .sev.critical")).to_be_visible()
    shot(page, "dashboard_overview.png")
    assert not page.errors, page.errors
    w.close()


def test_env_steps_column_shows_what_each_trial_used_and_what_a_stop_saved(tmp_path, dashboard, page):
    w = Writer(tmp_path, spec={"name": "dashboard-test", "stop": {"iterations": 10}})
    for i in range(5):  # stopped by the supervisor after 5 of its 10 iterations, 200 env steps each
        w.report("PPO_stopped", {**healthy(i), "env_steps_lifetime": 200.0 * (i + 1)})
    w.engine.finish_trial("PPO_stopped", "stopped")
    for i in range(10):  # the whole budget, 1,250 env steps an iteration
        w.report("PPO_full", {**healthy(i), "env_steps_lifetime": 1250.0 * (i + 1)})
    w.engine.finish_trial("PPO_full", "completed")
    url = dashboard("--run", str(tmp_path))
    page.goto(url)

    stopped = page.locator("#trials-table tr[data-trial='PPO_stopped'] td.steps")
    expect(stopped.locator(".steps-used")).to_have_text("1k")
    expect(stopped.locator(".steps-used")).to_have_attribute("title", "1,000 env steps used")
    expect(stopped.locator(".steps-saved")).to_have_text("saved 1k")
    expect(stopped.locator(".steps-saved")).to_have_attribute("title", re.compile(r"^1,000 env steps of the budget"))
    full = page.locator("#trials-table tr[data-trial='PPO_full'] td.steps")
    expect(full.locator(".steps-used")).to_have_text("12.5k")
    expect(full.locator(".steps-saved")).to_have_count(0)  # nothing left unused
    expect(page.locator("#kpi-steps .k-value")).to_have_text("13.5k")
    expect(page.locator("#kpi-steps .k-sub")).to_have_text("saved 1k by stops")

    page.click("#trials-table th[data-key='env_steps']")  # descending first
    expect(page.locator("#trials-table tbody tr").first).to_have_attribute("data-trial", "PPO_full")
    page.click("#trials-table th[data-key='env_steps']")
    expect(page.locator("#trials-table tbody tr").first).to_have_attribute("data-trial", "PPO_stopped")
    assert not page.errors, page.errors
    w.close()


def test_markup_in_trial_data_is_shown_as_text(tmp_path, dashboard, page):
    w = Writer(tmp_path)
    for i in range(8):
        w.report(XSS_ID, healthy(i))
    w.report(XSS_ID, {**healthy(8), XSS_METRIC: float("nan")})  # lands in the finding's message
    url = dashboard("--run", str(tmp_path))
    page.goto(url)
    link = page.locator("#trials-table a.trial-link")
    expect(link).to_have_text(XSS_ID)
    expect(page.locator("#feed .alert-msg").filter(has_text=XSS_METRIC).first).to_be_visible()
    link.click()
    expect(page.locator("#trial-title")).to_have_text(XSS_ID)
    expect(page.locator("#findings td.msg").filter(has_text=XSS_METRIC)).to_have_count(1)
    page.wait_for_timeout(300)
    assert page.locator("img").count() == 0 and page.locator("svg").count() == 0
    assert page.dialogs == []
    assert not page.errors, page.errors
    w.close()


def test_read_only_by_default_and_run_mode_refuses_controls(tmp_path, dashboard, page):
    w = Writer(tmp_path)
    w.report("t0", healthy(0))
    ro = dashboard("--run", str(tmp_path))
    act = {"trial_id": "t0", "action": "stop_trial"}
    status, headers, body = http(ro + "api/action", "POST", act, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 403 and "read-only" in json.loads(body)["error"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    page.goto(ro + "#/trial/t0")
    expect(page.locator("#trial-title")).to_have_text("t0")
    expect(page.locator("#controls")).to_be_hidden()
    expect(page.locator("#ctl-stop_trial")).to_have_count(0)

    # a token, but a run folder: the token is still checked first, then a clear refusal
    tok = dashboard("--run", str(tmp_path), env={"SUPERVISOR_DASHBOARD_TOKEN": TOKEN})
    assert http(tok + "api/action", "POST", act)[0] == 403
    assert http(tok + "api/action", "POST", act, {"X-Token": "wrong"})[0] == 403
    status, _, body = http(tok + "api/action", "POST", act, {"X-Token": TOKEN})
    assert status == 409 and "live supervisor" in json.loads(body)["error"]
    w.close()


def test_a_generated_token_is_printed_in_the_url_to_open(tmp_path, dashboard, page):
    w = Writer(tmp_path)
    w.report("t0", healthy(0))
    url, line = dashboard("--run", str(tmp_path), "--token", "generate")
    m = re.fullmatch(r"open: (http://\S+/)#token=(\S+)", line)
    assert m and m.group(1) == url, line
    token = m.group(2)
    act = {"trial_id": "t0", "action": "stop_trial"}
    assert http(url + "api/action", "POST", act, {"X-Token": "generate"})[0] == 403  # not the word itself
    assert http(url + "api/action", "POST", act, {"X-Token": token})[0] == 409  # accepted; a run folder refuses
    page.goto(line.split(" ", 1)[1])  # the app keeps the token for the tab and drops it from the address bar
    expect(page.locator("#mode-badge")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('supervisor-token')") == token
    assert "token" not in page.url
    w.close()


@pytest.fixture(scope="module")
def ray_cluster():
    import logging

    import ray

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def test_live_controls_need_the_token(tmp_path, dashboard, page, ray_cluster):
    import ray

    from actors.supervisor_actor import get_or_create_supervisor

    sup = get_or_create_supervisor()
    run_id, tid = "live-run", "PPO_live_ctl_00000"
    ray.get(sup.open_run.remote(run_id, str(tmp_path), "live-test", "run", {"checkpoint_every": 3}))
    ray.get(sup.register_trial.remote(tid, run_id))
    for i in range(4):
        ray.get(sup.report.remote(run_id, {"trial_id": tid, "seq": i, "iteration": i + 1, "metrics": healthy(i)}))

    url = dashboard("--address", ray_cluster, "--token", TOKEN)
    page.goto(url + "#/trial/" + tid)
    expect(page.locator("#trial-title")).to_have_text(tid, timeout=20000)
    expect(page.locator("#mode-badge")).to_have_text("live cluster")
    expect(page.locator("#controls")).to_be_visible()

    # without the token the browser's request is refused; with it, it is queued
    page.fill("#ctl-lr", "0.0001")
    page.click("#ctl-set_lr")
    expect(page.locator("#ctl-msg")).to_contain_text("403")
    page.fill("#ctl-token", TOKEN)
    page.click("#ctl-set_lr")
    expect(page.locator("#ctl-msg")).to_contain_text("Queued reduce_lr")

    act = {"trial_id": tid, "action": "stop_trial", "reason": "test"}
    assert http(url + "api/action", "POST", act)[0] == 403
    assert http(url + "api/action", "POST", act, {"Authorization": "Bearer nope"})[0] == 403
    assert http(url + "api/action", "POST", act, {"X-Token": TOKEN + "x"})[0] == 403
    status, _, body = http(url + "api/action", "POST", act, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200, body

    # both go out with the trial's next verdict
    v = ray.get(sup.report.remote(run_id, {"trial_id": tid, "seq": 4, "iteration": 5, "metrics": healthy(4)}))
    by = {a["action"]: a for a in v["actions"]}
    assert set(by) == {"reduce_lr", "stop_trial"}, v["actions"]
    assert by["reduce_lr"]["params"]["min_lr"] == pytest.approx(1e-4)
    assert by["stop_trial"]["reason"] == "manual (dashboard): test"
    # ... and the dashboard shows them live
    expect(page.locator("#feed .alert.intervention").filter(has_text="stop_trial")).to_have_count(1, timeout=15000)
    expect(page.locator("#interventions tbody tr")).to_have_count(2)
    assert not [e for e in page.errors if "403" not in e], page.errors


def test_node_cards_say_why_values_are_missing_and_plot_the_evaluation_return(tmp_path, dashboard, page):
    w = Writer(tmp_path)
    for i in range(6):
        m = healthy(i)
        if i % 2 == 1:
            m["eval_return_mean"] = 15.0 + 5 * i
        w.report("trial-e", m)
    # a node with a monitor that reported CPU and memory but no disk, network or GPUs (and says why),
    # and a node without a monitor: only what Ray knows
    w.store.upsert_node("a" * 56, "10.0.0.1", True, {"monitor": True, "cpu_percent": 42.0, "memory_percent": 61.0,
                                                     "hostname": "head-host", "disk_percent": None,
                                                     "net_sent_bytes_per_s": None, "net_recv_bytes_per_s": None,
                                                     "gpus": [], "gpu_error": "NVML: driver not loaded",
                                                     "heartbeat_age_s": 0.4, "resources": {"CPU": 2.0}})
    w.store.upsert_node("b" * 56, "10.0.0.2", True, {"monitor": False, "cpu_percent": None, "memory_percent": None,
                                                     "hostname": None, "disk_percent": None, "gpus": [],
                                                     "gpu_error": None, "heartbeat_age_s": None, "resources": {}})
    url = dashboard("--run", str(tmp_path))
    page.goto(url)
    a = page.locator(f"[data-node='{'a' * 56}']")
    b = page.locator(f"[data-node='{'b' * 56}']")
    expect(a).to_contain_text("head-host")
    expect(a).to_contain_text("42%")
    expect(a).to_contain_text("GPUs: NVML: driver not loaded")
    expect(a).to_contain_text("disk, network: not reported by its monitor")
    expect(b).to_contain_text("CPU, memory: no monitor on this node")
    for card in (a, b):
        assert "null" not in card.inner_text() and "undefined" not in card.inner_text()
    page.goto(url + "#/trial/trial-e")
    expect(page.locator("#chart-return")).to_contain_text("evaluation")
    expect(page.locator("#chart-return .u-legend")).to_contain_text("40")  # the newest evaluation return


def test_a_long_trial_comes_in_pages_and_the_page_shows_all_of_it(tmp_path, dashboard, page):
    from supervisor.dashboard.server import TRIAL_PAGE

    w = Writer(tmp_path)
    n = TRIAL_PAGE + 300
    w.engine.observe_batch([{"trial_id": "long", "run_id": w.run_id, "seq": i, "iteration": i + 1,
                             "metrics": healthy(i % 50)} for i in range(n)])
    w.engine.flush(force=True)
    url = dashboard("--run", str(tmp_path))
    status, _, body = http(url + "api/trial?id=long")
    first = json.loads(body)
    assert status == 200 and len(first["reports"]["seq"]) == TRIAL_PAGE and first["page"]["more"]
    status, _, body = http(url + f"api/trial?id=long&since_seq={first['page']['next_since_seq']}")
    rest = json.loads(body)
    assert rest["reports"]["seq"] == list(range(TRIAL_PAGE, n)) and not rest["page"]["more"]
    assert http(url + "api/trial?id=long&limit=0")[0] == 400
    page.goto(url + "#/trial/long")
    expect(page.locator("#trial-title")).to_have_text("long", timeout=30_000)
    w.seq["long"] = n - 1
    w.report("long", healthy(3))  # a live update re-draws the charts from every page fetched, plus this one
    expect(page.locator("#charts")).to_have_attribute("data-points", str(n + 1), timeout=30_000)
    assert not page.errors, page.errors
    w.close()


def test_a_multi_agent_trial_page_has_a_module_selector(tmp_path, dashboard, page):
    """Each module (policy) its own charts, findings and interventions; the trial's own beside them."""
    w = Writer(tmp_path)
    w.engine.register_trial("PPO_ma_00000", w.run_id, config={
        "algorithm": "PPO", "modules": {"p0": {"trained": True}, "p1": {"trained": True}}})

    def ma(i: int, p1_loss: float | None = None) -> dict:
        out = {"episode_return_mean": 40.0 + 2 * i, "num_episodes": 10.0, "env_steps_lifetime": 400.0 * (i + 1)}
        for m in ("p0", "p1"):
            h = healthy(i)
            for k in ("total_loss", "policy_loss", "vf_loss", "entropy", "kl", "kl_coeff", "lr", "grad_norm",
                      "episode_return_mean"):
                out[f"modules/{m}/{k}"] = h[k] / 2 if k == "episode_return_mean" else h[k]
        if p1_loss is not None:
            out["modules/p1/total_loss"] = p1_loss
        return out

    for i in range(6):
        v = w.report("PPO_ma_00000", ma(i))
        if v.checkpoint:
            w.engine.record_checkpoint("PPO_ma_00000", i, i + 1, f"/ckpt/{i}", {})
    v = w.report("PPO_ma_00000", ma(6, p1_loss=float("inf")))
    assert {f["module"] for f in v.findings} == {"p1"}
    url = dashboard("--run", str(tmp_path))
    page.goto(url + "#/trial/PPO_ma_00000")
    sel = page.locator("#module-select")
    expect(sel).to_have_value("p0")
    expect(sel.locator("option")).to_have_count(3)  # p0, p1, the trial's own
    expect(page.locator("#chart-losses canvas")).to_have_count(1)
    expect(page.locator("#findings-count")).to_have_text("0")  # p0 is healthy
    sel.select_option("p1")
    row = page.locator("#findings tbody tr").filter(has_text="non_finite")
    expect(row).to_have_count(1)
    expect(row.locator("td").nth(1)).to_have_text("p1")
    expect(page.locator("#interventions tbody tr").filter(has_text="reduce_lr")).to_have_count(1)
    expect(page.locator("#chart-losses .mk[data-severity='critical']")).to_have_count(1)
    sel.select_option("")  # the whole trial: every module's findings, with its module
    expect(page.locator("#findings-count")).to_have_text("1")
    assert not page.errors, page.errors
    w.close()
