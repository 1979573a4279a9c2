"""``supervise scan``: offline forensics of training logs nobody supervised.

Reads what trainers already write, maps it onto the normalized metric names
of :mod:`supervisor.metrics` (through :mod:`supervisor.keymaps`), and runs
the very detectors the live supervisor runs (judge each iteration against
the history before it, then append it). Findings are reported at the log's
own step numbers.

Inputs (:func:`load`):

* a Ray Tune experiment folder: every trial folder below it with a
  ``result.json`` (preferred) or a ``progress.csv``; a folder with neither is
  scanned file by file (``*.jsonl``, ``*monitor.csv``, ``trainer_state.json``:
  for Hugging Face ``checkpoint-N`` folders, the latest one's);
* a ``result.json``: one RLlib result dict per line (new API stack via
  :func:`supervisor.metrics.normalize_result`; old API stack ``info/learner/...``
  and ``episode_reward_*`` keys through the alias table);
* a ``progress.csv`` or any CSV whose columns the alias table knows: Tune's
  flattened columns, Stable-Baselines3 (``rollout/ep_rew_mean``,
  ``train/approx_kl``, ``time/total_timesteps``), OpenAI baselines
  (``eprewmean``, ``approxkl``, ``nupdates``, ``total_timesteps``);
* a ``monitor.csv`` (SB3 / baselines ``Monitor``): per-episode rows, grouped
  10 episodes to an iteration (:mod:`supervisor.logformats`);
* a JSONL file of one metrics object per line (TRL, CleanRL, SB3 JSON
  output...), RLDK's event stream (one ``{"step", "name", "value"}`` per
  line, pivoted per step), a JSON array of metric objects, or a Hugging Face
  ``trainer_state.json`` (its ``log_history``).

Step: the first of :data:`~supervisor.keymaps.STEP_KEYS` the log has (up to
case and spacing: ``time/total timesteps``), else the line index. Consecutive rows with the same step are merged into one
iteration (a Trainer's train and eval entries at one step), a step that goes
backwards is judged in file order (several runs appended to one file), and
either is reported once per log as a warning. NaN episode returns (no
episode finished yet: every RLlib log starts so) are dropped, never judged.
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from supervisor.errors import InputError
from supervisor.eventfiles import is_event_file, own_run, read_scalars, to_records
from supervisor.jsonsafe import json_safe
from supervisor.keymaps import (ALIASES, PREFIXES, STEP_KEYS, flatten, is_rllib, lookup, map_keys, number,
                                rank_ignored, step_column, unflatten)
from supervisor.logformats import (is_event_stream, is_monitor, join_eval_dumps, pivot_events, read_monitor,
                                   source_kind, trainer_state_history)

__all__ = ["ALIASES", "PREFIXES", "STEP_KEYS", "Log", "Scanned", "analyze", "flatten", "load", "load_file",
           "load_tensorboard", "lookup", "map_record", "number", "read", "scan", "unflatten"]

_MAX_IGNORED = 20

map_record = map_keys  # the name this module used before the maps moved to supervisor.keymaps


# --------------------------------------------------------------------------------------- loading


@dataclass
class Log:
    """One trial's metric stream as read from a log."""

    trial_id: str
    source: str
    format: str
    step_key: str | None = None
    steps: list = field(default_factory=list)
    metrics: list[dict[str, float]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    error: str | None = None
    source_kind: str = "generic"
    ignored_more: int = 0    # ignored keys beyond those listed
    ignored_config: int = 0  # config/* and other hyperparameter keys (counted, never listed)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rows: int = 0     # records read from the file (lines, rows, steps of a pivoted log)
    dropped: int = 0  # of those, not judged: unreadable, or holding no value a detector reads

    def names(self) -> list[str]:
        seen: dict[str, None] = {}
        for m in self.metrics:
            seen.update(dict.fromkeys(m))
        return list(seen)


def _step_value(x: Any):
    v = number(x)
    if v is None or not math.isfinite(v):
        return None
    return int(v) if v == int(v) else v


def _build(trial_id: str, source: str, fmt: str, records: Iterable[tuple[dict, dict | None]],
           kind: str | None = None) -> Log:
    """Records (flattened, nested-or-None) -> a Log: map keys, pick the step, merge same-step lines."""
    records = list(records)
    log = Log(trial_id, source, fmt)
    if not records:
        log.error = "no records (empty log)"
        return log
    flats = [flat for flat, _ in records]
    log.source_kind = kind or source_kind(fmt, flats)
    n_records, joined = len(records), 0
    if log.source_kind == "stable-baselines3":
        records, joined = join_eval_dumps(records)
        flats = [flat for flat, _ in records]
    key = step_column({k for flat in flats for k in flat})
    log.step_key = key
    ignored: dict[str, None] = {}
    mapped: set[str] = set()
    dropped: list[str] = []
    no_episode = empty = 0
    merged = backwards = stepless = 0
    first_back = None
    prev = None
    for i, (flat, nested) in enumerate(records):
        step = _step_value(flat.get(key)) if key else None
        carried = step is None and key is not None and prev is not None
        if step is None:
            step = prev if carried else i
        n_dropped = len(dropped)
        m, ign = map_keys(flat, nested, dropped)
        no_episode += len(dropped) > n_dropped
        ignored.update(dict.fromkeys(ign))
        mapped.update(k for k in flat if k not in ign)
        if log.steps and step == log.steps[-1]:
            if carried:
                stepless += 1
            else:
                merged += 1
            log.metrics[-1].update(m)  # one iteration logged over several lines
        elif not m:
            empty += len(dropped) == n_dropped  # (a row of NaN returns only is counted as such, above)
        else:
            if log.steps and isinstance(step, (int, float)) and step < log.steps[-1]:
                backwards += 1
                first_back = first_back or (i + 1, log.steps[-1], step)
            log.steps.append(step)
            log.metrics.append(m)
        prev = step
    # keys that never mapped anywhere (a key mapped in one line is not "ignored")
    log.ignored, log.ignored_more, log.ignored_config = rank_ignored(
        (k for k in ignored if k not in STEP_KEYS and k != key and k not in mapped), _MAX_IGNORED)
    where = f"step '{key}'" if key else "the line index"
    if merged:
        rows = "1 row repeats" if merged == 1 else f"{merged} rows repeat"
        log.warnings.append(f"{rows} the {where} value of the row before: merged into one iteration each "
                            f"(later values win)")
    if stepless:  # e.g. SB3 dumps without a finished episode, in a log stepped by its episode count
        rows = "1 row has" if stepless == 1 else f"{stepless} rows have"
        log.warnings.append(f"{rows} no {where} value: merged into the iteration before each (later values win)")
    if backwards:
        row, before, after = first_back
        log.warnings.append(f"{where} goes backwards {backwards} time(s), first at row {row} ({before} -> {after}): "
                            f"several runs appended to one log? judged in file order as one run")
    if no_episode:
        rows = "1 row has" if no_episode == 1 else f"{no_episode} rows have"
        log.notes.append(f"{rows} NaN episode returns (no episode finished yet): no data, not judged")
    if joined:
        pairs = "1 EvalCallback dump was" if joined == 1 else f"{joined} EvalCallback dumps were"
        log.notes.append(f"{pairs} joined with the rollout row after it (the update's train/* and the rollout's "
                         f"rollout/* of one iteration, split by a mid-rollout dump)")
    log.rows = n_records
    if empty:
        log.dropped += empty
        msg = (f"{empty} of {n_records} rows hold no value a detector reads (only unknown keys, text or empty "
               f"cells): not judged")
        (log.warnings if 2 * empty > n_records and log.metrics else log.notes).append(msg)
    if not log.metrics:
        seen = sorted({k for flat in flats for k in flat})
        log.error = f"no known metric keys (saw: {', '.join(seen[:8])}{', ...' if len(seen) > 8 else ''})"
    return log


MAX_LINE_BYTES = 16 << 20  # a metrics line is KBs (Tune's hist_stats: MBs); past this it is not a log
MAX_DIGITS = 300  # an integer literal with more digits is no metric (and 1e308 is float's limit anyway)


def _read_text(path: Path) -> str:
    """The file as text, one capped line at a time: a 1 GB line costs 16 MB, not gigabytes."""
    chunks, n = [], 0
    try:
        with open(path, "rb") as fh:
            while True:
                line = fh.readline(MAX_LINE_BYTES + 1)
                if not line:
                    break
                n += 1
                if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                    raise InputError(str(path), f"line {n}", f"longer than {MAX_LINE_BYTES >> 20} MiB: "
                                                             "not a metrics log")
                chunks.append(line)
    except OSError as e:
        raise InputError(str(path), None, f"cannot read: {e.strerror or e}") from None
    data = b"".join(chunks)
    nul = data.find(b"\0")
    if nul >= 0:
        raise InputError(str(path), None, f"not a text file (NUL byte at offset {nul}: binary or damaged)")
    try:
        return data.decode("utf-8-sig")  # a BOM (Windows editors, Excel's CSV) is not part of the first key
    except UnicodeDecodeError as e:
        raise InputError(str(path), None, f"not a text file (not UTF-8 at byte {e.start}; "
                                          "unrecognized format)") from None


def _int(s: str) -> int:
    if len(s.lstrip("-")) > MAX_DIGITS:
        raise ValueError(f"a number too large ({len(s)} digits)")
    return int(s)


def _float(s: str) -> float:
    x = float(s)
    if math.isinf(x):  # a finite literal beyond float's range, not an Infinity the log wrote
        raise ValueError(f"a number too large for a float ({s[:20]}...)")
    return x


def _loads(path: Path, text: str, where: str | None):
    """json.loads with the log's problems as one InputError: nesting, giant numbers, syntax."""
    try:
        return json.loads(text, parse_int=_int, parse_float=_float)
    except RecursionError:
        raise InputError(str(path), where, "nested too deeply (not a metrics log)") from None
    except json.JSONDecodeError:
        raise
    except ValueError as e:  # _int/_float, or Python's own digit limit
        msg = str(e)
        raise InputError(str(path), where, msg if msg.startswith("a number") else f"a number too large ({msg})") \
            from None


def _json_lines(path: Path, text: str) -> list[dict]:
    lines = text.splitlines()
    last = max((i for i, ln in enumerate(lines) if ln.strip()), default=-1)
    out = []
    for i, ln in enumerate(lines):
        if not ln.strip():
            continue
        try:
            obj = _loads(path, ln, f"line {i + 1}")
        except json.JSONDecodeError as e:
            if i == last and out:
                break  # a truncated last line: the trainer died mid-write
            raise InputError(str(path), f"line {i + 1}", f"not valid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise InputError(str(path), f"line {i + 1}", f"expected a JSON object per line, got {type(obj).__name__}")
        out.append(obj)
    return out


def _json_records(path: Path, text: str) -> tuple[list[dict], bool]:
    """JSON text -> (metric objects, whether it was a Hugging Face trainer_state.json)."""
    s = text.lstrip()
    if s.startswith("["):
        try:
            data = _loads(path, s, None)
        except json.JSONDecodeError as e:
            raise InputError(str(path), None, f"not valid JSON ({e.msg} at line {e.lineno})") from None
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise InputError(str(path), None, "a JSON array of metric objects must hold only objects")
        return data, False
    if s.startswith("{") and "\n" in s.strip():
        hist = trainer_state_history(s)
        if hist is not None:
            return hist, True
        try:  # one pretty-printed document
            data = _loads(path, s, None)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict):
            return [data], False
    return _json_lines(path, text), False


def _csv_records(path: Path, text: str) -> tuple[list[dict], int]:
    """Rows as dicts, and how many rows were dropped for having another field count than the header."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # Tune's hist_stats columns are long
    reader = csv.reader(text.splitlines(), strict=True)
    rows, ragged = [], 0
    try:
        header = next(reader, None)
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                ragged += 1
                continue
            for v in row:
                if len(v) > MAX_DIGITS and v.lstrip("-+").isdigit():
                    raise InputError(str(path), f"line {reader.line_num}", f"a number too large ({len(v)} digits)")
            rows.append({k: v for k, v in zip(header, row) if v != ""})
    except csv.Error as e:
        msg = str(e)
        if "unexpected end of data" in msg:
            msg = "unterminated quote (a field opens a \" that never closes)"
        raise InputError(str(path), f"line {reader.line_num}", f"malformed CSV: {msg}") from None
    if not header:
        raise InputError(str(path), None, "empty CSV (no header)")
    return rows, ragged


TB_CSV_HEADER = ["wall time", "step", "value"]  # TensorBoard's "download CSV" of one tag of one run
_TB_CSV_NAME = re.compile(r"^run[-_](?P<run>.*?)[-_]tag[-_](?P<tag>.+)$")  # run-<run>-tag-<tag, / as _>.csv
_LONG_NAME = ("tag", "name", "metric", "key")


def long_columns(header: list[str]) -> tuple[str, str, str] | None:
    """A long-format CSV's (step, name, value) columns (``step,tag,value``: one metric a row), else None."""
    cols = set(header)
    name = next((c for c in _LONG_NAME if c in cols), None)
    step = next((c for c in STEP_KEYS if c in cols), None) or ("wall time" if "wall time" in cols else None)
    if name and step and "value" in cols and len(cols) <= 5:
        return step, name, "value"
    return None


def _long_csv(path: Path, rows: list[dict], cols: tuple[str, str, str], trial_id: str | None) -> Log:
    """``step,tag,value`` rows pivoted into one record per step (as RLDK's event stream)."""
    step, name, value = cols
    low = [{k.strip().lower(): v for k, v in r.items()} for r in rows]
    events, bad = [], 0
    for r in low:
        if r.get(name) is None or r.get(value) is None or number(r.get(step)) is None:
            bad += 1
            continue
        events.append({"step": r[step], "name": r[name], "value": r[value]})
    recs, dup, _ = pivot_events(path, events) if events else ([], 0, 0)
    log = _build(trial_id or path.stem, str(path), "long-csv", ((r, None) for r in recs))
    log.step_key = step
    if bad:
        log.dropped += bad
        log.warnings.append(f"{bad} of {len(rows)} rows dropped: no {name}, {value} or numeric {step}")
    if dup:
        log.warnings.append(f"{dup} rows repeat a {name} already logged at their step: the last value wins")
    return log


def tensorboard_csv_tag(path: Path) -> tuple[str, str]:
    """(run, tag) of a TensorBoard CSV download from its file name; the tag's ``/`` were written as ``_``."""
    m = _TB_CSV_NAME.match(path.stem)
    run, tag = (m.group("run"), m.group("tag")) if m else ("", path.stem)
    if tag.startswith("ray_tune_"):
        tag = tag[len("ray_tune_"):]
    restored = [p + tag[len(p):] for p in PREFIXES if tag.startswith(p[:-1] + "_")]  # losses_approx_kl
    parts = tag.split("_")
    for root in ("learners", "info_learner"):  # learners_<module id>_<stat>: where the module id ends is unknown
        if tag.startswith(root + "_"):
            n = root.count("_") + 1
            restored += [f"{root.replace('_', '/')}/{'_'.join(parts[n:i])}/{'_'.join(parts[i:])}"
                         for i in range(n + 1, len(parts))]
    return run, next((c for c in [tag, *restored] if lookup(c)), restored[0] if restored else tag)


def load_tensorboard_csv(paths: list[Path], trial_id: str | None = None) -> Log:
    """TensorBoard CSV downloads (``Wall time,Step,Value``, one tag a file) of one run -> a Log."""
    series: dict[str, dict[int, list[float]]] = {}
    bad = 0
    for path in paths:
        rows, _ = _csv_records(path, _read_text(path))
        _, tag = tensorboard_csv_tag(path)
        for r in rows:
            r = {k.strip().lower(): v for k, v in r.items()}
            s, v = number(r.get("step")), number(r.get("value"))
            if s is None or v is None or not math.isfinite(s):
                bad += 1
                continue
            series.setdefault(tag, {}).setdefault(int(s), []).append(v)
    first = paths[0]
    run = tensorboard_csv_tag(first)[0]
    tid = trial_id or run or first.parent.name
    source = str(first) if len(paths) == 1 else str(first.parent)
    records, warnings, notes = to_records(series)
    if not records:
        return Log(tid, source, "tensorboard-csv", error="no rows with a numeric Step and Value")
    log = _build(tid, source, "tensorboard-csv", ((r, None) for r in records))
    log.step_key = "TensorBoard step"
    log.warnings[:0] = warnings
    log.notes[:0] = notes + ([f"{len(paths)} CSV downloads, one tag each"] if len(paths) > 1 else [])
    if bad:
        log.dropped += bad
        log.warnings.append(f"{bad} rows dropped: no numeric Step or Value")
    return log


def _kind(path: Path, text: str) -> str:
    if is_monitor(text):
        return "monitor"
    name = path.name.lower()
    if name.endswith(".csv"):
        return "csv"
    s = text.lstrip()
    if s.startswith("{") or s.startswith("["):
        return "json"
    first = s.splitlines()[0] if s else ""
    if "," in first and any(lookup(c) or c.strip() in STEP_KEYS for c in first.split(",")):
        return "csv"
    return "unknown"


def load_file(path: Path, trial_id: str | None = None) -> Log:
    """One log file (any format :func:`read` knows) -> a Log (``error`` set when it holds nothing we can judge)."""
    if is_event_file(Path(path)):
        return load_tensorboard(path, trial_id)
    try:
        return _load_file(path, trial_id)
    except RecursionError:  # a JSON reader of some format below met a deeply nested document
        raise InputError(str(path), None, "nested too deeply (not a metrics log)") from None


def _load_file(path: Path, trial_id: str | None) -> Log:
    text = _read_text(path)
    if not text.strip():
        log = Log(trial_id or path.stem, str(path), "empty")
        log.error = "empty file"
        return log
    kind = _kind(path, text)
    if kind == "monitor":
        recs = read_monitor(path, text)
        if not recs:
            log = Log(trial_id or path.name, str(path), "monitor.csv")
            log.error = "no episodes in this monitor.csv (no finished episode yet)"
            return log
        return _build(trial_id or path.name, str(path), "monitor.csv", ((r, None) for r in recs))
    if kind == "csv":
        rows, ragged = _csv_records(path, text)
        header = [c.strip().lower() for c in next(csv.reader(text.splitlines()[:1]), [])]
        if header == TB_CSV_HEADER:
            log = load_tensorboard_csv([path], trial_id)
        elif long_columns(header):
            log = _long_csv(path, rows, long_columns(header), trial_id)
        else:
            tune = path.name == "progress.csv"
            tid = trial_id or (path.parent.name if tune else path.stem)
            log = _build(tid, str(path), "progress.csv" if tune else "csv", ((r, None) for r in rows))
        if ragged:
            log.warnings.append(f"{ragged} row(s) dropped: their number of fields differs from the header's")
            log.dropped += ragged
        return log
    if kind == "json":
        objs, trainer_state = _json_records(path, text)
        if trainer_state:
            tid = trial_id or path.parent.name
            return _build(tid, str(path), "trainer_state.json", ((flatten(o), o) for o in objs))
        if is_event_stream(objs):
            recs, dup, runs = pivot_events(path, objs)
            log = _build(trial_id or path.stem, str(path), "rldk-events", ((r, None) for r in recs))
            if dup:
                log.warnings.append(f"{dup} events repeat a name already logged at their step: the last value wins")
            if runs > 1:
                log.warnings.append(f"{runs} run_ids in one event stream: judged as one run")
            return log
        flats = [flatten(o) for o in objs]
        rllib = any(is_rllib(f) for f in flats[:5])
        fmt = "result.json" if path.name == "result.json" or rllib else "jsonl"
        tid = trial_id or (path.parent.name if path.name == "result.json" else
                           _wandb_run(path) if path.name == "wandb-history.jsonl" else path.stem)
        return _build(tid, str(path), fmt, zip(flats, objs))
    raise InputError(str(path), None, "unrecognized format: expected a Tune folder, result.json, progress.csv, "
                                      "monitor.csv, trainer_state.json or a JSONL file of metric objects")


_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")

# Files a folder scan does not read, by name, and why (every other unread file is listed with its own reason).
_NOT_LOGS = {
    "params.json": "Tune's trial parameters (no metrics)",
    "params.pkl": "Tune's trial parameters (no metrics)",
    "wandb-summary.json": "W&B run summary: last values only (the history is wandb-history.jsonl)",
    "wandb-metadata.json": "W&B run metadata (no metrics)",
    "wandb-events.jsonl": "W&B system metrics (CPU, GPU, memory), not training metrics",
    "supervisor.db": "the store of a supervised run: 'supervise report' reads it",
    "supervisor.db-wal": "the store of a supervised run: 'supervise report' reads it",
    "supervisor.db-shm": "the store of a supervised run: 'supervise report' reads it",
}
_CHECKPOINT_MARKS = ("rllib_checkpoint.json", ".is_checkpoint", ".tune_metadata")
_CHECKPOINT_DIR = re.compile(r"^checkpoints?(?:_\d+)?$")  # Tune's checkpoint_000010, a checkpoints/ folder
_MODEL_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".safetensors", ".bin", ".npz", ".npy", ".h5",
                   ".onnx", ".zip", ".msgpack")
