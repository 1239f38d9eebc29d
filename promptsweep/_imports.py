"""Lazy imports of heavy optional modules (follows optuna's ``_imports.py``).

``import promptsweep`` and read-only CLI commands must not load torch, transformers, peft or ray.
Layers that need them import inside functions, or through :func:`lazy_import`.
"""

from __future__ import annotations

import importlib
import types
from typing import Any

from promptsweep.exceptions import PromptsweepError

HEAVY_MODULES = ("torch", "transformers", "peft", "ray")


class _LazyModule(types.ModuleType):
    """A module proxy that imports the real module on first attribute access."""

    def __init__(self, name: str, install_hint: str | None = None) -> None:
        super().__init__(name)
        self._promptsweep_hint = install_hint
        self._promptsweep_module: types.ModuleType | None = None

    def _load(self) -> types.ModuleType:
        if self._promptsweep_module is None:
            try:
                self._promptsweep_module = importlib.import_module(self.__name__)
            except ImportError as exc:  # pragma: no cover - depends on the environment
                hint = f" Install it with: {self._promptsweep_hint}" if self._promptsweep_hint else ""
                raise PromptsweepError(f"promptsweep needs the module {self.__name__!r}.{hint}") from exc
        return self._promptsweep_module

    def __getattr__(self, item: str) -> Any:
        return getattr(self._load(), item)


def lazy_import(name: str, install_hint: str | None = None) -> Any:
    """Return a proxy for module ``name`` that is imported on first use.

    Args:
        name: the dotted module name, e.g. ``"torch"``.
        install_hint: a command that installs it, shown if the import fails.

    Raises:
        PromptsweepError: on first use, when the module cannot be imported.
    """
    return _LazyModule(name, install_hint)
