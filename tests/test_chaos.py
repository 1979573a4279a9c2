"""Chaos: the supervisor actor is killed again and again while a real PPO trial trains.

Training must never stop or fail because of it; Ray restarts the actor, which
rebuilds its state from the store; every iteration, finding and intervention
ends up recorded exactly once (reports are written before they are
acknowledged, and unacknowledged ones are replayed and de-duplicated).
"""

import time

import pytest
import ray

from actors.algo_config import build_config
from actors.callback import find_callback
from actors.supervisor_actor import get_or_create_supervisor
from supervisor.config import Experiment
from supervisor.store import Store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_local():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_killed_supervisor_never_hangs_training_and_loses_nothing(ray_local, tmp_path):
    exp = Experiment.model_validate({
        "name": "chaos", "env": "CartPole-v1", "stop": {"iterations": 14},
        "config": {"lr": [[0, 3e-4], [3999, 3e-4], [4000, 5.0]], "train_batch_size_per_learner": 500,
                   "minibatch_size": 250, "num_epochs": 2, "num_env_runners": 0},
        "supervisor": {"checkpoint_every": 2, "report_timeout_s": 1.0}})
    run_info = {"run_dir": str(tmp_path), "name": "chaos", "kind": "run", "settings": exp.supervisor.model_dump(),
                "spec": None, "profile": None}
    sup = get_or_create_supervisor()
    ray.get(sup.open_run.remote("chaos", **run_info))
    info = {"run_id": "chaos", "trial_id": "chaos-trial", "run_info": run_info, "timeout_s": 1.0}
    algo = build_config(exp, "chaos", info).build_algo()
    cb = find_callback(algo)
    cb.client.retry_after_s = 0.5  # come back quickly after a kill (default 5 s)
    kills, pids = 0, set()
    try:
        for it in range(1, 15):
            if it in (3, 6, 9, 12):
                pids.add(ray.get(sup.ping.remote())["pid"])
                ray.kill(sup, no_restart=False)  # Ray restarts it
                kills += 1
            t0 = time.monotonic()
            algo.train()
            assert time.monotonic() - t0 < 60, "a dead supervisor must not hang training"
        # let the last buffered reports drain: one more iteration once the actor is back
        deadline = time.monotonic() + 60
        while cb.client.buffer and time.monotonic() < deadline:
            time.sleep(1)
            algo.train()
        assert not cb.client.buffer, "buffered reports were replayed"
        iterations = algo.iteration
        # end the trial as the runner does: the last applied actions travel with it
        assert cb.on_trial_end("stopped" if cb.stop_requested else "completed") is not None
    finally:
        algo.stop()
    assert kills >= 3
    pids.add(ray.get(sup.ping.remote())["pid"])
    assert len(pids) >= 4, "the actor really died and came back each time"

    store = Store(tmp_path / "supervisor.db", readonly=True)
    reports = store.reports("chaos-trial")
    seqs = [r["seq"] for r in reports]
    assert seqs == list(range(iterations)), seqs  # every iteration once, none missing
    findings = store.findings("chaos-trial")
    keys = [(f["seq"], f["detector"]) for f in findings]
    assert len(keys) == len(set(keys))
    assert any(f["severity"] == "critical" for f in findings), "the lr jump was seen despite the kills"
    ivs = store.interventions("chaos-trial")
    assert ivs and len({(i["seq"], i["action"]) for i in ivs}) == len(ivs)
    # every intervention decided was also applied by the trial (the applied record reached the store)
    assert all(i["applied"] is not None for i in ivs if i["action"] != "alert"), ivs
