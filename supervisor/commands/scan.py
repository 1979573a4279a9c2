NAME = "scan"
HELP = ("offline forensics of logs nobody supervised (Tune folder, result.json, progress.csv, TensorBoard event "
        "files and CSV downloads, long-format CSV, W&B wandb-history.jsonl, SB3/baselines progress.csv and "
        "monitor.csv, Hugging Face trainer_state.json, TRL/CleanRL/RLDK JSONL)")
FORMATS = ["text", "json"]
#: ``--fail-on``'s exit code: a finding at or above the given severity (0 otherwise; 2 stays bad input).
EXIT_FINDINGS = 4


def add_arguments(p) -> None:
    p.add_argument("path", help="a folder of logs (a Tune experiment, TensorBoard runs, W&B runs, ...), a "
                                 "result.json, a progress.csv or other CSV, a TensorBoard event file, a monitor.csv, "
                                 "a trainer_state.json, or a JSONL metrics log (one object or one RLDK event a line)")
    p.add_argument("--format", choices=FORMATS, default="text")
    p.add_argument("--profile", metavar="PROFILE.yaml",
                   help="judge with bands learned by 'supervise calibrate' (as supervisor.profile does)")
    p.add_argument("--fail-on", choices=["warning", "critical"], default=None,
                   help=f"exit {EXIT_FINDINGS} when a finding at or above this severity was found (a CI gate); "
                        "default: exit 0 whatever was found")


def run(args) -> int:
    from supervisor.findings import severity_rank
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
    if args.fail_on and severity_rank(res["health"]["worst_severity"]) >= severity_rank(args.fail_on):
        return EXIT_FINDINGS
    return 0  # findings are output, not failure
