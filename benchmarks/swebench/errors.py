"""The one error type the harness shows the user as a single line (no traceback)."""

from __future__ import annotations


class BenchError(Exception):
    """A problem the user can fix (bad input, missing image, unreachable repository...)."""


class EnvBuildError(BenchError):
    """An environment image could not be built: the tasks that need it are reported, not fatal."""
