"""The built-in tool set, in the order the model sees it (stable: it is part of the cached prefix)."""

from __future__ import annotations

from .files import edit_file, list_files, read_file, write_file
from .finish import finish
from .image import view_image
from .plan import todo
from .registry import ToolRegistry
from .search import search
from .shell import run_tests, shell
from .video import view_video


def default_registry() -> ToolRegistry:
    """A new registry holding every built-in tool (a new one per agent: no shared state)."""
    reg = ToolRegistry()
    reg.register(read_file, read_only=True)
    reg.register(write_file)
    reg.register(edit_file)
    reg.register(list_files, read_only=True)
    reg.register(search, read_only=True)
    reg.register(shell)
    reg.register(run_tests)
    reg.register(todo)
    reg.register(view_image, read_only=True)
    reg.register(view_video, read_only=True)
    reg.register(finish)
    return reg
