"""The bad-input battery: every input here must exit 2 with ONE line naming the file and the problem.

Real files (deep JSON, huge integers, an over-long line, NUL bytes, broken
CSV quoting, damaged SQLite databases, YAML alias bombs, out-of-range
settings) through the CLI's ``main``, each case in a process of its own
forked from a server that imported the CLI once (what ``python -m supervisor``
runs, without paying its ~0.5 s of imports ninety times); the first case of
each command also through the real ``python -m supervisor``. None of them
needs Ray (settings are validated before Ray starts).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from supervisor.scan import MAX_LINE_BYTES
from supervisor.store import SCHEMA_VERSION, Store

ROOT = Path(__file__).resolve().parents[1]
GOOD = textwrap.dedent("""\
    name: t
    env: CartPole-v1
    config: {lr: 0.001, num_env_runners: 0}
    stop: {iterations: 2}
""")
GOOD_JSONL = "".join(json.dumps({"step": i, "loss": 1.0 / (i + 1), "approx_kl": 0.01}) + "\n" for i in range(5))
BOMB = ('a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n'
        'c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n'
        'e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n'
        'g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n')


def good_store(run: Path) -> Path:
    run.mkdir(parents=True, exist_ok=True)
    st = Store(run / "supervisor.db")
    st.upsert_run("r", "good", "run", "completed")
    st.upsert_trial("t", "r", "completed")
    for s in range(200):
        st.record_iteration({"trial_id": "t", "iteration": s, "metrics": {"loss": float(s), "pad": "x" * 200}},
                            s, [], [])
    st.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    st.close()
    return run / "supervisor.db"


# ---------------------------------------------------------------------------- the cases
# Each case: (id, builder(tmp) -> argv, words the one line must hold). The first word is the file.

def f(name: str, data: bytes | str):
    def build(tmp: Path) -> Path:
        p = tmp / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
        return p
    return build


SCAN = [
    ("deep-jsonl", f("log.jsonl", '{"a":' * 50_000 + "1" + "}" * 50_000 + "\n"), ["nested too deeply"]),
    ("deep-array", f("log.json", "[" * 100_000 + "]" * 100_000), ["nested too deeply"]),
    ("deep-object", f("log.json", '{"x":\n' * 60_000 + "1" + "}" * 60_000), ["nested too deeply"]),
    ("int-400", f("log.jsonl", '{"step": 1, "loss": 1' + "0" * 400 + "}\n"), ["number", "too large"]),
    ("int-5000", f("log.jsonl", '{"step": 1, "loss": 1' + "0" * 5000 + "}\n"), ["number", "too large"]),
    ("step-400", f("log.jsonl", '{"step": 1' + "0" * 400 + ', "loss": 1.0}\n'), ["number", "too large"]),
    ("float-1e400", f("log.jsonl", '{"step": 1, "loss": 1e400}\n'), ["number", "too large"]),
    ("csv-int-5000", f("progress.csv", "training_iteration,loss\n1,1" + "0" * 5000 + "\n"), ["number", "too large"]),
    ("long-line", f("log.jsonl", '{"step": 1, "loss": 1.0, "pad": "' + "x" * MAX_LINE_BYTES + '"}\n'),
     ["line 1", "longer than"]),
    ("long-csv-line", f("progress.csv", "training_iteration,loss\n1," + "9" * (MAX_LINE_BYTES + 10) + "\n"),
     ["line 2", "longer than"]),
    ("nan-literals-only", f("log.jsonl", "NaN\nInfinity\n"), ["unrecognized format"]),
    ("nan-array", f("log.json", "[NaN, Infinity]"), ["only objects"]),
    ("nul-jsonl", f("log.jsonl", GOOD_JSONL.replace("loss", "lo\0ss", 1)), ["NUL"]),
    ("nul-csv", f("progress.csv", "training_iteration,loss\n1,\0\n"), ["NUL"]),
    ("nul-only", f("log.jsonl", b"\0" * 4096), ["NUL"]),
    ("unterminated-quote", f("progress.csv", 'training_iteration,loss\n1,"0.5\n2,0.4\n'), ["unterminated quote"]),
    ("binary", f("log.jsonl", bytes(range(256)) * 8), ["not a text file"]),
    ("latin1", f("log.jsonl", '{"step": 1, "los\xe9": 1.0}\n'.encode("latin-1")), ["not a text file"]),
    ("empty", f("log.jsonl", ""), ["empty"]),
    ("blank", f("log.jsonl", "\n\n  \n"), ["empty"]),
    ("scalars", f("log.jsonl", "1\n2\n3\n"), ["unrecognized format"]),
    ("object-then-scalar", f("log.jsonl", GOOD_JSONL + "7\n" + GOOD_JSONL), ["line 6", "expected a JSON object"]),
    ("array-of-scalars", f("log.json", "[1, 2, 3]"), ["only objects"]),
    ("bad-json-line", f("log.jsonl", GOOD_JSONL + "{oops}\n" + GOOD_JSONL), ["line 6", "not valid JSON"]),
    ("no-known-keys", f("log.jsonl", '{"foo": 1}\n{"foo": 2}\n'), ["no known metric keys"]),
    ("csv-header-only", f("progress.csv", "training_iteration,loss\n"), ["no records"]),
    ("csv-unknown-cols", f("progress.csv", "a,b\n1,2\n"), ["no known metric keys"]),
    ("unknown-format", f("notes.txt", "hello world\n"), ["unrecognized format"]),
    ("trainer-state-bad", f("trainer_state.json", '{\n"log_history": 5\n}'), ["log_history"]),
    ("missing", lambda tmp: tmp / "nope.jsonl", ["no such file"]),
    ("empty-dir", lambda tmp: (tmp / "d").mkdir() or tmp / "d", ["found below it"]),
]


def scan_case(name, build, words):
    return (f"scan-{name}", lambda tmp: ["scan", str(build(tmp))], words)


def profile_case(name, text, words):
    def build(tmp):
        (tmp / "log.jsonl").write_text(GOOD_JSONL)
        p = tmp / "profile.yaml"
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
        return ["scan", str(tmp / "log.jsonl"), "--profile", str(p)]
    return (f"scan-profile-{name}", build, words)


def run_profile_case(name, text, words):
    def build(tmp):
        p = tmp / "profile.yaml"
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
        e = tmp / "exp.yaml"
        e.write_text(GOOD + "supervisor: {profile: profile.yaml}\n")
        return ["run", str(e), "--out", str(tmp / "run")]
    return (f"run-profile-{name}", build, words)


PROFILES = [
    ("binary", bytes(range(256)) * 4, ["profile.yaml"]),
    ("malformed", "metrics: [unclosed\n", ["malformed YAML"]),
    ("bomb", BOMB, ["aliases"]),
    ("list", "- a\n- b\n", ["mapping"]),
    ("no-metrics", "bands: {}\n", ["metrics"]),
    ("band-nan", "metrics:\n  approx_kl: {low: .nan, high: 1, median: 0.5}\n", ["finite"]),
    ("band-text", "metrics:\n  approx_kl: {low: a, high: 1, median: 0.5}\n", ["numeric"]),
    ("band-inverted", "metrics:\n  approx_kl: {low: 2, high: 1, median: 1.5}\n", ["low <= high"]),
    ("nul", "metrics: {}\n\0\n", ["NUL"]),
    ("deep", "metrics: " + "[" * 20_000 + "]" * 20_000 + "\n", ["nested too deeply"]),
]


def exp_case(name, text, words, extra=()):
    def build(tmp):
        p = tmp / "exp.yaml"
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
        return ["run", str(p), "--out", str(tmp / "run"), *extra]
    return (f"run-{name}", build, words)


SUP = lambda body: GOOD + f"supervisor: {body}\n"  # noqa: E731
EXPERIMENTS = [
    ("bomb", GOOD + BOMB, ["aliases"]),
    ("alias", GOOD + "x: &a 1\ny: *a\n", ["aliases"]),
    ("binary", bytes(range(256)) * 4, ["not a text file"]),
    ("latin1", GOOD.replace("name: t", "name: caf\xe9").encode("latin-1"), ["not UTF-8"]),
    ("nul", GOOD + "\0\n", ["NUL"]),
    ("deep", GOOD + "env_config: " + "[" * 20_000 + "]" * 20_000 + "\n", ["nested too deeply"]),
    ("huge-file", GOOD + "#" + "x" * (5 << 20) + "\n", ["too large"]),
    ("unknown-detector", SUP("{detectors: {no_such_detector: {}}}"), ["supervisor.detectors", "unknown detector"]),
    ("unknown-option", SUP("{detectors: {kl_spike: {frobnicate: 3}}}"), ["supervisor.detectors", "unknown"]),
    ("detector-not-mapping", SUP("{detectors: {kl_spike: 3}}"), ["supervisor.detectors"]),
    ("detector-nan", SUP("{detectors: {kl_spike: {enabled: true, threshold: .nan}}}"), ["supervisor.detectors"]),
    ("detector-enabled-text", SUP("{detectors: {kl_spike: {enabled: maybe}}}"), ["supervisor.detectors"]),
    ("timeout-inf", SUP("{report_timeout_s: .inf}"), ["supervisor.report_timeout_s"]),
    ("timeout-nan", SUP("{report_timeout_s: .nan}"), ["supervisor.report_timeout_s"]),
    ("timeout-huge", SUP("{report_timeout_s: 1e12}"), ["supervisor.report_timeout_s"]),
    ("retry-inf", SUP("{retry_after_s: .inf}"), ["supervisor.retry_after_s"]),
    ("retry-negative", SUP("{retry_after_s: -1}"), ["supervisor.retry_after_s"]),
    ("param-nan", SUP("{action_params: {reduce_lr: {factor: .nan}}}"), ["action_params.reduce_lr.factor", "finite"]),
    ("param-negative", SUP("{action_params: {reduce_lr: {factor: -0.5}}}"), ["action_params.reduce_lr.factor"]),
    ("param-inf", SUP("{action_params: {boost_entropy: {value: .inf}}}"), ["action_params.boost_entropy.value"]),
    ("param-zero-factor", SUP("{action_params: {reduce_lr: {factor: 0}}}"), ["action_params.reduce_lr.factor"]),
    ("param-text", SUP("{action_params: {reduce_lr: {factor: half}}}"), ["supervisor.action_params"]),
    ("param-unknown-action", SUP("{action_params: {explode: {factor: 2}}}"), ["unknown action"]),
    ("history-1e12", SUP("{history: 1e12}"), ["supervisor.history"]),
    ("history-inf", SUP("{history: .inf}"), ["supervisor.history"]),
    ("history-small", SUP("{history: 2}"), ["supervisor.history"]),
    ("checkpoint-every-huge", SUP("{checkpoint_every: 1e30}"), ["supervisor.checkpoint_every"]),
    ("keep-checkpoints-huge", SUP("{keep_checkpoints: 1e12}"), ["supervisor.keep_checkpoints"]),
    ("cooldown-negative", SUP("{cooldown: -1}"), ["supervisor.cooldown"]),
    ("window-zero", SUP("{intensity_window: 0}"), ["supervisor.intensity_window"]),
    ("enabled-text", SUP("{enabled: perhaps}"), ["supervisor.enabled"]),
    ("supervisor-list", GOOD + "supervisor: [1, 2]\n", ["supervisor"]),
    ("profile-missing", SUP("{profile: nope.yaml}"), ["supervisor.profile", "no such file"]),
    ("stop-nan", GOOD.replace("iterations: 2", "episode_return_mean: .nan"), ["stop.episode_return_mean"]),
    ("stop-inf", GOOD.replace("iterations: 2", "episode_return_mean: .inf"), ["stop.episode_return_mean"]),
    ("stop-time-inf", GOOD.replace("iterations: 2", "time_s: .inf"), ["stop.time_s"]),
    ("stop-iterations-float", GOOD.replace("iterations: 2", "iterations: 2.5"), ["stop.iterations"]),
    ("stop-iterations-text", GOOD.replace("iterations: 2", "iterations: many"), ["stop.iterations"]),
    ("stop-empty", GOOD.replace("{iterations: 2}", "{}"), ["stop"]),
    ("seed-huge", GOOD + "seed: 123456789012345678901234567890\n", ["seed"]),
    ("seed-negative", GOOD + "seed: -1\n", ["seed"]),
    ("seed-float", GOOD + "seed: 1.5\n", ["seed"]),
    ("lr-nan", GOOD.replace("lr: 0.001", "lr: .nan"), ["config.lr"]),
    ("lr-inf", GOOD.replace("lr: 0.001", "lr: .inf"), ["config.lr"]),
    ("gamma-nan", GOOD.replace("lr: 0.001", "lr: 0.001, gamma: .nan"), ["config.gamma"]),
    ("entropy-nan", GOOD.replace("lr: 0.001", "lr: 0.001, entropy_coeff: .nan"), ["config.entropy_coeff"]),
    ("entropy-inf", GOOD.replace("lr: 0.001", "lr: 0.001, entropy_coeff: .inf"), ["config.entropy_coeff"]),
    ("runners-text", GOOD.replace("num_env_runners: 0", "num_env_runners: two"), ["config.num_env_runners"]),
    ("name-slash", GOOD.replace("name: t", "name: a/b"), ["name"]),
    ("name-empty", GOOD.replace("name: t", "name: ''"), ["name"]),
    ("env-config-list", GOOD + "env_config: [1]\n", ["env_config"]),
    ("config-list", GOOD.replace("config: {lr: 0.001, num_env_runners: 0}", "config: [1]"), ["config"]),
    ("tab-indent", "name: t\n\tenv: x\n", ["malformed YAML"]),
    ("python-tag", GOOD + "x: !!python/object/apply:os.system ['true']\n", ["malformed YAML"]),
    ("set-nan", GOOD, ["config.lr"], ("--set", "config.lr=.nan")),
    ("set-seed-huge", GOOD, ["seed"], ("--set", "seed=99999999999999999999999")),
    ("set-history", GOOD, ["supervisor.history"], ("--set", "supervisor.history=1e12")),
    ("set-alias", GOOD, ["config.lr"], ("--set", "config.lr=*a")),
    ("set-into-scalar", GOOD, ["config.lr.x"], ("--set", "config.lr.x=1")),
]


def db_case(name, build_db, words, cmd="report"):
    def build(tmp):
        run = tmp / "run"
        run.mkdir()
        build_db(tmp, run / "supervisor.db")
        return [cmd, str(run)] if cmd == "report" else ["dashboard", "--port", "0", "--run", str(run)]
    return (f"{cmd}-{name}", build, words)


def _text(tmp, db):
    db.write_text("this is not a database\n" * 50)


def _zero(tmp, db):
    db.write_bytes(b"")


def _truncated(tmp, db):
    src = good_store(tmp / "src")
    db.write_bytes(src.read_bytes()[:3000])


def _corrupted(tmp, db):
    src = good_store(tmp / "src")
    data = bytearray(src.read_bytes())
    for i in range(4096, len(data), 97):  # everything after the first page
        data[i] = (data[i] * 31 + 7) & 0xFF
    db.write_bytes(bytes(data))


def _header_smashed(tmp, db):
    src = good_store(tmp / "src")
    data = bytearray(src.read_bytes())
    data[0:16] = b"NOT SQLITE FILE!"
    db.write_bytes(bytes(data))


def _tableless(tmp, db):
    c = sqlite3.connect(db)
    c.execute("CREATE TABLE other (x)")
    c.commit()
    c.close()


def _empty_sqlite(tmp, db):
    c = sqlite3.connect(db)
    c.execute("PRAGMA user_version=0")
    c.execute("VACUUM")
    c.close()


def _newer(tmp, db):
    src = good_store(tmp / "src")
    db.write_bytes(src.read_bytes())
    c = sqlite3.connect(db)
    c.execute(f"PRAGMA user_version={SCHEMA_VERSION + 3}")
    c.commit()
    c.close()


def _bad_json(tmp, db):
    src = good_store(tmp / "src")
    db.write_bytes(src.read_bytes())
    c = sqlite3.connect(db)
    c.execute("UPDATE trials SET final='{not json'")
    c.commit()
    c.close()


DBS = [("not-a-database", _text, ["not a readable SQLite database"]),
       ("zero-bytes", _zero, ["not a supervisor store"]),
       ("truncated", _truncated, ["supervisor.db"]),
       ("corrupted", _corrupted, ["supervisor.db"]),
       ("header-smashed", _header_smashed, ["not a readable SQLite database"]),
       ("table-less", _tableless, ["not a supervisor store"]),
       ("empty-sqlite", _empty_sqlite, ["not a supervisor store"]),
       ("newer-schema", _newer, ["newer rl-supervisor"])]
REPORT_ONLY = [("bad-json-column", _bad_json, ["corrupted store"])]

CASES = ([scan_case(*c) for c in SCAN] + [profile_case(*c) for c in PROFILES]
         + [run_profile_case(*c) for c in PROFILES] + [exp_case(*c) for c in EXPERIMENTS]
         + [db_case(*c) for c in DBS + REPORT_ONLY] + [db_case(*c, cmd="dashboard") for c in DBS]
         + [("report-missing", lambda tmp: ["report", str(tmp / "nope")], ["not a run folder"]),
            ("report-file", lambda tmp: (tmp / "x.txt").write_text("x") and ["report", str(tmp / "x.txt")],
             ["not a supervisor store"]),
            ("dashboard-run-file", lambda tmp: (tmp / "x.txt").write_text("x") and
             ["dashboard", "--port", "0", "--run", str(tmp / "x.txt")], ["not a run folder"])])


def _run(case, tmp: Path):
    name, build, words = case
    tmp.mkdir(parents=True, exist_ok=True)
    argv = build(tmp)
    p = subprocess.run([sys.executable, "-m", "supervisor", *argv], capture_output=True, text=True, timeout=120,
                       cwd=tmp, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return name, argv, p


def _main_in_child(argv: list[str], tmp: str) -> None:
    """A case in a forked child: the CLI's main with its output in files, its return value the exit status."""
    from supervisor.cli import main

    os.chdir(tmp)
    for fd, name in ((1, "stdout"), (2, "stderr")):
        os.dup2(os.open(os.path.join(tmp, f".{name}"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)


def _forked_all(ctx, cases, base: Path, width: int = 4) -> list:
    """Each case in a child forked from the server, ``width`` at a time, all started and joined from this one thread.

    One thread because multiprocessing's Process objects are not thread-safe: ``start()`` polls every other live
    child (``process._cleanup``), and two threads polling one forkserver child race for its exit status; the loser
    reads EOF and reports 255 (seen once in CI: ``run-history-small`` exited 2 and was read as 255).
    """
    from multiprocessing.connection import wait

    out, running, todo = [None] * len(cases), {}, list(enumerate(cases))
    while todo or running:
        while todo and len(running) < width:
            i, (name, build, words) = todo.pop(0)
            tmp = base / f"c{i}"
            tmp.mkdir(parents=True, exist_ok=True)
            argv = build(tmp)
            proc = ctx.Process(target=_main_in_child, args=(argv, str(tmp)))
            proc.start()
            running[proc.sentinel] = (i, name, argv, tmp, proc, time.monotonic() + 120)
        wait(list(running), timeout=1)
        for sentinel, (i, name, argv, tmp, proc, deadline) in list(running.items()):
            if proc.is_alive() and time.monotonic() < deadline:
                continue
            if proc.is_alive():
                proc.kill()
            proc.join()
            del running[sentinel]
            out_, err = ((tmp / f".{n}").read_text(errors="replace") if (tmp / f".{n}").exists() else ""
                         for n in ("stdout", "stderr"))
            out[i] = (name, argv, subprocess.CompletedProcess(argv, proc.exitcode, out_, err))
    return out


# the first case of each command also runs through the real entry point (interpreter start, __main__)
REAL_PROCESS = {"scan-deep-jsonl", "scan-profile-bomb", "run-profile-malformed", "run-bomb", "run-set-alias",
                "report-corrupted", "dashboard-newer-schema"}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["supervisor.cli", "supervisor.scan", "supervisor.report", "supervisor.calibrate",
                                "supervisor.config", "supervisor.dashboard", "tests.test_bad_input"])
    with ThreadPoolExecutor(max_workers=2) as ex:
        real = ex.map(lambda c: _run(c, base / f"real-{c[0]}"), [c for c in CASES if c[0] in REAL_PROCESS])
        out = _forked_all(ctx, CASES, base)
        out += list(real)
    return {name: (argv, p) for name, argv, p in out[:len(CASES)]} | {
        f"{name} (python -m supervisor)": (argv, p) for name, argv, p in out[len(CASES):]}


def test_the_battery_is_large():
    assert len(CASES) >= 90, len(CASES)
    assert len({c[0] for c in CASES}) == len(CASES)
    assert REAL_PROCESS <= {c[0] for c in CASES}, REAL_PROCESS


@pytest.mark.parametrize("case", CASES + [(f"{c[0]} (python -m supervisor)", *c[1:]) for c in CASES if c[0] in REAL_PROCESS],
                         ids=[c[0] for c in CASES] + [f"{c[0]}-python-m" for c in CASES if c[0] in REAL_PROCESS])
def test_exits_2_with_one_line_naming_the_file(results, case):
    name, _, words = case
    argv, p = results[name]
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr[-2000:]
    line = lines[0]
    assert line.isprintable(), repr(line)
    assert len(line) < 2000, line[:300]
    paths = [a for a in argv if "/" in a]
    set_arg = "--set" in argv
    named = line.split(": ", 1)[0]  # the file the line names: one of ours, or one they lead to
    assert set_arg or any(a in named or named.startswith(str(Path(a).parent)) for a in paths), line
    for w in words:
        assert w in line, line


# ---------------------------------------------------------------------------- inputs that are fine, said so

def supervise(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "supervisor", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_ragged_csv_rows_are_dropped_and_counted(tmp_path):
    p = tmp_path / "progress.csv"
    rows = ["training_iteration,total_loss,approx_kl"] + [f"{i},{1.0 / (i + 1)},0.01" for i in range(8)]
    rows[3] += ",extra"
    rows[5] = "4,0.2"
    p.write_text("\n".join(rows) + "\n")
    out = supervise("scan", str(p), "--format", "json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    warnings = [w for t in res.get("trials", [res]) for w in t.get("warnings", [])]
    assert any("2 row(s) dropped" in w for w in warnings), res


def test_a_utf8_bom_is_not_part_of_the_first_key(tmp_path):
    p = tmp_path / "progress.csv"
    p.write_bytes("\ufefftraining_iteration,total_loss\n1,0.5\n2,0.4\n3,0.3\n".encode("utf-8"))
    out = supervise("scan", str(p), "--format", "json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    steps = [t.get("step_key") for t in res.get("trials", [res])]
    assert "training_iteration" in steps, res


def test_nan_and_infinity_values_are_evidence_not_bad_input(tmp_path):
    p = tmp_path / "log.jsonl"
    p.write_text(GOOD_JSONL + '{"step": 5, "loss": NaN, "approx_kl": Infinity}\n')
    out = supervise("scan", str(p), "--format", "json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)  # valid JSON out (non-finite as null)
    assert any(f["detector"] == "non_finite" for f in res["findings"]), res["findings"]


def test_a_read_only_run_folder_is_reported(tmp_path):
    run = tmp_path / "run"
    good_store(run)
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:  # root ignores file modes: a read-only bind mount is what refuses writes
        if subprocess.run(["mount", "--bind", str(run), str(ro)]).returncode or subprocess.run(
                ["mount", "-o", "remount,bind,ro", str(ro)]).returncode:
            pytest.skip("cannot make a read-only bind mount here")
    else:
        ro.rmdir()
        run.rename(ro)
        ro.chmod(0o555)
    try:
        assert subprocess.run(["touch", str(ro / "probe")], capture_output=True).returncode != 0  # really read-only
        for fmt in ("text", "json"):
            out = supervise("report", str(ro), "--format", fmt)
            assert out.returncode == 0, out.stderr
            assert "good" in out.stdout
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(ro)])
        else:
            ro.chmod(0o755)


def test_control_characters_in_trial_ids_and_messages_are_escaped_on_the_terminal(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    st = Store(run / "supervisor.db")
    st.upsert_run("r", "esc\x1b]0;pwned\x07", "run", "completed")
    st.upsert_trial("t\x1b[2J\rX", "r", "completed")
    st.record_finding("t\x1b[2J\rX", {"detector": "kl_spike", "severity": "warning", "message": "bad\x1b[31m red\r"})
    st.close()
    out = supervise("report", str(run))
    assert out.returncode == 0, out.stderr
    assert "\x1b" not in out.stdout and "\r" not in out.stdout and "\x07" not in out.stdout
    assert "\\x1b[2J" in out.stdout
    log = tmp_path / "log\x1b[31m.jsonl"
    log.write_text(GOOD_JSONL)
    out = supervise("scan", str(log))
    assert out.returncode == 0, out.stderr
    assert "\x1b" not in out.stdout