_LOG_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv")


def _why_not(path: Path) -> str:
    """Why a folder scan does not read ``path`` (a file no rule below picked)."""
    name = path.name
    if name in _NOT_LOGS:
        return _NOT_LOGS[name]
    if name.startswith("."):
        return "hidden file"
    if name.endswith(".wandb"):
        return "W&B's binary run log (read its files/wandb-history.jsonl where the run has one)"
    if name.lower().endswith(_MODEL_SUFFIXES):
        return "model or checkpoint data"
    return f"not a log format scan reads ({path.suffix or 'no extension'})"


@dataclass
class Discovered:
    """What a folder holds: the logs to read (trial id, candidate files best first, and how to read them:
    "file", "events" or "tensorboard-csv") and the files not read."""

    groups: list[tuple[str, list[Path], str]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def _trial_id(root: Path, d: Path) -> str:
    return d.relative_to(root).as_posix() if d != root else root.name


def _discover(root: Path) -> Discovered:
    """Every file below ``root``: read as part of a log, or listed with the reason it is not."""
    out = Discovered()
    by_dir: dict[Path, list[Path]] = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts[:-1]):
            by_dir.setdefault(p.parent, []).append(p)
        elif p.is_file():
            out.skipped.append((p, "in a hidden folder"))
    # RLlib/Tune checkpoints (and this project's checkpoints/, best/): everything below is model state
    ckpts = {d for d, files in by_dir.items() if any(f.name in _CHECKPOINT_MARKS for f in files)}
    ckpts |= {d for d in by_dir for d in (d, *d.parents) if _CHECKPOINT_DIR.match(d.name) and root in d.parents}
    states: list[Path] = []
    for d, files in sorted(by_dir.items()):
        if d in ckpts or ckpts.intersection(d.parents):
            out.skipped += [(f, "model or checkpoint data") for f in files if f.name != "trainer_state.json"]
            states += [f for f in files if f.name == "trainer_state.json"]
            continue
        names = {f.name: f for f in files}
        tune = [names[n] for n in ("result.json", "progress.csv") if n in names]
        events = [f for f in files if is_event_file(f)]
        if tune:  # a Tune trial (or a logger's progress.csv): its event files hold the same values
            out.groups.append((_trial_id(root, d), tune, "file"))
            out.skipped += [(f, f"the same values as {tune[0].name} beside it") for f in events]
        elif events:  # a TensorBoard run: this folder's event files, merged
            out.groups.append((_trial_id(root, d), events, "events"))
        downloads: dict[str, list[Path]] = {}  # TensorBoard CSV downloads, one tag a file: per run
        for f in files:
            if f.suffix.lower() == ".csv" and f not in tune and _first_line(f) == TB_CSV_HEADER:
                downloads.setdefault(tensorboard_csv_tag(f)[0], []).append(f)
        for run, fs in downloads.items():
            tid = _trial_id(root, d) + (f"/{run}" if run and (len(downloads) > 1 or d == root) else "")
            out.groups.append((tid, fs, "tensorboard-csv"))
        taken = {f for fs in downloads.values() for f in fs}
        for f in files:
            if f in tune or f in events or f in taken:
                continue
            name = f.name.lower()
            if f.name in _NOT_LOGS:
                out.skipped.append((f, _NOT_LOGS[f.name]))
            elif f.name == "trainer_state.json":
                states.append(f)
            elif name.endswith(_LOG_SUFFIXES):
                out.groups.append((_log_id(root, f), [f], "file"))
            else:
                out.skipped.append((f, _why_not(f)))
    latest = _latest_trainer_states(states)
    out.groups += [(_log_id(root, f), [f], "file") for f in latest]
    out.skipped += [(f, "an earlier checkpoint's copy of the history in the latest checkpoint's")
                    for f in states if f not in latest]
    out.groups.sort(key=lambda g: g[0])
    return out


