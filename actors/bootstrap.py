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

import fcntl
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import ray
import yaml

from supervisor.alerts import env_names, mask_settings
from supervisor.config import Experiment, SupervisorConfig
from supervisor.errors import InputError
from supervisor.storage import Storage, StorageError
from supervisor.identity import run_id_for  # noqa: F401 (one run identity: the CLI, the API, rllib.supervise)

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
    storage: str | None = None  # the run's storage (supervisor.storage): its folder or URI; None: the run folder

    @property
    def store(self) -> Storage:
        """Where checkpoints, TensorBoard files and the store's snapshots go (the run folder by default)."""
        return Storage(self.storage or self.run_dir)

    def actor_args(self, masked: bool = False) -> dict:
        """``SupervisorActor.open_run``'s keyword arguments; trials carry them (``masked``: alert URLs masked,
        since RLlib's config ends up in Tune's logs) to reopen the run after an actor restart."""
        settings = self.settings.model_dump(mode="json")
        return {"run_dir": str(self.run_dir), "name": self.name, "kind": self.kind,
                "settings": mask_settings(settings) if masked else settings, "spec": self.spec,
                "profile": self.profile, "storage": self.storage}

    def alert_env(self) -> dict:
        """The values of the ``${VAR}`` names in alert URLs, for a supervisor on another machine."""
        names = {n for a in self.settings.alerts for n in env_names(a.url)}
        return {n: os.environ[n] for n in names if n in os.environ}

    def callback_info(self, **extra) -> dict:
        """What ``SupervisorCallback`` reads in every trial process (``actors.run_registry``; JSON)."""
        s = self.settings
        return {"run_id": self.run_id, "run_info": self.actor_args(masked=True), "timeout_s": s.report_timeout_s,
                "retry_after_s": s.retry_after_s, "keep_checkpoints": s.keep_checkpoints,
                "trial_config": dict(self.trial_config), "search_keys": list(self.search_keys), **extra}


def default_run_dir(name: str) -> Path:
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def new_run(exp: Experiment, source: str, out: str | None, kind: str) -> RunInfo:
    """An experiment or sweep file -> its ``RunInfo``; raises ``InputError`` (a bad profile, a storage this
    machine cannot write) before anything is created."""
    run_dir = (Path(out) if out else default_run_dir(exp.name)).resolve()
    if (run_dir / LOCK_FILE).exists():  # in use: say so now, before RLlib is even imported
        lock_run_dir(run_dir)
        unlock_run_dir(run_dir)
    run = RunInfo(run_id=run_id_for(run_dir), run_dir=run_dir, name=exp.name, kind=kind, settings=exp.supervisor,
                  spec=_masked_spec(exp.model_dump(mode="json")), profile=load_profile(exp, source),
                  trial_config=dict(exp.config), storage=Storage.for_run(exp.storage, run_dir).root)
    if not run.store.is_run_dir(run_dir):
        try:  # every node writes there: say now, in one line, before RLlib is even imported, if this one cannot
            run.store.probe()
        except StorageError as e:
            raise InputError("storage", None, str(e)) from None
    return run


def _masked_spec(spec: dict) -> dict:
    """The spec as stored in the run folder and the store: alert URLs masked (they may hold tokens)."""
    if spec.get("supervisor"):
        spec["supervisor"] = mask_settings(spec["supervisor"])
    return spec


LOCK_FILE = ".supervise.lock"
_locks: dict[Path, int] = {}  # run folder -> the open lock file (held until this process exits)


def lock_run_dir(run_dir: Path) -> None:
    """Take the run folder for this process (an exclusive ``flock``, released when the process ends):
    two runs writing one folder would silently drop each other's reports. ``InputError`` if taken."""
    run_dir = Path(run_dir).resolve()
    if run_dir in _locks:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise InputError(str(run_dir), None, f"cannot use this run folder: {e.strerror or e}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise InputError(str(run_dir), None, f"another run is writing to this folder (pid {holder}); "
                                             "give another --out") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _locks[run_dir] = fd


def unlock_run_dir(run_dir: Path) -> None:
    fd = _locks.pop(Path(run_dir).resolve(), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor releases the flock


def start(run: RunInfo, address: str | None = None, num_cpus: int | None = None) -> str:
    """Take the run folder (exclusive), write the file that started the run, then attach to Ray;
    returns where."""
    lock_run_dir(run.run_dir)
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


def open_run(run: RunInfo, sup=None, **callback_extra) -> dict:
    """Open the run in the supervisor actor (idempotent), so ``RUN_DIR/supervisor.db`` exists before the first
    report, and publish what its trials read (``callback_info(**callback_extra)``, ``actors.run_registry``);
    returns the actor's answer (its pid)."""
    from actors import run_registry

    if sup is None:
        from actors.supervisor_actor import get_or_create_supervisor

        sup = get_or_create_supervisor()
    run_registry.publish(run.run_id, run.callback_info(**callback_extra))
    return ray.get(sup.open_run.remote(run.run_id, **run.actor_args(), alert_env=run.alert_env() or None),
                   timeout=60)


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
