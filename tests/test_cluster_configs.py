"""cluster_configs/: every file parses, passes the checks its tool would make where we can run them
(Ray's own cluster-launcher schema), and what it references exists: the entrypoint is a `supervise`
subcommand, the experiment file is in the repository and takes the overrides, images are set and
carry a Ray inside the supported range (so installing this package keeps the image's Ray), ports agree between `ray start` flags and container ports, and setup
installs this package. No cloud, no Kubernetes needed."""

import copy
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from supervisor.cli import build_parser
from supervisor.config import load_experiment, load_sweep

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "cluster_configs"
LAUNCHER = ["onprem-cluster.yaml", "aws-cluster.yaml"]


def supported_ray(version: str) -> bool:
    """Is ``version`` inside the Ray range pyproject.toml declares (what pip keeps when it installs us)?"""
    from packaging.specifiers import SpecifierSet

    m = re.search(r'"ray\[[^\]]*\]([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert m, "pyproject.toml declares ray"
    return version in SpecifierSet(m.group(1))


def image_ray_version(image: str) -> str:
    m = re.fullmatch(r"rayproject/ray:([0-9.]+)-\S+", image)
    assert m, f"{image}: not a rayproject/ray:<version>-<variant> image"
    return m.group(1)


def package_version() -> str:
    return re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)


def flags(cmd: str) -> dict:
    """--key=value / --key value flags of a `ray start` command line."""
    out = {}
    parts = shlex.split(cmd.split(";")[-1])
    for i, p in enumerate(parts):
        if p.startswith("--"):
            k, eq, v = p[2:].partition("=")
            out[k] = v if eq else (parts[i + 1] if i + 1 < len(parts) and not parts[i + 1].startswith("--")
                                   else True)
    return out


def ray_start(cmds) -> dict:
    (cmd,) = [c for c in cmds if "ray start" in c]
    return flags(cmd)


def subcommands() -> set:
    parser, handlers = build_parser()
    return set(handlers)


def check_entrypoint(cmd: str, where: str) -> None:
    argv = shlex.split(cmd)
    assert argv[0] == "supervise", f"{where}: entrypoint must run `supervise`, got {argv[0]}"
    assert argv[1] in subcommands(), f"{where}: `supervise {argv[1]}` is not a command"
    args = build_parser()[0].parse_args(argv[1:])  # the CLI accepts it as written
    if argv[1] in ("run", "sweep"):
        target = args.experiment if argv[1] == "run" else args.sweep
        path = ROOT / target
        assert path.is_file(), f"{where}: {target} is not in the repository"
        load = load_experiment if argv[1] == "run" else load_sweep
        load(str(path), list(args.set))  # and the --set overrides are valid keys and values


