"""A Ray cluster whose nodes share no disk, on one machine, and a real S3 API server beside it.

- ``S3Server``: ``moto_server`` on a free port of 127.0.0.1 (moto's server mode: a real HTTP S3 API),
  a bucket, and the storage URI pyarrow (and so Tune and RLlib) reaches it with.
- ``NoDiskCluster``: a head started with ``ray start --head --num-cpus=0`` (it runs no trial, as
  production heads often do) and worker nodes that each run in a mount namespace of their own
  (``unshare --mount --propagation private``) with an empty tmpfs over ``hidden``: the folder that
  holds the run folders on the head, which no worker can see. Each worker runs under ``setsid``;
  ``kill_node`` ends its process group with SIGKILL, as a preempted spot instance ends.

Everything started here is ended by process id (the head's processes by the private temp dir on
their command lines, a worker's by its mount namespace), never by name; a ``ray_current_cluster``
file the head leaves in /tmp/ray is put back as it was. Needs root (mount namespaces): without it
``NoDiskCluster`` raises, it never skips.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import json
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
CURRENT_CLUSTER = Path("/tmp/ray/ray_current_cluster")  # what `ray start --head` leaves for later ray.init()s
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _wait_port(port: int, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"process exited ({proc.returncode}) before listening on {port}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")
            time.sleep(0.1)


def _end(procs: list[psutil.Process], sig=signal.SIGTERM, wait_s: float = 5.0) -> None:
    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=wait_s)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=wait_s)


class S3Server:
    """``moto_server`` on 127.0.0.1 with one bucket; ``uri(prefix)`` is a storage URI for it."""

    def __init__(self, bucket: str = "runs"):
        (self.port,) = free_ports(1)
        self.bucket = bucket
        exe = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
        self.proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(self.port)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, env={**os.environ, **AWS})
        try:
            _wait_port(self.port, 60, self.proc)
            import boto3

            self.client = boto3.client("s3", endpoint_url=self.endpoint, **_boto_keys())
            self.client.create_bucket(Bucket=bucket)
        except Exception:
            self.stop()
            raise

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def uri(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix.strip('/')}?endpoint_override=127.0.0.1:{self.port}&scheme=http"

    def keys(self, prefix: str = "") -> list[str]:
        out, token = [], None
        while True:
            kw = {"Bucket": self.bucket, "Prefix": prefix, **({"ContinuationToken": token} if token else {})}
            page = self.client.list_objects_v2(**kw)
            out += [o["Key"] for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return out
            token = page["NextContinuationToken"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _boto_keys() -> dict:
    return {"aws_access_key_id": AWS["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": AWS["AWS_SECRET_ACCESS_KEY"],
            "region_name": AWS["AWS_DEFAULT_REGION"]}


def check_namespaces() -> None:
    """Mount namespaces work here (root, unshare allowed), or a one-line RuntimeError: never a silent skip."""
    if shutil.which("unshare") is None:
        raise RuntimeError("the no-shared-disk cluster test needs util-linux's unshare (not found)")
    p = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                        "mount -t tmpfs none /mnt && umount /mnt"], capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        raise RuntimeError(f"the no-shared-disk cluster test needs mount namespaces (root): unshare/mount failed "
                           f"(exit {p.returncode}): {p.stderr.strip()[:300]}")


class Node:
    """A worker node: its ``setsid`` process group and its mount namespace."""

    def __init__(self, name: str, proc: subprocess.Popen, log: Path):
        self.name, self.proc, self.log = name, proc, log
        self.ns = None  # the mount namespace's inode link, once unshare has made it

    def processes(self) -> list[psutil.Process]:
        """Every process in this node's mount namespace (the raylet, its workers, the trial's actors)."""
        if self.ns is None:
            return []
        out = []
        for p in psutil.process_iter(["pid"]):
            try:
                if os.readlink(f"/proc/{p.pid}/ns/mnt") == self.ns and p.pid != os.getpid():
                    out.append(p)
            except OSError:
                continue
        return out


class NoDiskCluster:
    """A head with no CPUs and worker nodes that each see an empty ``hidden`` folder.

    Args:
        hidden: the folder (holding the run folders) that only the head and this process see.
        cpus: CPUs of each worker node.
    """

    def __init__(self, hidden: Path, cpus: int = 2):
        check_namespaces()
        self.hidden, self.cpus = Path(hidden), cpus
        self.temp = tempfile.mkdtemp(prefix="rsn", dir="/tmp")  # short: Ray's socket paths must fit 107 chars
        self.nodes: dict[str, Node] = {}
        self.address = ""
        self._cluster_file = CURRENT_CLUSTER.read_bytes() if CURRENT_CLUSTER.is_file() else None
        # every node's processes import this checkout (not whatever `pip install -e` points at)
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", **AWS, "PYTHONPATH": str(ROOT),
                    # a lost node is declared dead in ~3 s, not ~30 s: the trial restarts while the test waits
                    "RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "1000",
                    "RAY_health_check_failure_threshold": "3"}
        self.env.pop("RAY_ADDRESS", None)
        try:
            self._start_head()
        except Exception:
            self.shutdown()
            raise

    def _start_head(self) -> None:
        gcs, dash, client, agent, agent_grpc, metrics, rt_agent = free_ports(7)
        self.address = f"127.0.0.1:{gcs}"
        cmd = ["ray", "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(gcs),
               "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--ray-client-server-port", str(client),
               "--dashboard-agent-listen-port", str(agent), "--dashboard-agent-grpc-port", str(agent_grpc),
               "--metrics-export-port", str(metrics), "--runtime-env-agent-port", str(rt_agent),
               "--temp-dir", self.temp, "--num-cpus", "0", "--disable-usage-stats"]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=self.env)
        if p.returncode != 0:
            raise RuntimeError(f"ray start --head failed: {p.stdout[-1500:]}{p.stderr[-1500:]}")

    def add_node(self, name: str, timeout_s: float = 120.0, tries: int = 2) -> Node:
        """Start a worker node in its own mount namespace (custom resource ``name``: 1); wait until it joined.
        A node whose raylet does not register within Ray's fixed 30 s (a machine under heavy load) is
        started once more before this raises."""
        for attempt in range(tries):
            try:
                return self._add_node(name, timeout_s)
            except RuntimeError:
                if name in self.nodes:
                    self.kill_node(name)
                if attempt == tries - 1:
                    raise
        raise AssertionError("unreachable")

    def _add_node(self, name: str, timeout_s: float) -> Node:

        self.hidden.mkdir(parents=True, exist_ok=True)
        ports = free_ports(4)
        inner = (f"mount -t tmpfs none {self.hidden} && exec ray start --block --address={self.address} "
                 f"--node-ip-address=127.0.0.1 --num-cpus={self.cpus} --resources='{json.dumps({name: 1})}' "
                 f"--dashboard-agent-listen-port={ports[0]} --dashboard-agent-grpc-port={ports[1]} "
                 f"--metrics-export-port={ports[2]} --runtime-env-agent-port={ports[3]} --disable-usage-stats")
        log = Path(self.temp) / f"node-{name}.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen(["setsid", "unshare", "--mount", "--propagation", "private", "sh", "-c", inner],
                                    stdout=fh, stderr=subprocess.STDOUT, env=self.env)
        node = self.nodes[name] = Node(name, proc, log)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                ns = os.readlink(f"/proc/{proc.pid}/ns/mnt")
                if ns != os.readlink("/proc/self/ns/mnt"):
                    node.ns = ns
            except OSError:
                pass
            if node.ns is not None and b"Ray runtime started" in log.read_bytes():
                return node
            if proc.poll() is not None:
                raise RuntimeError(f"node {name} exited ({proc.returncode}): {log.read_text()[-1500:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"node {name} did not join in {timeout_s} s: {log.read_text()[-1500:]}")
            time.sleep(0.5)

    def kill_node(self, name: str) -> None:
        """Preempt a worker node: SIGKILL to its process group, then to whatever of it is left (its workers)."""
        node = self.nodes.pop(name)
        try:
            os.killpg(node.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        node.proc.wait(30)
        _end(node.processes(), signal.SIGKILL)

    def shutdown(self) -> None:
        for name in list(self.nodes):
            self.kill_node(name)
        _end(_marked(self.temp))
        shutil.rmtree(self.temp, ignore_errors=True)
        # the head's `ray start` named itself the machine's current cluster: put back what was there (unless
        # another cluster started on this machine since, and named itself)
        try:
            ours = bool(self.address) and CURRENT_CLUSTER.read_text().strip().endswith(
                ":" + self.address.rsplit(":", 1)[1])
        except OSError:
            ours = False
        if ours and self._cluster_file is None:
            CURRENT_CLUSTER.unlink(missing_ok=True)
        elif ours:
            CURRENT_CLUSTER.write_bytes(self._cluster_file)


def _marked(marker: str) -> list[psutil.Process]:
    """The head's processes (their command lines name its private temp dir) and their children."""
    found = {}
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(marker in a for a in p.info["cmdline"] or []):
                found[p.pid] = p
                for c in p.children(recursive=True):
                    found[c.pid] = c
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    found.pop(os.getpid(), None)
    return list(found.values())
