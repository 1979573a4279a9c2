"""``supervise scan`` on real logs of other people's runs (tests/data/real/, see PROVENANCE.md).

Expected values are read from the files themselves (with the csv/json
modules), not copied into the test, so a reader that mis-maps a key fails.
"""

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor.cli import main
from supervisor.keymaps import flatten, looks_like_learner, lookup, normalize_keys, number, rank_ignored
from supervisor.scan import load, scan

REAL = Path(__file__).parent / "data" / "real"
CORPUS = Path(__file__).resolve().parents[1] / "benchmarks" / "corpus"


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def bad(findings):
    return [f for f in findings if f["severity"] in ("warning", "critical")]


def one(path):
    res = scan(path)
    assert len(res["trials"]) == 1
    json.dumps(res, allow_nan=False)
    return res, res["trials"][0]


# ------------------------------------------------------------------ RLlib, old API stack


def test_rllib_old_stack_progress_csv():
    path = REAL / "rllib_old_stack" / "deepcomp_trial" / "progress.csv"
    res, t = one(path)
    src = rows(path)
    assert (t["format"], t["source_kind"], t["step_key"]) == ("progress.csv", "rllib (old API stack)",
                                                              "training_iteration")
    assert (t["steps"], t["first_step"], t["last_step"]) == (len(src), 1, int(src[-1]["training_iteration"]))
    assert {"kl", "entropy", "policy_loss", "vf_loss", "total_loss", "kl_coeff", "lr", "explained_variance",
            "episode_return_mean", "episode_return_min", "episode_return_max", "episode_len_mean"} <= set(t["metrics"])
    log = load(path)[1][0]
    assert log.metrics[0]["kl"] == float(src[0]["info/learner/default_policy/kl"])
    assert log.metrics[-1]["episode_return_mean"] == float(src[-1]["episode_reward_mean"])
    assert log.metrics[2]["lr"] == float(src[2]["info/learner/default_policy/cur_lr"])
    assert not bad(res["findings"]), bad(res["findings"])[:3]  # a run that learns: nothing to report


def test_rllib_result_json_config_keys_are_counted_not_listed():
    # GENERATED with real RLlib (see generate.py): every line holds the run's nested config
    path = REAL / "rllib_old_stack" / "generated_mountaincar" / "result.json"
    res, t = one(path)
    first = json.loads(path.read_text().splitlines()[0])
    assert t["format"] == "result.json" and t["source_kind"] == "rllib (old API stack)"
    log = load(path)[1][0]
    stats = first["info"]["learner"]["default_policy"]["learner_stats"]
    assert (log.metrics[0]["kl"], log.metrics[0]["kl_coeff"], log.metrics[0]["grad_norm"]) == (
        stats["kl"], stats["cur_kl_coeff"], stats["grad_gnorm"])
    numeric_config = [k for k, v in flatten(first["config"]).items() if number(v) is not None]
    assert t["ignored_config"] == len(numeric_config) > 20
    assert not any(k.startswith("config/") for k in t["ignored_keys"])
    learnerish = [looks_like_learner(k) for k in t["ignored_keys"]]
    assert learnerish == sorted(learnerish, reverse=True)  # learner-looking keys first
    out = subprocess.run([sys.executable, "-m", "supervisor", "scan", str(path)], capture_output=True, text=True,
                         timeout=120).stdout
    line = next(ln for ln in out.splitlines() if "ignored keys:" in ln)
    listed = line.split("ignored keys:")[1].split(" (+")[0]
    assert "config/" not in listed and f"{t['ignored_config']} config/hyperparameter keys" in line


def test_nan_returns_before_the_first_episode_are_no_data():
    # GENERATED with real RLlib (see generate.py): no episode finishes in iterations 1-3
    path = REAL / "rllib_old_stack" / "generated_mountaincar" / "progress.csv"
    src = rows(path)
    nan_rows = [i for i, r in enumerate(src) if math.isnan(float(r["env_runners/episode_return_mean"]))]
    assert nan_rows == [0, 1, 2]  # the premise: the log opens with NaN returns
    res, t = one(path)
    log = load(path)[1][0]
    for i in nan_rows:
        assert not {"episode_return_mean", "episode_return_min", "episode_return_max",
                    "episode_len_mean"} & set(log.metrics[i]), log.metrics[i]
        assert log.metrics[i]["kl"] == float(src[i]["info/learner/default_policy/learner_stats/kl"])
        assert log.metrics[i]["grad_norm"] == float(src[i]["info/learner/default_policy/learner_stats/grad_gnorm"])
    assert log.metrics[3]["episode_return_mean"] == float(src[3]["env_runners/episode_return_mean"])
    assert not [f for f in res["findings"] if f["detector"] == "non_finite"], res["findings"]
    assert not [f for f in res["findings"] if f["severity"] == "critical"], res["findings"]
    assert any("NaN episode returns" in n for n in t["notes"])


