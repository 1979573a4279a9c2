"""Write the default profile the package ships (supervisor/profiles/default.yaml).

    python benchmarks/make_default_profile.py

``supervise calibrate`` over the recorded healthy runs of the *tune* split (benchmarks/data/runs.json:
CartPole, Acrobot, Pendulum with 200- and 2,500-step episodes, MountainCarContinuous; the held-out seeds
stay out, so the detection benchmark judges on runs the profile never saw), kept to the metrics whose
healthy range does not depend on the environment: how far one update moves the policy (KL, approx_kl,
clip fraction), how well the critic explains the returns, and the shape of the advantage distribution.
Returns, losses and gradient norms scale with each environment's rewards and are left to each run's
own history.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "benchmarks" / "data"
OUT = REPO / "supervisor" / "profiles" / "default.yaml"
SCALE_FREE = ("approx_kl", "kl", "clip_fraction", "explained_variance", "advantage_skew", "advantage_kurtosis")


def main() -> None:
    meta = json.loads((DATA / "runs.json").read_text())
    runs = sorted(DATA / m["file"] for n, m in meta.items()
                  if not n.startswith("_") and m.get("kind") == "healthy" and m.get("split") == "tune"
                  and m.get("algorithm", "PPO") == "PPO")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "p.yaml"
        subprocess.run([sys.executable, "-m", "supervisor", "calibrate", *map(str, runs), "--out", str(out)],
                       check=True, cwd=REPO)
        prof = yaml.safe_load(out.read_text())
    prof["metrics"] = {k: v for k, v in prof["metrics"].items() if k in SCALE_FREE}
    prof["source"] = [p.name for p in runs]
    for r in prof["runs"]:
        r["path"] = Path(r["path"]).name
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("# The default profile (benchmarks/make_default_profile.py): healthy bands of environment-free\n"
                   "# metrics, used until a run's own history takes over. A run's own profile replaces it.\n"
                   + yaml.safe_dump(prof, sort_keys=False, width=110))
    print(f"wrote {OUT.relative_to(REPO)}: {', '.join(prof['metrics'])} from {len(runs)} runs")


if __name__ == "__main__":
    main()