def _first_line(path: Path) -> list[str]:
    try:
        with open(path, "rb") as fh:
            head = fh.readline(4096).decode("utf-8-sig", "replace")
    except OSError:
        return []
    return [c.strip().lower() for c in head.strip().split(",")]


def _log_id(root: Path, f: Path) -> str:
    """A single-file log's trial id: its path below the folder (a W&B run: the run's folder)."""
    if f.name == "wandb-history.jsonl":
        run = f.parent.parent if f.parent.name == "files" and f.parent != root else f.parent
        return _trial_id(root, run)
    return f.relative_to(root).as_posix()


def _wandb_run(path: Path) -> str:
    """A W&B run's name for its history file (``<run>/wandb-history.jsonl`` or ``<run>/files/...``)."""
    return (path.parent.parent if path.parent.name == "files" else path.parent).name


def _collapse(root: Path, skipped: list[tuple[Path, str]], read: set[Path]) -> list[dict]:
    """Skipped files for people and JSON: a folder whose every file was skipped for one reason is one entry."""
    reasons: dict[Path, str] = {p: r for p, r in skipped}
    dirs: dict[Path, set] = {}  # folder -> reasons of everything below it (None: something below was read)
    for p in list(reasons) + list(read):
        for d in p.parents:
            if d == root or root not in d.parents:
                break
            dirs.setdefault(d, set()).add(reasons.get(p))
    whole = {d for d, rs in dirs.items() if len(rs) == 1 and None not in rs}
    out, counted = [], {}
    for p, r in sorted(reasons.items()):
        top = next((d for d in reversed(p.parents) if d in whole), None)
        if top is None:
            out.append({"path": str(p), "reason": r})
        elif top not in counted:
            counted[top] = {"path": str(top) + "/", "reason": r, "files": 0}
            out.append(counted[top])
        if top is not None:
            counted[top]["files"] += 1
    return out