def test_old_stack_keys_with_and_without_a_policy_id():
    for stat, name in {"kl": "kl", "entropy": "entropy", "policy_loss": "policy_loss", "vf_loss": "vf_loss",
                       "cur_lr": "lr", "cur_kl_coeff": "kl_coeff", "vf_explained_var": "explained_variance",
                       "grad_gnorm": "grad_norm", "total_loss": "total_loss"}.items():
        for key in (f"info/learner/default_policy/learner_stats/{stat}", f"info/learner/default_policy/{stat}",
                    f"info/learner/{stat}", f"info/learner/shared_policy/learner_stats/{stat}"):
            assert (lookup(key) or (None,))[0] == name, key
    rec = {"training_iteration": 1, "timesteps_total": 4000, "episode_reward_mean": float("nan"),
           "episode_reward_min": float("nan"), "episode_len_mean": float("nan"), "episodes_this_iter": 0,
           "info": {"learner": {"default_policy": {"learner_stats": {"kl": 0.02, "cur_lr": 5e-5,
                                                                      "total_loss": float("inf")}}}}}
    m = normalize_keys(rec)
    assert m["kl"] == 0.02 and m["lr"] == 5e-5 and m["total_loss"] == math.inf  # inf is evidence, kept
    assert "episode_return_mean" not in m and "episode_len_mean" not in m  # NaN returns: no data


# ------------------------------------------------------------------ RLDK event stream


def test_rldk_event_stream_is_pivoted_per_step():
    path = REAL / "rldk" / "minimal_loop_run.jsonl"
    events = [json.loads(ln) for ln in path.read_text().splitlines()]
    res, t = one(path)
    assert (t["format"], t["source_kind"], t["step_key"]) == ("rldk-events", "rldk", "step")
    assert t["steps"] == len({e["step"] for e in events}) and t["warnings"] == []
    log = load(path)[1][0]
    by = {(e["step"], e["name"]): e["value"] for e in events}
    for step, m in zip(log.steps, log.metrics):
        assert m == {"kl": by[step, "kl"], "episode_return_mean": by[step, "reward"],
                     "grad_norm": by[step, "grad_norm"]}


def test_rldk_fixture_repeated_names_warned_once():
    path = REAL / "rldk" / "stream_small.jsonl"
    events = [json.loads(ln) for ln in path.read_text().splitlines()]
    seen, dup, last = set(), 0, {}
    for e in events:
        dup += (e["step"], e["name"]) in seen
        seen.add((e["step"], e["name"]))
        last[e["step"], e["name"]] = e["value"]
    res, t = one(path)
    assert dup > 0 and [w for w in t["warnings"] if "repeat a name" in w] == [
        f"{dup} events repeat a name already logged at their step: the last value wins"]
    log = load(path)[1][0]
    for step, m in zip(log.steps, log.metrics):
        assert m["kl"] == last[step, "kl_mean"] and m["episode_return_mean"] == last[step, "reward_mean"]
    assert t["ignored_keys"] == ["custom_metric"]
    out = subprocess.run([sys.executable, "-m", "supervisor", "scan", str(path)], capture_output=True, text=True,
                         timeout=120).stdout
    assert out.count("warning:") == 1, out


# ------------------------------------------------------------------ Stable-Baselines3 / baselines


