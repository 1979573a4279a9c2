"""``supervise scan`` on the logs people have beyond one record per line: TensorBoard event files (CleanRL's,
Tune's, this project's own), long-format CSV, TensorBoard's CSV downloads, W&B run folders; folder scans that
say what they skipped; CI gates (``--fail-on``).

Expected values are read from the files with other readers (TensorBoard's EventAccumulator, the csv module),
never copied into the test.
"""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor.cli import main
from supervisor.scan import load, load_file, load_tensorboard, read, scan

DATA = Path(__file__).parent / "data"
TB = DATA / "tensorboard"
CLEANRL = TB / "cleanrl"
HEALTHY = CLEANRL / "CartPole-v1__ppo__1__1700000000"
LR_JUMP = CLEANRL / "CartPole-v1__ppo_lr_jump__1__1700000001"
sys.path.insert(0, str(TB))
import make_runs  # noqa: E402  (the fixtures' generator: where the fault was planted)


def bad(findings):
    return [f for f in findings if f["severity"] in ("warning", "critical")]


def supervise(*args):
    return subprocess.run([sys.executable, "-m", "supervisor", *args], capture_output=True, text=True, timeout=120)


def accumulate(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


# ------------------------------------------------------------------ TensorBoard


def test_cleanrl_event_files_values_and_episode_gathering():
    (log,) = load(LR_JUMP)[1]
    tb = accumulate(LR_JUMP)
    updates = [s for s, _ in tb["losses/approx_kl"]]
    assert log.format == "tensorboard" and log.source_kind == "cleanrl" and log.steps == updates
    assert len(updates) == make_runs.UPDATES
    for i, (s, kl) in enumerate(tb["losses/approx_kl"]):
        assert log.metrics[i]["approx_kl"] == pytest.approx(kl, rel=1e-6)
    ent = dict(tb["losses/entropy"])
    assert all(m["entropy"] == pytest.approx(ent[s], rel=1e-6) for s, m in zip(log.steps, log.metrics))
    # each finished episode counts in the update that follows it (CleanRL logs it at the step it ended)
    eps = tb["charts/episodic_return"]
    for i, s in enumerate(log.steps):
        prev = log.steps[i - 1] if i else -1
        mine = [v for es, v in eps if prev < es <= s]
        if mine:
            m = log.metrics[i]
            assert m["num_episodes"] == len(mine)
            assert m["episode_return_mean"] == pytest.approx(sum(mine) / len(mine), rel=1e-6)
            assert (m["episode_return_min"], m["episode_return_max"]) == pytest.approx((min(mine), max(mine)))
    assert "charts/SPS" in log.ignored and "losses/old_approx_kl" in log.ignored


def test_cleanrl_planted_fault_found_at_its_step_as_file_run_and_folder_of_runs():
    (event_file,) = LR_JUMP.glob("events.out.tfevents.*")
    for path in (event_file, LR_JUMP):
        res = scan(path)
        first = bad(res["findings"])[0]
        assert first["step"] == make_runs.FAULT_STEP, res["findings"][:3]
        assert first["detector"] in ("kl_spike", "update_too_large", "loss_explosion")
    res = scan(CLEANRL)  # a folder of runs: one trial per run
    by = {t["trial_id"]: t for t in res["trials"]}
    assert set(by) == {HEALTHY.name, LR_JUMP.name} and res["format"] == "folder"
    assert not bad(by[HEALTHY.name]["findings"])
    assert bad(by[LR_JUMP.name]["findings"])[0]["step"] == make_runs.FAULT_STEP
    assert res["health"]["worst_severity"] == "critical"
    assert res["skipped"] == []


def test_own_run_folder_tensorboard(tmp_path):
    """This project's RUN_DIR/tensorboard (written by supervisor.tensorboard): its own names, its verdicts aside."""
    from benchmarks.synthetic import faulty_stream
    from supervisor.tensorboard import TensorBoardLog

    stream = faulty_stream("gradient_explosion", n=40, onset=25, seed=3)  # (the writer keeps finite values only)
    tb = TensorBoardLog(tmp_path)
    for it, m in enumerate(stream, start=1):
        tb.write("trial_a", it, {**m, "q_mean": 1.0 + it}, {"health_score": 1.0, "findings": ["x"]})
    tb.close()
    (tmp_path / "supervisor.db").write_bytes(b"")
    res = scan(tmp_path)  # the run folder: its tensorboard/ is read, its store listed as not read
    (t,) = res["trials"]
    assert t["trial_id"] == "tensorboard/trial_a" and t["source_kind"] == "rl-supervisor"
    assert "q_mean" in t["metrics"] and not t["ignored_keys"]
    first = bad(res["findings"])[0]
    assert (first["step"], first["detector"]) == (26, "gradient_explosion")
    assert [s["path"] for s in res["skipped"]] == [str(tmp_path / "supervisor.db")]


def test_tune_tbx_event_files_read_as_result_json(tmp_path):
    """Tune's TBXLoggerCallback prefixes every tag with ray/tune/: read as the trial's result.json."""
    from tensorboardX import SummaryWriter

    from supervisor.keymaps import flatten, number

    src = DATA / "tune_exp" / "PPO_CartPole-v1_00000" / "result.json"
    w = SummaryWriter(str(tmp_path / "PPO_0"))
    for line in src.read_text().splitlines():
        rec = flatten(json.loads(line))
        for k, v in rec.items():
            if number(v) is not None and k != "training_iteration":
                w.add_scalar(f"ray/tune/{k}", number(v), rec["training_iteration"])
    w.close()
    (want,) = load(src)[1]
    (got,) = load(tmp_path / "PPO_0")[1]
    assert got.steps == want.steps and got.source_kind.startswith("rllib")
    for a, b in zip(got.metrics, want.metrics):
        assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], rel=1e-6, nan_ok=True) for k in a)
    # beside a result.json (a Tune trial folder), the event file is the same data: listed, not read twice
    shutil.copy(src, tmp_path / "PPO_0" / "result.json")
    res = read(tmp_path)
    assert [lg.format for lg in res.logs] == ["result.json"]
    assert [s["reason"] for s in res.skipped] == ["the same values as result.json beside it"]


def test_torn_event_file_is_read_up_to_the_damage(tmp_path):
    (event_file,) = HEALTHY.glob("events.out.tfevents.*")
    data = event_file.read_bytes()
    torn = tmp_path / "run" / event_file.name
    torn.parent.mkdir()
    torn.write_bytes(data[: len(data) // 2])
    log = load_file(torn)
    assert 0 < len(log.steps) < make_runs.UPDATES
    assert any("torn or damaged record" in w for w in log.warnings), log.warnings
    junk = tmp_path / "junk" / "events.out.tfevents.1.host"
    junk.parent.mkdir()
    junk.write_bytes(b"\x05" * 64)
    r = supervise("scan", str(junk))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and str(junk) in r.stderr