def _latest_trainer_states(paths: list[Path]) -> list[Path]:
    """Each checkpoint-N/trainer_state.json repeats the history before it: keep the latest per run."""
    best: dict[Path, tuple[int, Path]] = {}
    out = []
    for p in paths:
        m = _CHECKPOINT.match(p.parent.name)
        if m is None:
            out.append(p)
            continue
        n = int(m.group(1))
        if p.parent.parent not in best or n > best[p.parent.parent][0]:
            best[p.parent.parent] = (n, p)
    return sorted(out + [p for _, p in best.values()])


def load_tensorboard(path: str | Path, trial_id: str | None = None) -> Log:
    """TensorBoard event files -> a Log: one event file, or a run folder (the event files directly in it).

    See :mod:`supervisor.eventfiles` for how scalars become iterations.
    """
    p = Path(path)
    files = [p] if p.is_file() else sorted(f for f in p.iterdir() if f.is_file() and is_event_file(f))
    tid = trial_id or (p.parent.name if p.is_file() else p.name)
    series, warnings, notes = read_scalars(files)
    kind = None
    if own_run(series):  # this project's RUN_DIR/tensorboard/<trial>: metrics/<name>, and its own verdicts
        series = {t.removeprefix("metrics/"): v for t, v in series.items() if not t.startswith("supervisor/")}
        kind = "rl-supervisor"
    records, more_warnings, more_notes = to_records(series)
    if not records:
        log = Log(tid, str(p), "tensorboard", warnings=warnings, notes=notes)
        log.error = "no scalars in its event files"
        return log
    log = _build(tid, str(p), "tensorboard", ((r, None) for r in records), kind=kind)
    log.step_key = "TensorBoard step"
    log.warnings[:0] = warnings + more_warnings
    log.notes[:0] = notes + more_notes
    return log


