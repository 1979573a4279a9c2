import json

NAME = "report"
HELP = "the forensics report of a finished or running run"
FORMATS = ["text", "json", "md", "html"]


def add_arguments(p) -> None:
    p.add_argument("run_dir")
    p.add_argument("--format", choices=FORMATS, default="text",
                   help="text, json, md (Markdown tables) or html (one self-contained page with plots)")
    p.add_argument("-o", "--output", metavar="FILE", help="write the report to FILE instead of stdout")


def run(args) -> int:
    from supervisor.errors import InputError
    from supervisor.reporting import build_report, render_text

    rep = build_report(args.run_dir)
    if args.format == "json":
        text = json.dumps(rep, indent=2, allow_nan=False) + "\n"
    elif args.format == "md":
        from supervisor.render import render_markdown

        text = render_markdown(rep)
    elif args.format == "html":
        from supervisor.render import load_series, render_html

        text = render_html(rep, load_series(args.run_dir))
    else:
        text = render_text(rep)
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as e:
            raise InputError(args.output, None, f"cannot write: {e.strerror or e}") from None
    else:
        print(text, end="")
    return 0
