"""Run storage: where a run's checkpoints, TensorBoard files and snapshots of its store are kept.

On one machine that is the run folder. On a cluster whose nodes share no disk it is a shared path
(NFS) or any URI pyarrow's filesystems take (``s3://bucket/prefix``, ``gs://bucket/prefix``,
S3-compatible endpoints through ``?endpoint_override=HOST:PORT&scheme=http`` or
``AWS_ENDPOINT_URL``): the same filesystems Tune (``storage_path``/``storage_filesystem``) and RLlib
(``save_to_path``/``restore_from_path``) write through, so every node reaches what another wrote.

``storage:`` names where runs are kept, like Tune's ``storage_path``: a run's files go to
``STORAGE/<run folder's name>/``. ``Storage.for_run`` makes that; ``Storage(uri)`` opens one run's
storage (``supervise report URI``). Paths inside are the same as in a run folder: ``checkpoints/``,
``tune/``, ``tensorboard/``, ``supervisor.db`` (a snapshot of the head's store).

Credentials never go in the URI (it is stored with the run and shown in reports): they come from
the provider's usual variables (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, an instance role,
``GOOGLE_APPLICATION_CREDENTIALS``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from supervisor.store import backup_to

log = logging.getLogger(__name__)

#: URI schemes pyarrow's ``FileSystem.from_uri`` opens
SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss", "file")
SNAPSHOT_NAME = "supervisor.db"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


class StorageError(RuntimeError):
    """Storage that cannot be used: the message is one line, naming the storage and what is wrong."""


def is_uri(value: str | os.PathLike) -> bool:
    return bool(_SCHEME.match(str(value)))


def storage_problem(value) -> str | None:
    """What is wrong with a ``storage:`` value, checked offline; None when it looks usable."""
    if not isinstance(value, str) or not value.strip():
        return "must be a folder or a URI such as s3://bucket/prefix"
    if value != value.strip() or "\n" in value:
        return "must not start or end with spaces"
    m = _SCHEME.match(value)
    if not m:
        if "://" in value:
            return f"{value!r} is not a URI (scheme://...) nor a folder"
        return None
    scheme = m.group(1).lower()
    if scheme not in SCHEMES:
        return f"unknown URI scheme {scheme!r} (pyarrow's filesystems take {', '.join(SCHEMES)}, or give a folder)"
    parts = urlsplit(value)
    if parts.username or parts.password:
        return ("credentials in the URI would be stored with the run: give them through the provider's variables "
                "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS) instead")
    if scheme != "file" and not parts.netloc:
        return f"{value!r} names no bucket or host ({scheme}://BUCKET/prefix)"
    if scheme == "file" and not parts.path.startswith("/"):
        return f"{value!r}: a file:// URI needs an absolute path"
    return None


def join(root: str, *parts: str) -> str:
    """``root`` (a local path or a URI, whose ``?query`` stays at the end) joined with ``parts``."""
    parts = tuple(p.strip("/") for p in parts if p and p.strip("/"))
    if not parts:
        return root
    if not is_uri(root):
        return str(Path(root, *parts))
    u = urlsplit(root)
    return urlunsplit((u.scheme, u.netloc, "/".join([u.path.rstrip("/"), *parts]), u.query, u.fragment))


def display(uri: str) -> str:
    """A URI without its ``?query`` (endpoint settings), for messages."""
    return urlunsplit(urlsplit(uri)._replace(query="", fragment="")) if is_uri(uri) else uri


def open_fs(where: str):
    """(pyarrow filesystem, path inside it) of a local path or a URI; ``StorageError`` in one line."""
    import pyarrow.fs as pafs

    if not is_uri(where):
        return pafs.LocalFileSystem(), str(Path(where).resolve())
    try:
        return pafs.FileSystem.from_uri(where)
    except Exception as e:
        raise StorageError(f"{display(where)}: cannot open this storage ({one_line(e)})") from None


def one_line(e: BaseException) -> str:
    """An exception as one short line: pyarrow's multi-line AWS errors without their request ids."""
    msg = re.sub(r"\s*\(Request ID: [^)]*\)", "", str(e) or e.__class__.__name__)
    msg = " ".join(msg.split())
    return msg[:300]