@pytest.mark.parametrize("name", ["lunarlander.monitor.csv", "cartpole.monitor.csv"])
def test_monitor_csv_groups_ten_episodes_per_iteration(name):
    path = REAL / "monitor" / name
    lines = path.read_text().splitlines()
    assert lines[0].startswith('#{"t_start"')
    eps = [(float(r["r"]), int(r["l"])) for r in csv.DictReader(lines[1:])]
    res, t = one(path)
    assert (t["format"], t["source_kind"], t["step_key"]) == ("monitor.csv", "sb3/baselines monitor",
                                                              "total_timesteps")
    log = load(path)[1][0]
    assert len(log.steps) == math.ceil(len(eps) / 10)
    for k, (step, m) in enumerate(zip(log.steps, log.metrics)):
        block = eps[10 * k:10 * k + 10]
        assert step == sum(n for _, n in eps[:10 * k + len(block)])
        assert m["episode_return_mean"] == pytest.approx(sum(r for r, _ in block) / len(block))
        assert (m["episode_return_min"], m["episode_return_max"]) == (min(r for r, _ in block),
                                                                      max(r for r, _ in block))
        assert m["num_episodes"] == len(block)
    assert not bad(res["findings"]), bad(res["findings"])[:3]


def test_sb3_progress_csv():
    path = REAL / "sb3" / "ppo_cartpole_progress.csv"
    src = rows(path)
    res, t = one(path)
    assert (t["source_kind"], t["step_key"]) == ("stable-baselines3", "time/total_timesteps")
    log = load(path)[1][0]
    assert log.steps == [int(r["time/total_timesteps"]) for r in src]
    assert set(log.metrics[0]) == {"episode_return_mean", "episode_len_mean"}  # no update before the first rollout
    r = src[5]
    m = log.metrics[5]
    assert m["entropy"] == -float(r["train/entropy_loss"])  # SB3 logs -entropy
    assert (m["approx_kl"], m["clip_fraction"], m["vf_loss"], m["explained_variance"]) == (
        float(r["train/approx_kl"]), float(r["train/clip_fraction"]), float(r["train/value_loss"]),
        float(r["train/explained_variance"]))
    assert "train/clip_range" not in t["ignored_keys"] and t["ignored_config"] == 2  # clip_range, n_updates
    assert not bad(res["findings"]), bad(res["findings"])[:3]


def test_baselines_ppo2_progress_csv():
    path = REAL / "baselines" / "ppo2_progress.csv"
    src = rows(path)
    res, t = one(path)
    assert (t["source_kind"], t["step_key"]) == ("openai-baselines", "total_timesteps")
    log = load(path)[1][0]
    assert log.steps == [int(r["total_timesteps"]) for r in src]
    m, r = log.metrics[3], src[3]
    assert (m["approx_kl"], m["clip_fraction"], m["entropy"], m["explained_variance"], m["episode_return_mean"],
            m["episode_len_mean"]) == tuple(float(r[k]) for k in ("approxkl", "clipfrac", "policy_entropy",
                                                                   "explained_variance", "eprewmean", "eplenmean"))
    assert set(t["ignored_keys"]) == {"fps", "time_elapsed", "serial_timesteps"}


def test_baselines_her_progress_csv():
    path = REAL / "baselines" / "her_progress.csv"
    res, t = one(path)
    log = load(path)[1][0]
    assert t["step_key"] == "epoch" and log.steps == [0, 1, 2, 3, 4]
    assert [m["success_rate"] for m in log.metrics] == [float(r["test/success_rate"]) for r in rows(path)]


def test_baselines_results_writer_monitor_header_with_a_space_and_crlf_rows():
    # OpenAI baselines' ResultsWriter: '# {json} ' then csv.DictWriter rows (CRLF). Read byte for byte.
    path = CORPUS / "baselines_monitor" / "humanoidstandup_ppo2_0.0.monitor.csv"
    raw = path.read_bytes()
    header, _, rest = raw.partition(b"\n")
    assert header.startswith(b"# {") and header.endswith(b"} ") and rest.startswith(b"r,l,t\r\n")
    eps = [(float(r["r"]), int(r["l"])) for r in csv.DictReader(rest.decode().splitlines())]
    res, t = one(path)
    assert (t["format"], t["source_kind"], t["step_key"]) == ("monitor.csv", "sb3/baselines monitor",
                                                              "total_timesteps")
    log = load(path)[1][0]
    assert len(log.steps) == math.ceil(len(eps) / 10) > 1
    for k, (step, m) in enumerate(zip(log.steps, log.metrics)):
        block = eps[10 * k:10 * k + 10]
        assert step == sum(n for _, n in eps[:10 * k + len(block)])
        assert m["episode_return_mean"] == pytest.approx(sum(r for r, _ in block) / len(block))