@dataclass
class Scanned:
    """:func:`read`'s answer: the kind of input, a Log per trial (errors included), the files not read."""

    kind: str
    logs: list[Log]
    skipped: list[dict] = field(default_factory=list)


def read(path: str | Path) -> Scanned:
    """``path`` (a log file, a TensorBoard run folder, a folder of logs) -> :class:`Scanned`.

    A folder's every file is read as part of a log or listed in ``skipped``
    with the reason (a log that cannot be read: its error). InputError when
    nothing below ``path`` could be read at all.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(str(path), None, "no such file or directory")
    if p.is_dir():
        found = _discover(p)
        logs = []
        for tid, files, how in found.groups:
            log = None
            # result.json first; its progress.csv if it holds nothing. Event files and CSV downloads: one run.
            candidates = [[f] for f in files] if how == "file" else [files]
            for c in candidates:
                try:
                    if how == "events":
                        log = load_tensorboard(c[0].parent, tid)
                    elif how == "tensorboard-csv":
                        log = load_tensorboard_csv(c, tid)
                    else:
                        log = load_file(c[0], tid)
                except InputError as e:
                    log = Log(tid, str(c[0]), "error", error=e.problem if e.key is None else f"{e.key}: {e.problem}")
                if log.error is None:
                    break
            logs.append(log)
        bad = [(Path(lg.source), lg.error) for lg in logs if lg.error]
        read_files = {f for (tid, files, _), lg in zip(found.groups, logs) if not lg.error for f in files}
        skipped = _collapse(p, found.skipped + bad, read_files)
        if not logs or all(lg.error for lg in logs):
            if logs:
                first = logs[0]
                raise InputError(first.source, None, f"{first.error} (and so for every log below {path})"
                                 if len(logs) > 1 else first.error)
            hint = " (a supervised run folder: use 'supervise report')" if (p / "supervisor.db").exists() else ""
            raise InputError(str(path), None, "no log found below it: no result.json, progress.csv, TensorBoard "
                                              f"event file, CSV, JSONL or trainer_state.json{hint}")
        logs = [lg for lg in logs if not lg.error]
        tune = all(lg.format in ("result.json", "progress.csv") for lg in logs)
        return Scanned("tune" if tune else "folder", logs, skipped)
    if not p.is_file():
        raise InputError(str(path), None, "not a regular file or folder")
    log = load_tensorboard(p) if is_event_file(p) else load_file(p)
    if log.error:
        raise InputError(str(path), None, log.error)
    return Scanned(log.format, [log])


def load(path: str | Path) -> tuple[str, list[Log]]:
    """``path`` -> (kind, logs): kind is "tune" for a folder of Tune trials, "folder" for another folder,
    else the file's format (:func:`read` also says which files were not read)."""
    res = read(path)
    return res.kind, res.logs


