"""The supervisor's brain, Ray-free: reports in, verdicts out, everything stored.

``Engine.observe(report)`` runs every detector on one trial's iteration,
asks the escalation policy what to do, records the report, findings and
decided interventions in one transaction, and only then answers: a verdict
saying which actions to apply before the next iteration and whether this
iteration is healthy enough to checkpoint. The actor in ``actors/`` is a thin
Ray wrapper around this class.
"""

from __future__ import annotations

import copy
import math
import sqlite3
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from supervisor import actions, algorithms, modules, salvage
from supervisor.actions import VERIFIABLE
from supervisor.config import SupervisorConfig
from supervisor.detectors import DetectorSuite
from supervisor.detectors.trial_crashed import TrialCrashed
from supervisor.detectors.trial_hung import TrialHung
from supervisor.findings import Finding, severity_rank, worst
from supervisor.health import HealthScore
from supervisor.history import History
from supervisor.policy import RECORD_ONLY, RETURN_ONLY, EscalationPolicy, PolicyState, action_cooldown
from supervisor.priors import Priors
from supervisor.store import Store
from supervisor.verdict import Verdict

MAX_SEQ_JUMP = 100_000
EVENT_DETECTORS = (TrialCrashed.name, TrialHung.name)
RECENT = 3  # reports a crash is judged against
DRIVER_COPY_S = 120.0  # the driver's account of a crash the trial told within this long is the same crash
# While either is in alarm no repair has worked, whatever signal it was aimed at
RETURN_BROKEN = frozenset({"non_finite", "reward_collapse"})
FLUSH_S = 0.5
# How the reason of a stop the ladder did not choose begins (a rebuilt engine tells them from ladder steps)
ESCALATED = "intensity limit: "
GAVE_UP = "cannot be saved: "


def _int_in(x: Any, lo: int, hi: int, default: int) -> int:
    if x.__class__ is int and lo <= x <= hi:  # the normal report (a bool is no int here)
        return x
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or not lo <= x <= hi:
        return default
    return int(x)


_FLOAT, _STR = {float}, {str}


def sanitize_metrics(raw: Any) -> dict[str, float]:
    """Keep what is a number (NaN/inf included: they are evidence); drop the rest quietly."""
    out: dict[str, float] = {}
    if not isinstance(raw, dict):
        return out
    if set(map(type, raw.values())) <= _FLOAT and set(map(type, raw)) <= _STR:
        return dict(raw)  # the normal case (what normalize_result sends), checked at C speed
    for k, v in raw.items():
        if not isinstance(k, str) or isinstance(v, bool):
            continue
        if isinstance(v, (int, float)):
            out[k] = float(v)
        elif isinstance(v, str) and v in ("nan", "inf", "-inf"):
            out[k] = float(v)
    return out


@dataclass
class Pending:
    """An intervention waiting for verification and for its outcome."""
    id: int
    seq: int
    action: str
    detector: str
    target: dict = field(default_factory=dict)  # hparams it should produce, once applied
    verified: bool | None = None
    checks: int = 0  # reports that did not show the target yet
    module: str | None = None  # the module it changes (verified on that module's metrics); None: the trial


@dataclass
class Stream:
    """One supervised stream of a trial: a module's (a policy: its learner statistics and its return) or the
    trial's own (``module`` None: env runners, evaluation, and a multi-agent trial's team return). Each has
    its own detectors, history, health, escalation state and repairs in flight; a single-agent trial has
    two, ``default_policy`` and its own."""
    module: str | None
    history: History
    detectors: DetectorSuite
    trained: bool = True  # in RLlib's policies_to_train; a frozen module is recorded, never judged nor acted on
    priors: Priors = field(default_factory=Priors)
    policy: PolicyState = field(default_factory=PolicyState)
    health: HealthScore = field(default_factory=HealthScore)
    pending: list[Pending] = field(default_factory=list)
    history_at_checkpoint: History | None = None
    first_returns: list = field(default_factory=list)  # the first finite returns: the level it started at
    give_up: tuple | None = None  # (failed Pending, evidence): stop at once (supervisor.salvage)
    prev_lr: float | None = None  # lr reported one iteration before the newest report
    last_metrics: dict = field(default_factory=dict)


@dataclass
class TrialState:
    trial_id: str
    run_id: str
    streams: dict = field(default_factory=dict)  # module id (None: the trial's own) -> Stream
    multi: bool = False  # a multi-agent trial: its own stream judges the team return too
    modules_config: dict = field(default_factory=dict)  # what registration said per module: trained, priors
    last_seq: int = -1
    last_iteration: int = 0
    last_metrics: dict = field(default_factory=dict)
    last_trouble_seq: int = -10**9  # newest warning/critical finding
    checkpoint: dict | None = None  # newest healthy checkpoint
    best: dict | None = None  # best healthy checkpoint: {"metric", "value", "path", "seq", "iteration"}
    overrides: dict = field(default_factory=dict)  # module -> hparams the supervisor changed (re-applied on restart)
    status: str = "running"
    had_effective: bool = False
    requested: list = field(default_factory=list)  # manual actions (dashboard), applied with the next verdict
    known_ids: set = field(default_factory=set)  # ids of this trial's interventions
    algorithm: str | None = None  # PPO, APPO, IMPALA, DQN, SAC (supervisor.algorithms); None: unknown
    node_id: str | None = None
    priors: Priors = field(default_factory=Priors)
    # crashes and hangs (events between reports: Engine.crash, Engine.hung)
    crashes: dict = field(default_factory=dict)  # crash signature -> times seen
    crashed_since_start: bool = False  # the trial told its crash itself: the driver's copy is the same crash
    expect_death: bool = False  # the supervisor ended the process (a hung trial): its death is no crash
    stop_reason: str | None = None  # an event stopped the trial: a restarted process stops at once
    iter_started: float | None = None  # supervisor clock: when the iteration in progress started
    clock_iteration: int | None = None  # which iteration that clock is timing
    beat: dict = field(default_factory=dict)  # the newest heartbeat: iteration, phase, at (supervisor clock)
    hung_iteration: int | None = None  # the iteration already found hung (once per iteration)
    told: dict | None = None  # an event decision for the trial's own process (heartbeat answer), once
    quarantined: bool = False  # the env runners drop every episode the data guard flags
    last_event: dict | None = None  # the newest crash or hang decision (the driver's copy of it gets this)

    @property
    def main(self) -> Stream:
        """The stream a single-agent trial's learner reports to (the first module's)."""
        for s in self.streams.values():
            if s.module is not None:
                return s
        return self.streams[None]

    # the single-module view older callers (and tests) read
    @property
    def detectors(self) -> DetectorSuite:
        return self.main.detectors

    @property
    def history(self) -> History:
        return self.main.history

    @property
    def pending(self) -> list[Pending]:
        return [p for s in self.streams.values() for p in s.pending]

    def alarmed(self) -> set[str]:
        """Every stream's detectors in alarm."""
        return {d for s in self.streams.values() for d in s.detectors.alarmed()}

    def health(self, seq: int) -> dict:
        """The trial's health: its worst stream's score and severity; ``components`` of every stream (a
        multi-agent trial's module components as ``<module>/<detector>``), and ``modules``: each module's own."""
        streams = self.streams
        if not streams:
            return HealthScore().snapshot(seq)
        snaps = {m: s.health.snapshot(seq) for m, s in streams.items()}
        components: dict[str, float] = {}
        for m, snap in snaps.items():
            c = snap["components"]
            if c:  # most streams never had a finding
                components.update(((f"{m}/{d}", p) for d, p in c.items()) if self.multi and m is not None else c)
        snap = snaps.values()
        return {"score": min([s["score"] for s in snap]),
                "worst_severity": worst([s["worst_severity"] for s in snap]),
                "components": components,
                "modules": {m: {**s, "trained": streams[m].trained} for m, s in snaps.items() if m is not None}}


def _algorithm_of(config: Any) -> str | None:
    """The trial's algorithm, from the config it registered with (the RLlib callback adds it), or its priors."""
    from supervisor import algorithms

    if not isinstance(config, dict):
        return None
    name = config.get("algorithm")
    if name is None and isinstance(config.get("priors"), dict):
        name = config["priors"].get("algorithm")
    return name.upper() if algorithms.get(name) is not None else None