class Storage:
    """One run's storage: a local folder or a URI.

    Args:
        root: the run's own folder there (absolute path or URI).
    """

    def __init__(self, root: str | os.PathLike):
        root = str(root)
        self.is_local = not is_uri(root) or urlsplit(root).scheme.lower() == "file"
        if self.is_local and is_uri(root):
            root = urlsplit(root).path
        self.root = root if not self.is_local else str(Path(root).resolve())
        self._fs = None
        self._base: str | None = None
        self._lock = threading.Lock()

    @classmethod
    def for_run(cls, storage: str | None, run_dir: str | os.PathLike) -> "Storage":
        """The storage of the run whose folder is ``run_dir``: the folder itself without ``storage``,
        else ``storage/<the run folder's name>``."""
        run_dir = Path(run_dir).resolve()
        if not storage:
            return cls(run_dir)
        if not is_uri(storage):
            storage = str(Path(storage).resolve())
        return cls(join(storage, run_dir.name))

    def __repr__(self) -> str:
        return f"Storage({display(self.root)!r})"

    def is_run_dir(self, run_dir: str | os.PathLike) -> bool:
        return self.is_local and Path(self.root) == Path(run_dir).resolve()

    # ------------------------------------------------------------------ addresses
    @property
    def fs(self):
        self._open()
        return self._fs

    @property
    def base(self) -> str:
        """The root's path inside ``fs``."""
        self._open()
        return self._base

    def _open(self) -> None:
        if self._fs is None:
            with self._lock:
                if self._fs is None:
                    self._fs, self._base = open_fs(self.root)

    def uri(self, *parts: str) -> str:
        """What users (reports, ``--restore``) and other nodes name a file here by."""
        return join(self.root, *parts)

    def path(self, *parts: str) -> str:
        """The same inside ``fs`` (what pyarrow, Tune and RLlib take with ``filesystem=fs``)."""
        return "/".join([self.base.rstrip("/"), *(p.strip("/") for p in parts if p)]) if parts else self.base

    def uri_of(self, fs_path: str) -> str:
        """The URI of a path inside ``fs`` under this storage (e.g. the folder Tune persisted a checkpoint to)."""
        base = self.base.rstrip("/")
        fs_path = str(fs_path)
        if fs_path != base and not fs_path.startswith(base + "/"):
            raise StorageError(f"{fs_path} is not under {display(self.root)}")
        return self.uri(fs_path[len(base):])

    # ------------------------------------------------------------------ files
    def exists(self, *parts: str) -> bool:
        import pyarrow.fs as pafs

        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def write_bytes(self, data: bytes, *parts: str) -> str:
        """Write one file whole (a reader sees the old file or the new, never half of one); its URI."""
        dest = self.path(*parts)
        self.fs.create_dir(dest.rsplit("/", 1)[0], recursive=True)
        if self.is_local:  # rename is atomic on a POSIX filesystem; an object PUT is atomic by itself
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dest), prefix=".saving-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, dest)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        else:
            with self.fs.open_output_stream(dest) as f:
                f.write(data)
        return self.uri(*parts)

    def upload(self, local: str | os.PathLike, *parts: str) -> str:
        """Copy a local file (whole, as ``write_bytes``) or folder here; its URI."""
        import pyarrow.fs as pafs

        local = str(local)
        if os.path.isdir(local):
            dest = self.path(*parts)
            self.fs.create_dir(dest, recursive=True)
            pafs.copy_files(local, dest, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.fs)
            return self.uri(*parts)
        if self.is_local:
            with open(local, "rb") as f:
                return self.write_bytes(f.read(), *parts)
        dest = self.path(*parts)
        self.fs.create_dir(dest.rsplit("/", 1)[0], recursive=True)
        pafs.copy_files(local, dest, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.fs)
        return self.uri(*parts)

    def download(self, dest: str | os.PathLike, *parts: str) -> Path:
        """Copy one file from here to a local path (written aside, then renamed into place)."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part")
        with self.fs.open_input_stream(self.path(*parts)) as src, open(tmp, "wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
        os.replace(tmp, dest)
        return dest

    def info(self, *parts: str):
        """pyarrow's ``FileInfo`` (type, size, mtime) of a file here."""
        return self.fs.get_file_info(self.path(*parts))

    def delete(self, *parts: str) -> None:
        """Remove a folder (or file) here; a missing one is no error."""
        import pyarrow.fs as pafs

        p = self.path(*parts)
        kind = self.fs.get_file_info(p).type
        if kind == pafs.FileType.Directory:
            self.fs.delete_dir(p)
        elif kind == pafs.FileType.File:
            self.fs.delete_file(p)

    def probe(self) -> None:
        """Check, before a run starts, that this machine can write here; ``StorageError`` in one line."""
        name = f".probe-{os.getpid()}-{time.time_ns()}"
        try:
            self.write_bytes(b"ok", name)
            self.delete(name)
        except StorageError:
            raise
        except Exception as e:
            raise StorageError(f"{display(self.root)}: cannot write there ({one_line(e)})") from None


# ---------------------------------------------------------------------------
# the store's snapshots
# ---------------------------------------------------------------------------


def snapshot_store(db_path: str | os.PathLike, storage: Storage, name: str = SNAPSHOT_NAME) -> str:
    """Copy a live SQLite store (another connection may be writing it) into ``storage``: a consistent
    copy of one moment (``store.backup_to``), written aside and then put whole. Returns its URI."""
    with tempfile.TemporaryDirectory(prefix="supervisor-snapshot-") as d:
        tmp = Path(d) / name
        backup_to(db_path, tmp)
        return storage.upload(tmp, name)


