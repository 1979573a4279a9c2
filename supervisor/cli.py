"""The ``supervise`` command line. Exit codes: 0 ok, 1 failure, 2 bad input, 3 stopped as unrecoverable."""

from __future__ import annotations

import argparse
import importlib
import sys

from supervisor.commands import COMMANDS
from supervisor.errors import InputError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one plain line, exit 2, worded as every input error: key, problem, given
        if message.startswith("argument "):  # "argument --widen: must be ..." -> "--widen: must be ..."
            message = message[len("argument "):]
        print(f"{self.prog}: {message}", file=sys.stderr)
        raise SystemExit(2)


def version() -> str:
    """The installed distribution's version (the source tree's pyproject when run from a checkout)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("rl-supervisor")
    except PackageNotFoundError:  # run from a checkout that was never installed
        import re
        from pathlib import Path

        toml = Path(__file__).resolve().parents[1] / "pyproject.toml"
        m = re.search(r'^version = "([^"]+)"', toml.read_text(), re.M) if toml.is_file() else None
        return m.group(1) if m else "unknown"


def _modules():
    for name in COMMANDS:
        try:
            yield importlib.import_module(f"supervisor.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"supervisor.commands.{name}":
                raise


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    p = _Parser(prog="supervise", description="Watch RL training (RLlib PPO, APPO, IMPALA, DQN, SAC, or any loop "
                                              "through the Python API), diagnose divergence and act before the "
                                              "next iteration; read old logs offline.")
    p.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    handlers = {}
    for mod in _modules():
        mod.add_arguments(sub.add_parser(mod.NAME, help=mod.HELP))
        handlers[mod.NAME] = mod.run
    return p, handlers


def _note_untested_ray(handler, args) -> None:
    """Commands that attach to Ray (``uses_ray(args)`` in their module) say once, on stderr, when the installed
    Ray is outside the tested range (``supervisor/ray_release.py``); reading the version imports no Ray."""
    uses_ray = getattr(sys.modules.get(handler.__module__), "uses_ray", None)
    if uses_ray is None or not uses_ray(args):
        return
    from supervisor.ray_release import warn_if_untested

    warn_if_untested()


def main(argv: list[str] | None = None) -> int:
    parser, handlers = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # usage errors (2), --help and --version (0): a code, as every command returns
        return e.code if isinstance(e.code, int) else 2
    _note_untested_ray(handlers[args.command], args)
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
