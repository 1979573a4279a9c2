"""The driver side of a supervised sweep: ``SupervisorTuneCallback``, a ``tune.Callback``."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Mapping

import ray
from ray.tune import Callback

from supervisor.metrics import normalize_result

from actors import compat
from actors.bootstrap import RunInfo, open_run
from actors.tune.stopper import RETURN_METRIC, _nested
from actors.tune.trainable import SEARCH_KEY

log = logging.getLogger(__name__)


class SupervisorTuneCallback(Callback):
    """Driver-side Tune callback: the run's lifecycle in the supervisor, and terminal progress.

    - ``setup``: starts (or finds) the supervisor actor and opens the run, so
      ``RUN_DIR/supervisor.db`` exists before the first trial reports (the
      trials reopen it themselves if they come first);
    - ``on_trial_result``: notes trials the supervisor asked to stop; prints a line;
    - ``on_trial_recover``: Tune restarted a trial (from its latest checkpoint);
      a restart the supervisor asked for makes a completed trial ``recovered``;
    - ``on_trial_complete`` / ``on_trial_error``: ``finish_trial`` with
      ``stopped`` (the supervisor stopped it), ``recovered``, ``completed`` or
      ``errored``;
    - ``on_experiment_end``: closes the run.

    It never holds up Tune's controller: the calls made while trials run are
    sent without waiting, and their answers (a trial's final status) are
    collected at the next controller step (``on_step_begin``). Only at the
    experiment's end does it wait, a bounded time, for what is still out.
    """

    COLLECT_AT_END_S = 30.0

    def __init__(self, run: RunInfo, console=None, quiet: bool = False):
        self.run = run
        self.run_id, self.run_info = run.run_id, run.actor_args()
        self.quiet = quiet
        self.console = console
        self.search_keys = list(run.search_keys)
        self.status: dict[str, str] = {}  # trial_id -> final status
        self.stop_asked: set[str] = set()
        self.restarts: dict[str, int] = {}
        self.supervisor_restarts: dict[str, int] = {}
        self.last: dict[str, dict] = {}  # trial_id -> last result summary
        self.labels: dict[str, str] = {}
        self.configs: dict[str, dict] = {}  # trial_id -> sampled values
        self.steps_consumed: dict[str, int] = {}  # env steps of every reported iteration, restarts included
        self.iterations_run: dict[str, int] = {}
        self.started_at: dict[str, float] = {}  # wall clock of a trial's first start, and of its end
        self.ended_at: dict[str, float] = {}
        self._sup = None
        self._pid: int | None = None  # the supervisor actor's process when the run was opened
        self._unsure: set[str] = set()  # trials whose closing record may not have reached the store
        self._inflight: dict = {}  # ObjectRef -> (method, then): calls sent, answers not collected yet
        self.started = time.time()
        # supervise sweep (a sweep file) writes event files; your own Tune script has Tune's loggers
        self.tensorboard = run.settings.tensorboard and run.spec is not None
        self._tb = None
        self._live = None  # on a terminal: one live line per running trial plus totals
        self.rows: dict[str, dict] = {}
        self.close_at_end = True  # False: the driver runs several experiments and closes the run itself

    def __getstate__(self):  # Tune pickles its callbacks with the experiment (tuner.pkl)
        state = dict(self.__dict__)
        state.update(_sup=None, console=None, _tb=None, _live=None, _inflight={})
        return state

    # -- plumbing
    def _actor(self):
        if self._sup is None:
            from actors.supervisor_actor import get_or_create_supervisor

            self._sup = get_or_create_supervisor()
        return self._sup

    def _fire(self, method: str, *args, then=None, **kwargs) -> None:
        """Call the supervisor without waiting; ``then(answer)`` runs when a later hook collects the answer
        (``then(None)`` when the call failed)."""
        try:
            ref = getattr(self._actor(), method).remote(*args, **kwargs)
        except Exception as e:  # the supervisor never takes the sweep down
            log.warning("supervisor call %s failed: %s: %s", method, e.__class__.__name__, e)
            self._sup = None
            if then is not None:
                then(None)
            return
        self._inflight[ref] = (method, then)

    def _collect(self, timeout: float = 0.0) -> None:
        """Take the answers that have arrived, waiting at most ``timeout`` seconds for the others."""
        if not self._inflight:
            return
        refs = list(self._inflight)
        try:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
        except Exception as e:
            log.warning("could not collect the supervisor's answers: %s", e)
            return
        for ref in ready:
            method, then = self._inflight.pop(ref)
            try:
                out = ray.get(ref, timeout=0)
            except Exception as e:
                log.warning("supervisor call %s failed: %s: %s", method, e.__class__.__name__, e)
                self._sup = None
                out = None
            if then is not None:
                then(out)

    def _call(self, method: str, *args, timeout: float = 30.0, retries: int = 0, **kwargs):
        """Call and wait (only where the controller has nothing left to run: the experiment's end)."""
        for attempt in range(retries + 1):
            try:
                return ray.get(getattr(self._actor(), method).remote(*args, **kwargs), timeout=timeout)
            except Exception as e:  # the supervisor never takes the sweep down
                log.warning("supervisor call %s failed: %s: %s", method, e.__class__.__name__, e)
                self._sup = None
                if attempt < retries:
                    time.sleep(1.0)  # Ray is restarting it
        return None

    def _print(self, text: str) -> None:
        if self.quiet:
            return
        if self.console is None:
            from rich.console import Console

            self.console = Console(highlight=False, soft_wrap=True)
        (self._live.console if self._live is not None else self.console).print(text)

    def _table(self):
        from rich.table import Table

        t = Table(box=None, pad_edge=False, show_edge=False)
        for col in ("trial", "iter", "return", "health", "newest finding"):
            t.add_column(col)
        for tid, r in self.rows.items():
            if tid in self.status:
                continue  # finished: its closing line was printed
            t.add_row(tid, str(r["iteration"]), r["return"], r["health"], r["finding"])
        t.caption = self.totals()
        return t

    def totals(self) -> str:
        done: dict[str, int] = {}
        for s in self.status.values():
            done[s] = done.get(s, 0) + 1
        steps = sum(self.steps_consumed.values())
        wall = max(time.time() - self.started, 1e-9)
        running = len([t for t in self.rows if t not in self.status])
        return (f"{running} running, " + ", ".join(f"{n} {s}" for s, n in sorted(done.items()))
                + (", " if done else "") + f"{steps} env steps, {steps / wall:.0f} steps/s, {wall:.0f} s")

    def _tb_log(self):
        if self._tb is None:
            from supervisor.tensorboard import TensorBoardLog

            self._tb = TensorBoardLog(self.run.run_dir, storage=self.run.store)
        return self._tb

    def open(self) -> None:
        """Open the run and wait for it (``setup`` sends the same without waiting)."""
        self._opened(open_run(self.run, self._actor()))

    def _opened(self, out) -> None:
        self._pid = out.get("pid") if isinstance(out, dict) else None

    def _reassert(self) -> None:
        """If the supervisor actor restarted during the sweep, a closing record may be missing: the
        restarted actor did not know the run or the trial yet (so ``finish_trial`` wrote nothing), or a
        trial's last replayed reports brought it back as running after it was closed. Trial actors
        have all stopped (and flushed) by now: write every trial's final status again."""
        ping = self._call("ping", retries=3)
        if ping is None or (ping.get("pid") == self._pid and not self._unsure):
            return
        for tid, status in sorted(self.status.items()):
            # register_trial reopens the run and reloads the trial from the store if the actor lost them
            if self._call("register_trial", tid, self.run_id, None, None, self.run_info, retries=3) is None:
                continue
            final = self._call("finish_trial", self.run_id, tid, status, retries=3)
            if final is not None:
                self.status[tid] = final
                self._unsure.discard(tid)

    # -- Tune hooks
    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info) -> None:
        from actors import run_registry

        # what the trials read, before any starts (a put into the GCS's store: it never waits on the actor)
        run_registry.publish(self.run_id, self.run.callback_info())
        self._fire("open_run", self.run_id, **self.run_info, alert_env=self.run.alert_env() or None,
                   then=self._opened)
        self._print(f"[bold]{self.run_info['name']}[/bold]  sweep of {total_num_samples or '?'} trials  "
                    f"run folder {self.run_info['run_dir']}")
        if not self.quiet and self.console is not None and self.console.is_terminal:
            from rich.live import Live

            self._live = Live(self._table(), console=self.console, refresh_per_second=2, transient=True)
            self._live.start()

    def on_step_begin(self, iteration, trials, **info) -> None:
        self._collect()

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        tid = trial.trial_id
        self.started_at.setdefault(tid, time.time())
        if tid not in self.labels:
            cfg = trial.config or {}
            search = cfg.get(SEARCH_KEY) or {}
            vals = {**{k: cfg.get(k) for k in self.search_keys if k in cfg}, **search}
            self.configs[tid] = vals
            self.labels[tid] = " ".join(f"{k}={_short(v)}" for k, v in vals.items())
            self._print(f"[cyan]{tid}[/cyan] started  {self.labels[tid]}")

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        tid = trial.trial_id
        sup = result.get("supervisor") if isinstance(result, Mapping) else None
        ret = _nested(result, RETURN_METRIC)
        self.last[tid] = {"iteration": result.get("training_iteration"), "return": ret,
                          "env_steps": result.get("num_env_steps_sampled_lifetime")}
        steps = _nested(result, "env_runners/num_env_steps_sampled")
        if isinstance(steps, (int, float)) and math.isfinite(steps):
            self.steps_consumed[tid] = self.steps_consumed.get(tid, 0) + int(steps)
        self.iterations_run[tid] = self.iterations_run.get(tid, 0) + 1
        if isinstance(sup, Mapping):
            if sup.get("stop"):
                self.stop_asked.add(tid)
            self.last[tid]["health"] = sup.get("health_score")
        ret_s = f"{ret:8.1f}" if isinstance(ret, (int, float)) and math.isfinite(ret) else "       -"
        line = f"[cyan]{tid}[/cyan] iter {result.get('training_iteration', 0):4d}  return {ret_s}"
        if isinstance(sup, Mapping) and "health_score" in sup:
            sev = sup.get("worst_severity", "ok")
            color = {"ok": "green", "info": "cyan", "warning": "yellow", "critical": "red"}.get(sev, "white")
            line += f"  health [{color}]{sup['health_score']:.2f}[/]  finding {', '.join(sup.get('findings') or []) or '-'}"
            if sup.get("actions"):
                line += f"  [bold magenta]-> {', '.join(sup['actions'])}[/]"
        elif isinstance(sup, Mapping):
            line += "  health [dim]n/a[/] (supervisor unreachable)"
        if self.tensorboard:
            self._tb_log().write(tid, int(result.get("training_iteration") or 0),
                                 normalize_result(result, tid, eval_interval=(trial.config or {}).get("evaluation_interval"))
                                 ["metrics"], sup if isinstance(sup, Mapping) else None)
        row = self.rows.setdefault(tid, {"finding": "-"})
        row.update({"iteration": result.get("training_iteration", 0), "return": ret_s.strip()})
        if isinstance(sup, Mapping) and "health_score" in sup:
            row["health"] = f"{sup['health_score']:.2f}"
            if sup.get("findings"):
                row["finding"] = f"{', '.join(sup['findings'])} @{result.get('training_iteration', 0)}"
        else:
            row["health"] = "n/a"
        if self._live is not None:
            if isinstance(sup, Mapping) and (sup.get("findings") or sup.get("actions")):
                self._print(line)  # events stay on screen; the rest is the live table
            self._live.update(self._table())
        else:
            self._print(line)

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        tid = trial.trial_id
        self.restarts[tid] = self.restarts.get(tid, 0) + 1
        asked = _restart_requested(trial)
        told = self._crashed(trial)
        if asked or (told and told.get("action") == "restart"):
            self.supervisor_restarts[tid] = self.supervisor_restarts.get(tid, 0) + 1
        ckpt = getattr(trial, "checkpoint", None)
        where = f"from checkpoint {Path(ckpt.path).name}" if ckpt is not None else "from scratch (no checkpoint yet)"
        why = ("the supervisor asked for a restart" if asked and not told else
               f"the supervisor restarts it: {told['reason']}" if told and told.get("reason") else "the trial failed")
        self._print(f"[cyan]{tid}[/cyan] [bold yellow]restarting {where}[/]: {_esc(why)}")

    def _crashed(self, trial) -> dict | None:
        """The supervisor's account of a trial's failure: what the trial told it before its process ended (a
        crash, or a hang the supervisor ended itself), or, when it could not, the crash told now from Tune's
        error text. Printed, and written to TensorBoard. None for the supervisor's own restarts."""
        from supervisor.crash import report_from_text

        tail = compat.latest_failure(trial)
        if not tail or ("RestartRequested" in tail and "after a crash" not in tail):
            return None
        report = report_from_text(tail)
        report["source"] = "driver"
        told = self._call("trial_crashed", self.run_id, trial.trial_id, report, self.run_info)
        f = (told or {}).get("finding") or {}
        if f.get("message"):
            self._print(f"[cyan]{trial.trial_id}[/cyan] [bold red]{f['detector']}[/]: {_esc(f['message'])}")
            if self.tensorboard:
                self._tb_log().event(trial.trial_id, int(f.get("iteration") or 0), f, told.get("actions"))
        return told

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        tid = trial.trial_id
        if tid in self.stop_asked:
            status = "stopped"
        elif self.supervisor_restarts.get(tid):
            status = "recovered"
        else:
            status = "completed"
        self._finish(tid, status)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._crashed(trial)
        self._finish(trial.trial_id, "errored")
        if getattr(trial, "error_file", None):
            self._print(f"[cyan]{trial.trial_id}[/cyan] error: {trial.error_file}")

    def _finish(self, tid: str, status: str) -> None:
        """Close the trial in the supervisor; its final status (``recovered`` when a repair helped) is
        taken when the answer is collected. Until then, and if the call fails, it counts as unsure."""
        self.ended_at[tid] = time.time()
        self.status[tid] = status
        self._unsure.add(tid)

        def done(final, tid=tid):
            if final is not None:
                self.status[tid] = final
                self._unsure.discard(tid)
            self._finished(tid)
        self._fire("finish_trial", self.run_id, tid, status, then=done)

    def _finished(self, tid: str) -> None:
        final = self.status[tid]
        last = self.last.get(tid, {})
        ret = last.get("return")
        ret_s = f"{ret:.1f}" if isinstance(ret, (int, float)) and math.isfinite(ret) else "-"
        color = {"completed": "green", "recovered": "green", "stopped": "yellow", "errored": "red"}.get(final, "white")
        self._print(f"[cyan]{tid}[/cyan] [bold {color}]{final}[/] after {last.get('iteration') or 0} iterations; "
                    f"final return {ret_s}")
        if self._live is not None:
            self._live.update(self._table())
        else:
            self._print(f"totals: {self.totals()}")

    def on_experiment_end(self, trials, **info) -> None:
        for t in trials:
            if t.trial_id not in self.status:  # interrupted, or never started
                self._finish(t.trial_id, "errored")
        self._collect(timeout=self.COLLECT_AT_END_S)  # the controller is done: the last answers are waited for
        if self._live is not None:
            self._live.stop()
            self._live = None
        if self._tb is not None:
            self._tb.close()
        self._reassert()
        if self.close_at_end:
            self.close_run()

    def close_run(self) -> None:
        # open_run is idempotent; after an actor restart it is what lets close_run find the run
        self._call("open_run", self.run_id, retries=3, **self.run_info)
        self._call("close_run", self.run_id, self.overall_status(), retries=3)
        # the store's last snapshot in the run storage: what `supervise report URI` reads once the head is gone
        out = self._call("wait_snapshot", self.run_id, 60.0, timeout=90.0)
        if out is not None and not out.get("ok"):
            log.warning("the store's last snapshot did not reach %s: %s", out.get("uri"), out.get("error"))

    def overall_status(self) -> str:
        vals = list(self.status.values())
        if not vals:
            return "errored"
        if all(v == "stopped" for v in vals):
            return "stopped"
        if any(v == "errored" for v in vals):
            return "errored"
        if any(v == "recovered" for v in vals):
            return "recovered"
        return "completed"

    def exit_code(self) -> int:
        return {"completed": 0, "recovered": 0, "stopped": 3}.get(self.overall_status(), 1)


def _restart_requested(trial) -> bool:
    """Was the trial's latest failure the supervisor's RestartRequested?"""
    return compat.trial_failed_with(trial, "RestartRequested")


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(str(text))


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    s = str(v)
    return s if len(s) <= 40 else s[:37] + "..."