# --------------------------------------------------------------------------------------- judging


def analyze(log: Log, overrides: Mapping | None = None, profile: Mapping | None = None,
            history: int | None = None) -> dict:
    """Run the live detectors over one log; return its findings (at the log's steps) and health."""
    from supervisor.config import SupervisorConfig
    from supervisor.detectors import DetectorSuite
    from supervisor.health import HealthScore
    from supervisor.history import History

    out = {"trial_id": log.trial_id, "source": log.source, "format": log.format, "step_key": log.step_key,
           "steps": len(log.steps), "first_step": log.steps[0] if log.steps else None,
           "last_step": log.steps[-1] if log.steps else None, "metrics": log.names(), "ignored_keys": log.ignored,
           "source_kind": log.source_kind, "ignored_more": log.ignored_more, "ignored_config": log.ignored_config,
           "warnings": log.warnings, "notes": log.notes, "rows": log.rows, "dropped_rows": log.dropped}
    if log.error:
        out.update(error=log.error, findings=[], health={"score": None, "worst_severity": "ok", "components": {},
                                                          "counts": {}}, final={})
        return out
    try:
        detectors = DetectorSuite.build(overrides, profile)
    except ValueError as e:
        raise InputError("--profile" if profile else "detectors", None, str(e)) from None
    hist = History(history or SupervisorConfig().history)
    health = HealthScore()
    findings = []
    for i, metrics in enumerate(log.metrics):
        fs = detectors.observe(i, metrics, hist)  # as the engine: a detector bug never stops the scan
        health.observe(i, fs)
        for f in fs:
            findings.append({"step": log.steps[i], "row": i, "detector": f.detector, "severity": f.severity,
                             "metric": f.metric, "value": f.value, "message": f.message,
                             "threshold": f.threshold})
    counts: dict[str, int] = {}
    for f in findings:
        counts[f["severity"]] = counts.get(f["severity"], 0) + 1
    last = len(log.metrics) - 1
    snap = health.snapshot(last)
    final = {k: log.metrics[last].get(k) for k in ("episode_return_mean", "entropy", "kl", "grad_norm")
             if k in log.metrics[last]}
    out.update(findings=findings, health={**snap, "counts": counts}, final=final)
    return json_safe(out)


