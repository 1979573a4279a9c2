NAME = "scan"
HELP = ("offline forensics of logs nobody supervised (Tune folder, result.json, progress.csv, SB3/baselines "
        "progress.csv and monitor.csv, Hugging Face trainer_state.json, TRL/CleanRL/RLDK JSONL)")
FORMATS = ["text", "json"]


def add_arguments(p) -> None:
    p.add_argument("path", help="a Tune experiment folder, a result.json, a progress.csv, a monitor.csv, a "
                                 "trainer_state.json, or a JSONL metrics log (one object or one RLDK event a line)")
    p.add_argument("--format", choices=FORMATS, default="text")
    p.add_argument("--profile", metavar="PROFILE.yaml",
                   help="judge with bands learned by 'supervise calibrate' (as supervisor.profile does)")


def run(args) -> int:
    from supervisor.report import render_json
    from supervisor.report.text import render_scan
    from supervisor.scan import scan

    profile = None
    if args.profile:
        from supervisor.calibrate import load_profile

        profile = load_profile(args.profile)
    res = scan(args.path, profile=profile)
    if args.format == "json":
        print(render_json(res), end="")
    else:
        print(render_scan(res), end="")
    return 0  # findings are output, not failure