def test_baselines_ddpg_progress_csv():
    path = CORPUS / "baselines" / "ddpg_aipilot_progress.csv"
    src = rows(path)
    assert {"rollout/return_history", "reference_Q_mean", "train/loss_critic"} <= set(src[0])  # the premise
    res, t = one(path)
    assert (t["source_kind"], t["step_key"]) == ("openai-baselines", "total/steps")
    log = load(path)[1][0]
    assert log.steps == [int(r["total/steps"]) for r in src]
    for m, r in zip(log.metrics, src):
        assert (m["episode_return_mean"], m["q_mean"], m["policy_loss"], m["vf_loss"], m["episode_len_mean"]) == tuple(
            float(r[k]) for k in ("rollout/return_history", "rollout/Q_mean", "train/loss_actor", "train/loss_critic",
                                  "rollout/episode_steps"))
    assert "reference_Q_mean" in t["ignored_keys"]  # a fixed reference batch's Q: shown as not read, not guessed


# ------------------------------------------------------------------ Hugging Face trainer_state.json


def test_hf_sft_trainer_state_merges_train_and_eval_at_one_step():
    path = REAL / "hf_trainer_state" / "sft_trainer_state.json"
    hist = json.loads(path.read_text())["log_history"]
    steps = [e["step"] for e in hist]
    repeats = sum(a == b for a, b in zip(steps, steps[1:]))
    res, t = one(path)
    assert (t["format"], t["source_kind"], t["step_key"]) == ("trainer_state.json", "hf-trainer-state", "step")
    assert repeats >= 1 and t["steps"] == len(steps) - repeats
    assert [w for w in t["warnings"] if "repeat" in w] == [
        f"{repeats} row{' repeats' if repeats == 1 else 's repeat'} the step 'step' value of the row before: "
        f"merged into one iteration each (later values win)"]
    log = load(path)[1][0]
    at = log.steps.index(next(s for s, n in zip(steps, steps[1:]) if s == n))
    assert {"total_loss", "grad_norm", "lr", "eval_loss"} <= set(log.metrics[at])
    assert not bad(res["findings"]), bad(res["findings"])[:3]


def test_trl_grpo_trainer_state():
    path = REAL / "hf_trainer_state" / "trl_grpo_trainer_state.json"
    hist = json.loads(path.read_text())["log_history"]
    res, t = one(path)
    assert t["source_kind"] == "hf-trainer-state (TRL)"
    log = load(path)[1][0]
    assert log.steps == [e["step"] for e in hist]
    e, m = hist[0], log.metrics[0]
    assert (m["kl"], m["episode_return_mean"], m["reward_std"], m["grad_norm"], m["lr"], m["total_loss"]) == (
        e["kl"], e["reward"], e["reward_std"], e["grad_norm"], e["learning_rate"], e["loss"])
    # truncated completions are not PPO ratio clipping
    assert m["completion_truncated_fraction"] == e["completions/clipped_ratio"]
    assert m["clip_fraction"] == e["clip_ratio/region_mean"]
    assert m["reward_component/format_reward_fn"] == e["rewards/format_reward_fn/mean"]
    assert "frac_reward_zero_std" in t["ignored_keys"][:5]  # learner-looking first


def test_trainer_state_folder_scans_the_latest_checkpoint_only(tmp_path):
    text = (REAL / "hf_trainer_state" / "sft_trainer_state.json").read_text()
    for n in (200, 900, 45):
        (tmp_path / "run" / f"checkpoint-{n}").mkdir(parents=True)
        (tmp_path / "run" / f"checkpoint-{n}" / "trainer_state.json").write_text(text)
    res = scan(tmp_path)
    assert [t["trial_id"] for t in res["trials"]] == ["run/checkpoint-900/trainer_state.json"]


# ------------------------------------------------------------------ keys, steps, ignored keys


