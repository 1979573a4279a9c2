"""The action registry: one spec per action, planned without any framework, applied through an applier."""

from __future__ import annotations

import math

import pytest

from supervisor import actions
from supervisor.policy import DEFAULT_LADDERS, EscalationPolicy, PolicyState
from supervisor.findings import Finding


class RecordingApplier:
    """A real (if tiny) applier: a dict of hyperparameters, the way a plain training loop keeps them."""

    def __init__(self, **hp):
        self.hp = {"lr": None, "entropy_coeff": None, "kl_coeff": None, "grad_clip": None, **hp}
        self.stopped = self.restarted = False
        self.alerts: list[str] = []
        self.rolled_back: list = []

    def hparams(self):
        return dict(self.hp)

    def set_hparams(self, new):
        self.hp.update(new)
        return dict(self.hp)

    def rollback(self, checkpoint, hparams):
        self.rolled_back.append((checkpoint, hparams))
        self.hp.update(hparams or {})
        return {"checkpoint": checkpoint, "after": dict(self.hp)}

    def request_stop(self, reason):
        self.stopped = True

    def request_restart(self, reason):
        self.restarted = True

    def alert(self, reason):
        self.alerts.append(reason)


def test_registry_names_the_interface_actions():
    assert set(actions.NAMES) >= {"alert", "reduce_lr", "increase_lr", "boost_entropy", "raise_kl_coeff",
                                  "tighten_grad_clip", "rollback", "restart_trial", "stop_trial"}  # the interface
    for name, spec in actions.ACTIONS.items():
        assert spec.name == name and spec.doc
    with pytest.raises(ValueError, match="unknown action 'explode'"):
        actions.get("explode")


@pytest.mark.parametrize("name, current, params, want", [
    ("reduce_lr", {"lr": 1e-3}, {}, {"lr": 1e-4}),
    ("reduce_lr", {"lr": 1e-3}, {"factor": 0.01, "min_lr": 5e-5}, {"lr": 5e-5}),
    ("increase_lr", {"lr": 1e-3}, {"factor": 3.0}, {"lr": 3e-3}),
    ("boost_entropy", {"entropy_coeff": 0.0}, {}, {"entropy_coeff": 0.01}),
    ("boost_entropy", {"entropy_coeff": 0.02}, {}, {"entropy_coeff": 0.04}),
    ("boost_entropy", {"entropy_coeff": 0.02}, {"value": 0.5}, {"entropy_coeff": 0.5}),
    ("raise_kl_coeff", {"kl_coeff": 0.0}, {}, {"kl_coeff": 0.2}),
    ("raise_kl_coeff", {"kl_coeff": 0.3}, {"max_value": 0.5}, {"kl_coeff": 0.5}),
    ("tighten_grad_clip", {"grad_clip": None}, {}, {"grad_clip": 1.0}),
    ("tighten_grad_clip", {"grad_clip": 4.0}, {}, {"grad_clip": 2.0}),
    ("reduce_entropy", {"entropy_coeff": 5.0}, {}, {"entropy_coeff": 0.5}),
    ("raise_vf_clip", {"vf_clip_param": 10.0}, {}, {"vf_clip_param": 100.0}),
])
def test_plans(name, current, params, want):
    got = actions.get(name).plan(current, params)
    assert got.keys() == want.keys()
    assert all(math.isclose(got[k], want[k]) for k in want)


def test_bad_params_are_refused_with_a_sentence():
    with pytest.raises(ValueError, match="factor must be < 1"):
        actions.get("reduce_lr").plan({"lr": 1e-3}, {"factor": 2.0})
    with pytest.raises(ValueError, match="no learning rate"):
        actions.get("reduce_lr").plan({"lr": None}, {})


def test_apply_through_an_applier_never_raises():
    ap = RecordingApplier(lr=1e-3)
    e = actions.apply(ap, {"id": 7, "action": "reduce_lr", "params": {"factor": 0.5}})
    assert e["ok"] and e["id"] == 7 and e["changed"] == {"lr": [1e-3, 5e-4]} and ap.hp["lr"] == 5e-4
    e = actions.apply(ap, {"id": 8, "action": "rollback", "params": {}})
    assert not e["ok"] and "checkpoint" in e["error"] and not ap.rolled_back
    e = actions.apply(ap, {"id": 9, "action": "rollback", "params": {"checkpoint": "/c", "hparams": {"lr": 1e-5}}})
    assert e["ok"] and ap.rolled_back == [("/c", {"lr": 1e-5})] and ap.hp["lr"] == 1e-5
    actions.apply(ap, {"action": "alert", "reason": "look"})
    actions.apply(ap, {"action": "stop_trial"})
    assert ap.alerts == ["look"] and ap.stopped and not ap.restarted
    assert actions.apply(ap, {"action": "nope"})["ok"] is False


def test_policy_reads_the_specs():
    # rollback alone is never a step (it would repeat the fault); alerts never count toward the limit.
    pol = EscalationPolicy({"kl_spike": [["reduce_lr", "rollback"], ["stop_trial"]]}, cooldown=0,
                           max_interventions=2, intensity_window=10)
    st = PolicyState(ineffective={"reduce_lr"})
    d = pol.decide(st, 1, [Finding("kl_spike", "warning", "kl", 1.0, "spike")])
    assert d.actions == ["stop_trial"]
    st = PolicyState()
    for seq in range(5):
        d = pol.decide(st, seq, [Finding("plateau", "warning", None, None, "flat")])
        assert d.actions == ["alert"]
    assert not st.action_seqs
    assert all(a in actions.ACTIONS for ladder in DEFAULT_LADDERS.values() for step in ladder for a in step)
