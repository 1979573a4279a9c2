"""Make docs/dashboard.png and docs/dashboard-trial.png from a real run, with Chromium.

    python docs/make_screenshots.py                      # a real sweep (experiments/cartpole_sweep.yaml), then shots
    python docs/make_screenshots.py --run runs/my-sweep   # shots of a run folder you already have

Runs ``supervise sweep experiments/cartpole_sweep.yaml`` (unless ``--run``
names a run folder), serves it with ``supervise dashboard --run``, and drives
Debian's Chromium through Playwright, as the dashboard tests do (no browser
download: ``apt-get install chromium``, ``pip install playwright``). The
overview is taken as the table stands; the trial page of the trial with the
supervisor repaired (recovered; else the one with the most interventions). The screenshots show
the dashboard exactly as users get it: nothing is drawn or edited.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def supervise(*args: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "supervisor", *args], cwd=ROOT, env=env, **kw)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", help="an existing run folder (default: run the sweep first)")
    ap.add_argument("--sweep", default="experiments/cartpole_sweep.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to supervise sweep")
    ap.add_argument("--out", default=str(ROOT / "docs"))
    ap.add_argument("--chromium", default=os.environ.get("SUPERVISOR_TEST_CHROMIUM") or shutil.which("chromium")
                    or "/usr/bin/chromium")
    args = ap.parse_args(argv)
    from playwright.sync_api import expect, sync_playwright

    run = Path(args.run) if args.run else Path(tempfile.mkdtemp(prefix="screens-")) / "sweep"
    if not args.run:
        sets = [x for s in args.set for x in ("--set", s)]
        p = supervise("sweep", args.sweep, "--out", str(run), "--quiet", *sets)
        if p.returncode not in (0, 3):
            print(f"the sweep failed (exit {p.returncode})", file=sys.stderr)
            return 1
    report = supervise("report", str(run), "--format", "json", capture_output=True, text=True)
    import json

    trials = json.loads(report.stdout)["trials"]
    repaired = max(trials, key=lambda t: (t["status"] == "recovered", len(t["interventions"]), t["iterations"]))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("SUPERVISOR_DASHBOARD_TOKEN", None)
    dash = subprocess.Popen([sys.executable, "-m", "supervisor", "dashboard", "--run", str(run), "--port", "0"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = dash.stdout.readline()
        m = re.search(r"(http://\S+/)", line)
        if not m:
            print(f"the dashboard did not start: {line}", file=sys.stderr)
            return 1
        url = m.group(1)
        out = Path(args.out)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_context(viewport={"width": 1600, "height": 1000}).new_page()
            page.goto(url)
            expect(page.locator("#trials-table tbody tr")).to_have_count(len(trials), timeout=30000)
            page.wait_for_timeout(1000)  # charts and tiles settle after the first events
            page.screenshot(path=str(out / "dashboard.png"))
            page.goto(url + "#/trial/" + repaired["trial_id"])
            expect(page.locator("#trial-title")).to_have_text(repaired["trial_id"], timeout=30000)
            page.wait_for_timeout(1500)
            page.screenshot(path=str(out / "dashboard-trial.png"), full_page=True)
            browser.close()
        print(f"wrote {out / 'dashboard.png'} and {out / 'dashboard-trial.png'} from {run} "
              f"(trial page: {repaired['trial_id']})")
        return 0
    finally:
        dash.terminate()
        dash.wait(10)


if __name__ == "__main__":
    raise SystemExit(main())
