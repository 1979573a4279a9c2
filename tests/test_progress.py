"""supervise run's progress: a live line on a terminal, plain lines elsewhere, milestones once, an ETA."""

import io

from rich.console import Console

from supervisor.progress import Progress, eta_s, fmt_eta


def feed(p: Progress, n: int = 6):
    for it in range(1, n + 1):
        metrics = {"episode_return_mean": 10.0 * it, "time_this_iter_s": 2.0, "env_steps": 1000.0,
                   "env_steps_lifetime": 1000.0 * it}
        sup = {"health_score": 1.0, "worst_severity": "ok", "findings": ["kl_spike:warning"] if it == 3 else [],
               "actions": ["raise_kl_coeff"] if it == 3 else [],
               **({"best": {"metric": "episode_return_mean", "value": 10.0 * it}} if it % 2 == 0 else {})}
        p.iteration(it, metrics, sup)


def test_plain_lines_when_not_a_terminal():
    buf = io.StringIO()
    p = Progress("x", 10, console=Console(file=buf, force_terminal=False, width=200, highlight=False), target=35.0)
    p.start("runs/x", "local")
    feed(p)
    p.done("completed", 6, 12.0, 60.0)
    out = buf.getvalue()
    lines = [l for l in out.splitlines() if l.startswith("iter ")]
    assert len(lines) == 6 and lines[0].startswith("iter    1/10")
    assert "500 steps/s" in lines[-1] and "ETA    0:08" in lines[-1]  # 4 iterations x 2 s left
    assert "finding kl_spike:warning" in lines[2] and "-> raise_kl_coeff" in lines[2]
    assert out.count("passed the target 35") == 1 and "at iteration 4" in out  # 40 >= 35 first at 4
    assert out.count("first best checkpoint") == 1
    assert "best 60.0 at iteration 6" in out


def test_live_line_on_a_terminal_keeps_events_and_milestones():
    buf = io.StringIO()
    p = Progress("x", 10, console=Console(file=buf, force_terminal=True, width=200, highlight=False), target=35.0)
    p.start("runs/x", "local")
    assert p.live is not None
    feed(p)
    p.done("completed", 6, 12.0, 60.0)
    out = buf.getvalue()
    assert "kl_spike:warning" in out and "raise_kl_coeff" in out  # events printed above the live line
    assert out.count("passed the target 35") == 1
    assert "completed" in out and p.live is None


def test_eta_takes_the_first_stop():
    assert eta_s(5, 10, 2.0) == 10.0
    assert eta_s(5, 100, 2.0, steps=5000, total_steps=6000, sps=500.0) == 2.0
    assert eta_s(5, None, None, elapsed=50.0, time_budget=60.0) == 10.0
    assert eta_s(5, None, None) is None
    assert fmt_eta(3725) == "1:02:05" and fmt_eta(None) == "-"