class Engine:
    def __init__(self, store: Store, settings: SupervisorConfig | None = None, profile: dict | None = None):
        self.store = store
        self.settings = settings or SupervisorConfig()
        if profile is None and self.settings.default_profile:
            from supervisor.calibrate import default_profile

            profile = default_profile()
        self.profile = profile
        s = self.settings
        self.policy = EscalationPolicy(s.ladders, s.cooldown, s.max_interventions, s.intensity_window, s.confirm)
        self.params = actions.default_params(s.action_params)
        self.trials: dict[str, TrialState] = {}
        # Trial summary rows (iterations, health, final return) are derived from the reports, so under
        # load they are written at most every FLUSH_S rather than once per report; reports, findings
        # and interventions are always written before the verdict goes out.
        self._dirty: dict[str, dict] = {}
        self._in_batch = False
        self._flushed_at = time.monotonic()

    # ------------------------------------------------------------------ trials
    def _new_state(self, trial_id: str, run_id: str, config: dict | None = None) -> TrialState:
        # Only the detectors that apply to the trial's algorithm (supervisor.algorithms) judge it.
        algorithm = _algorithm_of(config)
        priors = Priors.from_dict(config.get("priors") if isinstance(config, dict) else None)
        mods = _modules_config(config)
        state = TrialState(trial_id, run_id, algorithm=algorithm, priors=priors, modules_config=mods,
                           multi=bool(mods) and set(mods) != {modules.DEFAULT})
        for m in mods or [modules.DEFAULT]:
            self._stream(state, m)
        self._stream(state, None)
        return state

    def _stream(self, state: TrialState, module: str | None) -> Stream:
        """The trial's stream for ``module`` (None: the trial's own), built on first use: its priors from its
        own spaces and config (what registration said per module, else the trial's), its detectors those of
        its scope (``Detector.scope``); a module RLlib does not train gets none."""
        s = state.streams.get(module)
        if s is not None:
            return s
        cfg = state.modules_config.get(module) or {} if module is not None else {}
        trained = cfg.get("trained", True) is not False
        priors = Priors.from_dict(cfg["priors"]) if isinstance(cfg.get("priors"), dict) else state.priors
        default = state.streams.get(modules.DEFAULT) if module is None and not state.multi else None
        # a single-agent trial's own stream sees what its module sees (modules.views): one history for both,
        # appended once a report (_append), until the trial turns out multi-agent (_adapt)
        history = default.history if default is not None else History(self.settings.history)
        s = Stream(module, history, self._suite(state, module, trained, priors), trained, priors)
        state.streams[module] = s
        return s

    def _suite(self, state: TrialState, module: str | None, trained: bool, priors: Priors) -> DetectorSuite:
        if module is None:
            scopes = ("trial", "any", "every") if state.multi else ("trial", "every")  # and the team return
        else:
            scopes = ("module", "any", "every") if trained else ()
        return DetectorSuite.build(self.settings.detectors, self.profile, priors, algorithm=state.algorithm,
                                   scopes=scopes)

    def _adapt(self, state: TrialState, metrics: dict, plain: bool = False) -> bool:
        """A report that names modules the trial has no stream for (a trial that registered without its
        modules, a policy added while training): their streams are built now. Returns whether the report
        names modules (``modules.is_multi``; never when ``plain``: ``modules.plain``)."""
        multi = not plain and modules.is_multi(metrics)
        if multi and not state.multi:
            state.multi = True
            d = state.streams.get(modules.DEFAULT)
            t = state.streams[None]
            if d is not None:  # from now on they see different views: each its own history (and checkpoint's)
                if t.history is d.history:
                    t.history = copy.deepcopy(t.history)
                if t.history_at_checkpoint is not None and t.history_at_checkpoint is d.history_at_checkpoint:
                    t.history_at_checkpoint = copy.deepcopy(t.history_at_checkpoint)
            if d is not None and d.history.iterations == 0:  # never reported: it was a guess
                del state.streams[modules.DEFAULT]
            t.detectors = self._suite(state, None, True, t.priors)
        if state.multi:
            for m in modules.ids(metrics):
                if m not in state.streams:
                    self._stream(state, m)
        return multi

    def register_trial(self, trial_id: str, run_id: str, node_id: str | None = None,
                       config: dict | None = None) -> dict:
        """Start or resume a trial. Returns what a (re)started trial needs: its next seq,
        the hyperparameter overrides to re-apply, and its newest healthy checkpoint."""
        state = self.trials.get(trial_id)
        if state is None:
            state = self._rebuild(trial_id, run_id) or self._new_state(trial_id, run_id, config)
            self.store.upsert_trial(trial_id, run_id, "running", node_id, config)
            self.trials[trial_id] = state
        else:
            self.store.set_trial(trial_id, status="running", **({"node_id": node_id} if node_id else {}))
        state.status = "running"
        state.node_id = node_id or state.node_id
        # a (re)started process: its iteration starts now, and whatever it crashes with next is its own
        state.crashed_since_start = state.expect_death = False
        # not timed until it says it is in an iteration (a heartbeat) or reports: building and restoring are no
        # iteration
        state.iter_started, state.clock_iteration, state.beat, state.hung_iteration, state.told = None, None, {}, \
            None, None
        return {"next_seq": state.last_seq + 1, "overrides": modules.packed(state.overrides), "checkpoint": state.checkpoint,
                "stop": state.stop_reason, "quarantine": state.quarantined,
                "time_total_s": (state.last_metrics or {}).get("time_total_s")}  # a resumed loop's clock goes on

    def _rebuild(self, trial_id: str, run_id: str) -> TrialState | None:
        """Rebuild a trial's state from the store (after the actor restarted or the trial was restarted)."""
        state = self.load_trial(trial_id, run_id, self.store)
        if state is not None:
            self._catch_up(state)
        return state

    def load_trial(self, trial_id: str, run_id: str, store: Store) -> TrialState | None:
        """A trial's state as the engine that judged it had it, rebuilt from ``store``; None when the store
        does not know the trial. A supervisor restart in the middle of a repair then changes nothing, on
        every stream (each module's and the trial's own):

        - the detectors see the stored reports again, in order, through their normal ``observe`` path
          (their findings dropped: they are stored; nothing is decided), rolled back where a rollback was
          decided (the module it took back, or every stream) and with the history at each checkpoint
          kept, so their windows, latches and levels are what they were;
        - the policy's rungs, cooldown, intensity window and the actions proven ineffective, per stream,
          from the decisions and outcomes stored;
        - the repairs still waiting for their outcome, with their windows (counted from the report that
          decided them) and the hyperparameters they should show on their module, once applied, and
          whether they did;
        - the rollback target, the best checkpoint, the overrides (per module) a restarted trial
          re-applies, the manual requests not handed out yet.

        Only reads ``store`` and changes nothing in this engine, so the actor runs it on a thread of its
        own with its own connection (``adopt`` installs the result)."""
        row = store.trial(trial_id)
        if row is None:
            return None
        state = self._new_state(trial_id, row["run_id"] or run_id, json_or_empty(row.get("config")))
        reports = store.reports(trial_id)
        ivs = store.interventions(trial_id)
        cps = store.checkpoints(trial_id)
        self._replay(state, reports, ivs, cps)
        state.last_seq = max(state.last_seq, store.last_event_seq(trial_id))  # crashes, hangs: their own seqs
        for f in store.findings(trial_id):
            if f["detector"] == TrialCrashed.name and (f.get("details") or {}).get("signature"):
                sig = f["details"]["signature"]
                state.crashes[sig] = state.crashes.get(sig, 0) + 1
            if f["seq"] is not None:
                _stream_of(state, f.get("module"), f["detector"]).health.observe(
                    f["seq"], [Finding(f["detector"], f["severity"], f["metric"], f["value"], f["message"])])
                if severity_rank(f["severity"]) >= severity_rank("warning") and f["detector"] not in RECORD_ONLY:
                    state.last_trouble_seq = max(state.last_trouble_seq, f["seq"])
        self._restore_policy(state, ivs)
        spec = algorithms.get(state.algorithm)
        lag = spec.report_lag if spec is not None else 0
        for iv in ivs:
            state.known_ids.add(iv["id"])
            if iv["action"] == "quarantine" and (iv.get("applied") or {}).get("ok", True):
                state.quarantined = True
            if iv["action"] == "stop_trial" and iv["detector"] in EVENT_DETECTORS:
                state.stop_reason = iv["reason"]
            if iv["outcome"] == "pending":
                p = Pending(iv["id"], iv["seq"], iv["action"], iv["detector"] or "", module=iv.get("module"))
                applied = iv["applied"] if isinstance(iv["applied"], dict) else None
                if applied is not None and isinstance(applied.get("after"), dict):
                    p.target = _targets(_per_module(applied["after"], p.module))
                if iv["verified"] is not None:
                    p.verified = bool(iv["verified"])
                elif p.target:  # reports since it was applied that did not show it yet (lagging learners)
                    p.checks = min(lag, max(state.last_seq - p.seq - 1, 0))
                _stream_of(state, p.module, iv["detector"]).pending.append(p)
            elif iv["outcome"] == "effective" and _spec(iv["action"]).counts_toward_limit:
                state.had_effective = True
        if cps:
            c = cps[-1]
            state.checkpoint = {"path": c["path"], "seq": c["seq"], "iteration": c["iteration"],
                                "hparams": c["hparams"]}
        best = store.best_checkpoint(trial_id)
        if best:
            state.best = {k: best[k] for k in ("metric", "value", "path", "seq", "iteration")}
        state.overrides = modules.by_module(json_or_empty(row.get("overrides")))
        state.node_id = row.get("node_id")
        state.status = row.get("status") or state.status
        state.requested = store.pending_requests(trial_id)  # manual actions not handed out yet
        return state

    def _replay(self, state: TrialState, reports: list[dict], ivs: list[dict], cps: list[dict]) -> None:
        """The stored reports through every stream's detectors again, as ``_observe`` fed them."""
        rewinds: dict[int, dict] = {}  # seq -> the rollback that went out with its verdict
        for iv in ivs:
            if _spec(iv["action"]).needs_checkpoint:
                rewinds.setdefault(iv["seq"], iv)
        saved = {c["seq"] for c in cps}
        for r in reports:
            metrics = r["metrics"] if isinstance(r["metrics"], dict) else {}
            multi = self._adapt(state, metrics)
            streams = _ordered(state)
            views = modules.views(metrics, [st.module for st in streams], multi)
            for st in streams:
                view = views[st.module]
                st.detectors(r["iteration"], view, st.history)
                _note_start(st, view)
                st.prev_lr = st.last_metrics.get("lr", st.prev_lr)
                st.last_metrics = view
            _append(streams, views)
            state.last_seq, state.last_iteration, state.last_metrics = r["seq"], r["iteration"], metrics
            rb = rewinds.get(r["seq"])
            if rb is not None:  # a rollback went out with this report's verdict: the streams it took back
                memo: dict = {}
                for st in _rolled_back(state, rb):
                    self._rewind(st, memo)
            if r["seq"] in saved:  # the checkpoint taken after this report
                _save_histories(state)

    def _restore_policy(self, state: TrialState, ivs: list[dict]) -> None:
        """Each stream's escalation state as the policy left it: each stored decision climbed its detector's
        ladder to the rung whose actions it took (given what had proven ineffective on that stream by then);
        an escalation by the intensity limit or a give-up climbed nothing; alerts are free; manual requests
        (no detector) are not the policy's."""
        by_stream: dict[int, tuple[Stream, list[dict]]] = {}
        for iv in ivs:
            st = _stream_of(state, iv.get("module"), iv["detector"])
            by_stream.setdefault(id(st), (st, []))[1].append(iv)
        for st, mine in by_stream.values():
            pol = st.policy
            ineffective = sorted(((iv["judged_seq"] if iv["judged_seq"] is not None else iv["seq"] + 1),
                                  iv["action"]) for iv in mine if iv["outcome"] == "ineffective"
                                 and not _spec(iv["action"]).retry_if_ineffective)
            decisions: dict[tuple, list[dict]] = {}
            for iv in mine:
                if iv["detector"]:
                    decisions.setdefault((iv["seq"], iv["detector"]), []).append(iv)
            for (seq, det), group in sorted(decisions.items()):
                pol.ineffective = {a for judged, a in ineffective if judged <= seq}  # judged before deciding
                if any(_spec(iv["action"]).counts_toward_limit for iv in group):
                    if seq not in pol.action_seqs:
                        pol.action_seqs.append(seq)
                    pol.last_action_seq = seq
                    pol.last_cooldown = action_cooldown([iv["action"] for iv in group
                                                         if iv["action"] in actions.ACTIONS])
                if not any(iv["reason"].startswith((ESCALATED, GAVE_UP)) for iv in group):
                    rung, _ = self.policy.next_step(pol, det, state.algorithm)
                    pol.rungs[det] = rung + 1
            pol.ineffective = {a for _, a in ineffective}

    def adopt(self, state: TrialState) -> None:
        """Install a trial rebuilt elsewhere (``load_trial`` on another thread), unless the engine holds it
        already; what changed in the store since it was read (a manual request) is taken now."""
        if state.trial_id in self.trials:
            return
        state.requested = self.store.pending_requests(state.trial_id)
        self.trials[state.trial_id] = state
        self._catch_up(state)

    def _catch_up(self, state: TrialState) -> None:
        row = self.store.trial(state.trial_id)
        if row is not None and state.last_seq >= 0 and row.get("last_seq") != state.last_seq:
            # the summary row lagged the reports when the actor died (rows are flushed every FLUSH_S)
            self._dirty[state.trial_id] = _summary(state, state.health(state.last_seq))

    # ------------------------------------------------------------------ the hot path
    def observe(self, report: dict) -> Verdict:
        trial_id = str(report.get("trial_id") or "default")
        node_id = report.get("node_id") if isinstance(report.get("node_id"), str) else None
        state = self.trials.get(trial_id)
        if state is None:
            self.register_trial(trial_id, str(report.get("run_id") or "run"), node_id)
            state = self.trials[trial_id]
        try:
            return self._observe(state, report, node_id)
        except sqlite3.Error:
            # Not stored: this trial's memory (history, health, policy, detectors, manual requests) may
            # have moved past the store. Drop it; the next report rebuilds it from what is stored, so the
            # replay of this seq is judged again instead of being taken for a duplicate.
            self._forget(trial_id)
            raise

    def _observe(self, state: TrialState, report: dict, node_id: str | None) -> Verdict:
        trial_id = state.trial_id
        # A seq far ahead of the last one is garbage, not a report from the future: accepting it
        # would make every later report look like a replay.
        seq = _int_in(report.get("seq"), 0, state.last_seq + MAX_SEQ_JUMP, state.last_seq + 1)
        iteration = _int_in(report.get("iteration"), 0, 2**62, seq)
        if seq <= state.last_seq:  # memory only ever lags the store (it advances after the write)
            return self._duplicate(state, seq, iteration)
        metrics = sanitize_metrics(report.get("metrics"))
        t = report.get("time")
        norm = {"trial_id": trial_id, "iteration": iteration,
                "time": float(t) if isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t)
                else time.time(),
                "node_id": node_id,
                "metrics": metrics}

        plain = modules.plain(metrics)  # a single-agent report (the streams' views are the metrics)
        multi = self._adapt(state, metrics, plain)
        self._verify(state, metrics)

        # Every stream judged on its own: each module (its learner, its return), then the trial's own.
        findings: list[Finding] = []
        todo: list[dict] = []
        origin: list[Stream] = []  # the stream that decided each action (its repairs are judged there)
        found: dict[str | None, list[Finding]] = {}
        streams = _ordered(state)
        views = modules.views(metrics, [st.module for st in streams], multi, plain)
        for st in streams:  # every detector first: a stream's warning may be corroborated by the trial's
            view = views[st.module]
            fs = st.detectors(iteration, view, st.history)
            found[st.module] = [replace(f, module=st.module) for f in fs] if fs else fs
            _note_start(st, view)
        _append(streams, views)  # the histories after every stream judged (a single-agent trial's: one)
        # each stream's alarms as its detectors left them, read once and only where asked: nothing below changes
        # them before a rollback resets them, and with a rollback neither the checkpoint nor the best is looked at
        alarms = {None: state.streams[None].detectors.alarmed()}

        def alarms_of(sts) -> set:
            out = set()
            for s in sts:
                a = alarms.get(s.module)
                if a is None:
                    a = alarms[s.module] = s.detectors.alarmed()
                out |= a
            return out

        shared = alarms[None]  # the trial's own alarms (env runners, evaluation)
        for st in streams:
            found_here, view = found[st.module], views[st.module]
            if st.pending:  # judged before deciding: an ineffective action is not chosen again
                self._judge(state, st, seq, found_here, view)
            decision = None
            trouble = found_here and any(severity_rank(f.severity) >= severity_rank("warning")
                                         and f.detector not in RECORD_ONLY
                                         for f in found_here)  # a blind detector is no trouble in the training
            if trouble or found_here and any(f.details.get("unconfirmed") for f in found_here):
                state.last_trouble_seq = seq  # a one-report spike is no health to checkpoint either
            if trouble or st.policy.waiting:
                # a warning acts when confirmed (held, or corroborated by its own stream's or the trial's
                # alarms; a single-agent trial's streams are one trial), the return alone never
                # (supervisor.policy); one policy's alarms say nothing of another's, nor of the team return
                alarmed = (alarms_of((st,)) | shared if st.module is not None
                           else alarms_of(streams) if not state.multi else shared)
                confirmed = self.policy.confirm(st.policy, found_here, alarmed, st.detectors.streak)
                if confirmed:
                    decision = self.policy.decide(st.policy, seq, confirmed, algorithm=state.algorithm,
                                                  streak=st.detectors.streak)
            if st.give_up is not None and not (decision and "stop_trial" in decision.actions):
                failed, evidence = st.give_up
                what = f"module {st.module}" if state.multi and st.module else "the trial"
                why = (f"{GAVE_UP}{failed.action} for {failed.detector} was ineffective and {what} shows "
                       f"no learning: {evidence}")
                decision = self.policy.give_up(st.policy, seq, Finding(failed.detector, "critical", None, None,
                                                                       evidence, module=st.module), why)
            st.give_up = None
            if decision:
                acts = self._materialize(state, st, decision, iteration)
                todo += acts
                origin += [st] * len(acts)
            if found_here:
                st.health.observe(seq, found_here)
            findings += found_here
        requested = state.requested
        if requested:
            for r in requested:
                a = self._manual(state, r, iteration)
                if a is not None:
                    todo.append(a)
                    origin.append(state.streams.get(a["module"]) or state.streams[None])
            state.requested = []
        todo, origin = self._one_of_each(state, todo, origin)
        rb = next((a for a in todo if actions.get(a["action"]).needs_checkpoint), None) if todo else None
        if rb is not None:  # the streams it takes back start over from the checkpoint
            memo: dict = {}
            for st in _rolled_back(state, rb):
                self._settle_before_rollback(state, st, seq)
                self._rewind(st, memo)

        every = self.settings.checkpoint_every
        checkpoint = (not todo and seq - state.last_trouble_seq >= every and (seq + 1) % every == 0
                      and _all_finite(metrics)
                      and not alarms_of(streams))  # a persisting fault between its reports is no health
        best = self._new_best(state, seq, metrics, lambda: alarms_of(streams)) if not todo else None
        effects = {actions.get(a["action"]).effect for a in todo} if todo else ()
        stop, restart = "stop" in effects, "restart" in effects
        health = state.health(seq)
        found = [f.to_dict() for f in findings] if findings else []
        with self.store.transaction():  # the report and the requests it hands out: one commit
            ids = self.store.record_iteration(norm, seq, found, todo)
            if ids is not None and requested:
                self.store.take_requests([r["rid"] for r in requested if r.get("rid") is not None], seq)
        if ids is None:  # the store already has this seq (another writer, or memory lagged): a replay
            self._forget(trial_id)
            return self._duplicate(None, seq, iteration, trial_id)
        for st in state.streams.values():
            st.prev_lr = st.last_metrics.get("lr", st.prev_lr)
            st.last_metrics = views.get(st.module, st.last_metrics)
        state.last_seq, state.last_iteration, state.last_metrics = seq, iteration, metrics
        # the next iteration starts now (on the supervisor's clock)
        state.iter_started, state.clock_iteration, state.hung_iteration = time.time(), iteration + 1, None
        for a, iv_id, st in zip(todo, ids, origin):
            a["id"] = iv_id
            state.known_ids.add(iv_id)
            st.pending.append(Pending(iv_id, seq, a["action"], a.get("detector") or "", module=a["module"]))
        cols = _summary(state, health)
        if node_id:
            cols["node_id"] = state.node_id = node_id
        if state.status == "lost":  # closed as lost (its driver went silent), and it reports again
            state.status = cols["status"] = "running"
        d = self._dirty.get(trial_id)
        if d is None:
            self._dirty[trial_id] = cols
        else:
            d.update(cols)
        if not self._in_batch:
            self.flush(force=True)
        # A repair inside its outcome window: an early-stopping scheduler waits for the outcome
        # (actors.tune.scheduler) instead of judging a dip the repair itself caused.
        repairing = not stop and any(st.pending for st in streams) and any(
            actions.get(p.action).judged and actions.get(p.action).counts_toward_limit for p in state.pending)
        return Verdict(iteration, found, todo, stop, restart, checkpoint, health, seq=seq, best=best,
                       repairing=repairing)

    def _new_best(self, state: TrialState, seq: int, metrics: dict, alarmed: Callable[[], set]) -> dict | None:
        """A new best return on a healthy iteration (no warning or worse for ``checkpoint_every``
        iterations, every value finite): the trial saves it as its best checkpoint. Judged on the
        evaluation return once the trial reports one, else on the training return."""
        if seq - state.last_trouble_seq < self.settings.checkpoint_every:
            return None
        metric = "eval_return_mean" if "eval_return_mean" in metrics else "episode_return_mean"
        v = metrics.get(metric)
        if v is None:
            return None
        old = state.best
        if old is not None and old["metric"] == "eval_return_mean" and metric != old["metric"]:
            return None  # judged on evaluation: iterations without one cannot beat it
        if old is not None and old["metric"] == metric and v <= old["value"]:
            return None
        if not _all_finite(metrics):
            return None
        if alarmed():  # last (every stream's alarms): a persisting fault between its reports is no health
            return None
        return {"metric": metric, "value": v}

    def observe_batch(self, reports: list) -> list[Verdict]:
        """Many reports (any trials) in one store transaction; one verdict each, in order.
        A store error (disk full, database locked) fails the whole batch: nothing of it is stored,
        the trials it touched are rebuilt from the store, and the error is raised, so that no verdict
        goes out for a report that is not durable."""
        out = []
        touched: set[str] = set()
        dirty = dict(self._dirty)
        try:
            with self.store.transaction():
                self._in_batch = True
                try:
                    for r in reports if isinstance(reports, list) else []:
                        r = r if isinstance(r, dict) else {}
                        touched.add(str(r.get("trial_id") or "default"))
                        try:
                            out.append(self.observe(r))
                        except sqlite3.Error:
                            raise
                        except Exception as e:  # one bad report never costs the others their verdicts
                            out.append(Verdict(reported=False, error=f"{e.__class__.__name__}: {e}"))
                finally:
                    self._in_batch = False
                self.flush()
        except BaseException:
            for tid in touched:
                self._forget(tid)
            for tid, cols in dirty.items():  # summary rows the failed commit took with it
                if tid not in touched:
                    self._dirty.setdefault(tid, cols)
            raise
        return out

    def _forget(self, trial_id: str) -> None:
        """Drop a trial's in-memory state after a write that did not commit (it is rebuilt from the store,
        manual requests included: their hand-out rolled back with the write)."""
        self.trials.pop(trial_id, None)
        self._dirty.pop(trial_id, None)

    def _duplicate(self, state: TrialState | None, seq: int, iteration: int, trial_id: str | None = None
                   ) -> Verdict:
        """The verdict for a report the store already holds. If the first copy's answer was lost (the
        actor died between commit and reply) the trial never heard what was decided: hand those actions
        out again. The client drops ids it has already been given."""
        trial_id = state.trial_id if state else trial_id
        undelivered = [{**iv, "redelivered": True} for iv in self.store.undelivered(trial_id, seq)]
        return Verdict(iteration, actions=undelivered,
                       stop=any(actions.get(a["action"]).effect == "stop" for a in undelivered),
                       health=state.health(state.last_seq) if state is not None else {},
                       seq=seq, duplicate=True)

    def flush(self, force: bool = False, trial_id: str | None = None) -> None:
        """Write the trial summary rows changed since the last flush (all, or one trial's);
        unless forced, only once FLUSH_S has passed since the last time."""
        if not self._dirty or not (force or time.monotonic() - self._flushed_at >= FLUSH_S):
            return
        if trial_id is not None:
            todo = {trial_id: self._dirty.pop(trial_id)} if trial_id in self._dirty else {}
        else:
            todo, self._dirty = self._dirty, {}
            self._flushed_at = time.monotonic()
        try:
            with self.store.transaction():
                for tid, cols in todo.items():
                    m = cols.get("final")
                    if m is not None:
                        cols["final"] = {k: m.get(k) for k in _FINAL_KEYS}
                    self.store.set_trial(tid, **cols)
        except Exception:
            for tid, cols in todo.items():  # written next time, unless a newer summary replaced it
                self._dirty.setdefault(tid, cols)
            raise

    # ------------------------------------------------------------------ helpers
    def _one_of_each(self, state: TrialState, todo: list[dict], origin: list[Stream]) -> tuple[list, list]:
        """One rollback, one stop, one restart a verdict. A module's rollback takes back only that module,
        unless the fault is shared: another trained module is in alarm too, or several streams asked for
        a rollback at once; then the whole trial goes back (``params.whole_trial``)."""
        seen: dict[str, dict] = {}
        keep_todo, keep_origin = [], []
        for a, st in zip(todo, origin):
            spec = actions.get(a["action"])
            if spec.needs_checkpoint or spec.effect:
                first = seen.get(a["action"])
                if first is not None:
                    if spec.needs_checkpoint and first["module"] != a["module"] and first["module"] is not None:
                        first["params"]["whole_trial"] = True
                        first["reason"] += f"; and {a['module'] or 'the trial'}: {a['reason']}"
                    continue
                seen[a["action"]] = a
            keep_todo.append(a)
            keep_origin.append(st)
        rb = seen.get("rollback")
        if rb is not None and state.multi and rb["module"] is not None and not rb["params"].get("whole_trial"):
            sick = sorted(m for m, st in state.streams.items()
                          if m is not None and m != rb["module"] and st.trained and st.detectors.alarmed())
            if sick:
                rb["params"]["whole_trial"] = True
                rb["reason"] += f"; a shared fault ({', '.join(sick)} in alarm too): the whole trial goes back"
        return keep_todo, keep_origin

    def _materialize(self, state: TrialState, stream: Stream, decision, iteration: int) -> list[dict]:
        f = decision.finding
        why = decision.why or f"{f.detector} ({f.severity}): {f.message}"
        if decision.escalated:
            why = (f"{ESCALATED}{self.settings.max_interventions} interventions within "
                   f"{self.settings.intensity_window} iterations; last trouble: {why}")
        out = []
        for name in decision.actions:
            a = self._action(state, name, self.params.get(name, {}), why, f.detector, iteration, decision.rung,
                             stream.module)
            if a is None:
                why += "; no healthy checkpoint to roll back to"
            else:
                out.append(a)
        if decision.actions and not out:  # e.g. rollback without a checkpoint and nothing else: escalate
            end = "stop_trial" if self.policy.may_end(f, stream.detectors.streak(f.detector)) else "alert"
            out.append(self._action(state, end, {}, why, f.detector, iteration, decision.rung, stream.module))
        return out

    def _action(self, state: TrialState, name: str, params: dict, reason: str, detector: str | None,
                iteration: int, rung: int, module: str | None = None) -> dict | None:
        """One action as it goes out in a verdict; None when it needs a checkpoint the trial lacks. ``module``:
        the module it is for (the stream that decided it); None: the whole trial."""
        params = dict(params)
        if actions.get(name).needs_checkpoint:
            if state.checkpoint is None:
                return None
            params.update(checkpoint=state.checkpoint["path"], to_iteration=state.checkpoint["iteration"],
                          hparams=modules.merged(state.checkpoint.get("hparams"), modules.packed(state.overrides)))
        return {"action": name, "params": params, "reason": reason, "detector": detector,
                "iteration": iteration, "rung": rung, "module": module}

    def request_action(self, trial_id: str, action: str, params: dict | None = None,
                       reason: str = "manual request") -> bool:
        """Queue an action by hand (dashboard); it goes out with the trial's next verdict. Stored, so that
        it survives an actor restart, and accepted for a trial not registered again yet (after a restart)."""
        if action not in actions.ACTIONS:
            return False
        state = self.trials.get(trial_id)
        if state is None:
            row = self.store.trial(trial_id)
            if row is None or row["status"] != "running":
                return False
        elif state.status != "running":
            return False
        rid = self.store.add_request(trial_id, action, dict(params or {}), reason)
        if state is not None:
            state.requested.append({"rid": rid, "action": action, "params": dict(params or {}), "reason": reason})
        return True

    def _manual(self, state: TrialState, req: dict, iteration: int) -> dict | None:
        params = {**self.params.get(req["action"], {}), **req["params"]}
        module = params.pop("module", None)  # a request for one module (the dashboard's module selector)
        module = module if isinstance(module, str) and module in state.streams else None
        if module is None and not state.multi:  # a single-agent trial is its one module
            module = state.main.module
        return self._action(state, req["action"], params, req["reason"], None, iteration, -1, module)

    def snapshot(self) -> list[dict]:
        """Live per-trial state for status views."""
        return [{"trial_id": t.trial_id, "run_id": t.run_id, "status": t.status, "iteration": t.last_iteration,
                 "seq": t.last_seq, "health": t.health(t.last_seq),
                 "node_id": t.node_id,
                 "episode_return_mean": t.last_metrics.get("episode_return_mean"),
                 "iteration_time_s": t.last_metrics.get("time_this_iter_s")}
                for t in self.trials.values()]

    def _rewind(self, stream: Stream, memo: dict | None = None) -> None:
        """After a rollback the stream is back at its checkpoint: so is the history its detectors judge against
        (streams rewound with one ``memo`` that shared a history share its copy)."""
        if stream.history_at_checkpoint is not None:
            stream.history = copy.deepcopy(stream.history_at_checkpoint, memo)
        stream.detectors.reset()

    def acknowledge(self, trial_id: str, applied: Any) -> None:
        """The one way a trial tells what it did with the actions it was handed (``supervisor.actions.apply``
        entries: ``id``, ``ok``, ``before``/``after`` hyperparameters or ``error``, ``verified``), before
        its next report: the change then counts as a target the next report verifies, an override a
        restarted trial re-applies, or, not applied, as ineffective. Taking the same entries twice
        changes nothing (a trial resends what it is not sure arrived)."""
        if not isinstance(applied, list) or not applied:
            return
        state = self._known(trial_id)
        if state is None:
            return
        try:
            with self.store.transaction():
                self._take_applied(state, applied)
        except sqlite3.Error:
            self._forget(trial_id)  # memory moved past the store: rebuilt from it next time
            raise

    def _take_applied(self, state: TrialState, applied: list) -> None:
        by_id = {p.id: (st, p) for st in state.streams.values() for p in st.pending}
        changed_overrides = False
        for item in applied:
            if not isinstance(item, dict) or isinstance(item.get("id"), bool) or not isinstance(item.get("id"), int):
                continue
            st, p = by_id.get(item["id"], (None, None))
            if p is None and item["id"] not in state.known_ids:
                continue  # not one of this trial's interventions
            after = item.get("after") if isinstance(item.get("after"), dict) else {}
            # the hparams it left, per module (a change for one module is that module's)
            per = _per_module(after, p.module if p is not None else item.get("module"))
            for m, hp in per.items():
                nums = {k: v for k, v in hp.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
                if nums:
                    state.overrides.setdefault(m, {}).update(nums)
                    changed_overrides = True
            cols: dict[str, Any] = {"applied": item}
            if p is not None:
                if p.action == "quarantine" and item.get("ok", True):
                    state.quarantined = True
                p.target = _targets(per)
                if not item.get("ok", True):
                    cols.update(verified=0, outcome="ineffective")
                    st.pending.remove(p)
                    if not actions.get(p.action).retry_if_ineffective:  # could not apply: don't pick it again
                        st.policy.ineffective.add(p.action)
                elif "verified" in item:  # rollback: the trial compared weights itself
                    cols["verified"] = int(bool(item["verified"]))
                    p.verified = bool(item["verified"])
            elif "verified" in item:
                cols["verified"] = int(bool(item["verified"]))
            self.store.set_intervention(item["id"], **cols)
        if changed_overrides:
            self.store.set_trial(state.trial_id, overrides=modules.packed(state.overrides))

    def _verify(self, state: TrialState, metrics: dict) -> None:
        """An hparam change is verified by the next report showing the new value, on the module it changed
        (algorithms whose learner reports lag their updates, APPO and IMPALA, get ``report_lag`` more
        reports: supervisor.algorithms)."""
        if not any(st.pending for st in state.streams.values()):
            return
        spec = algorithms.get(state.algorithm)
        lag = spec.report_lag if spec is not None else 0
        for p in state.pending:
            if p.verified is not None or not p.target:
                continue
            ok = True
            for m, target in p.target.items():
                view = modules.module_view(metrics, m) if state.multi else metrics
                for k, want in target.items():
                    metric, tol = VERIFIABLE[k]
                    got = view.get(metric)
                    if got is None:
                        continue
                    ok &= abs(got - want) <= tol * max(abs(want), 1e-12) + 1e-12
            if not ok and p.checks < lag:
                p.checks += 1
                continue
            p.verified = ok
            self.store.set_intervention(p.id, verified=int(ok))

    def _judge(self, state: TrialState, stream: Stream, seq: int, findings: list[Finding], metrics: dict) -> None:
        """Effective: for ``outcome_window`` iterations the triggering signal stayed in its band, nothing
        went non-finite and the return did not collapse, on the stream that asked for the repair.
        Otherwise ineffective, and the policy will not try that action on this stream again, and if it
        shows no learning (``supervisor.salvage``) it is given up on (``stop_unsalvageable``)."""
        fired = {f.detector for f in findings if severity_rank(f.severity) >= severity_rank("warning")}
        window = self.settings.outcome_window
        alarmed = None  # the detectors still in alarm, looked up only once an outcome window has passed
        # a repair one of whose changes never showed (verified False) was no real try: no giving up on it
        unapplied = {p.seq for p in stream.pending if p.verified is False}
        rolled_back = {p.seq for p in stream.pending if p.action == "rollback"}
        for p in list(stream.pending):
            spec = actions.get(p.action)
            if not spec.judged or seq <= p.seq:
                continue
            if p.verified is None and p.target:
                continue  # still waiting for a lagging report (report_lag) to show the change
            broken = RETURN_BROKEN | {p.detector}
            if broken & fired:
                outcome = "ineffective"
            elif seq - p.seq >= window and not broken & (alarmed := alarmed or stream.detectors.alarmed()):
                # a collapsed return still in alarm (reported once, then latched) is no recovery
                outcome = "effective"
            elif seq - p.seq >= 2 * window:  # the signal never left its alarm: the action did not fix it
                outcome = "ineffective"
            else:
                continue
            self._settle(state, stream, p, outcome, seq)
            # an earlier repair that worked says nothing about this fault: the evidence decides
            if (outcome == "ineffective" and spec.counts_toward_limit and self.settings.stop_unsalvageable
                    and stream.give_up is None and p.seq not in unapplied and p.detector not in RETURN_ONLY
                    and self.policy.may_stop(p.detector, state.algorithm)):
                evidence = salvage.no_learning(stream.first_returns,
                                               list(stream.history.series("episode_return_mean")),
                                               metrics, stream.priors, rolled_back=p.seq in rolled_back)
                if evidence is not None:
                    stream.give_up = (p, evidence)

    def _settle(self, state: TrialState, stream: Stream, p: Pending, outcome: str, seq: int) -> None:
        spec = actions.get(p.action)
        stream.pending.remove(p)
        self.store.set_intervention(p.id, outcome=outcome, judged_seq=seq)
        if outcome == "ineffective" and not spec.retry_if_ineffective:
            stream.policy.ineffective.add(p.action)
        if outcome == "effective" and spec.counts_toward_limit:
            state.had_effective = True

    def _settle_before_rollback(self, state: TrialState, stream: Stream, seq: int) -> None:
        """A rollback resets the detectors, so a repair still waiting for its outcome would next be judged
        on their silence: judge it now, on the alarms as they stand (a new repair was needed meanwhile)."""
        alarmed = stream.detectors.alarmed()
        for p in [p for p in stream.pending if actions.get(p.action).judged and p.seq < seq]:
            broken = (RETURN_BROKEN | {p.detector}) & alarmed
            self._settle(state, stream, p, "ineffective" if broken else "effective", seq)

    def _known(self, trial_id: str) -> TrialState | None:
        """The trial's state, rebuilt from the store when the actor restarted and the trial speaks (an
        acknowledgement, a checkpoint record) before it reports again; None for a trial the store never saw."""
        state = self.trials.get(trial_id)
        if state is None:
            row = self.store.trial(trial_id)
            if row is None:
                return None
            state = self._rebuild(trial_id, row["run_id"])
            state.status = row["status"]
            self.trials[trial_id] = state
        return state

    def record_checkpoint(self, trial_id: str, seq: int, iteration: int, path: str, hparams: dict | None
                          ) -> dict | None:
        """A checkpoint the trial took after report ``seq``: the trial's rollback target from now on, unless
        a newer one is already known (a record that arrives late). Returns ``{"target": path}``, the target
        the trial must keep; None for an unknown trial. ``hparams``: flat, or per module (``supervisor.modules``)."""
        state = self._known(trial_id)
        if state is None:
            return None
        if state.checkpoint is not None and seq < state.checkpoint["seq"]:
            self.store.record_checkpoint(trial_id, seq, iteration, path, hparams)
            return {"target": state.checkpoint["path"]}
        per = modules.by_module(dict(hparams or {}))
        # RLlib reports the lr scheduled for the *next* update. If a schedule just raised it, no update
        # has used it yet, so "healthy" says nothing about it: keep the lr that produced the healthy updates.
        for m, hp in per.items():
            st = state.streams.get(m) or (state.main if not state.multi else None)
            lr, used = hp.get("lr"), st.prev_lr if st is not None else None
            if isinstance(lr, (int, float)) and isinstance(used, float) and math.isfinite(used) and 0 < used < lr:
                hp["lr"] = used
        hparams = modules.packed(per)
        self.store.record_checkpoint(trial_id, seq, iteration, path, hparams)
        state.checkpoint = {"path": path, "seq": seq, "iteration": iteration, "hparams": hparams}
        _save_histories(state)
        return {"target": path}

    def record_best_checkpoint(self, trial_id: str, seq: int, iteration: int, path: str, metric: str, value: float,
                               hparams: dict | None) -> dict | None:
        """The trial's new best checkpoint; returns ``{"best": path}``, None for an unknown trial."""
        state = self._known(trial_id)
        if state is None:
            return None
        self.store.record_best_checkpoint(trial_id, seq, iteration, path, metric, value, hparams)
        state.best = {"metric": metric, "value": value, "path": path, "seq": seq, "iteration": iteration}
        return {"best": path}

    def finish_trial(self, trial_id: str, status: str) -> str:
        """Close a trial (what it applied last was acknowledged before). ``completed`` becomes ``recovered``
        when an intervention helped it."""
        state = self.trials.get(trial_id)
        if state is None:
            return status
        self.flush(force=True, trial_id=trial_id)
        for st in state.streams.values():
            for p in list(st.pending):
                if not actions.get(p.action).judged:
                    self.store.set_intervention(p.id, outcome="effective", judged_seq=state.last_seq)
                    st.pending.remove(p)
        if status == "completed" and state.had_effective:
            status = "recovered"
        if state.stop_reason and status in ("completed", "recovered", "errored"):
            status = "stopped"  # the supervisor stopped it after a crash or a hang
        self.store.set_trial(trial_id, status=status, ended=time.time())
        state.status = status
        return status

    # ------------------------------------------------------------------ events: crashes and hangs
    def _state(self, trial_id: str, run_id: str | None = None) -> TrialState | None:
        state = self.trials.get(trial_id)
        if state is None:
            row = self.store.trial(trial_id)
            if row is None:
                return None
            state = self._rebuild(trial_id, row["run_id"] or run_id or "run")
            state.status = row["status"]
            self.trials[trial_id] = state
        return state

    def crash(self, trial_id: str, report: dict, run_id: str | None = None, own_roots: tuple = ()) -> dict:
        """A trial crashed (``report``: ``supervisor.crash``'s crash report). Records a critical
        ``trial_crashed`` finding with its cause and decides, through the ``trial_crashed`` ladder, what the
        restart Tune makes (``FailureConfig``) will be:

        * a cause the supervisor can act on (``non_finite_update``, ``update_blowup``): the ladder's change
          (a lower lr) becomes an override the restarted trial applies on top of its newest healthy
          checkpoint, then ``restart``; its last rung stops;
        * a cause it cannot: ``restart`` once; the same crash again (same signature) ``stop``s, with the
          cause as the reason; non-finite data from the environment stops at once (outside the weights).

        Returns ``{"action": "restart" | "stop" | None, "reason", "finding", "cause", "overrides"}``;
        ``action`` None: the crash was already told (the driver's copy of a crash the trial reported, or
        the death of a process the supervisor ended itself)."""
        state = self._state(trial_id, run_id)
        if state is None:
            self.register_trial(trial_id, run_id or "run")
            state = self.trials[trial_id]
        last = state.last_event or {}
        same = ((last.get("finding") or {}).get("details") or {}).get("exception") == report.get("exception") \
            and time.time() - last.get("time", 0.0) < DRIVER_COPY_S
        if report.get("source") == "driver" and (state.crashed_since_start or state.expect_death or same):
            if state.last_event is not None:  # the trial told it, or the supervisor ended the process itself
                return {**state.last_event, "duplicate": True}
            return {"action": None, "reason": "already recorded", "finding": None, "cause": None, "overrides": {},
                    "duplicate": True}
        recent = [r["metrics"] for r in self.store.reports(trial_id, since_seq=state.last_seq - RECENT)]
        found = [f for f in self.store.findings(trial_id) if f["seq"] is not None
                 and f["seq"] > state.last_seq - RECENT]
        rep = dict(report)
        if not isinstance(rep.get("iteration"), int):
            rep["iteration"] = state.last_iteration + 1
        rep.setdefault("node_id", state.node_id)
        finding, cause = TrialCrashed(own_roots)(rep, recent, found)
        sig = finding.details["signature"]
        seen = state.crashes.get(sig, 0)
        state.crashes[sig] = seen + 1
        state.crashed_since_start = True
        state.iter_started, state.clock_iteration, state.beat = None, None, {}  # the process is gone
        seq = state.last_seq + 1
        it = finding.iteration
        if cause.actionable:
            decision = self.policy.decide(_event_stream(state).policy, seq, [finding], algorithm=state.algorithm,
                                          event=True)
            names = decision.actions if decision else ["restart_trial"]
            rung = decision.rung if decision else 0
            why = f"trial_crashed: {cause.summary}"
            if decision is not None and decision.escalated:
                why = (f"intensity limit: {self.settings.max_interventions} interventions within "
                       f"{self.settings.intensity_window} iterations; last trouble: {why}")
        elif seen or cause.kind == "non_finite_data":
            names, rung = ["stop_trial"], 1
            why = (f"trial_crashed: {cause.summary} (outside the weights: a restart cannot help)"
                   if cause.kind == "non_finite_data" else
                   f"trial_crashed: {cause.summary}; the same crash again after a restart "
                   f"({report.get('exception')}, {seen + 1} times): it repeats the same way")
        else:
            names, rung = ["restart_trial"], 0
            why = (f"trial_crashed: {cause.summary}; retried once from the newest healthy checkpoint (the same "
                   "crash again stops the trial)")
        todo = self._event_actions(state, names, why, TrialCrashed.name, it, rung)
        state.last_seq = seq
        self._record_event(state, seq, finding, todo)
        action = "stop" if any(a["action"] == "stop_trial" for a in todo) else "restart"
        if action == "stop":
            state.stop_reason = why
        state.last_event = {"action": action, "reason": why, "finding": finding.to_dict(), "cause": cause.to_dict(),
                            "overrides": modules.packed(state.overrides), "seq": seq, "actions": todo,
                            "time": time.time()}
        return dict(state.last_event)

    def _event_actions(self, state: TrialState, names: list[str], why: str, detector: str, iteration: int,
                       rung: int) -> list[dict]:
        """An event's actions, applied here where they can be (the trial's process is dead or stuck): a
        hyperparameter change becomes an override the restarted trial applies."""
        out = []
        for name in names:
            a = {"action": name, "params": dict(self.params.get(name, {})), "reason": why, "detector": detector,
                 "iteration": iteration, "rung": rung}
            spec = actions.get(name)
            if spec.effect is None and name not in ("alert",):
                # every module the learner trains (a single-agent trial: its one): the crash names none
                targets = [st for st in _ordered(state) if st.module is not None and st.trained]
                ckpt = modules.by_module((state.checkpoint or {}).get("hparams"))
                before_all, after_all = {}, {}
                try:
                    for st in targets:
                        current = {**ckpt.get(st.module, {}), **state.overrides.get(st.module, {})}
                        lr = _view(state, st, state.last_metrics).get("lr")
                        if current.get("lr") is None and lr is not None:
                            current["lr"] = lr
                        after_all[st.module] = spec.plan(current, a["params"])
                        before_all[st.module] = {k: current.get(k) for k in after_all[st.module]}
                except (ValueError, TypeError) as e:
                    a["applied"] = {"ok": False, "error": f"{e.__class__.__name__}: {e}"}
                else:
                    for m, after in after_all.items():
                        state.overrides.setdefault(m, {}).update(
                            {k: v for k, v in after.items() if isinstance(v, (int, float))})
                    before, after = modules.packed(before_all), modules.packed(after_all)
                    a["applied"] = {"ok": True, "before": before, "after": after,
                                    "changed": {k: [before.get(k), v] for k, v in after.items() if k != "modules"},
                                    "by": "supervisor, for the restarted trial"}
            out.append(a)
        return out

    def _record_event(self, state: TrialState, seq: int, finding: Finding, todo: list[dict]) -> None:
        with self.store.transaction():
            ids = self.store.record_event(state.trial_id, seq, [finding.to_dict()], todo)
            if state.overrides:
                self.store.set_trial(state.trial_id, overrides=modules.packed(state.overrides))
        ev = _event_stream(state)
        ev.health.observe(seq, [finding])
        state.last_trouble_seq = seq
        for a, iv_id in zip(todo, ids):
            a["id"] = iv_id
            state.known_ids.add(iv_id)
            applied = a.get("applied") or {}
            if applied.get("ok") is False:
                self.store.set_intervention(iv_id, outcome="ineffective", verified=0)
                continue
            p = Pending(iv_id, seq, a["action"], a.get("detector") or "", module=ev.module)
            p.target = _targets(_per_module(applied.get("after") or {}, ev.module))
            ev.pending.append(p)
        self._dirty[state.trial_id] = {**self._dirty.get(state.trial_id, {}),
                                       **_summary(state, state.health(seq))}
        self.flush(force=True, trial_id=state.trial_id)

    def heartbeat(self, trial_id: str, beat: dict, now: float | None = None) -> dict:
        """A trial's heartbeat (``{"iteration", "phase"}``), timed on the supervisor's clock. Answers with
        what an event decided for the trial's own process (``{"restart": reason}`` or ``{"stop": reason}``,
        once) when the supervisor could not end it from outside."""
        now = time.time() if now is None else now
        state = self.trials.get(trial_id)
        if state is None or not isinstance(beat, dict):
            return {}
        it = beat.get("iteration")
        it = it if isinstance(it, int) and not isinstance(it, bool) else state.last_iteration + 1
        phase = beat.get("phase")
        if phase != "between" and (state.iter_started is None or it > (state.clock_iteration or 0)):
            # the first word of an iteration the clock is not timing yet (the first after a (re)start, or one
            # whose predecessor's report went missing): time it from here
            state.iter_started, state.clock_iteration, state.hung_iteration = now, it, None
        state.beat = {"iteration": it, "phase": phase, "at": now}
        if isinstance(beat.get("node_id"), str):
            state.node_id = beat["node_id"]
        told, state.told = state.told, None
        return told or {}

    def hung(self, now: float | None = None) -> list[dict]:
        """Every running trial whose iteration in progress has run past its bound (``TrialHung``): a
        critical ``trial_hung`` finding, once per iteration, and the ``trial_hung`` ladder's decision
        (restart through Tune, then stop). Returns ``{"trial_id", "node_id", "phase", "action", "reason",
        "finding", "actions"}`` for each; the caller ends the process (``action``: restart or stop)."""
        hs = self.settings.hang
        if not hs.enabled:
            return []
        now = time.time() if now is None else now
        det = TrialHung(hs.factor, hs.floor_s)
        out = []
        for state in list(self.trials.values()):
            if state.status != "running" or state.iter_started is None:
                continue
            it = state.clock_iteration or state.last_iteration + 1
            if state.hung_iteration == it or state.expect_death:
                continue
            times = [t for t in state.streams[None].history.series("time_this_iter_s", last=20).tolist()
                     if math.isfinite(t)]
            median = sorted(times)[len(times) // 2] if times else None
            f = det(now, state.iter_started, median, it,
                    state.beat.get("phase") if state.beat.get("iteration") == it else None, state.node_id,
                    state.beat.get("at"))
            if f is None:
                continue
            state.hung_iteration = it
            seq = state.last_seq + 1
            decision = self.policy.decide(_event_stream(state).policy, seq, [f], algorithm=state.algorithm, event=True)
            names = decision.actions if decision else ["restart_trial"]
            why = f"{f.message}"
            todo = self._event_actions(state, names, why, TrialHung.name, it, decision.rung if decision else 0)
            state.last_seq = seq
            self._record_event(state, seq, f, todo)
            action = "stop" if any(a["action"] == "stop_trial" for a in todo) else "restart"
            if action == "stop":
                state.stop_reason = why
            state.expect_death = True
            state.told = {action: why}
            state.last_event = {"trial_id": state.trial_id, "run_id": state.run_id, "node_id": state.node_id,
                                "phase": f.details.get("phase"), "action": action, "reason": why, "seq": seq,
                                "finding": f.to_dict(), "actions": todo, "time": now}
            out.append(dict(state.last_event))
        return out

    def running_per_node(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for st in self.trials.values():
            if st.status == "running" and st.node_id:
                out[st.node_id] = out.get(st.node_id, 0) + 1
        return out


_FINAL_KEYS = ("episode_return_mean", "env_steps_lifetime", "time_total_s")


def _spec(action: str) -> actions.ActionSpec:
    """An action's spec; an id this version does not know (a store written by another) as a plain repair."""
    try:
        return actions.get(action)
    except ValueError:
        return actions.ActionSpec()


def _all_finite(metrics: dict) -> bool:
    """Every value finite. A finite sum says so at C speed (a NaN or an infinity makes it NaN or
    infinite); only a sum that overflowed needs the value-by-value look."""
    s = sum(metrics.values())
    return s - s == 0.0 or all(v - v == 0.0 for v in metrics.values())


def _per_module(after: dict, module: Any) -> dict[str, dict]:
    """The hparams an applied action left, per module: as the trial sent them per module, else all of them
    for the module the action was for (a single-agent trial's: its default module)."""
    if isinstance(after.get("modules"), dict):
        return modules.by_module(after)
    return {module if isinstance(module, str) else modules.DEFAULT: after} if after else {}


def _targets(per: dict[str, dict]) -> dict[str, dict]:
    """What the next reports must show, per module: the verifiable hparams among those an action left."""
    return {m: t for m, hp in per.items()
            if (t := {k: v for k, v in hp.items() if k in VERIFIABLE and isinstance(v, (int, float))
                      and not isinstance(v, bool)})}


def _rolled_back(state: TrialState, rb: dict) -> list[Stream]:
    """The streams a rollback takes back: its module's, or every one (a trial-level or shared fault)."""
    params = rb.get("params") if isinstance(rb.get("params"), dict) else {}
    module = rb.get("module")
    if module is None or not state.multi or params.get("whole_trial") or module not in state.streams:
        return list(state.streams.values())
    return [state.streams[module]]


def _append(streams: list[Stream], views: dict) -> None:
    """Each stream's view of a report into its history, once per history (streams may share one)."""
    done: set[int] = set()
    for st in streams:
        h = st.history
        if id(h) not in done:
            done.add(id(h))
            h.append(views[st.module])


def _save_histories(state: TrialState) -> None:
    """Every stream's history as of the checkpoint just taken (a shared history copied once, still shared)."""
    memo: dict = {}
    for st in state.streams.values():
        st.history_at_checkpoint = copy.deepcopy(st.history, memo)


def _note_start(stream: Stream, metrics: dict) -> None:
    """Keep a stream's first finite returns: the level it started at (``supervisor.salvage``)."""
    r = metrics.get("episode_return_mean")
    if len(stream.first_returns) < salvage.FIRST and r is not None and math.isfinite(r):
        stream.first_returns.append(r)


def _event_stream(state: TrialState) -> Stream:
    """The stream a crash or a hang escalates on: a single-agent trial's learner (its ladder and intensity
    count with the learner's own repairs), a multi-agent trial's own (the event names no policy)."""
    return state.streams[None] if state.multi else state.main


def _ordered(state: TrialState) -> list[Stream]:
    """The modules' streams first (a learner's fault is the root cause), then the trial's own."""
    return [st for m, st in state.streams.items() if m is not None] + [state.streams[None]]


def _modules_config(config: Any) -> dict[str, dict]:
    """What a trial registered about its modules (the RLlib callback sends them):
    ``{"modules": {module_id: {"trained": bool, "priors": {...}}}}``; malformed entries are dropped."""
    mods = config.get("modules") if isinstance(config, dict) else None
    if not isinstance(mods, dict):
        return {}
    return {str(m): {k: v for k, v in c.items() if k in ("trained", "priors")}
            for m, c in mods.items() if isinstance(c, dict)}


def _view(state: TrialState, stream: Stream, metrics: dict) -> dict:
    """What one stream's detectors see of a report (``supervisor.modules``)."""
    if stream.module is None:
        return modules.trial_view(metrics)
    return modules.module_view(metrics, stream.module)


def _stream_of(state: TrialState, module: str | None, detector: str | None) -> Stream:
    """The stream a stored finding or intervention belongs to. A store written before modules were recorded
    has none: a single-agent trial's learner findings are its module's."""
    from supervisor.detectors import DETECTORS

    s = state.streams.get(module)
    if module is None and not state.multi and detector in DETECTORS and DETECTORS[detector].scope != "trial":
        return state.main
    return s if s is not None else state.streams[None]


def _summary(state: TrialState, health: dict) -> dict:
    """A trial's summary row as of its newest report (``final`` is cut down to its keys when written)."""
    return {"iterations": state.last_iteration, "last_seq": state.last_seq, "health_score": health["score"],
            "worst_severity": health["worst_severity"], "health": health, "final": state.last_metrics}


def json_or_empty(s: Any) -> dict:
    from supervisor.store import loads

    try:
        v = loads(s) if isinstance(s, str) else s
    except ValueError:
        return {}
    return v if isinstance(v, dict) else {}
