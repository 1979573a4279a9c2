"""Checkpoint records reach the supervisor like reports, rotation never deletes what a rollback needs, and
a new best checkpoint replaces the old one without a moment with no best.

A real PPO trial (CartPole, in this process) under a real supervisor actor. The supervisor is killed
(``no_restart``) and a new one started in its place, so the trial's calls fail for a while the way they do
when the head is busy or restarting: records made meanwhile must wait in the trial and arrive once it
answers, and until the supervisor has acknowledged a newer rollback target, the checkpoint it would roll
back to must stay on disk.
"""

import os
import sys
import time
from pathlib import Path

import pytest
import ray

from actors.algo_config import build_config
from actors.bootstrap import new_run, open_run, start
from actors.callback import find_callback
from actors.supervisor_actor import find_supervisor, get_or_create_supervisor
from supervisor.config import load_experiment
from supervisor.store import Store

ROOT = Path(__file__).resolve().parents[1]
EXP = str(ROOT / "experiments" / "cartpole_ppo.yaml")
SMALL = ["config.train_batch_size_per_learner=200", "config.minibatch_size=100", "config.num_epochs=1",
         "config.num_env_runners=0", "supervisor.keep_checkpoints=1", "supervisor.retry_after_s=0.2",
         "supervisor.report_timeout_s=10", "supervisor.tensorboard=false", "supervisor.checkpoint_every=1000"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trial(tmp_path_factory):
    saved = os.environ.get("RL_SUPERVISOR_NODE_MONITORS")
    os.environ["RL_SUPERVISOR_NODE_MONITORS"] = "0"
    exp = load_experiment(EXP, SMALL)
    run = new_run(exp, EXP, str(tmp_path_factory.mktemp("delivery") / "run"), "run")
    start(run, None, num_cpus=2)
    algo = None
    try:
        open_run(run, trial_id=run.run_id, best_dir=str(run.run_dir / "best"))
        algo = build_config(exp, EXP, run.run_id).build_algo()
        algo.train()
        yield run, algo, find_callback(algo)
    finally:
        if algo is not None:
            algo.stop()
        ray.shutdown()
        if saved is None:
            os.environ.pop("RL_SUPERVISOR_NODE_MONITORS", None)
        else:
            os.environ["RL_SUPERVISOR_NODE_MONITORS"] = saved


def _stored_checkpoints(run, trial_id) -> list[str]:
    st = Store(run.run_dir / "supervisor.db", readonly=True)
    try:
        return [c["path"] for c in st.checkpoints(trial_id)]
    finally:
        st.close()


def _kill_supervisor() -> None:
    sup = find_supervisor()
    ray.kill(sup, no_restart=True)
    deadline = time.monotonic() + 30
    while find_supervisor() is not None:  # the name is free once the GCS has buried it
        assert time.monotonic() < deadline, "the killed supervisor's name is still taken"
        time.sleep(0.1)


def _exists(path: str) -> bool:
    from supervisor.storage import Storage

    return Storage(path).exists("learner_group")


def test_a_record_made_while_the_supervisor_is_gone_arrives_once_it_is_back(trial):
    run, algo, cb = trial
    _kill_supervisor()
    cb._checkpoint(algo, iteration=algo.iteration, seq=cb.seq - 1)
    made = cb.checkpoints[-1]
    get_or_create_supervisor()  # a new supervisor: it knows nothing of the run until the trial speaks
    time.sleep(0.3)  # the trial's back-off (retry_after_s) ends
    algo.train()  # the next report: the buffered record goes first
    stored = _stored_checkpoints(run, cb.trial_id)
    assert stored and stored[-1] == made, stored
    assert _exists(made)


def test_rotation_keeps_the_rollback_target_until_a_newer_one_is_acknowledged(trial):
    run, algo, cb = trial
    algo.train()
    target = _stored_checkpoints(run, cb.trial_id)[-1]  # the supervisor's rollback target now
    assert _exists(target)
    _kill_supervisor()
    made = []
    for k in range(3):  # keep_checkpoints=1, and none of these reaches the supervisor yet
        cb._checkpoint(algo, iteration=algo.iteration, seq=cb.seq + k)
        made.append(cb.checkpoints[-1])
    assert _exists(target), "rotation deleted the checkpoint the supervisor would roll back to"
    assert all(_exists(p) for p in made)
    get_or_create_supervisor()
    time.sleep(0.3)
    algo.train()
    stored = _stored_checkpoints(run, cb.trial_id)
    assert stored[-1] == made[-1], stored  # acknowledged: the newest is the target now
    assert _exists(made[-1])
    assert not _exists(target) and not any(_exists(p) for p in made[:-1])  # and only then the rest went


def test_a_new_best_replaces_the_old_without_a_moment_with_no_best(trial):
    """Every file operation the swap makes sees a whole best checkpoint in place (audit hooks fire
    before each rename/rmtree/symlink/remove), and so does every reader afterwards."""
    run, algo, cb = trial
    best = {"metric": "episode_return_mean", "value": 10.0}
    cb._save_best(algo, algo.iteration, cb.seq - 1, best)
    path = run.run_dir / "best"
    assert (path / "learner_group").is_dir()
    seen: list[tuple[str, bool]] = []
    watching = [True]

    def hook(event, args):
        if watching[0] and event in ("os.rename", "shutil.rmtree", "os.remove", "os.rmdir", "os.symlink"):
            seen.append((event, (path / "learner_group").is_dir()))

    sys.addaudithook(hook)  # cannot be removed: switched off below
    try:
        algo.train()
        cb._save_best(algo, algo.iteration, cb.seq - 1, {**best, "value": 20.0})
    finally:
        watching[0] = False
    assert seen and all(ok for _, ok in seen), seen
    assert (path / "learner_group").is_dir()
    time.sleep(0.3)
    algo.train()  # the record is delivered (and the old best's files go only after that)
    st = Store(run.run_dir / "supervisor.db", readonly=True)
    try:
        rec = st.best_checkpoint(cb.trial_id)
    finally:
        st.close()
    assert rec["path"] == str(path) and _exists(rec["path"])  # the store names the stable link
    versions = sorted(Path(os.path.realpath(path)).parent.glob("best-*"))
    assert versions == [Path(os.path.realpath(path))], versions  # old versions went once the new one was held
