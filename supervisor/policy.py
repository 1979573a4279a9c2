"""Escalation policy, in the spirit of an Erlang/OTP supervisor.

Per detector, an ordered ladder (defaults per algorithm: PPO's below, the others'
differences in ``supervisor.algorithms``; the experiment file's ``ladders`` win) of steps (each step one or more actions).
Each time a detector's finding calls for action the trial climbs one rung of
that detector's ladder. Explicit limits instead of ad-hoc retries:

- cooldown: after any action, wait this many iterations so its effect shows
  before acting again;
- intensity: at most ``max_interventions`` in ``intensity_window``
  iterations; past that, escalate straight to ``stop_trial``;
- an action judged ineffective on a trial is not tried on it again (the
  ladder skips it);
- a trial whose repair proved ineffective and that shows no learning is
  stopped at once (``give_up``; the evidence is ``supervisor.salvage``);
- ``info`` findings never trigger actions, nor do a record-only detector's (``RECORD_ONLY``:
  ``metrics_missing`` says a detector is blind, which no action on the trial can fix).

When a finding may act at all (:meth:`EscalationPolicy.confirm`): healthy runs show transients (a loss
jump at a target-network update, a noisy early return) that a detector reports but that fix
themselves. So a warning that acts is held to the critical bar, and a stop needs more:

- a critical finding acts at once;
- a warning acts once it is *confirmed*: its alarm has held ``confirm`` consecutive reports (a rule's
  own patience counts: a rule that needs 3 reports is confirmed when it fires), or a second detector
  is in alarm on the trial at the same time (corroboration); until then it waits, recorded, and acts
  on the report that confirms it, if its alarm is still on;
- the return alone (:data:`RETURN_ONLY`: ``reward_collapse``, ``plateau``, ``generalization_gap``) never
  acts: its findings act only while a learner-side detector is in alarm too (a return that falls with
  no symptom in the learner is an off-policy learner forgetting, an exploration schedule, noise; it is
  recorded and alerted on);
- a ``stop_trial`` (a ladder's last rung, the intensity limit) needs a learner-side finding that is
  critical or confirmed by persistence (corroboration alone is not enough); otherwise the trial gets an
  alert instead, and the rung waits for stronger evidence.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from typing import Callable

from supervisor import algorithms
from supervisor.actions import ACTIONS
from supervisor.findings import Finding, severity_rank

ROLLBACK_REDUCE = ["rollback", "reduce_lr"]
DEFAULT_LADDERS: dict[str, list[list[str]]] = {
    "non_finite": [ROLLBACK_REDUCE, ROLLBACK_REDUCE, ["stop_trial"]],
    "loss_explosion": [["reduce_lr"], ROLLBACK_REDUCE, ["stop_trial"]],
    "gradient_explosion": [["tighten_grad_clip"], ["reduce_lr"], ROLLBACK_REDUCE, ["restart_trial"], ["stop_trial"]],
    "gradient_vanishing": [ROLLBACK_REDUCE, ["stop_trial"]],
    "kl_spike": [["raise_kl_coeff"], ["reduce_lr"], ROLLBACK_REDUCE, ["stop_trial"]],
    # A KL coefficient walking down is also what a healthy low-lr run looks like: alert only;
    # the root-cause detectors (non_finite, kl_spike, ...) act when the run is really broken.
    "kl_controller_stuck": [["alert"]],
    "entropy_collapse": [["boost_entropy"], ["rollback", "boost_entropy"], ["stop_trial"]],
    "value_collapse": [["reduce_lr"], ROLLBACK_REDUCE, ["stop_trial"]],
    "advantage_anomaly": [["alert"]],
    "reward_collapse": [ROLLBACK_REDUCE, ROLLBACK_REDUCE, ["stop_trial"]],
    "plateau": [["alert"]],
    # Priors (the trial's config and spaces): faults present from iteration 1.
    "update_too_large": [["reduce_lr"], ROLLBACK_REDUCE, ["stop_trial"]],
    "value_loss_clipped": [["raise_vf_clip"], ["alert"]],
    "entropy_saturated": [["reduce_entropy"], ["reduce_entropy"], ["stop_trial"]],
    "no_learning": [["increase_lr"], ["increase_lr"], ["stop_trial"]],
    "premature_convergence": [["rollback", "boost_entropy"], ["stop_trial"]],
    "worker_fault": [["alert"]],
    # The data guard (env runners): hold the poisoned episodes out, then stop if the env goes on producing them
    # (outside the weights: no rollback or lr can help).
    "data_poisoned": [["quarantine"], ["stop_trial"]],
    "obs_out_of_range": [["quarantine"], ["stop_trial"]],
    # Events (Engine.crash, Engine.hung): a crash the supervisor can act on (non-finite values in the update,
    # an update blow-up) restarts with a lower lr; one it cannot (an env that raises) is retried once and
    # stopped if it repeats the same way. A hung trial is restarted through Tune.
    "trial_crashed": [["reduce_lr", "restart_trial"], ["reduce_lr", "restart_trial"], ["stop_trial"]],
    "trial_hung": [["restart_trial"], ["stop_trial"]],
    # The fix (early stopping at the best evaluation, more env variety) is the experimenter's call: alert.
    "generalization_gap": [["alert"]],
    # APPO/IMPALA: a lost or lagging weight sync. Push the weights past it; if it stays lost, a restart
    # rebuilds it; then a human (fewer env runners, more learners). Lag alone never stops a trial.
    "policy_lag": [["sync_weights"], ["restart_trial"], ["alert"]],
    # The cluster detectors (node_down, memory_pressure, gpu_fault, straggler) have no ladder: their
    # findings are stored and alerted on, and there is no trial-side actuator they could drive.
}
#: Detectors whose findings are recorded (stored, reported, alerted) but never acted on, whatever their
#: severity or the ladders: they have no ladder (supervisor.config refuses one).
RECORD_ONLY = frozenset({"metrics_missing"})
# When several detectors fire at once, act on the root cause first.
# A crash or a hang first (the trial is dead or stuck), then poisoned data (what the learner is fed), then the
# learner. update_too_large (the trial's own config against its kl_target) before kl_spike (the KL against its
# history): at iteration 1 both fire on a config bad from the start, and the config is the cause.
PRIORITY = ["trial_crashed", "trial_hung", "data_poisoned", "obs_out_of_range", "non_finite", "loss_explosion",
            "gradient_explosion", "q_divergence", "td_error_explosion", "update_too_large", "kl_spike",
            "value_collapse", "gradient_vanishing", "entropy_saturated", "entropy_collapse",
            "alpha_collapse", "alpha_runaway", "premature_convergence", "no_learning", "value_loss_clipped",
            "reward_collapse", "exploration_too_short", "kl_controller_stuck",
            "advantage_anomaly", "policy_lag", "worker_fault", "straggler", "memory_pressure", "gpu_fault", "node_down", "generalization_gap",
            "plateau"]


#: Findings about the return alone: no proof of a broken learner. They act only while a learner-side
#: detector is in alarm too, and never stop a trial.
RETURN_ONLY = frozenset(("reward_collapse", "plateau", "generalization_gap"))


@dataclass
class Decision:
    actions: list[str]
    finding: Finding
    escalated: bool = False  # chosen by the intensity limit, not the ladder
    rung: int = 0
    why: str | None = None  # the reason, when it is not the finding's own message


@dataclass
class PolicyState:
    rungs: dict[str, int] = field(default_factory=dict)
    action_seqs: deque = field(default_factory=deque)
    last_action_seq: int | None = None
    last_cooldown: int | None = None  # the last action's own cooldown (ActionSpec.cooldown), if it has one
    ineffective: set = field(default_factory=set)
    # detector -> (finding, need): a warning not confirmed yet (need "act"), or one whose stop waits for
    # more evidence (need "stop")
    waiting: dict = field(default_factory=dict)


class EscalationPolicy:
    """Decides what to do about one iteration's findings for one trial.

    Args:
        ladders: per detector, ordered steps (lists of action ids); merged over DEFAULT_LADDERS.
        cooldown: iterations to wait after an action before the next.
        max_interventions, intensity_window: at most N interventions in K iterations, then stop_trial.
        confirm: consecutive reports of evidence a warning needs to act alone (see the module doc).
    """

    def __init__(self, ladders: dict[str, list[list[str]]] | None = None, cooldown: int = 2,
                 max_interventions: int = 4, intensity_window: int = 20, confirm: int = 2):
        self.custom = dict(ladders or {})
        self.ladders = {**DEFAULT_LADDERS, **self.custom}
        self.cooldown = cooldown
        self.max_interventions = max_interventions
        self.intensity_window = intensity_window
        self.confirm_after = confirm

    def confirm(self, state: PolicyState, findings: list[Finding], alarmed: set[str],
                streak: Callable[[str], int]) -> list[Finding]:
        """The findings that may act now: this report's warning and critical findings, and the warnings
        still waiting whose alarm is on, as the module doc says. ``alarmed``: the trial's detectors in
        alarm (warning or worse); ``streak(detector)``: the consecutive reports behind its alarm."""
        fresh = {}
        alarmed = set(alarmed) - RECORD_ONLY  # a blind detector corroborates nothing
        for f in findings:
            if severity_rank(f.severity) >= severity_rank("warning") and f.detector not in RECORD_ONLY:
                old = fresh.get(f.detector)
                if old is None or severity_rank(f.severity) > severity_rank(old.severity):
                    fresh[f.detector] = f
        for d in [d for d in state.waiting if d not in alarmed and d not in fresh]:
            del state.waiting[d]  # its alarm went off unconfirmed: a transient
        if not fresh and not state.waiting:
            return []
        active = set(alarmed) | set(fresh)
        out = []
        todo = [(d, f, "act") for d, f in fresh.items()]
        todo += [(d, f, need) for d, (f, need) in state.waiting.items() if d not in fresh]
        for d, f, need in todo:
            others = active - {d}
            if need == "stop":  # a stop deferred for want of evidence: only more evidence brings it back
                ok, how = self.may_end(f, n := streak(d)), f"held {n} reports"
            elif d in RETURN_ONLY:
                ok, how = bool(others - RETURN_ONLY), "with " + ", ".join(sorted(others - RETURN_ONLY))
            elif f.severity == "critical":
                ok, how = True, ""
            elif (n := streak(d)) >= self.confirm_after:
                ok, how = True, f"held {n} reports"
            else:
                ok, how = bool(others), "with " + ", ".join(sorted(others))
            if not ok:
                state.waiting[d] = (f, need)
                continue
            state.waiting.pop(d, None)
            if how:
                f = replace(f, message=f"{f.message} [confirmed: {how}]")
            out.append(f)
        return out

    def may_end(self, finding: Finding, streak: int) -> bool:
        """Whether ``finding`` is evidence enough to stop a trial: learner-side, and critical or held
        ``confirm`` reports."""
        return finding.detector not in RETURN_ONLY and (finding.severity == "critical"
                                                         or streak >= self.confirm_after)

    def ladder(self, detector: str, algorithm: str | None = None) -> list[list[str]]:
        """The experiment file's ladder for ``detector``, else the algorithm's default, else PPO's."""
        if detector in self.custom:
            return self.custom[detector]
        return algorithms.ladders(algorithm).get(detector) or self.ladders.get(detector, [["alert"]])

    def decide(self, state: PolicyState, seq: int, findings: list[Finding],
               algorithm: str | None = None, streak: Callable[[str], int] | None = None,
               event: bool = False) -> Decision | None:
        """``streak(detector)``: the consecutive reports behind its alarm (a stop needs evidence,
        ``may_end``). ``event``: the findings are an event between iterations (a crash, a hang), not an
        iteration's: no cooldown (the trial is dead or stuck; there is no effect to wait for)."""
        actionable = [f for f in findings if severity_rank(f.severity) >= severity_rank("warning")
                      and f.detector not in RECORD_ONLY]
        if not actionable:
            return None
        cooldown = self.cooldown if state.last_cooldown is None else state.last_cooldown
        if not event and state.last_action_seq is not None and seq - state.last_action_seq <= cooldown:
            return None
        order = {d: i for i, d in enumerate(PRIORITY)}
        actionable.sort(key=lambda f: (-severity_rank(f.severity), order.get(f.detector, len(order))))
        finding = actionable[0]
        held = streak(finding.detector) if streak is not None else self.confirm_after
        while state.action_seqs and state.action_seqs[0] <= seq - self.intensity_window:
            state.action_seqs.popleft()
        if len(state.action_seqs) >= self.max_interventions:
            if not self.may_end(finding, held):
                state.waiting[finding.detector] = (finding, "stop")
                return Decision(["alert"], finding, escalated=True, why=self._not_yet(finding))
            return self._commit(state, seq, Decision(["stop_trial"], finding, escalated=True))
        rung, step = self.next_step(state, finding.detector, algorithm)
        if "stop_trial" in step and not self.may_end(finding, held):
            state.waiting[finding.detector] = (finding, "stop")  # the rung waits for more evidence
            return Decision(["alert"], finding, rung=rung, why=self._not_yet(finding))
        state.rungs[finding.detector] = rung + 1
        return self._commit(state, seq, Decision(step, finding, rung=rung))

    def next_step(self, state: PolicyState, detector: str, algorithm: str | None = None) -> tuple[int, list[str]]:
        """The rung ``detector``'s next finding climbs to and its actions: the trial's current rung or the
        first above it with an action not proven ineffective on the trial."""
        ladder = self.ladder(detector, algorithm)
        rung = state.rungs.get(detector, 0)
        while rung < len(ladder):
            step = [a for a in ladder[rung] if a not in state.ineffective or ACTIONS[a].retry_if_ineffective]
            if any(ACTIONS[a].standalone for a in step):
                return rung, step
            rung += 1
        # Exhausted: give up cleanly (unless the ladder ends in alert: may_stop).
        return len(ladder), ["stop_trial"] if self.may_stop(detector, algorithm) else ["alert"]

    def _not_yet(self, f: Finding) -> str:
        return (f"{f.detector} ({f.severity}): {f.message}; not stopped: a stop needs a learner-side finding that "
                f"is critical or held {self.confirm_after} reports")

    def may_stop(self, detector: str, algorithm: str | None = None) -> bool:
        """Whether this detector's findings may end a trial: a ladder ending in alert only ever alerts
        (those findings are worth a human's eye, never a reason to kill a trial)."""
        ladder = self.ladder(detector, algorithm)
        return not ladder or any(ACTIONS[a].counts_toward_limit for a in ladder[-1])

    def give_up(self, state: PolicyState, seq: int, finding: Finding, why: str) -> Decision:
        """Stop a trial that cannot be saved, whatever rungs its ladder has left."""
        return self._commit(state, seq, Decision(["stop_trial"], finding, rung=state.rungs.get(finding.detector, 0),
                                                   why=why))

    @staticmethod
    def _commit(state: PolicyState, seq: int, d: Decision) -> Decision:
        if any(ACTIONS[a].counts_toward_limit for a in d.actions):  # alerts are free
            state.action_seqs.append(seq)
            state.last_action_seq = seq
            state.last_cooldown = action_cooldown(d.actions)
        return d


def action_cooldown(names) -> int | None:
    """The cooldown a step of actions sets: the longest of its actions' own (None: the policy's)."""
    own = [ACTIONS[a].cooldown for a in names if ACTIONS[a].counts_toward_limit]
    return None if not own or any(c is None for c in own) else max(own)
