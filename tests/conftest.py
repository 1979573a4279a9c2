"""The repo root on sys.path, so that tests can import ``benchmarks.synthetic`` (the synthetic
PPO streams the tests and the detection benchmark share) however pytest is started.

Also the one list of the Ray-facing tests that CI runs a second time on the oldest supported Ray
(``actors/compat.py``: ``FLOOR``; ``.ci/run``): they carry the ``ray_floor`` marker
(``python -m pytest -q -m ray_floor``). Each Ray internal the supervisor relies on is exercised here at
least once, by its canary and by a test that depends on it working."""

import sys
from pathlib import Path

import pytest

REPO = str(Path(__file__).resolve().parents[1])
if REPO not in sys.path:
    sys.path.insert(0, REPO)

#: "module" runs the whole module on the floor; "module::test" one test (all its parameters).
RAY_FLOOR = [
    "test_compat",  # every canary
    "test_learner",  # the instrumented learner: MetricsLogger semantics, GAE connector, learner class
    "test_interventions",  # every hyperparameter change and rollback (remote learner: FLOOR_SKIPS)
    "test_algos_e2e::test_each_learner_takes_its_hyperparameters_and_rolls_back",  # DQN, SAC, APPO learners
    "test_tune::test_trainable_takes_tunes_real_trial_id_and_sampled_values",  # Trainable._trial_info
    "test_tune::test_sweep_cli_stops_repairs_and_restarts_through_tune",  # Tune's error file, CombinedStopper
    "test_job_submit",  # `ray start`, `ray job submit` of `supervise run` (run registry), `supervise status`
    "test_multiagent::test_reduce_lr_changes_only_its_module",  # a per-module override config, each optimizer
    "test_multiagent::test_one_modules_rollback_from_run_storage_on_s3",  # one module's state kept over a restore
    "test_crash_e2e::test_learner_thread_death_is_told_as_a_crash_then_stopped_when_it_repeats",  # its thread
]

#: Parameters of a floor module's tests that stay off the floor run, and why.
FLOOR_SKIPS = {
    "test_interventions": ("local_learner", "the same foreach_learner calls as remote_learner, which RLlib runs "
                           "in-process: the remote learner (its pickling and actor calls) is the floor's case"),
}

#: Test modules that touch Ray (import ray or actors, or start it through the CLI) but stay off the floor
#: run, and why. tests/test_structure.py keeps every such module in one of the two lists.
NOT_ON_FLOOR = {
    "test_algos_e2e": "healthy and faulty runs of four algorithms: minutes; their learners are on the floor",
    "test_tune": "stopper and status units are Ray-free; the sweep and the trainable are on the floor",
    "test_run_e2e": "`supervise run` is on the floor under `ray job submit` (test_job_submit), its rollback "
                    "in test_interventions",
    "test_api_ray": "the Python API: the same callback and actor as the floor's runs",
    "test_chaos": "kills the supervisor actor: Ray's actor restarts, no private item",
    "test_cluster": "multi-node: public ray.nodes() and Cluster; the head node resource has its canary",
    "test_dashboard": "a browser; the live link's head flag is the head node resource's canary",
    "test_resources": "the store's threads and memory over fifty runs: no Ray internal",
    "test_store_faults": "the store under faults, through the actor: no Ray internal",
    "test_scheduler": "ASHA's public TrialScheduler API",
    "test_engine": "the engine; the actor's public API",
    "test_evaluation": "result keys, Ray-free",
    "test_node_monitor": "psutil and NVML, no Ray internal",
    "test_run_identity": "run folders; the run registry's store is the internal_kv canary",
    "test_structure": "reads sources",
    "test_cluster_configs": "reads Ray's cluster-launcher schema",
    "test_checkpoint_delivery": "checkpoint records through a killed supervisor actor: public actor API",
    "test_nodisk_cluster": "nodes without a shared disk and a lost node: minutes; public `ray start`",
    "test_bounded_actor": "the actor's memory over many runs and node joins: public actor and Cluster API",
    "test_detached_actor": "the detached actor's restart and rebuild: public actor API",
    "test_crash_core": "the Ray-free core, and the actor's service in-process (no Ray started)",
    "test_crash_e2e": "DQN, a Tune sweep with a crash and a hang: minutes; the data guard logs through "
                      "compat.log_per_iteration and reads Tune's error file through compat, both on the floor",
    "test_multiagent": "runs, sweeps and two learners repeat the floor's per-module change and rollback",
    "test_multiagent_core": "the engine per module and the actor's own class, in-process: no Ray internal",
    "test_learner_results": "folds results with RLlib 2.60's MetricsLogger; the floor's RLlib has no results "
                            "queue to replace (its canary in test_compat says so on the floor)",
    "test_blind_stale_rllib": "kills APPO's EnvRunnerStateServer (Ray 2.60's pull-based weight sync); its weight "
                              "pushes and seq nos are the floor's rollback path (test_interventions)",
}