@pytest.mark.parametrize("name", LAUNCHER)
def test_cluster_launcher_configs_pass_rays_schema_and_install_this_package(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load((CONFIGS / name).read_text())
    validate_config(prepare_config(copy.deepcopy(cfg)))  # what `ray up` checks before it starts anything
    # the repository goes to every node and is pip-installed there
    (target,) = [dst for dst, src in cfg["file_mounts"].items() if src == "."]
    setup = cfg["setup_commands"]
    assert any(re.search(rf"pip install (-e )?{re.escape(target)}(\s|$)", c) for c in setup), setup
    assert any("nvidia-ml-py" in c for c in setup)  # GPU health on GPU nodes
    assert {"runs/**", "**/.git/**"} <= set(cfg.get("rsync_exclude", []))
    # ports: workers join the head's GCS port; everyone exports metrics on the same port
    head, worker = ray_start(cfg["head_start_ray_commands"]), ray_start(cfg["worker_start_ray_commands"])
    assert worker["address"] == f"$RAY_HEAD_IP:{head['port']}"
    assert head["metrics-export-port"] == worker["metrics-export-port"]
    # the dashboard's job API runs code for whoever reaches it: loopback only, reached through `ray dashboard`
    assert head["dashboard-host"] == "127.0.0.1" and head["dashboard-port"] == "8265"
    assert "0.0.0.0" not in (CONFIGS / name).read_text()
    if "object-manager-port" in head:
        assert head["object-manager-port"] == worker["object-manager-port"]
    if "docker" in cfg:
        image = cfg["docker"]["image"]
        assert supported_ray(image_ray_version(image)), image
    # the usage lines in the header name real commands and files
    for line in (CONFIGS / name).read_text().splitlines():
        if line.startswith("#") and "supervise run" in line:
            rest = line[line.index("supervise run"):].rstrip("\\ ")
            assert (ROOT / shlex.split(rest)[2]).is_file()


def test_aws_config_has_gpu_workers_and_a_cpu_only_head():
    cfg = yaml.safe_load((CONFIGS / "aws-cluster.yaml").read_text())
    types = cfg["available_node_types"]
    assert types[cfg["head_node_type"]]["resources"] == {"CPU": 0}
    gpu = [t for t in types.values() if t["node_config"]["InstanceType"].startswith(("g", "p"))]
    assert gpu and all(t["max_workers"] >= 1 for t in gpu)
    assert cfg["provider"]["type"] == "aws" and cfg["provider"]["region"]


def test_kuberay_rayjob_runs_an_experiment_under_the_supervisor():
    docs = list(yaml.safe_load_all((CONFIGS / "kuberay-rayjob.yaml").read_text()))
    (job,) = [d for d in docs if d["kind"] == "RayJob"]
    assert job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]
    check_entrypoint(spec["entrypoint"], "RayJob.spec.entrypoint")
    rc = spec["rayClusterSpec"]
    assert supported_ray(rc["rayVersion"]), rc["rayVersion"]
    groups = [("head", rc["headGroupSpec"])] + [(g["groupName"], g) for g in rc["workerGroupSpecs"]]
    image = f"rl-supervisor:{package_version()}"
    for name, g in groups:
        containers = g["template"]["spec"]["containers"]
        assert containers and all(c.get("image") == image for c in containers), name
        ports = {p["name"]: p["containerPort"] for c in containers for p in c.get("ports", [])}
        assert ports.get("metrics") == int(g["rayStartParams"]["metrics-export-port"]), name
    head = rc["headGroupSpec"]
    ports = {p["name"]: p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]}
    assert ports["dashboard"] == int(head["rayStartParams"]["dashboard-port"]) and ports["gcs-server"] == 6379
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"  # the job submitter pod must reach it ...
    assert rc["authOptions"] == {"mode": "token"}  # ... so Ray's token auth guards it
    # the run folder the entrypoint writes lives on a mounted volume, backed by the PVC in the same file
    out = shlex.split(spec["entrypoint"])[shlex.split(spec["entrypoint"]).index("--out") + 1]
    mounts = head["template"]["spec"]["containers"][0]["volumeMounts"]
    (mount,) = [m for m in mounts if out.startswith(m["mountPath"] + "/")]
    (vol,) = [v for v in head["template"]["spec"]["volumes"] if v["name"] == mount["name"]]
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    assert vol["persistentVolumeClaim"]["claimName"] in claims
    # GPU workers ask for GPUs; the entrypoint puts the learner on one
    worker = rc["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"]
    assert "config.num_gpus_per_learner=1" in spec["entrypoint"]
    # the working dir is where the image puts the repository
    wd = yaml.safe_load(spec["runtimeEnvYAML"])["working_dir"]
    assert f"COPY --chown=ray:users . {wd}" in (CONFIGS / "Dockerfile").read_text()


def test_dockerfile_builds_the_image_the_manifests_use():
    text = (CONFIGS / "Dockerfile").read_text()
    (base,) = re.findall(r"^FROM (\S+)", text, re.M)
    assert supported_ray(image_ray_version(base)), base
    assert not supported_ray("2.49.0") and not supported_ray("2.61.0")  # the check can fail
    (dst,) = re.findall(r"^COPY --chown=\S+ \. (\S+)", text, re.M)
    assert re.search(rf"pip install .*-e {re.escape(dst)}(\s|$)", text)
    assert f"rl-supervisor:{package_version()}" in text  # the tag the manifests pull
    assert "runs" in (CONFIGS / "Dockerfile.dockerignore").read_text().split()


