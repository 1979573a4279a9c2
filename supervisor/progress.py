"""Terminal progress for a supervised run (rich): one line per iteration."""

from __future__ import annotations

from rich.console import Console

_COLORS = {"ok": "green", "info": "cyan", "warning": "yellow", "critical": "red"}


class Progress:
    def __init__(self, name: str, total: int | None, console: Console | None = None):
        self.console = console or Console(highlight=False, soft_wrap=True)
        self.name, self.total = name, total

    def start(self, run_dir: str, address: str) -> None:
        self.console.print(f"[bold]{self.name}[/bold]  run folder {run_dir}  ray {address}")

    def iteration(self, it: int, metrics: dict, sup: dict | None) -> None:
        ret = metrics.get("episode_return_mean")
        ret_s = f"{ret:8.1f}" if isinstance(ret, float) else "       -"
        total = f"/{self.total}" if self.total else ""
        if sup and "health_score" in sup:
            sev = sup.get("worst_severity", "ok")
            health = f"[{_COLORS.get(sev, 'white')}]{sup['health_score']:.2f}[/]"
            newest = ", ".join(sup.get("findings") or []) or "-"
            acts = ", ".join(sup.get("actions") or [])
        else:
            health, newest, acts = "[dim]n/a[/]", "supervisor unreachable" if sup else "-", ""
        line = f"iter {it:4d}{total}  return {ret_s}  health {health}  finding {newest}"
        if acts:
            line += f"  [bold magenta]-> {acts}[/]"
        self.console.print(line)

    def done(self, status: str, iterations: int, seconds: float, ret) -> None:
        ret_s = f"{ret:.1f}" if isinstance(ret, float) else "-"
        self.console.print(f"[bold]{status}[/bold] after {iterations} iterations in {seconds:.1f} s; "
                           f"final return {ret_s}")