def test_trl_and_sb3_aliases():
    cases = {
        "objective/kl": "kl", "objective/entropy": "entropy", "objective/rlhf_reward": "episode_return_mean",
        "objective/scores": "episode_return_mean", "policy/approxkl_avg": "approx_kl",
        "policy/clipfrac_avg": "clip_fraction", "loss/policy_avg": "policy_loss", "loss/value_avg": "vf_loss",
        "val/clipfrac_avg": "vf_clip_fraction", "ppo/val/clipfrac": "vf_clip_fraction",
        "ppo/policy/entropy": "entropy", "ppo/mean_scores": "episode_return_mean", "reward": "episode_return_mean",
        "reward_std": "reward_std", "completions/clipped_ratio": "completion_truncated_fraction",
        "rewards/accuracy_reward": "reward_component/accuracy_reward", "train/ent_coef": "entropy_coeff",
        "eprewmean": "episode_return_mean", "EpRewMean": "episode_return_mean", "policy_entropy": "entropy",
        "misc/explained_variance": "explained_variance", "mean 100 episode reward": "episode_return_mean",
    }
    for key, name in cases.items():
        assert (lookup(key) or (None,))[0] == name, key
    for key in ("rewards/accuracy_reward/std", "completions/mean_length", "clip_ratio/low_mean", "num_tokens"):
        assert lookup(key) is None, key


def test_normalize_keys_on_library_records():
    assert normalize_keys({"global_step": 512, "losses/approx_kl": 0.01, "charts/episodic_return": 20.0}) == {
        "approx_kl": 0.01, "episode_return_mean": 20.0}
    assert normalize_keys({"train": {"entropy_loss": -0.6, "approx_kl": 0.02}, "rollout": {"ep_rew_mean": 9.0},
                           "time": {"total_timesteps": 2048}}) == {
        "entropy": 0.6, "approx_kl": 0.02, "episode_return_mean": 9.0}
    assert normalize_keys({"objective/kl": 0.3, "ppo/loss/total": float("nan")})["kl"] == 0.3
    assert math.isnan(normalize_keys({"ppo/loss/total": float("nan")})["total_loss"])  # NaN loss is evidence
    # an RLHF reward is scored every step: its NaN is a broken reward function, not "no episode yet"
    for key in ("reward", "objective/rlhf_reward", "ppo/mean_scores", "reward_mean"):
        assert math.isnan(normalize_keys({key: float("nan")})["episode_return_mean"]), key
    for key in ("episode_reward_mean", "rollout/ep_rew_mean", "charts/episodic_return", "eprewmean"):
        assert normalize_keys({key: float("nan"), "kl": 0.1}) == {"kl": 0.1}, key
    with pytest.raises(TypeError):
        normalize_keys([1, 2])


def test_ignored_keys_learner_first_config_counted():
    keys = [f"config/k{i}" for i in range(30)] + ["zeta", "alpha", "my_custom_loss", "kl_target_hit",
                                                   "allreduce_latency", "train/clip_range", "policy/lr"]
    listed, more, config = rank_ignored(keys, limit=4)
    assert listed == ["kl_target_hit", "my_custom_loss", "policy/lr", "allreduce_latency"]
    assert (more, config) == (2, 31)