class StoreSnapshots:
    """Snapshots of one run's ``supervisor.db`` in its storage, so the store outlives the head's disk.

    ``maybe()`` is cheap and never blocks: it starts a snapshot on a thread of its own when the last
    one is ``interval_s`` old and none is running. ``final()`` starts the last one (after any running),
    ``wait()`` waits for it.

    Args:
        db_path: the live store.
        storage: the run's storage.
        interval_s: at most one snapshot this often.
    """

    def __init__(self, db_path: str | os.PathLike, storage: Storage, interval_s: float):
        self.db_path, self.storage, self.interval_s = Path(db_path), storage, float(interval_s)
        self.last: float | None = None  # monotonic time the newest snapshot started
        self.count = 0
        self.error: str | None = None
        self._thread: threading.Thread | None = None
        self._final: threading.Thread | None = None

    def maybe(self, now: float | None = None) -> bool:
        """Start a snapshot if one is due; True when it started one."""
        now = time.monotonic() if now is None else now
        if self._final is not None or (self.last is not None and now - self.last < self.interval_s):
            return False
        if self._thread is not None and self._thread.is_alive():
            return False
        self.last = now
        self._thread = threading.Thread(target=self._snapshot, name="store-snapshot", daemon=True)
        self._thread.start()
        return True

    def final(self) -> None:
        """The run is over: one last snapshot (it holds the run's end), after the one running, if any."""
        if self._final is not None:
            return
        before = self._thread

        def last():
            if before is not None:
                before.join()
            self._snapshot()

        self._final = threading.Thread(target=last, name="store-snapshot-final", daemon=True)
        self._final.start()

    def wait(self, timeout_s: float) -> dict:
        """Wait up to ``timeout_s`` for the final snapshot: ``{"ok", "uri", "error"}``."""
        t = self._final or self._thread
        if t is not None:
            t.join(timeout_s)
        done = t is None or not t.is_alive()
        return {"ok": done and self.error is None and self.count > 0, "uri": self.storage.uri(SNAPSHOT_NAME),
                "error": self.error if done else f"still copying after {timeout_s:.0f} s"}

    def _snapshot(self) -> None:
        try:
            snapshot_store(self.db_path, self.storage)
            self.count += 1
            self.error = None
        except Exception as e:  # the storage is down: the next snapshot tries again; the run goes on
            self.error = one_line(e)
            log.warning("snapshot of %s into %s failed: %s", self.db_path, self.storage, self.error)


def store_snapshots(run_dir: str | os.PathLike, storage: str | None, interval_s: float) -> StoreSnapshots | None:
    """The snapshots of a run's store, or None when its storage is its folder (the store is already there)."""
    if not storage:
        return None
    st = Storage(storage)
    if st.is_run_dir(run_dir):
        return None
    return StoreSnapshots(Path(run_dir) / SNAPSHOT_NAME, st, interval_s)


# ---------------------------------------------------------------------------
# reading a run from its storage
# ---------------------------------------------------------------------------


def fetch_snapshot(uri: str, dest_dir: str | os.PathLike, source: str | None = None) -> Path:
    """Download the store snapshot of the run stored at ``uri`` (or ``uri`` itself when it names the
    ``.db``) into ``dest_dir``; ``StorageError`` in one line."""
    import pyarrow.fs as pafs

    st = Storage(uri)
    parts: tuple[str, ...] = () if uri.split("?", 1)[0].endswith(".db") else (SNAPSHOT_NAME,)
    try:
        kind = st.info(*parts).type
    except StorageError:
        raise
    except Exception as e:
        raise StorageError(f"{display(uri)}: cannot read this storage ({one_line(e)})") from None
    if kind != pafs.FileType.File:
        raise StorageError(f"{display(uri)}: no store snapshot there ({SNAPSHOT_NAME}; the run has not taken "
                           "one yet, or this is not a run's storage)")
    try:
        return st.download(Path(dest_dir) / SNAPSHOT_NAME, *parts)
    except Exception as e:
        raise StorageError(f"{display(uri)}: cannot read the store snapshot ({one_line(e)})") from None


@contextlib.contextmanager
def run_folder(where: str):
    """``supervise report``'s and ``calibrate``'s argument as a local folder: a run folder as it is, a
    run storage URI as a temporary folder holding its store snapshot; ``InputError`` in one line."""
    if not is_uri(where) or Storage(where).is_local:
        yield Path(urlsplit(where).path if is_uri(where) else where)
        return
    from supervisor.errors import InputError

    with tempfile.TemporaryDirectory(prefix="supervisor-run-") as d:
        try:
            fetch_snapshot(where, d)
        except StorageError as e:
            raise InputError(display(where), None, str(e).removeprefix(display(where) + ": ")) from None
        yield Path(d)
