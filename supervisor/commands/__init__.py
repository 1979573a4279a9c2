"""One module per ``supervise`` command.

Each module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``; the CLI registers every module listed in ``COMMANDS``.
"""

COMMANDS = ["run", "sweep", "report", "scan", "status", "dashboard", "calibrate"]