def test_steps_going_backwards_and_repeating_are_warned_once(tmp_path):
    p = tmp_path / "two_runs.jsonl"
    recs = [{"step": s, "kl": 0.01, "entropy": 0.5} for s in (1, 2, 3, 3, 3, 1, 2, 3)]
    p.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    t = scan(p)["trials"][0]
    assert t["steps"] == 6
    assert t["warnings"] == [
        "2 rows repeat the step 'step' value of the row before: merged into one iteration each "
        "(later values win)",
        "step 'step' goes backwards 1 time(s), first at row 6 (3 -> 1): several runs appended to one log? "
        "judged in file order as one run"]
    r = subprocess.run([sys.executable, "-m", "supervisor", "scan", str(p)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and r.stdout.count("warning:") == 2 and r.stdout.count("goes backwards") == 1


def test_step_column_matched_up_to_case_and_spacing():
    # BoogaQ/PPO-exploration's own logger.py writes SB3-style keys with "time/total timesteps" (a space):
    # the scan read its 47 updates at steps 0..46 (the line index) and listed the column as ignored
    path = CORPUS / "custom_progress" / "boogaq_ppo_progress.csv"
    src = rows(path)
    res, t = one(path)
    assert t["step_key"] == "time/total timesteps" and "time/total timesteps" not in t["ignored_keys"]
    assert load(path)[1][0].steps == [int(r["time/total timesteps"]) for r in src]
    assert [f["step"] for f in res["findings"]] == [int(src[f["row"]]["time/total timesteps"]) for f in res["findings"]]


def test_sb3_eval_dump_is_joined_with_the_rollout_row_after_it():
    # SB3's EvalCallback dumps mid-rollout: its row holds eval/* and the last update's train/*, the rollout's
    # own row after it rollout/* and no train/*. Read apart, the update sat at a step of its own with no return
    # (no value scale to judge its value loss by) and the rollout row had no learner statistics.
    path = CORPUS / "sb3_progress" / "wheelrunner_ppo_progress.csv"
    src = rows(path)
    log = load(path)[1][0]
    evals = [i for i, r in enumerate(src) if r["eval/mean_reward"]]
    assert evals and all(not src[i + 1]["train/loss"] and src[i + 1]["rollout/ep_rew_mean"] for i in evals)
    assert log.steps == [int(r["time/total_timesteps"]) for r in src if r["rollout/ep_rew_mean"]]
    for i in evals:
        m = log.metrics[log.steps.index(int(src[i + 1]["time/total_timesteps"]))]
        assert (m["total_loss"], m["episode_return_mean"]) == (float(src[i]["train/loss"]),
                                                               float(src[i + 1]["rollout/ep_rew_mean"]))
    assert log.notes == [f"{len(evals)} EvalCallback dumps were joined with the rollout row after it (the update's "
                         f"train/* and the rollout's rollout/* of one iteration, split by a mid-rollout dump)"]
    assert log.rows == len(src)


def test_sb3_log_without_a_timestep_column_is_stepped_by_its_episode_count(tmp_path):
    # sottsout/SAC_PROJECT logged a subset of SB3's keys: no time/total_timesteps, only time/episodes,
    # and train-only dumps between episodes (empty rollout columns); it was stepped by the line index
    path = CORPUS / "sb3_progress" / "sac_goal_progress.csv"
    src = rows(path)
    t = one(path)[1]
    log = load(path)[1][0]
    episodes = [int(r["time/episodes"]) for r in src if r["time/episodes"]]
    assert t["step_key"] == "time/episodes" and log.steps == episodes
    stepless = [r for r in src if not r["time/episodes"]]
    assert t["warnings"] == [f"{len(stepless)} rows have no step 'time/episodes' value: merged into the iteration "
                             f"before each (later values win)"]
    i = next(i for i, r in enumerate(src) if not r["time/episodes"])  # its losses land on the episode before
    j = log.steps.index(int(src[i - 1]["time/episodes"]))
    assert log.metrics[j]["vf_loss"] == float(src[i]["train/critic_loss"])
    # an exact step column still wins over the episode count
    p = tmp_path / "progress.csv"
    p.write_text("time/episodes,time/total_timesteps,rollout/ep_rew_mean\n1,100,5.0\n2,200,6.0\n")
    assert load(p)[1][0].step_key == "time/total_timesteps"


BAD = [
    ("monitor.csv", '#{"t_start": 0, "env_id": "CartPole-v1"}\nr,l,t\n', "no episodes"),
    ("a.monitor.csv", '#{"t_start": 0}\nreward,len\n1,2\n', "columns r and l"),
    ("b.monitor.csv", '#{"t_start": 0}\nr,l,t\n1.0,10,0.1\nabc,10,0.2\n2.0,10,0.3\n', "line 4"),
    # KangHyoeun/usv_drl_project's logs/monitor.csv: "r,l,t-74851.744894,1000,7.552467" (a newline lost)
    ("c.monitor.csv", '#{"t_start": 0}\nr,l,t-74851.7,1000,7.55\n96528.2,213,8.88\n', "header runs into a data row"),
    ("events.jsonl", '{"step": 1, "name": "kl", "value": 0.1}\n{"step": "x", "name": "kl", "value": 0.1}\n',
     "event 2"),
]


@pytest.mark.parametrize("name,text,must", BAD, ids=[b[0] for b in BAD])
def test_bad_new_format_input_exits_2_with_one_line(tmp_path, capsys, name, text, must):
    path = tmp_path / name
    path.write_text(text)
    assert main(["scan", str(path)]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1 and "Traceback" not in err
    assert str(path) in lines[0] and must in lines[0], lines[0]


def test_torn_last_monitor_row_is_tolerated(tmp_path):
    p = tmp_path / "monitor.csv"
    p.write_text('#{"t_start": 0}\nr,l,t\n' + "".join(f"{i}.0,10,{i}\n" for i in range(12)) + "5.0,")
    log = load(p)[1][0]
    assert log.steps == [100, 120] and log.metrics[1]["num_episodes"] == 2
