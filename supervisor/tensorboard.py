"""TensorBoard event files of a supervised run: every reported metric, the health score, findings as text.

``RUN_DIR/tensorboard/<trial_id>/``, so ``tensorboard --logdir RUN_DIR`` shows
each trial as its own run. Written by the driver (``supervise run``'s loop,
the sweep's Tune callback) from what each iteration reports, with tensorboardX
(no TensorFlow, no torch needed). ``supervisor.tensorboard: false`` turns it off.

With a run storage other than the run folder (``storage:``), the event files are copied to
``STORAGE/tensorboard/`` every ``sync_s`` seconds (from a thread: the training loop never waits on
the network) and once more when the log closes, so ``tensorboard --logdir s3://...`` sees them.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)


class TensorBoardLog:
    """Args:
        run_dir: the run folder (the event files are written under ``run_dir/tensorboard``).
        storage: the run's ``supervisor.storage.Storage``; copied there when it is not the run folder.
        sync_s: at most one copy to the storage this often.
    """

    def __init__(self, run_dir: str | Path, storage=None, sync_s: float = 30.0):
        self.root = Path(run_dir) / "tensorboard"
        self._writers: dict = {}
        self.broken = False
        self.storage = storage if storage is not None and not storage.is_run_dir(run_dir) else None
        self.sync_s = sync_s
        self._synced = time.monotonic()
        self._sync_thread: threading.Thread | None = None

    def _writer(self, trial_id: str):
        w = self._writers.get(trial_id)
        if w is None:
            from tensorboardX import SummaryWriter

            # it warns of every NaN or inf it is given; here they are the data (a diverged loss), written on purpose
            logging.getLogger("tensorboardX.x2num").setLevel(logging.ERROR)

            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in trial_id)
            w = self._writers[trial_id] = SummaryWriter(str(self.root / safe), flush_secs=5)
        return w

    def write(self, trial_id: str, iteration: int, metrics: dict, sup: dict | None = None) -> None:
        """One iteration; never raises (a full disk costs the event files, not the run)."""
        if self.broken:
            return
        try:
            w = self._writer(trial_id)
            for k, v in metrics.items():
                if isinstance(v, (int, float)):  # NaN and inf too: a non-finite loss is what a reader must see
                    # a multi-agent trial's modules and agents under their own sections: modules/<id>/<name>
                    w.add_scalar(k if k.startswith(("modules/", "agents/")) else f"metrics/{k}", v, iteration)
            if sup and isinstance(sup.get("health_score"), (int, float)):
                w.add_scalar("supervisor/health_score", sup["health_score"], iteration)
                for m, score in (sup.get("module_health") or {}).items():
                    if isinstance(score, (int, float)):
                        w.add_scalar(f"supervisor/health_score/{m}", score, iteration)
                for text in sup.get("finding_text") or sup.get("findings") or []:
                    w.add_text("supervisor/findings", str(text), iteration)
                for a in sup.get("actions") or []:
                    w.add_text("supervisor/actions", str(a), iteration)
        except Exception:
            log.exception("TensorBoard event files could not be written; the run goes on without them")
            self.broken = True
            return
        if self.storage is not None and time.monotonic() - self._synced >= self.sync_s and not self._syncing():
            self._synced = time.monotonic()
            self._sync_thread = threading.Thread(target=self.sync, name="tensorboard-sync", daemon=True)
            self._sync_thread.start()

    def _syncing(self) -> bool:
        return self._sync_thread is not None and self._sync_thread.is_alive()

    def sync(self) -> bool:
        """Copy the event files to the run storage; False (logged) when it cannot be reached."""
        if self.storage is None or not self.root.is_dir():
            return True
        try:
            self.storage.upload(self.root, "tensorboard")
            return True
        except Exception as e:
            log.warning("TensorBoard files not copied to %s: %s", self.storage, e)
            return False

    def event(self, trial_id: str, iteration: int, finding: dict | None, actions: list | None = None) -> None:
        """A finding between iterations (a crash, a hang) and what was decided about it, as text."""
        if self.broken or not finding:
            return
        try:
            w = self._writer(trial_id)
            w.add_text("supervisor/findings", f"{finding.get('detector')} ({finding.get('severity')}): "
                                              f"{finding.get('message')}", iteration)
            for a in actions or []:
                w.add_text("supervisor/actions", f"{a.get('action')}: {a.get('reason')}", iteration)
            w.flush()
        except Exception:
            log.exception("TensorBoard event files could not be written; the run goes on without them")
            self.broken = True

    def close(self) -> None:
        for w in self._writers.values():
            try:
                w.close()
            except Exception:
                pass
        self._writers.clear()
        if self.storage is not None:
            if self._sync_thread is not None:
                self._sync_thread.join(60)
            self.sync()
