"""TensorBoard event files -> one record per training iteration, for ``supervise scan``.

Read with TensorBoard's own reader (``tensorboard.backend.event_processing``;
no TensorFlow needed), scalars only: ``simple_value`` summaries (PyTorch's and
tensorboardX's ``SummaryWriter``, TF1) and scalar tensors (TF2's
``tf.summary.scalar``), both through TensorBoard's read-time compatibility layer.

A *run* is one folder's event files, as ``tensorboard --logdir`` shows it;
its files are read in name order (the names start with their creation time)
and merged: a value logged again at a step already seen (a run resumed from a
checkpoint writes a new file) replaces the earlier one and is counted. A file
that ends in a torn or damaged record is read up to it, with the bytes left
unread said in a warning.

Iterations. Loggers write a step's scalars one call at a time, and not all
at the same steps: CleanRL writes ``charts/episodic_return`` at the global
step each episode ends and its ``losses/*`` once per update. So the
iterations are the steps of the non-episode tags (every update), and the
per-episode tags (returns and lengths logged at steps the update tags do not
have) are gathered into the update that follows them: mean, min and max of
the returns, mean length, episode count. A tag logged only at the steps
episodes end (CleanRL's DQN writes ``charts/epsilon`` with each episode) goes
with them, its newest value into the update that follows: on the clock it
would make each episode an iteration, a single episode's return a point of
evidence. A run that logs only episode statistics is judged at their steps;
CleanRL's per-episode values there (``episodic`` in the tag) that share a
step are the episodes of parallel envs, counted together. Tune's ``TBXLoggerCallback`` prefix
``ray/tune/`` is dropped, so Tune's event files read as its ``result.json``.
"""

from __future__ import annotations

import math
import os
import re
from bisect import bisect_left
from pathlib import Path
from typing import Iterable

from supervisor.errors import InputError
from supervisor.keymaps import lookup

#: TensorBoard's event file names: ``events.out.tfevents.<time>.<host>[.<pid>.<n>][suffix]``.
EVENT_FILE = re.compile(r"^events\.out\.tfevents\.")
_TUNE_PREFIX = "ray/tune/"
_EPISODE_NAMES = ("episode_return_mean", "episode_len_mean")


def is_event_file(path: Path) -> bool:
    return bool(EVENT_FILE.match(path.name))


def _tensorboard():
    try:
        from tensorboard import data_compat, dataclass_compat
        from tensorboard.backend.event_processing import event_file_loader
        from tensorboard.compat.proto import event_pb2
        from tensorboard.util import tensor_util
    except ImportError as e:  # pragma: no cover - tensorboard is a dependency; a broken install says so
        raise InputError("tensorboard", None, f"cannot read event files: the tensorboard package does not import "
                                              f"({e}); pip install 'tensorboard>=2.14'") from None
    return event_file_loader, event_pb2, tensor_util, data_compat, dataclass_compat


def read_scalars(files: Iterable[Path]) -> tuple[dict[str, dict[int, list[float]]], list[str], list[str]]:
    """Event files of one run -> ({tag: {step: [values in file order]}}, warnings, notes); InputError for a
    file that is not an event file."""
    efl, event_pb2, tensor_util, data_compat, dataclass_compat = _tensorboard()
    series: dict[str, dict[int, list[float]]] = {}
    warnings: list[str] = []
    other = 0
    initial: dict = {}  # dataclass_compat's per-tag first metadata (per run, as TensorBoard keeps it)
    plugins: dict[str, str] = {}  # tag -> plugin; summaries after a tag's first carry no metadata
    for path in sorted(files, key=lambda p: p.name):
        used = 0
        try:
            size = os.path.getsize(path)
            for blob in efl.RawEventFileLoader(str(path)).Load():
                used += len(blob) + 16  # length (8), its CRC (4), the record, its CRC (4)
                event = event_pb2.Event.FromString(blob)
                if not event.HasField("summary"):
                    continue
                for ev in dataclass_compat.migrate_event(data_compat.migrate_event(event), initial):
                    for v in ev.summary.value:
                        if v.metadata.plugin_data.plugin_name:
                            plugins[v.tag] = v.metadata.plugin_data.plugin_name
                        arr = tensor_util.make_ndarray(v.tensor) if v.HasField("tensor") else None
                        if plugins.get(v.tag) != "scalars" or arr is None or arr.size != 1:
                            other += 1
                            continue
                        tag = v.tag[len(_TUNE_PREFIX):] if v.tag.startswith(_TUNE_PREFIX) else v.tag
                        series.setdefault(tag, {}).setdefault(int(ev.step), []).append(float(arr.reshape(())))
        except OSError as e:
            raise InputError(str(path), None, f"cannot read: {e.strerror or e}") from None
        except Exception as e:  # a record with a good CRC that is no Event, a bad tensor: not TensorBoard's
            raise InputError(str(path), None, f"not a TensorBoard event file ({type(e).__name__}: {e})") from None
        if used < size:
            warnings.append(f"{path.name}: the last {size - used} of {size} bytes are a torn or damaged record: "
                            f"read up to it")
    notes = [f"{other} non-scalar value(s) (histograms, images, text) not read"] if other else []
    return series, warnings, notes