def scan(path: str | Path, overrides: Mapping | None = None, profile: Mapping | None = None) -> dict:
    """Scan ``path``; the JSON of ``supervise scan --format json``.

    Top level: ``source``, ``format``, ``findings`` (every trial's, each with
    its ``trial``), ``health`` (the worst trial's score and severity),
    ``trials`` (per trial: its own findings, health, steps, metrics found) and
    ``skipped`` (the files of a folder not read, each with its reason).
    """
    from supervisor.findings import worst

    res = read(path)
    kind, logs = res.kind, res.logs
    if profile is None:  # as live: the shipped healthy bands until a log's own history takes over
        from supervisor.calibrate import default_profile

        profile = default_profile()
    trials = [analyze(lg, overrides, profile) for lg in logs]
    findings = [{**f, "trial": t["trial_id"]} for t in trials for f in t["findings"]]
    judged = [t for t in trials if not t.get("error")]
    scores = [t["health"]["score"] for t in judged if t["health"]["score"] is not None]
    counts: dict[str, int] = {}
    for t in judged:
        for s, n in t["health"]["counts"].items():
            counts[s] = counts.get(s, 0) + n
    health = {"score": min(scores) if scores else None,
              "worst_severity": worst(t["health"]["worst_severity"] for t in judged),
              "counts": counts, "trials": len(trials),
              "unhealthy_trials": sum(t["health"]["worst_severity"] in ("warning", "critical") for t in judged)}
    return json_safe({"source": str(path), "format": kind, "findings": findings, "health": health, "trials": trials,
                      "skipped": res.skipped})
