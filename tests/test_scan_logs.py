"""``supervise scan`` on the logs people have beyond one record per line: TensorBoard event files (CleanRL's,
Tune's, this project's own), long-format CSV, TensorBoard's CSV downloads, W&B run folders; folder scans that
say what they skipped; CI gates (``--fail-on``).

Expected values are read from the files with other readers (TensorBoard's EventAccumulator, the csv module),
never copied into the test.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor.cli import main
from supervisor.scan import load, load_file, read, scan

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


def test_cleanrl_dqn_epsilon_logged_with_each_episode_does_not_make_episodes_iterations(tmp_path):
    """CleanRL's dqn.py writes charts/epsilon with every finished episode, and its losses every 100 steps once
    learning starts. Epsilon on the clock made each episode an iteration of its own, a single random episode a
    point of evidence: three short random CartPole episodes in a row read as a collapse (a healthy third-party
    run got 3 criticals). The updates are the iterations; the episodes and their epsilon go with the update
    that follows them."""
    from torch.utils.tensorboard import SummaryWriter

    run = tmp_path / "CartPole-v1__dqn__1__1700000002"
    w = SummaryWriter(str(run))
    ends, rets = [], []
    step, k = 0, 0
    while step < 3000:
        step += 7 + (k * 13) % 23  # episodes of uneven length, never ending on an update's step
        if step % 100 == 0:
            step += 1
        k += 1
        ends.append(step)
        rets.append(float(step % 37 + 9))
        w.add_scalar("charts/episodic_return", rets[-1], step)
        w.add_scalar("charts/episodic_length", 20.0, step)
        w.add_scalar("charts/epsilon", 1.0 - step / 10_000, step)
    updates = list(range(1000, 3001, 100))  # learning_starts 1000, train every step, log every 100
    for s in updates:
        w.add_scalar("losses/td_loss", 0.5, s)
        w.add_scalar("losses/q_values", 2.0 + s / 1000, s)
        w.add_scalar("charts/SPS", 900.0, s)
    w.close()
    (log,) = load(run)[1]
    assert log.steps == updates
    for i, s in enumerate(log.steps):
        prev = log.steps[i - 1] if i else -1
        mine = [(e, r) for e, r in zip(ends, rets) if prev < e <= s]
        m = log.metrics[i]
        assert m["q_mean"] == pytest.approx(2.0 + s / 1000) and m["total_loss"] == pytest.approx(0.5)
        if mine:
            assert m["num_episodes"] == len(mine)
            assert m["episode_return_mean"] == pytest.approx(sum(r for _, r in mine) / len(mine))
            assert m["epsilon"] == pytest.approx(1.0 - mine[-1][0] / 10_000)  # the newest, as the update saw it
    assert any("charts/epsilon" in n for n in log.notes)


def test_cleanrl_off_policy_keys_map_to_the_q_learner_names():
    """CleanRL's SAC/TD3/DDPG keys: the critic's Q estimate and loss under the names RLlib's Q-learners report
    (q_mean, q_loss), never the PPO critic's vf_loss; SAC's qf_loss (both critics) before qf1_loss."""
    from supervisor.keymaps import map_keys

    sac = {"losses/qf1_values": 3.0, "losses/qf_loss": 0.5, "losses/qf1_loss": 0.7, "losses/actor_loss": -3.0}
    assert map_keys(sac)[0] == {"q_mean": 3.0, "q_loss": 0.5, "policy_loss": -3.0}
    assert map_keys({"losses/qf1_values": 3.0, "losses/qf1_loss": 0.7})[0] == {"q_mean": 3.0, "q_loss": 0.7}


def test_per_episode_returns_of_parallel_envs_at_one_step_are_those_episodes(tmp_path):
    """A run that logs only episode statistics is judged at their steps; CleanRL's vectorized scripts log every
    env's finished episode at the same global step: those are several episodes (mean, min, max, count), not
    one value logged again."""
    from torch.utils.tensorboard import SummaryWriter

    run = tmp_path / "HalfCheetah-v4__ppo__1__1700000003"
    w = SummaryWriter(str(run))
    for s in (1000, 2000, 3000):
        for env in range(4):
            w.add_scalar("charts/episodic_return", float(s + env), s)
            w.add_scalar("charts/episodic_length", 1000.0, s)
    w.close()
    (log,) = load(run)[1]
    assert log.steps == [1000, 2000, 3000] and not log.warnings
    for s, m in zip(log.steps, log.metrics):
        assert (m["num_episodes"], m["episode_return_min"], m["episode_return_max"]) == (4, s, s + 3)
        assert m["episode_return_mean"] == pytest.approx(s + 1.5)


def test_a_logger_writing_every_tag_at_once_keeps_its_steps_and_a_resumed_step_is_the_later_value():
    """SB3's and Tune's event files hold every tag at the steps they log a running mean of the return at: those
    steps are the iterations, and a step written twice (a run resumed from a checkpoint) keeps its later
    values, with a warning: a running mean written again is no second episode."""
    from supervisor.eventfiles import to_records

    series = {"rollout/ep_rew_mean": {100: [10.0], 200: [20.0, 21.0], 300: [30.0]},
              "train/loss": {100: [1.0], 200: [1.1, 1.2], 300: [1.3]},
              "train/approx_kl": {100: [0.01], 200: [0.02, 0.03], 300: [0.01]}}
    records, warnings, notes = to_records(series)
    assert [r["step"] for r in records] == [100, 200, 300]
    assert records[1] == {"step": 200, "rollout/ep_rew_mean": 21.0, "train/loss": 1.2, "train/approx_kl": 0.03}
    assert all("num_episodes" not in r for r in records) and not notes
    assert warnings == ["3 value(s) logged again at a step already seen (a resumed run?): the later value wins"]


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

    stream = faulty_stream("gradient_explosion", n=40, onset=25, seed=3)
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


def test_own_tensorboard_keeps_a_non_finite_loss(tmp_path):
    """The iteration whose loss diverged is in the event files (NaN/inf written as they were), so a scan of them
    finds ``non_finite`` where the live run did."""
    from benchmarks.synthetic import healthy_stream
    from supervisor.tensorboard import TensorBoardLog

    tb = TensorBoardLog(tmp_path)
    for it, m in enumerate(healthy_stream(12, seed=4), start=1):
        if it == 9:
            m = {**m, "total_loss": float("inf"), "kl": float("nan")}
        tb.write("trial_a", it, m, {"health_score": 1.0})
    tb.close()
    (t,) = scan(tmp_path)["trials"]
    found = [f for f in bad(t["findings"]) if f["detector"] == "non_finite"]
    assert found and found[0]["step"] == 9 and found[0]["severity"] == "critical", t["findings"]


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


# ------------------------------------------------------------------ CSV exports, W&B


def export_long_csv(run_dir, out):
    """``step,tag,value`` (the long format scripts export TensorBoard scalars to)."""
    rows = sorted((s, tag, v) for tag, pts in accumulate(run_dir).items() for s, v in pts)
    out.write_text("step,tag,value\n" + "".join(f"{s},{t},{v!r}\n" for s, t, v in rows))
    return out


def export_tb_downloads(run_dir, folder):
    """TensorBoard's "download CSV": one file per tag, ``Wall time,Step,Value``, named run-<run>-tag-<tag>.csv."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    folder.mkdir(parents=True, exist_ok=True)
    for tag in acc.Tags()["scalars"]:
        lines = ["Wall time,Step,Value"] + [f"{e.wall_time!r},{e.step},{e.value!r}" for e in acc.Scalars(tag)]
        (folder / f"run-{run_dir.name}-tag-{tag.replace('/', '_')}.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_long_csv_and_tensorboard_csv_downloads_find_the_planted_fault(tmp_path):
    (want,) = load(LR_JUMP)[1]
    long = export_long_csv(LR_JUMP, tmp_path / "long.csv")
    down = export_tb_downloads(LR_JUMP, tmp_path / "downloads")
    for path, fmt in ((long, "long-csv"), (down, "tensorboard-csv")):
        res = scan(path)
        (t,) = res["trials"]
        assert t["format"] == fmt and t["source_kind"] == "cleanrl", t
        assert bad(res["findings"])[0]["step"] == make_runs.FAULT_STEP
        (log,) = load(path)[1]
        if fmt == "tensorboard-csv":  # the same iterations as the event files (episodes gathered the same way)
            assert log.steps == want.steps
            assert all(a.keys() == b.keys() and all(a[k] == pytest.approx(b[k], rel=1e-6) for k in a)
                       for a, b in zip(log.metrics, want.metrics))
    one = next(down.glob("*losses_approx_kl.csv"))  # a single download is one tag's log
    (log,) = load(one)[1]
    assert log.names() == ["approx_kl"] and log.steps == want.steps


def test_wandb_history_real_excerpt_and_planted_fault(tmp_path):
    real = DATA / "real" / "wandb" / "spaceinvaders"
    lines = [json.loads(x) for x in (real / "wandb-history.jsonl").read_text().splitlines()]
    res = scan(real)
    (t,) = res["trials"]
    assert (t["trial_id"], t["source_kind"], t["step_key"]) == ("spaceinvaders", "wandb", "_step")
    with_reward = [x for x in lines if "episodic_reward" in x]
    assert t["steps"] == len(with_reward) and t["rows"] == len(lines)
    assert t["dropped_rows"] == len(lines) - len(with_reward)  # cumulative averages and a video: counted
    assert t["final"]["episode_return_mean"] == with_reward[-1]["episodic_reward"]
    # a planted fault, written as W&B writes its history (run folder, files/, _step/_runtime/_timestamp)
    from benchmarks.synthetic import faulty_stream

    run = tmp_path / "wandb" / "offline-run-20260101_000000-abc123"
    (run / "files").mkdir(parents=True)
    stream = faulty_stream("kl_spike", n=50, onset=30, seed=2)
    with open(run / "files" / "wandb-history.jsonl", "w") as f:
        for i, m in enumerate(stream):
            f.write(json.dumps({"train/approx_kl": m["kl"], "train/entropy": m["entropy"],
                                "train/loss": m["total_loss"], "charts/episodic_return": m["episode_return_mean"],
                                "_step": 100 * i, "_runtime": 1.5 * i, "_timestamp": 1.7e9 + i}) + "\n")
    (run / "files" / "wandb-summary.json").write_text('{"_step": 4900}')
    (run / "run-abc123.wandb").write_bytes(b"\x00" * 16)
    res = scan(tmp_path / "wandb")
    (t,) = res["trials"]
    assert t["trial_id"] == run.name and bad(res["findings"])[0]["step"] == 3000
    reasons = {Path(s["path"]).name: s["reason"] for s in res["skipped"]}
    assert set(reasons) == {"wandb-summary.json", "run-abc123.wandb"} and "W&B" in reasons["run-abc123.wandb"]


# ------------------------------------------------------------------ folders, dropped rows, repeats, --fail-on


def test_mixed_folder_reads_what_it_can_and_lists_the_rest(tmp_path, capsys):
    shutil.copytree(DATA / "tune_exp" / "PPO_CartPole-v1_00000", tmp_path / "tune" / "PPO_0")  # healthy
    shutil.copytree(LR_JUMP, tmp_path / "tb" / LR_JUMP.name)
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "model.pt").write_bytes(b"\x80\x02")
    (tmp_path / "notes.txt").write_text("lr sweep, see slack\n")
    (tmp_path / "broken.jsonl").write_text('{"kl": 0.1}\n{"kl": oops}\n{"kl": 0.1}\n')
    res = scan(tmp_path)
    assert {t["trial_id"] for t in res["trials"]} == {"tune/PPO_0", f"tb/{LR_JUMP.name}"}
    skipped = {Path(s["path"]).name: s["reason"] for s in res["skipped"]}
    assert set(skipped) == {"params.json", "ckpt", "notes.txt", "broken.jsonl"}, skipped
    assert skipped["ckpt"] == "model or checkpoint data" and "line 2" in skipped["broken.jsonl"]
    assert main(["scan", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "4 files not read" in out and "notes.txt" in out and "broken.jsonl" in out


def test_a_bad_csv_beside_healthy_tune_trials_is_no_false_all_clear(tmp_path):
    """The issue's case: a folder whose only bad log is a CSV not named progress.csv."""
    shutil.copytree(DATA / "tune_exp" / "PPO_CartPole-v1_00000", tmp_path / "PPO_0")
    shutil.copy(DATA / "tune_exp" / "PPO_CartPole-v1_00001" / "progress.csv", tmp_path / "diverged_run.csv")
    res = scan(tmp_path)
    assert res["health"]["worst_severity"] == "critical"
    assert {f["trial"] for f in bad(res["findings"])} == {"diverged_run.csv"}


def test_dropped_rows_are_counted_and_a_mostly_unreadable_log_warned(tmp_path):
    p = tmp_path / "log.csv"
    rows = ["step,loss,kl"] + [f"{i},{0.5 - 0.001 * i},0.01" if i % 4 == 0 else f"{i},n/a,-" for i in range(40)]
    p.write_text("\n".join(rows) + "\n")
    (t,) = scan(p)["trials"]
    assert (t["rows"], t["dropped_rows"], t["steps"]) == (40, 30, 10)
    assert any("30 of 40 rows hold no value" in w for w in t["warnings"]), t


def test_a_finding_on_consecutive_rows_prints_once_with_its_range(tmp_path, capsys):
    p = tmp_path / "nan.jsonl"
    p.write_text("".join(json.dumps({"step": 10 * i, "loss": 0.5 if i < 20 else float("nan"), "kl": 0.01})
                         .replace("NaN", "NaN") + "\n" for i in range(40)))
    res = scan(p)
    nf = [f for f in res["findings"] if f["detector"] == "non_finite"]
    assert len(nf) > 1 and [f["row"] for f in nf] == list(range(20, 20 + len(nf)))  # JSON: every row
    assert main(["scan", str(p)]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if "non_finite" in ln]
    assert len(lines) == 1 and f"200..{nf[-1]['step']} ({len(nf)} rows)" in lines[0], out


def test_fail_on_is_a_ci_gate(tmp_path):
    (faulty_file,) = LR_JUMP.glob("events.out.tfevents.*")
    r = supervise("scan", str(faulty_file), "--fail-on", "critical")
    assert r.returncode == 4 and "critical" in r.stdout, r.stderr
    assert main(["scan", str(HEALTHY), "--fail-on", "critical"]) == 0
    assert main(["scan", str(HEALTHY), "--fail-on", "warning", "--format", "json"]) == 0
    assert main(["scan", str(DATA / "tune_exp"), "--fail-on", "warning"]) == 4
    assert main(["scan", str(tmp_path / "missing"), "--fail-on", "critical"]) == 2  # bad input stays 2


def test_the_third_party_corpus_as_one_folder():
    """benchmarks/corpus (other people's logs, every writer in it) scanned as a user would scan a folder of logs:
    every log its index lists is read, the rest (its docs and index) is listed with a reason."""
    root = Path(__file__).resolve().parents[1] / "benchmarks" / "corpus"
    files = [f["file"] for f in json.loads((root / "corpus.json").read_text())["files"]]
    # a TensorBoard run is its folder (CleanRL's runs/<run name>), as tensorboard --logdir shows it
    files = [str(Path(f).parent) if Path(f).name.startswith("events.out.tfevents.") else f for f in files]
    res = read(root)
    assert sorted(Path(lg.source).relative_to(root).as_posix() for lg in res.logs) == sorted(files)
    skipped = {Path(s["path"]).name: s["reason"] for s in res.skipped}
    assert set(skipped) == {"PROVENANCE.md", "README.md", "corpus.json"}, skipped
    assert skipped["README.md"] == "not a log format scan reads (.md)"
    assert skipped["corpus.json"].startswith("no known metric keys")
