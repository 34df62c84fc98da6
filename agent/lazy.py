"""A module imported on first use, so commands that never need it start fast."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class _LazyModule(ModuleType):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._kimi_lazy_target: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_kimi_lazy"):
            raise AttributeError(attr)
        if self._kimi_lazy_target is None:
            self._kimi_lazy_target = importlib.import_module(self.__name__)
        return getattr(self._kimi_lazy_target, attr)


def lazy_module(name: str) -> Any:
    """A stand-in for ``import name`` whose first attribute access does the import."""
    return _LazyModule(name)


def prefetch(name: str) -> None:
    """Import ``name`` on a background thread, so that a module the process will need soon loads
    while it waits on something else (the sandbox starting, git, the disk) instead of after."""
    import threading

    def load() -> None:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the real import, later, reports any problem
            pass

    threading.Thread(target=load, name=f"kimi-code-import-{name}", daemon=True).start()
