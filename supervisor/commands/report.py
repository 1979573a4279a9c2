import json

NAME = "report"
HELP = "the forensics report of a finished or running run"
FORMATS = ["text", "json"]


def add_arguments(p) -> None:
    p.add_argument("run_dir")
    p.add_argument("--format", choices=FORMATS, default="text")


def run(args) -> int:
    from supervisor.reporting import build_report, render_text

    rep = build_report(args.run_dir)
    if args.format == "json":
        print(json.dumps(rep, indent=2, allow_nan=False))
    else:
        print(render_text(rep), end="")
    return 0
