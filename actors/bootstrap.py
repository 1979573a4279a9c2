"""What ``supervise run`` and ``supervise sweep`` do before training: one ``RunInfo``, one start.

``new_run`` turns an experiment (or sweep) file into a ``RunInfo``: the run
folder, the supervisor settings and the profile they name. ``start`` creates
the folder with the file that started the run and attaches to Ray (or starts
an embedded one); ``open_run`` opens the run in the supervisor actor. The
single run and the Tune sweep both go through these, so the run folder, the
store's run row and what every trial carries to the supervisor are built in
one place.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import ray
import yaml

from supervisor.config import Experiment, SupervisorConfig
from supervisor.errors import InputError

SPEC_FILES = {"run": "experiment.yaml", "sweep": "sweep.yaml"}  # the file a run folder keeps of its spec


@dataclass(frozen=True)
class RunInfo:
    """One supervised run (a single trial or a sweep), as the driver knows it."""

    run_id: str
    run_dir: Path
    name: str
    kind: str  # "run" or "sweep"
    settings: SupervisorConfig
    spec: dict | None = None  # the experiment/sweep file as stored with the run; None for your own Tune script
    profile: dict | None = None  # the metric bands ``supervisor.profile`` names
    trial_config: dict = field(default_factory=dict)  # the config every trial starts from
    search_keys: tuple[str, ...] = ()  # param_space keys Tune samples (your own Tune script)

    def actor_args(self) -> dict:
        """``SupervisorActor.open_run``'s keyword arguments; trials carry them to reopen the run after an
        actor restart."""
        return {"run_dir": str(self.run_dir), "name": self.name, "kind": self.kind,
                "settings": self.settings.model_dump(mode="json"), "spec": self.spec, "profile": self.profile}

    def callback_info(self, **extra) -> dict:
        """The supervisor's section of ``learner_config_dict``: what ``SupervisorCallback`` reads in every
        trial process (a plain dict: it travels inside RLlib's config)."""
        s = self.settings
        return {"run_id": self.run_id, "run_info": self.actor_args(), "timeout_s": s.report_timeout_s,
                "retry_after_s": s.retry_after_s, "keep_checkpoints": s.keep_checkpoints,
                "trial_config": dict(self.trial_config), "search_keys": list(self.search_keys), **extra}


def default_run_dir(name: str) -> Path:
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def new_run(exp: Experiment, source: str, out: str | None, kind: str) -> RunInfo:
    """An experiment or sweep file -> its ``RunInfo``; raises ``InputError`` (a bad profile) before anything
    is created."""
    run_dir = (Path(out) if out else default_run_dir(exp.name)).resolve()
    return RunInfo(run_id=run_dir.name, run_dir=run_dir, name=exp.name, kind=kind, settings=exp.supervisor,
                   spec=exp.model_dump(mode="json"), profile=load_profile(exp, source),
                   trial_config=dict(exp.config))


def start(run: RunInfo, address: str | None = None, num_cpus: int | None = None) -> str:
    """Create the run folder (with the file that started the run), then attach to Ray; returns where."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    if run.spec is not None:
        (run.run_dir / SPEC_FILES[run.kind]).write_text(yaml.safe_dump(run.spec, sort_keys=False))
    return init_ray(address, num_cpus)


def init_ray(address: str | None, num_cpus: int | None = None) -> str:
    """Attach to ``address``/RAY_ADDRESS, or start an embedded local Ray with ``num_cpus`` (default: all)."""
    address = address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():
        return "attached"
    if address:
        ray.init(address=address, log_to_driver=False)
        return address
    # address="local": always a fresh embedded Ray, never a cluster someone else started here
    ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 2, include_dashboard=False,
             log_to_driver=False, logging_level=logging.WARNING)
    return "local"


def open_run(run: RunInfo, sup=None) -> dict:
    """Open the run in the supervisor actor (idempotent), so ``RUN_DIR/supervisor.db`` exists before the first
    report; returns the actor's answer (its pid)."""
    if sup is None:
        from actors.supervisor_actor import get_or_create_supervisor

        sup = get_or_create_supervisor()
    return ray.get(sup.open_run.remote(run.run_id, **run.actor_args()), timeout=60)


def load_profile(exp: Experiment, source: str) -> dict | None:
    if not exp.supervisor.profile:
        return None
    from supervisor.calibrate import load_profile as read_profile

    p = Path(exp.supervisor.profile)
    if not p.is_absolute():
        p = Path(source).parent / p
    if not p.is_file():
        raise InputError(source, "supervisor.profile", f"no such file: {p}")
    return read_profile(p)  # one line naming the profile file and what is wrong, before Ray starts
