"""Errors a user can fix. The CLI prints them as one line and exits with their code, no traceback.

Exit codes (documented in the README):
  0  done (also after SIGINT/SIGTERM: the frame in hand is finished and everything is flushed)
  1  a run stopped because errors went beyond a bound (e.g. camera reconnects exhausted)
  2  bad arguments, bad input data or a bad model directory; a missing optional extra
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_BAD_INPUT = 2


class TwinspectError(Exception):
    """Base class: a message meant for a person, and the exit code that goes with it."""

    exit_code = EXIT_BAD_INPUT


class BadInput(TwinspectError):
    """Bad arguments or data: name the path or value and what is wrong with it."""


class BadModel(TwinspectError):
    """A model directory the runtime refuses: name the file and the field."""


class MissingExtra(TwinspectError):
    """An optional dependency is not installed; say which extra brings it."""

    def __init__(self, what: str, extra: str) -> None:
        super().__init__(f"{what} needs the '{extra}' extra: pip install 'twinspect[{extra}]'")


class RunFailed(TwinspectError):
    """A run gave up after errors beyond its bound."""

    exit_code = EXIT_RUN_FAILED
