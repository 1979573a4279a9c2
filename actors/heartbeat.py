"""Where a trial is inside its iteration, and a cheap heartbeat that tells the supervisor.

``Phases`` wraps, on one live algorithm, the calls an iteration is made of: ``step`` (an iteration; it
starts by sampling), ``learner_group.update`` (learning), ``env_runner_group.sync_weights`` (weight sync)
and ``evaluate`` (evaluation). Entering one only sets two attributes: the cost is a Python call.

``Heartbeat`` is a daemon thread that, every ``interval_s``, sends the phase and the iteration to the
supervisor actor as a fire-and-forget call (``trial_heartbeat``), with this process's actor handle when
it runs in one (a Tune trial): the supervisor times the iteration on its own clock and, when it finds the
trial hung, ends that actor so Tune restarts the trial. The answer to the previous beat is read when it is
ready (never waited for); for a trial trained in the driver process (``supervise run``), where there is no
actor to end, an answer ``{"restart": reason}`` is handed to ``on_told`` (``supervise run`` interrupts its
own training with it).
"""

from __future__ import annotations

import logging
import pickle
import signal
import threading
import time
from typing import Callable

import ray

log = logging.getLogger(__name__)

SAMPLING, LEARNING, WEIGHT_SYNC, EVALUATION, BETWEEN = "sampling", "learning", "weight sync", "evaluation", "between"


class Phases:
    """The phase of the iteration in progress (``phase``, ``iteration``, ``since``: ``time.monotonic``)."""

    def __init__(self):
        self.phase, self.iteration, self.since = BETWEEN, 0, time.monotonic()
        self.failed_in: str | None = None  # the phase an exception left the iteration from
        self.on_iteration: Callable[[], None] | None = None  # told when an iteration starts (the heartbeat)

    def enter(self, phase: str, iteration: int | None = None) -> None:
        self.phase, self.since = phase, time.monotonic()
        if iteration is not None:
            self.iteration, self.failed_in = iteration, None
            if self.on_iteration is not None:
                self.on_iteration()

    def attach(self, algorithm, step_wrapper: Callable | None = None) -> None:
        """Wrap the algorithm's calls (on this instance only). ``step_wrapper(step)`` may wrap ``step``
        further (the crash handler)."""
        step = algorithm.step

        def iteration_step():
            self.enter(SAMPLING, int(getattr(algorithm, "iteration", 0) or 0) + 1)
            try:
                return step()
            except BaseException:
                self.failed_in = self.failed_in or self.phase
                raise
            finally:
                self.enter(BETWEEN)

        algorithm.step = step_wrapper(iteration_step) if step_wrapper else iteration_step
        self._wrap(getattr(algorithm, "learner_group", None), "update", LEARNING)
        self._wrap(getattr(algorithm, "env_runner_group", None), "sync_weights", WEIGHT_SYNC)
        self._wrap(algorithm, "evaluate", EVALUATION)

    def _wrap(self, obj, name: str, phase: str) -> None:
        fn = getattr(obj, name, None) if obj is not None else None
        if fn is None or getattr(fn, "_supervisor_phase", False):
            return

        def wrapped(*args, **kwargs):
            before = self.phase
            self.enter(phase)
            try:
                return fn(*args, **kwargs)
            except BaseException:
                self.failed_in = self.failed_in or phase
                raise
            finally:
                self.enter(before if before != BETWEEN else SAMPLING)

        wrapped._supervisor_phase = True
        try:
            setattr(obj, name, wrapped)
        except Exception:  # a read-only attribute: the phase stays coarser
            pass


