"""Terminal progress for a supervised run (rich).

On a terminal: one live line (iteration / total, env steps per second, ETA,
return, health, newest finding) that findings, actions and milestones print
above. Anywhere else (CI, ``ray job submit`` logs, a pipe): one plain line per
iteration. Milestones (the first iteration past the return target, the best
return of the run) are printed once.
"""

from __future__ import annotations

import math
import time

from rich.console import Console
from rich.live import Live
from rich.text import Text

_COLORS = {"ok": "green", "info": "cyan", "warning": "yellow", "critical": "red"}


def eta_s(done_iters: int, total_iters: int | None, iter_s: float | None, steps: float | None = None,
          total_steps: int | None = None, sps: float | None = None, elapsed: float | None = None,
          time_budget: float | None = None) -> float | None:
    """Seconds left by whichever stop comes first (iterations, timesteps, wall time); None if none is known."""
    left = []
    if total_iters and iter_s:
        left.append(max(total_iters - done_iters, 0) * iter_s)
    if total_steps and sps and steps is not None:
        left.append(max(total_steps - steps, 0) / sps)
    if time_budget and elapsed is not None:
        left.append(max(time_budget - elapsed, 0.0))
    return min(left) if left else None


def fmt_eta(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "-"
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    def __init__(self, name: str, total: int | None, console: Console | None = None, target: float | None = None,
                 total_steps: int | None = None, time_budget: float | None = None):
        self.console = console or Console(highlight=False, soft_wrap=True)
        self.name, self.total, self.target = name, total, target
        self.total_steps, self.time_budget = total_steps, time_budget
        self.live: Live | None = None
        self.t0 = time.monotonic()
        self.iter_times: list[float] = []
        self.best: float | None = None
        self.best_iteration: int | None = None
        self.passed_target = False
        self.newest = "-"

    @property
    def interactive(self) -> bool:
        return self.console.is_terminal

    def start(self, run_dir: str, address: str) -> None:
        self.console.print(f"[bold]{self.name}[/bold]  run folder {run_dir}  ray {address}")
        self.t0 = time.monotonic()
        if self.interactive:
            self.live = Live(Text(f"iter    0{self._total()}  starting"), console=self.console,
                             refresh_per_second=4, transient=True)
            self.live.start()

    def _total(self) -> str:
        return f"/{self.total}" if self.total else ""

    def iteration(self, it: int, metrics: dict, sup: dict | None) -> None:
        ret = metrics.get("episode_return_mean")
        dt = metrics.get("time_this_iter_s")
        if isinstance(dt, float) and dt > 0:
            self.iter_times.append(dt)
        recent = self.iter_times[-5:]
        iter_s = sum(recent) / len(recent) if recent else None
        steps_this = metrics.get("env_steps")
        sps = steps_this / iter_s if isinstance(steps_this, float) and iter_s else None
        eta = eta_s(it, self.total, iter_s, metrics.get("env_steps_lifetime"), self.total_steps, sps,
                    time.monotonic() - self.t0, self.time_budget)
        ret_s = f"{ret:8.1f}" if isinstance(ret, float) and math.isfinite(ret) else "       -"
        if sup and "health_score" in sup:
            sev = sup.get("worst_severity", "ok")
            health = f"[{_COLORS.get(sev, 'white')}]{sup['health_score']:.2f}[/]"
            found = ", ".join(sup.get("findings") or [])
            if found:
                self.newest = f"{found} @{it}"
            acts = ", ".join(sup.get("actions") or [])
        else:
            health, acts = "[dim]n/a[/]", ""
            found = ""
            if sup:
                self.newest = "supervisor unreachable"
        rate = f"{sps:7.0f} steps/s" if sps else "      - steps/s"
        line = (f"iter {it:4d}{self._total()}  {rate}  ETA {fmt_eta(eta):>7}  return {ret_s}  health {health}  "
                f"finding {self.newest if self.interactive else (found or '-')}")
        if acts:
            line += f"  [bold magenta]-> {acts}[/]"
        self._milestones(it, ret, sup)
        if self.live is None:
            self.console.print(line)
            return
        if found or acts:  # events stay on screen; the rest is the live line
            self.live.console.print(f"iter {it:4d}{self._total()}  [bold]{found or '-'}[/]"
                                    + (f"  [bold magenta]-> {acts}[/]" if acts else ""))
        self.live.update(Text.from_markup(line))

    def _milestones(self, it: int, ret, sup: dict | None) -> None:
        if not (isinstance(ret, float) and math.isfinite(ret)):
            return
        if self.target is not None and not self.passed_target and ret >= self.target:
            self.passed_target = True
            self._event(f"[bold green]milestone[/]: return {ret:.1f} passed the target {self.target:g} "
                        f"at iteration {it}")
        best = (sup or {}).get("best")
        if best and (self.best is None or best["value"] > self.best):
            first = self.best is None
            self.best, self.best_iteration = best["value"], it
            if first:  # printed once; later bests update the live line and the closing summary
                self._event(f"[bold green]milestone[/]: first best checkpoint, {best['metric']} "
                            f"{best['value']:.1f} at iteration {it}")

    def _event(self, text: str) -> None:
        (self.live.console if self.live else self.console).print(text)

    def done(self, status: str, iterations: int, seconds: float, ret) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
        ret_s = f"{ret:.1f}" if isinstance(ret, float) else "-"
        best = f"; best {self.best:.1f} at iteration {self.best_iteration}" if self.best is not None else ""
        self.console.print(f"[bold]{status}[/bold] after {iterations} iterations in {seconds:.1f} s; "
                           f"final return {ret_s}{best}")
