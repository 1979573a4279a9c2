"""Does a change to the engine or the detectors change any verdict? Every verdict, two versions, compared.

    python benchmarks/same_verdicts.py --baseline DIR [--out /tmp/verdicts]

``DIR``: a checkout of the other version (e.g. ``mkdir /tmp/before && git archive main supervisor
actors benchmarks | tar -x -C /tmp/before``). Each version, in a process of its own, runs the engine
over the same streams and writes every verdict (findings, actions, checkpoint, best, health, ...):

* every recorded run in ``benchmarks/data`` (with its priors), one report at a time;
* synthetic streams: 6 healthy seeds, and every fault of ``benchmarks/synthetic.FAULTS`` in each of its
  modes, abrupt and gradual, 3 seeds each;
* the ingestion benchmark's workload in small: 30 trials interleaved, batches of 100, through
  ``Engine.observe_batch``.

Prints how many verdicts differ (and the first few); exit status 1 when any does. For performance work,
whose promise is that nothing a user sees changes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def dump(out: Path) -> None:
    """Every verdict of the code on ``sys.path`` over the fixed streams, as JSON into ``out``."""
    from benchmarks import synthetic
    from benchmarks.ingestion import batches
    from benchmarks.real_runs import _priors, load_runs
    from supervisor.engine import Engine
    from supervisor.metrics import drop_no_data
    from supervisor.store import Store

    res: dict[str, list] = {}
    with tempfile.TemporaryDirectory(prefix="verdicts-") as tmp:
        def run(name: str, rows: list[dict], config: dict | None = None) -> None:
            store = Store(Path(tmp) / f"{len(res)}.db")
            eng = Engine(store)
            eng.register_trial(name, "bench", config=config)
            res[name] = [eng.observe({"trial_id": name, "seq": i, "iteration": i + 1, "time": 1.0,
                                      "metrics": drop_no_data(dict(row))}).to_dict() for i, row in enumerate(rows)]
            store.close()

        for name, meta, rows in load_runs():
            run("recorded:" + name, rows, {"priors": _priors(meta)})
        for seed in range(6):
            run(f"healthy:{seed}", synthetic.healthy_stream(150, seed=seed))
        for fault, modes in synthetic.FAULTS.items():
            for mode in modes:
                for seed in range(3):
                    for gradual in (False, True):
                        run(f"{fault}:{mode}:{seed}:{'gradual' if gradual else 'abrupt'}",
                            synthetic.faulty_stream(fault, 150, onset=60 + 7 * seed, seed=seed, gradual=gradual,
                                                    mode=mode))
        store = Store(Path(tmp) / "batch.db")
        eng = Engine(store)
        res["batch"] = []
        for b in batches(30, 120, 100, "b_"):
            for r in b:
                r["time"] = 1.0
            res["batch"] += [v.to_dict() for v in eng.observe_batch(b)]
        store.close()
    out.write_text(json.dumps(res, sort_keys=True, default=str))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", type=Path, required=True, help="a checkout of the other version")
    ap.add_argument("--out", type=Path, default=None, help="keep both dumps here")
    ap.add_argument("--dump", type=Path, help=argparse.SUPPRESS)  # child: the code under --root, into this file
    ap.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.dump:
        sys.path.insert(0, str(args.root.resolve()))
        os.chdir(args.root)
        dump(args.dump)
        return 0
    out = args.out or Path(tempfile.mkdtemp(prefix="same-verdicts-"))
    out.mkdir(parents=True, exist_ok=True)
    docs = {}
    for label, root in (("this", ROOT), ("baseline", args.baseline.resolve())):
        path = out / f"{label}.json"
        subprocess.run([sys.executable, __file__, "--baseline", str(args.baseline), "--dump", str(path),
                        "--root", str(root)], check=True)
        docs[label] = json.loads(path.read_text())
    a, b = docs["this"], docs["baseline"]
    diff = [(k, i) for k in sorted(set(a) | set(b))
            for i in range(max(len(a.get(k, [])), len(b.get(k, []))))
            if a.get(k, [])[i:i + 1] != b.get(k, [])[i:i + 1]]
    n = sum(map(len, a.values()))
    print(f"{len(a)} streams, {n} verdicts ({sum(len(v['findings']) for r in a.values() for v in r)} findings, "
          f"{sum(len(v['actions']) for r in a.values() for v in r)} actions): {len(diff)} differ")
    for k, i in diff[:10]:
        print(f"  {k} report {i}:\n    this:     {a.get(k, [None] * (i + 1))[i:i + 1]}\n"
              f"    baseline: {b.get(k, [None] * (i + 1))[i:i + 1]}")
    return 1 if diff else 0


if __name__ == "__main__":
    raise SystemExit(main())