def _floor_selected(module: str, name: str, params: str = "") -> bool:
    skip = FLOOR_SKIPS.get(module)
    if skip and skip[0] in params.split("-"):
        return False
    return module in RAY_FLOOR or f"{module}::{name}" in RAY_FLOOR


def pytest_ignore_collect(collection_path, config):
    """``-m ray_floor`` collects only the modules on the floor list (the others import what the floor
    environment may lack, and take time to import)."""
    path = Path(str(collection_path))
    if config.getoption("markexpr", "") == "ray_floor" and path.suffix == ".py" and path.name.startswith("test_"):
        return not any(entry.split("::")[0] == path.stem for entry in RAY_FLOOR)
    return None


def pytest_collection_modifyitems(config, items):
    import pytest

    for item in items:
        callspec = getattr(item, "callspec", None)
        if _floor_selected(Path(str(item.fspath)).stem, getattr(item, "originalname", item.name),
                           callspec.id if callspec else ""):
            item.add_marker(pytest.mark.ray_floor)


@pytest.fixture(scope="session", autouse=True)
def sb3_logs_in_pytests_tmp(tmp_path_factory):
    """Stable-Baselines3 makes a log folder for every ``learn`` (``SB3-<time>`` in the system's temp dir unless
    SB3_LOGDIR names one): the tests' go with pytest's own temporary files."""
    import os

    if "SB3_LOGDIR" not in os.environ:
        os.environ["SB3_LOGDIR"] = str(tmp_path_factory.mktemp("sb3-logs"))
    yield

@pytest.fixture(scope="session")
def divergent_run(tmp_path_factory):
    """One sabotaged ``supervise run`` (real Ray, RLlib PPO, the CLI; the lr jumps to 5.0 for the update of
    iteration 6), alerting a webhook on 127.0.0.1 and a destination that refuses connections: test_run_e2e judges
    its repair, test_alerts_e2e its alerts (one run of the kind, not two, in CI's time).
    Returns (run folder, the finished process, what the webhook received)."""
    from tests.alert_server import Hook, refused_port
    from tests.test_alerts_e2e import supervise
    from tests.test_run_e2e import FAST

    hook = Hook()
    out = tmp_path_factory.mktemp("div") / "div"
    bad = f"json://127.0.0.1:{refused_port()}/down"
    try:
        p = supervise("run", "experiments/cartpole_divergent.yaml", "--iterations", "10", "--out", str(out), *FAST,
                      "--set", "config.lr=[[0, 0.0003], [4999, 0.0003], [5000, 5.0]]",
                      "--set", "supervisor.checkpoint_every=2",
                      "--set", f"supervisor.alerts=[{{url: '{hook.url}'}}, {{url: '{bad}'}}]",
                      "--set", "supervisor.dashboard_url=http://127.0.0.1:8266")
        received = list(hook.received)
    finally:
        hook.close()
    return out, p, received

_SESSION: list = []  # the session, for its final exit status


def pytest_sessionstart(session):
    _SESSION[:] = [session]


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """The test process ends with ``os._exit`` and pytest's own exit status once pytest has written everything.

    Some full runs here (2 of about 8, both Ray releases' suites green) ended with exit status 139 after the
    summary, with nothing from faulthandler even when enabled here last: the crash is in native code's exit
    handlers (C++ static destructors, after the interpreter's own teardown has unloaded faulthandler), in a process
    that started and shut down Ray dozens of times. The CLI's own processes (``supervise run`` and the others,
    run as subprocesses by many tests, every exit status checked) never showed it. ``RL_SUPERVISOR_FULL_EXIT=1``
    keeps the interpreter's normal exit, with faulthandler on, to look for it."""
    import faulthandler
    import os
    import threading

    alive = [f"{t.name}{' (daemon)' if t.daemon else ''}" for t in threading.enumerate()
             if t is not threading.main_thread()]
    if alive:
        print(f"\nthreads alive when the session ended: {', '.join(alive)}", file=sys.stderr)
    if os.environ.get("RL_SUPERVISOR_FULL_EXIT") == "1" or not _SESSION:
        faulthandler.enable(all_threads=True)
        return
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():  # what atexit would have done (every module shuts its own down)
        ray.shutdown()
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(_SESSION[0].exitstatus))
