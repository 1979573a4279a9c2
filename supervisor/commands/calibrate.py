NAME = "calibrate"
HELP = "learn detector thresholds (per-metric healthy bands) from healthy runs"


def add_arguments(p) -> None:
    from supervisor.calibrate import DEFAULT_MIN_SAMPLES, DEFAULT_QUANTILE, DEFAULT_WIDEN
    from supervisor.commands import number

    p.add_argument("runs", nargs="+", metavar="RUN_DIR",
                   help="supervised run folders (supervisor.db), or logs 'supervise scan' reads")
    p.add_argument("--out", required=True, metavar="PROFILE.yaml", help="the profile to write")
    p.add_argument("--include-unhealthy", action="store_true",
                   help="use runs with critical findings too (their iterations before the first one)")
    p.add_argument("--quantile", type=number(float, gt=0, lt=0.5), default=DEFAULT_QUANTILE,
                   help=f"band edges at this quantile and 1 minus it (default {DEFAULT_QUANTILE})")
    p.add_argument("--widen", type=number(float, ge=0), default=DEFAULT_WIDEN,
                   help=f"widen the edges by this many robust sigmas (default {DEFAULT_WIDEN})")
    p.add_argument("--min-samples", type=number(int, ge=2), default=DEFAULT_MIN_SAMPLES,
                   help=f"values a metric needs for a band (default {DEFAULT_MIN_SAMPLES})")


def run(args) -> int:
    from supervisor.calibrate import calibrate, summary, write_profile

    profile = calibrate(args.runs, include_unhealthy=args.include_unhealthy, quantile=args.quantile,
                        widen=args.widen, min_samples=args.min_samples)
    write_profile(profile, args.out)
    print(summary(profile, args.out), end="")
    return 0
