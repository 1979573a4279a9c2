"""The Python API (``from supervisor import Supervisor``) and the torch applier: real engine, real SQLite,
real torch, the real CLI reading the run folder."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from supervisor import Supervisor, Verdict
from supervisor.api import normalize_metrics
from supervisor.errors import InputError
from supervisor.integrations.torch import TorchApplier

ROOT = Path(__file__).resolve().parents[1]


def supervise(*args, timeout=120):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "supervisor", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


def report(run_dir):
    p = supervise("report", str(run_dir), "--format", "json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def ppo_metrics(i, style="plain"):
    """A healthy-looking PPO stream with a little noise, in one of the key styles."""
    w = 1 + 0.05 * math.sin(1.7 * i)
    m = {"loss": 0.5 * w, "approx_kl": 0.01 * w, "entropy": 0.69 - 0.005 * i, "lr": 3e-4,
         "episode_return_mean": 20 + i, "value_loss": 5 * w, "clip_fraction": 0.1 * w}
    if style == "cleanrl":
        return {"losses/value_loss": m["value_loss"], "losses/policy_loss": -0.01 * w,
                "losses/approx_kl": m["approx_kl"], "losses/entropy": m["entropy"], "losses/clipfrac": m["clip_fraction"],
                "losses/explained_variance": 0.5, "charts/learning_rate": m["lr"],
                "charts/episodic_return": m["episode_return_mean"], "global_step": 512 * i}
    return m


def test_import_does_not_pull_ray_or_torch():
    code = ("import sys; from supervisor import Supervisor, Verdict; "
            "assert 'ray' not in sys.modules and 'torch' not in sys.modules, sorted(sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("metrics, expected", [
    ({"losses/approx_kl": 0.02, "losses/clipfrac": 0.1, "losses/entropy": 0.6, "losses/value_loss": 3.0,
      "losses/policy_loss": -0.01, "losses/explained_variance": 0.4, "charts/learning_rate": 2.5e-4,
      "charts/episodic_return": 30.0, "global_step": 2048},
     {"approx_kl": 0.02, "clip_fraction": 0.1, "entropy": 0.6, "vf_loss": 3.0, "policy_loss": -0.01,
      "explained_variance": 0.4, "lr": 2.5e-4, "episode_return_mean": 30.0}),
    ({"train/approx_kl": 0.02, "train/clip_fraction": 0.1, "train/entropy_loss": -0.6, "train/value_loss": 3.0,
      "train/policy_gradient_loss": -0.01, "train/loss": 1.5, "train/learning_rate": 3e-4,
      "rollout/ep_rew_mean": 30.0, "rollout/ep_len_mean": 30.0},
     {"approx_kl": 0.02, "clip_fraction": 0.1, "entropy": 0.6, "vf_loss": 3.0, "policy_loss": -0.01,
      "total_loss": 1.5, "lr": 3e-4, "episode_return_mean": 30.0, "episode_len_mean": 30.0}),
    ({"objective/kl": 0.3, "objective/entropy": 2.0, "loss": 1.2, "grad_norm": 0.7, "learning_rate": 1e-5,
      "epoch": 0.5},
     {"kl": 0.3, "entropy": 2.0, "total_loss": 1.2, "grad_norm": 0.7, "lr": 1e-5}),
    ({"loss": 1.0, "approx_kl": 0.1, "entropy": 0.5, "lr": 1e-3, "grad_norm": 2.0, "episode_return_mean": 9.0},
     {"total_loss": 1.0, "approx_kl": 0.1, "entropy": 0.5, "lr": 1e-3, "grad_norm": 2.0, "episode_return_mean": 9.0}),
    ({"train": {"loss": torch.tensor(2.0), "grad_norm": float("nan")}},  # nested, a 0-d tensor, NaN kept
     {"total_loss": 2.0, "grad_norm": float("nan")}),
])
def test_every_key_style_maps_to_the_normalized_names(metrics, expected):
    got = normalize_metrics(metrics)
    assert got.keys() == expected.keys()
    for k, v in expected.items():
        assert (math.isnan(got[k]) and math.isnan(v)) or got[k] == pytest.approx(v)


def test_nan_is_critical_and_rollback_restores_the_recorded_checkpoint(tmp_path):
    run = tmp_path / "run"
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    ap = TorchApplier(opt, model)
    with Supervisor(run, algorithm="ppo", settings={"checkpoint_every": 2}) as sup:
        sup.checkpoint_saved(0, ap.save(run / "ckpt.pt"), ap.hparams())
        saved = {k: v.clone() for k, v in model.state_dict().items()}
        for i in range(1, 13):
            v = sup.observe(i, ppo_metrics(i, "cleanrl"))
            assert isinstance(v, Verdict) and v.findings == [] and v.actions == []
            with torch.no_grad():  # the loop trains on: weights move away from the checkpoint
                for p in model.parameters():
                    p.add_(0.01)
        assert not torch.equal(model.weight, saved["weight"])
        bad = {**ppo_metrics(13, "cleanrl"), "losses/value_loss": float("nan")}
        v = sup.observe(13, bad)
        assert [(f["detector"], f["severity"]) for f in v.findings] == [("non_finite", "critical")]
        assert [a["action"] for a in v.actions] == ["rollback", "reduce_lr"]
        assert v.rollback["checkpoint"] == str((run / "ckpt.pt").resolve()) and v.rollback["to_iteration"] == 0
        entries = sup.apply(v, ap)
        assert [e["ok"] for e in entries] == [True, True], entries
        assert torch.equal(model.weight, saved["weight"]) and torch.equal(model.bias, saved["bias"])
        assert opt.param_groups[0]["lr"] == pytest.approx(3e-5)
        for i in range(14, 20):  # the next report carries what was applied and shows the new lr
            sup.observe(i, {**ppo_metrics(i, "cleanrl"), "charts/learning_rate": opt.param_groups[0]["lr"]})
    assert sup.status == "recovered"
    (t,) = report(run)["trials"]
    assert t["status"] == "recovered" and t["iterations"] == 19
    assert [f["detector"] for f in t["findings"]] == ["non_finite"] and t["findings"][0]["iteration"] == 13
    ivs = {i["action"]: i for i in t["interventions"]}
    assert ivs["rollback"]["verified"] is True and ivs["reduce_lr"]["verified"] is True
    assert ivs["reduce_lr"]["outcome"] == "effective"
    text = supervise("report", str(run)).stdout
    assert "non_finite" in text and "rollback" in text and "reduce_lr" in text


def test_what_an_applier_cannot_do_is_recorded_as_not_applied(tmp_path):
    opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
    ap = TorchApplier(opt)  # no coefficients, no model, no load function
    sup = Supervisor(tmp_path / "run")
    v = Verdict(1, actions=[{"id": None, "action": "boost_entropy", "params": {"factor": 2.0}},
                            {"id": None, "action": "restart_trial", "params": {}},
                            {"id": None, "action": "rollback", "params": {"checkpoint": "x.pt"}},
                            {"id": None, "action": "reduce_lr", "params": {"factor": 0.5}},
                            {"id": None, "action": "stop_trial", "params": {}}])
    e = sup.apply(v, ap)
    assert [x["ok"] for x in e] == [False, False, False, True, True]
    assert "coefficients={'entropy_coeff'" in e[0]["error"] and e[0]["error"].startswith("NotImplementedError")
    assert "cannot be restarted" in e[1]["error"] and "load=" in e[2]["error"]
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05) and ap.lr_scale == pytest.approx(0.5)
    assert ap.stop_requested
    sup.close()


def test_coefficients_and_scheduler_follow_the_supervisor(tmp_path):
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD([{"params": [model.weight], "lr": 0.1}, {"params": [model.bias], "lr": 0.01}])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + step))
    coefs = {"entropy_coeff": 0.01, "kl_coeff": 0.2, "grad_clip": 0.5}
    ap = TorchApplier(opt, model, coefficients=coefs, scheduler=sched)
    from supervisor import actions

    for name in ("boost_entropy", "raise_kl_coeff", "tighten_grad_clip", "reduce_lr"):
        assert actions.apply(ap, {"action": name, "params": actions.default_params()[name]})["ok"]
    assert coefs == {"entropy_coeff": 0.02, "kl_coeff": 0.4, "grad_clip": 0.25}
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.01, 0.001])  # ratio kept
    opt.step()
    sched.step()  # LambdaLR recomputes from base_lrs: the cut sticks
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.005, 0.0005])


def test_resume_continues_the_trial_and_close_stops(tmp_path):
    run = tmp_path / "run"
    sup = Supervisor(run, trial_id="t0")
    for i in range(5):
        sup.observe(i, ppo_metrics(i))
    sup.close("errored")
    sup = Supervisor(run, trial_id="t0")
    assert sup.seq == 5
    v = Verdict(5, actions=[{"id": None, "action": "stop_trial", "params": {}}], stop=True)
    sup.stopped |= v.stop
    assert sup.close() == "stopped"
    rep = report(run)
    assert rep["run"]["status"] == "stopped" and rep["trials"][0]["iterations"] == 4


def test_compute_account_counts_the_loops_wall_time_across_a_resume(tmp_path):
    """A loop that reports no ``time_total_s`` (SB3, HF, CleanRL, plain loops) still has its training wall
    time in the report's compute account, counted on after a resume; a loop's own figure wins."""
    import time

    run = tmp_path / "run"
    sup = Supervisor(run, trial_id="t0")
    for i in range(3):
        time.sleep(0.2)
        sup.observe(i, ppo_metrics(i))
    sup.close("errored")
    first = report(run)["trials"][0]["compute"]["wall_s"]
    assert 0.6 <= first < 5.0
    sup = Supervisor(run, trial_id="t0")
    time.sleep(0.3)
    sup.observe(3, ppo_metrics(3))
    sup.close()
    rep = report(run)
    assert first + 0.3 <= rep["trials"][0]["compute"]["wall_s"] < first + 5.0
    assert rep["run"]["compute"]["wall_s"] == rep["trials"][0]["compute"]["wall_s"]
    own = tmp_path / "own"
    sup = Supervisor(own, trial_id="t0")
    sup.observe(0, {**ppo_metrics(0), "time_total_s": 1234.5})
    sup.close()
    assert report(own)["trials"][0]["compute"]["wall_s"] == 1234.5


def test_bad_settings_and_profile_are_one_clear_error(tmp_path):
    with pytest.raises(InputError, match=r"settings: checkpoint_every: must be > 0 \(got 0\)"):
        Supervisor(tmp_path / "a", settings={"checkpoint_every": 0})
    with pytest.raises(InputError, match="settings: bogus: unknown key"):
        Supervisor(tmp_path / "b", settings={"bogus": 1})
    with pytest.raises(InputError, match="no such file"):
        Supervisor(tmp_path / "c", profile=tmp_path / "missing.yaml")
    with pytest.raises(TypeError):
        Supervisor(tmp_path / "d").observe(0, [1, 2])


def test_calibrate_reads_an_api_run_and_its_profile_feeds_the_next(tmp_path):
    run = tmp_path / "healthy"
    with Supervisor(run) as sup:
        for i in range(30):
            sup.observe(i, ppo_metrics(i, "cleanrl"))
    prof = tmp_path / "profile.yaml"
    p = supervise("calibrate", str(run), "--out", str(prof))
    assert p.returncode == 0, p.stderr
    assert "approx_kl" in prof.read_text()
    # The profile's bands judge a new run from its first iteration (no warm-up history needed).
    sup = Supervisor(tmp_path / "next", profile=prof)
    v = sup.observe(0, {**ppo_metrics(0, "cleanrl"), "losses/approx_kl": 5.0})
    assert "kl_spike" in [f["detector"] for f in v.findings]
    sup.close()


@pytest.mark.slow
def test_cleanrl_ppo_lr_jump_is_flagged_rolled_back_and_cut(tmp_path):
    from tests.envs.cleanrl_ppo import train

    run = tmp_path / "cleanrl"
    # No KL penalty in this loop: its KL trouble goes straight to rollback + reduce_lr (update_too_large, which
    # fires beside kl_spike on an lr jump, acts first: supervisor.policy.PRIORITY).
    ladder = [["rollback", "reduce_lr"], ["rollback", "reduce_lr"], ["stop_trial"]]
    sup = Supervisor(run, algorithm="ppo", settings={"ladders": {"kl_spike": ladder, "update_too_large": ladder}})
    st, lrs = {}, {}

    def ready(ctx):
        st["ap"] = TorchApplier(ctx.optimizer, ctx.agent, coefficients=ctx.coefs)
        sup.checkpoint_saved(0, st["ap"].save(run / "ckpt.pt"), st["ap"].hparams())

    def plant(update, ctx):
        if update == 12:
            ctx.optimizer.param_groups[0]["lr"] = 5.0

    def on_update(update, metrics, ctx):
        v = sup.observe(update, metrics)
        sup.apply(v, st["ap"])
        lrs[update] = ctx.optimizer.param_groups[0]["lr"]
        if v.checkpoint:
            sup.checkpoint_saved(update, st["ap"].save(run / "ckpt.pt"), st["ap"].hparams())
        return st["ap"].stop_requested

    train(20, on_update, plant, ctx_ready=ready)
    status = sup.close()
    (t,) = report(run)["trials"]
    crit = [f for f in t["findings"] if f["severity"] == "critical"]
    assert crit and crit[0]["iteration"] == 12, t["findings"]
    first = [i for i in t["interventions"] if i["iteration"] == 12]
    assert [i["action"] for i in first] == ["rollback", "reduce_lr"], t["interventions"]
    assert all(i["verified"] for i in first)
    assert lrs[12] < 1e-3 and lrs[20] < 1e-3  # cut from 5.0, and it stayed cut
    assert first[0]["params"]["to_iteration"] < 12
    assert status == "recovered" and t["final"]["episode_return_mean"] > 50


def test_dashboard_serves_an_api_run(tmp_path):
    import re
    import urllib.request

    run = tmp_path / "dash"
    with Supervisor(run, trial_id="loop-0") as sup:
        for i in range(12):
            sup.observe(i, ppo_metrics(i))
        sup.observe(12, {**ppo_metrics(12), "loss": float("inf")})
    env = {k: v for k, v in os.environ.items() if k not in ("SUPERVISOR_DASHBOARD_TOKEN", "RAY_ADDRESS")}
    env["PYTHONPATH"] = str(ROOT)
    p = subprocess.Popen([sys.executable, "-m", "supervisor", "dashboard", "--port", "0", "--run", str(run)],
                         cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = p.stdout.readline()
        base = re.search(r"(http://\S+/)", line).group(1)
        state = json.loads(urllib.request.urlopen(base + "api/state", timeout=20).read())
        assert "loop-0" in json.dumps(state["trials"])
        trial = json.loads(urllib.request.urlopen(base + "api/trial?id=loop-0", timeout=20).read())
        assert [f["detector"] for f in trial["findings"]] == ["non_finite"]
        # no checkpoint was recorded, so rollback had no target: reduce_lr alone
        assert [i["action"] for i in trial["interventions"]] == ["reduce_lr"]
    finally:
        p.terminate()
        p.wait(10)
