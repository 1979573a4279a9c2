"""Errors that the CLI turns into exit codes."""


class InputError(Exception):
    """Bad user input: exit code 2 with one plain line naming file, key and problem."""

    def __init__(self, source: str, key: str | None, problem: str):
        self.source, self.key, self.problem = source, key, problem
        where = f"{source}: {key}" if key else source
        super().__init__(_one_line(f"{where}: {problem}"))


def _one_line(text: str) -> str:
    """Control characters (a newline in a YAML key, say) are escaped: the error stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
