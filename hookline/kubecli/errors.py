"""How a command for people fails: one line on stderr that says what to do, and an exit code."""

from __future__ import annotations

import sys

EXIT_FAILED = 1  # the command could not do its work (unreachable, refused, not found)
EXIT_USAGE = 2  # the command line itself is wrong


class CommandError(Exception):
    """A problem the user can fix; printed as kubectl prints one, `error: ...`, without a traceback."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def report(exc: CommandError) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return exc.exit_code
