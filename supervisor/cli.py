"""The ``supervise`` command line. Exit codes: 0 ok, 1 failure, 2 bad input, 3 stopped as unrecoverable."""

from __future__ import annotations

import argparse
import json
import sys

from supervisor.errors import InputError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one plain line, exit 2
        print(f"{self.prog}: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="supervise", description="Supervise RLlib PPO training on Ray.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    r = sub.add_parser("run", help="one supervised RLlib trial")
    r.add_argument("experiment")
    r.add_argument("--iterations", type=int)
    r.add_argument("--out")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    r.add_argument("--address")
    r.add_argument("--quiet", action="store_true")

    rep = sub.add_parser("report", help="the forensics report of a run")
    rep.add_argument("run_dir")
    rep.add_argument("--format", choices=["text", "json"], default="text")
    return p


def cmd_run(args) -> int:
    from supervisor.config import load_experiment

    sets = list(args.set)
    if args.iterations is not None:
        if args.iterations <= 0:
            raise InputError("--iterations", None, f"must be > 0 (got {args.iterations})")
        sets.append(f"stop.iterations={args.iterations}")
    exp = load_experiment(args.experiment, sets)
    from actors.run import run_experiment  # Ray is imported only once the input is known to be good

    return run_experiment(exp, args.experiment, args.out, args.address, args.quiet)


def cmd_report(args) -> int:
    from supervisor.reporting import build_report, render_text

    rep = build_report(args.run_dir)
    if args.format == "json":
        print(json.dumps(rep, indent=2, allow_nan=False))
    else:
        print(render_text(rep), end="")
    return 0


COMMANDS = {"run": cmd_run, "report": cmd_report}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except InputError as e:
        print(str(e).splitlines()[0], file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 1
