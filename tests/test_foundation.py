from __future__ import annotations

import logging
import subprocess
import sys

import pytest

import promptsweep
from promptsweep import exceptions
from promptsweep._imports import lazy_import
from promptsweep._logging import get_logger


def test_every_public_error_derives_from_the_root() -> None:
    for name in exceptions.__all__:
        cls = getattr(exceptions, name)
        assert issubclass(cls, promptsweep.PromptsweepError), name


def test_logger_hierarchy() -> None:
    assert get_logger("promptsweep.search").name == "promptsweep.search"
    assert get_logger("x").name == "promptsweep.x"
    assert get_logger("x").parent is logging.getLogger("promptsweep")


def test_the_cli_handler_writes_to_the_stderr_of_the_moment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A handler enabled while stderr was one (now closed) stream writes to the stderr of each record."""
    import io

    from promptsweep._logging import enable_default_handler

    root = logging.getLogger("promptsweep")
    others = [h for h in root.handlers if not hasattr(h, "_promptsweep_default")]
    monkeypatch.setattr(root, "handlers", others)
    level = root.level
    try:
        first = io.StringIO()
        monkeypatch.setattr(sys, "stderr", first)
        enable_default_handler(logging.WARNING)
        first.close()
        later = io.StringIO()
        monkeypatch.setattr(sys, "stderr", later)
        get_logger("foundation").warning("after the first stream closed")
        assert "promptsweep.foundation: after the first stream closed" in later.getvalue()
        (handler,) = [h for h in root.handlers if hasattr(h, "_promptsweep_default")]
        with pytest.raises(AttributeError):  # read-only, as logging.lastResort: never silently ignored
            handler.setStream(io.StringIO())
    finally:
        root.setLevel(level)  # setLevel (not an attribute reset) also clears the loggers' level caches


def test_lazy_import_defers_and_reports_missing_module() -> None:
    json_mod = lazy_import("json")
    assert json_mod.dumps([1]) == "[1]"
    missing = lazy_import("promptsweep_no_such_module", install_hint="pip install nothing")
    with pytest.raises(promptsweep.PromptsweepError, match="pip install nothing"):
        missing.anything  # noqa: B018


def test_console_script_help_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "promptsweep", "--help"], capture_output=True, text=True, check=True
    )
    assert "Usage" in out.stdout
    assert "version" in out.stdout