def test_podmonitor_scrapes_the_named_metrics_port():
    pm = yaml.safe_load((CONFIGS / "prometheus-podmonitor.yaml").read_text())
    job = next(d for d in yaml.safe_load_all((CONFIGS / "kuberay-rayjob.yaml").read_text()) if d["kind"] == "RayJob")
    labels = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["metadata"]["labels"]
    assert pm["kind"] == "PodMonitor"
    assert pm["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert [e["port"] for e in pm["spec"]["podMetricsEndpoints"]] == ["metrics"]


def exported_metric_names() -> set:
    """What actors/metrics_export.py registers, as Prometheus shows it (ray_ prefix, counters _total)."""
    src = (ROOT / "actors" / "metrics_export.py").read_text()
    gauges = set(re.findall(r'g\("(\w+)"', src))
    counters = set(re.findall(r'Counter\(PREFIX \+ "(\w+)"', src))
    assert gauges and counters
    return {f"ray_rl_supervisor_{g}" for g in gauges} | {f"ray_rl_supervisor_{c}_total" for c in counters}


def test_grafana_dashboard_charts_only_metrics_we_export():
    dash = json.loads((CONFIGS / "grafana_dashboard.json").read_text())
    names = exported_metric_names()
    used = set()
    for p in dash["panels"]:
        for t in p.get("targets", []):
            used |= set(re.findall(r"\bray_rl_supervisor_\w+", t["expr"]))
    assert used and used <= names, used - names
    # trial health, findings and interventions by type, node and GPU health are all on it
    for must in ("trial_health_score", "findings_total", "interventions_total", "node_alive", "node_health",
                 "gpu_utilization", "gpu_temperature_c"):
        assert f"ray_rl_supervisor_{must}" in used
    assert {v["name"] for v in dash["templating"]["list"]} >= {"datasource"}
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def test_rayignore_keeps_runs_and_git_out_of_job_uploads():
    ignore = (ROOT / ".rayignore").read_text().split()
    assert {"runs/", ".git/"} <= set(ignore)


def test_prometheus_alert_rules_use_exported_metrics_and_pass_promtool():
    import shutil
    import subprocess

    path = CONFIGS / "prometheus-rules.yaml"
    doc = yaml.safe_load(path.read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    names = exported_metric_names()
    alerts = {r["alert"] for r in rules}
    assert {"RLSupervisorCriticalFinding", "RLSupervisorTrialUnhealthy", "RLSupervisorNodeDown",
            "RLSupervisorGPUFault"} <= alerts
    for r in rules:
        assert set(r) <= {"alert", "expr", "for", "labels", "annotations"}, r
        assert r["labels"]["severity"] in ("warning", "critical") and r["annotations"]["summary"]
        used = set(re.findall(r"\bray_rl_supervisor_\w+", r["expr"]))
        assert used and used <= names, (r["alert"], used - names)
        if "for" in r:
            assert re.fullmatch(r"\d+[smh]", r["for"])
    promtool = shutil.which("promtool")
    if promtool:  # Debian: apt-get install prometheus
        p = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
        assert p.returncode == 0, p.stdout + p.stderr
        assert f"SUCCESS: {len(rules)} rules found" in p.stdout


def test_kuberay_notes_give_a_sweep_a_run_storage_the_cli_takes():
    """A sweep trains on worker pods that do not mount the head's PVC: the manifest's notes give it a
    `--storage` URI, and that command line is one the CLI accepts as written."""
    lines = [ln[1:].strip() for ln in (CONFIGS / "kuberay-rayjob.yaml").read_text().splitlines() if ln.startswith("#")]
    start = next(i for i, ln in enumerate(lines) if ln.startswith("supervise sweep"))
    cmd = " ".join([lines[start]] + [ln for ln in lines[start + 1:start + 3] if ln.startswith("--")])
    check_entrypoint(cmd, "kuberay-rayjob.yaml notes")
    args = build_parser()[0].parse_args(shlex.split(cmd)[1:])
    assert args.storage.startswith("s3://") and args.out.startswith("/home/ray/runs/")
