"""The ``supervise`` command line. Exit codes: 0 ok, 1 failure, 2 bad input, 3 stopped as unrecoverable."""

from __future__ import annotations

import argparse
import importlib
import sys

from supervisor.commands import COMMANDS
from supervisor.errors import InputError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one plain line, exit 2
        print(f"{self.prog}: {message}", file=sys.stderr)
        raise SystemExit(2)


def _modules():
    for name in COMMANDS:
        try:
            yield importlib.import_module(f"supervisor.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"supervisor.commands.{name}":
                raise


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    p = _Parser(prog="supervise", description="Supervise RLlib PPO training on Ray.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    handlers = {}
    for mod in _modules():
        mod.add_arguments(sub.add_parser(mod.NAME, help=mod.HELP))
        handlers[mod.NAME] = mod.run
    return p, handlers


def main(argv: list[str] | None = None) -> int:
    parser, handlers = build_parser()
    args = parser.parse_args(argv)
    try:
        return handlers[args.command](args)
    except InputError as e:
        print(str(e).splitlines()[0], file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into head & co.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
