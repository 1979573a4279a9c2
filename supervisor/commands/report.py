NAME = "report"
HELP = "the forensics report of a finished or running run"
FORMATS = ["text", "json", "md", "html"]  # supervisor.report.FORMATS (not imported: the CLI starts fast)


def add_arguments(p) -> None:
    p.add_argument("run_dir", help="a run folder, or a run's storage URI (s3://bucket/prefix/RUN: its store snapshot)")
    p.add_argument("--format", choices=FORMATS, default="text",
                   help="text, json, md (Markdown tables) or html (one self-contained page with plots)")
    p.add_argument("-o", "--output", metavar="FILE", help="write the report to FILE instead of stdout")


def run(args) -> int:
    from supervisor.errors import InputError
    from supervisor.report import build_report, render
    from supervisor.storage import run_folder

    with run_folder(args.run_dir) as folder:
        text = render(build_report(folder), args.format, folder)
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as e:
            raise InputError(args.output, None, f"cannot write: {e.strerror or e}") from None
    else:
        print(text, end="")
    return 0