def _is_episode_tag(tag: str) -> bool:
    return _lookup_name(tag) in _EPISODE_NAMES


def to_records(series: dict[str, dict[int, list[float]]]) -> tuple[list[dict], list[str], list[str]]:
    """{tag: {step: [values]}} -> (one flat record per iteration, sorted by step, with its ``step``;
    warnings; notes)."""
    warnings: list[str] = []
    notes: list[str] = []
    ends = {s for tag, steps in series.items() if _is_episode_tag(tag) for s in steps}
    # a tag logged only where episodes end (CleanRL's DQN writes charts/epsilon with each episode) is the
    # episodes' context, not an update: on the clock it would make every episode an iteration of its own.
    # With no other tag (a logger that writes everything at once, SB3's or Tune's, beside its running mean of
    # the return) the run is judged at its own steps, as one that logs only episode statistics
    with_episodes = {tag for tag, steps in series.items()
                     if ends and not _is_episode_tag(tag) and set(steps) <= ends}
    clock = sorted({s for tag, steps in series.items()
                    if not _is_episode_tag(tag) and tag not in with_episodes for s in steps})
    own = not clock
    if clock:
        episodic = {tag: steps for tag, steps in series.items()
                    if (_is_episode_tag(tag) or tag in with_episodes) and not set(steps) <= set(clock)}
    else:  # episode statistics only: judged at their own steps, a step's episodes counted there
        with_episodes = set()
        clock = sorted({s for steps in series.values() for s in steps})
        episodic = {tag: steps for tag, steps in series.items() if _is_episode_tag(tag) and _per_episode(tag)}
    records = {s: {"step": s} for s in clock}
    again = 0
    for tag, steps in series.items():
        if tag in episodic:
            continue
        for s, vals in steps.items():
            records[s][tag] = vals[-1]
            again += len(vals) - 1
    if again:
        warnings.append(f"{again} value(s) logged again at a step already seen (a resumed run?): "
                        f"the later value wins")
    late = 0
    for tag, steps in episodic.items():
        bins: dict[int, list[float]] = {}
        for s, vals in sorted(steps.items()):
            i = bisect_left(clock, s)  # the first iteration at or after the episode's end
            if i == len(clock):
                late += len(vals)
                continue
            bins.setdefault(clock[i], []).extend(vals)
        is_return = _lookup_name(tag) == "episode_return_mean"
        for s, vals in bins.items():
            rec = records[s]
            if tag in with_episodes:  # the newest value, as the update saw it
                rec[tag] = vals[-1]
                continue
            finite = [v for v in vals if not math.isnan(v)] or vals
            rec[tag] = math.fsum(finite) / len(finite)
            if is_return:
                rec.setdefault("episode_return_min", min(finite))
                rec.setdefault("episode_return_max", max(finite))
                rec.setdefault("num_episodes", len(vals))
    if episodic:
        names = ", ".join(sorted(t for t in episodic if t not in with_episodes))
        notes.append(f"per-episode values ({names}) " + ("judged at their own steps, the episodes that end at a "
                                                         "step together (mean, min, max, count)" if own else
                                                         "gathered into the iteration that follows each episode "
                                                         "(mean, min, max, count)"))
    if with_episodes & set(episodic):
        notes.append(f"values logged only where episodes end ({', '.join(sorted(with_episodes & set(episodic)))}) "
                     f"taken into the iteration that follows (the newest)")
    if late:
        notes.append(f"{late} per-episode value(s) after the last iteration: not judged")
    return [records[s] for s in clock], warnings, notes


def _per_episode(tag: str) -> bool:
    """Values of one episode each, by CleanRL's name for them (``charts/episodic_return``): several at one
    step are the episodes of parallel envs that ended together. Any other tag's values at a step already
    seen are a resumed run's, the later one wins."""
    return "episodic" in tag.lower()


def _lookup_name(tag: str) -> str | None:
    hit = lookup(tag)
    return hit[0] if hit else None


def own_run(series: dict) -> bool:
    """Written by this project's supervisor (``RUN_DIR/tensorboard/<trial>``): ``metrics/<name>`` + health."""
    return "supervisor/health_score" in series