class Heartbeat:
    """Args:
        run_id, trial_id: who beats.
        phases: what it tells.
        interval_s: seconds between beats.
        node_id: the node the trial runs on.
        on_told: called (from this thread) with the supervisor's answer when it names an action.
    """

    def __init__(self, run_id: str, trial_id: str, phases: Phases, interval_s: float = 5.0,
                 node_id: str | None = None, on_told: Callable[[dict], None] | None = None):
        self.run_id, self.trial_id, self.phases = run_id, trial_id, phases
        self.interval_s, self.node_id, self.on_told = float(interval_s), node_id, on_told
        self.handle = _own_actor()
        self._stop = threading.Event()
        self._wake = threading.Event()  # an iteration started: beat now (the supervisor starts its clock on it)
        phases.on_iteration = self._wake.set
        self._thread: threading.Thread | None = None
        self.beats = 0

    def start(self) -> "Heartbeat":
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=f"supervisor-heartbeat-{self.trial_id}",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _loop(self) -> None:
        from actors.supervisor_actor import find_supervisor

        actor, ref = None, None
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                if ref is not None:
                    ready, _ = ray.wait([ref], timeout=0)
                    if not ready:
                        continue  # the supervisor is busy: never pile beats up
                    told, ref = ray.get(ref), None
                    if told and self.on_told is not None:
                        self.on_told(told)
                actor = actor or find_supervisor()
                if actor is None:
                    continue
                beat = {"iteration": self.phases.iteration, "phase": self.phases.phase, "node_id": self.node_id,
                        "phase_s": round(time.monotonic() - self.phases.since, 3)}
                ref = actor.trial_heartbeat.remote(self.run_id, self.trial_id, beat, self.handle)
                self.beats += 1
            except Exception as e:  # the supervisor restarting, Ray shutting down: try again later
                log.debug("heartbeat failed: %s", e)
                actor, ref = None, None


def _own_actor() -> bytes | None:
    """This process's actor handle, pickled. Sent as bytes, not as a handle: Ray would deserialize a handle
    on the supervisor's event loop, and the first handle of a trainable class loads that class there (RLlib
    and torch imported: seconds in which no report is answered). The supervisor unpickles it only to end
    a hung trial, off its event loop and engine thread."""
    try:
        return pickle.dumps(ray.get_runtime_context().current_actor)
    except Exception:  # the driver: no actor to end from outside
        return None


# ---------------------------------------------------------------------------------- supervise run's interrupt
_INTERRUPT: dict = {"installed": False, "told": None, "phases": None, "error": None}


def install_interrupt(phases_of: Callable[[], Phases | None],
                      error: Callable[[str, bool], BaseException]) -> Callable[[], None]:
    """In a driver that trains in its main thread (``supervise run``): let a hung-trial decision interrupt
    that training (``SIGUSR1`` to the main thread, whose handler raises ``TrialHung`` inside the stuck call:
    a sleep, a ``ray.get``). ``phases_of()`` gives the live trial's phases: outside an iteration the
    signal is ignored (the iteration ended meanwhile). ``error(reason, stop)`` makes the exception raised.
    Returns the function that uninstalls it."""
    if not hasattr(signal, "pthread_kill") or threading.current_thread() is not threading.main_thread():
        return lambda: None
    prev = signal.signal(signal.SIGUSR1, _handler)
    _INTERRUPT.update(installed=True, phases=phases_of, error=error)

    def uninstall():
        _INTERRUPT.update(installed=False, phases=None, told=None, error=None)
        signal.signal(signal.SIGUSR1, prev)

    return uninstall


def interrupt_main(told: dict) -> bool:
    """Deliver a hung-trial decision to the main thread (see :func:`install_interrupt`)."""
    if not _INTERRUPT["installed"] or not ({"restart", "stop"} & set(told)):
        log.warning("the supervisor found this trial hung (%s) but cannot interrupt it from here", told)
        return False
    _INTERRUPT["told"] = dict(told)
    signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)
    return True


def _handler(signum, frame) -> None:
    told, _INTERRUPT["told"] = _INTERRUPT["told"], None
    phases = _INTERRUPT["phases"]() if _INTERRUPT["phases"] else None
    if not told or (phases is not None and phases.phase == BETWEEN) or _INTERRUPT["error"] is None:
        return
    raise _INTERRUPT["error"](str(told.get("stop") or told.get("restart")), "stop" in told)
