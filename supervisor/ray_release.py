"""The Ray releases the supervisor is tested on, and the installed one, read from the package metadata
without importing Ray (the CLI says when a command that attaches to Ray finds one outside the range).
``actors/compat.py`` holds every Ray internal the range vouches for."""

from __future__ import annotations

import sys

#: Oldest Ray release the Ray-facing tests pass on, and the first minor release not yet tested.
FLOOR = "2.50.1"
NEXT = "2.61"
TESTED_RANGE = f">={FLOOR},<{NEXT}"


def ray_version() -> str:
    """The installed Ray's version, read without importing Ray."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ray")
    except PackageNotFoundError:
        return "unknown"


def in_tested_range(v: str | None = None) -> bool:
    from packaging.version import InvalidVersion, Version

    try:
        ver = Version(v or ray_version())
    except InvalidVersion:
        return False
    return Version(FLOOR) <= ver < Version(NEXT)


_WARNED = False


def warn_if_untested(stream=None) -> bool:
    """Say once per process, on stderr, that the installed Ray is outside the tested range; True if it did."""
    global _WARNED
    if _WARNED or in_tested_range():
        return False
    _WARNED = True
    print(f"supervise: Ray {ray_version()} is outside the tested range {TESTED_RANGE}; interventions rely on "
          "RLlib internals that move between releases (actors/compat.py)", file=stream or sys.stderr)
    return True
