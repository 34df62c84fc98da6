"""The sandbox package's own error: the sandbox could not be started or used.

It is not a kimi-code CLI error type on purpose (the packages depend one way: agent -> tools ->
sandbox); ``kimi_code.agent.errors`` maps it to its exit code.
"""

from __future__ import annotations


class SandboxError(Exception):
    """The sandbox could not be started or used (daemon down, image missing, container gone, ...)."""
