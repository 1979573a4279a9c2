"""One module per ``supervise`` command.

Each module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``; the CLI registers every module listed in ``COMMANDS``.
A command that attaches to Ray also defines ``uses_ray(args) -> bool`` (the CLI
then says when the installed Ray is outside the tested range).
"""

COMMANDS = ["run", "sweep", "report", "scan", "status", "dashboard", "calibrate"]


def number(kind: type = float, *, gt: float | None = None, ge: float | None = None, lt: float | None = None,
           le: float | None = None):
    """An argparse ``type``: a finite ``kind`` (NaN and infinities refused) within the given bounds.

    Errors read as every input error does: what is wrong, then what was given
    (argparse prefixes the option: ``--widen: must be a finite number (got 'inf')``).
    """
    import argparse
    import math

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"must be {what} (got {text!r})") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number (got {text!r})")
        for bound, ok, word in ((gt, lambda v, b: v > b, ">"), (ge, lambda v, b: v >= b, ">="),
                                (lt, lambda v, b: v < b, "<"), (le, lambda v, b: v <= b, "<=")):
            if bound is not None and not ok(value, bound):
                raise argparse.ArgumentTypeError(f"must be {word} {bound:g} (got {text!r})")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its own messages
    return parse
