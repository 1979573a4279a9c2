"""Errors that the CLI turns into exit codes."""


class InputError(Exception):
    """Bad user input: exit code 2 with one plain line naming file, key and problem."""

    def __init__(self, source: str, key: str | None, problem: str):
        self.source, self.key, self.problem = source, key, problem
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {problem}")


class UnrecoverableRun(Exception):
    """The supervisor stopped the run as unrecoverable: exit code 3."""
