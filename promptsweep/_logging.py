"""The library logger (follows optuna's ``logging.py``): every module calls ``get_logger(__name__)``.

Messages go to the ``promptsweep`` logger hierarchy; the library adds no handler except a
:class:`logging.NullHandler`, so applications (and the CLI) decide where output goes.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

_ROOT = "promptsweep"
logging.getLogger(_ROOT).addHandler(logging.NullHandler())


def get_logger(name: str) -> logging.Logger:
    """Return the logger for ``name`` under the ``promptsweep`` hierarchy.

    Args:
        name: a module's ``__name__`` (``promptsweep.x.y``) or a short suffix (``"search"``).
    """
    if name == _ROOT or name.startswith(_ROOT + "."):
        return logging.getLogger(name)
    return logging.getLogger(f"{_ROOT}.{name}")


class _StderrHandler(logging.StreamHandler):
    """A stream handler that writes to whatever ``sys.stderr`` is at the time of each record.

    ``logging.StreamHandler()`` binds the ``sys.stderr`` of the moment it is made: a CLI command invoked
    in-process (typer's test runner, pytest's capture) left the handler writing to a closed stream.
    Like the standard library's ``logging.lastResort`` handler, its stream is read-only (``setStream``
    raises ``AttributeError``).
    """

    def __init__(self, level: int = logging.NOTSET) -> None:
        logging.Handler.__init__(self, level)  # not StreamHandler.__init__: it would set ``stream``

    @property
    def stream(self) -> Any:
        return sys.stderr


def enable_default_handler(level: int = logging.INFO) -> None:
    """Send ``promptsweep`` log records to stderr at ``level`` (used by the CLI)."""
    root = logging.getLogger(_ROOT)
    if not any(getattr(h, "_promptsweep_default", False) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("[%(levelname)s %(asctime)s] %(name)s: %(message)s"))
        handler._promptsweep_default = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
