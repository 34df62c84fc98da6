"""Errors a user can hit, each with the exit code the CLI maps it to.

The CLI prints ``str(error)`` as one line and exits with ``exit_code_of(error)``; only ``--debug``
shows a traceback. ``SandboxError`` is the sandbox package's own type, re-exported here. Codes
are documented in the README.
"""

from __future__ import annotations

from kimi_code.sandbox.errors import SandboxError  # noqa: F401 - re-exported

EXIT_OK = 0
EXIT_AGENT_FAILURE = 1
EXIT_USAGE = 2
EXIT_LIMIT = 3
EXIT_MODEL_API = 4
EXIT_SANDBOX = 5
EXIT_STORAGE = 74  # sysexits' EX_IOERR
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # SIGTERM (128 + 15), as CI runners send before SIGKILL


class KimiCodeError(Exception):
    """Base of every error meant for the user rather than for a traceback."""

    exit_code: int = EXIT_USAGE


class ConfigError(KimiCodeError):
    """Bad configuration or usage: a flag, a config file, a missing key."""

    exit_code = EXIT_USAGE


class ModelAPIError(KimiCodeError):
    """The model API failed for good (not retryable, or retries exhausted)."""

    exit_code = EXIT_MODEL_API

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_type: str | None = None,
        request_id: str | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.request_id = request_id
        self.retryable = retryable


class SessionError(KimiCodeError):
    """A session cannot be found, loaded or continued."""

    exit_code = EXIT_USAGE


class StorageError(SessionError):
    """The session's files could not be written (a full disk, a read-only state directory)."""

    exit_code = EXIT_STORAGE


class CheckpointError(KimiCodeError):
    """A workspace checkpoint could not be taken, found or restored (git)."""

    exit_code = EXIT_USAGE


# Errors meant for the user (one line, an exit code): kimi-code's own, and the sandbox package's,
# which is kimi-code-agnostic (the packages depend one way: agent -> tools -> sandbox).
USER_ERRORS: tuple[type[Exception], ...] = (KimiCodeError, SandboxError)


def exit_code_of(exc: BaseException) -> int:
    """The exit code for an error in USER_ERRORS."""
    if isinstance(exc, SandboxError):
        return EXIT_SANDBOX
    return getattr(exc, "exit_code", EXIT_USAGE)
