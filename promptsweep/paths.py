"""Default locations: the database, the caches and the artifact store.

``PROMPTSWEEP_HOME`` (default ``~/.promptsweep``) holds everything promptsweep writes by default:

- ``promptsweep.db`` - the default SQLite database (``sqlite:///~/.promptsweep/promptsweep.db``);
  override with ``--db URL`` or ``PROMPTSWEEP_DB``.
- ``cache/`` - converted model checkpoints and tokenized datasets (``PROMPTSWEEP_CACHE_DIR``).
- ``runs/`` - trial outputs and adapters (``PROMPTSWEEP_RUNS_DIR``).
"""

from __future__ import annotations

import os
from pathlib import Path


def home_dir() -> Path:
    """Return ``$PROMPTSWEEP_HOME`` or ``~/.promptsweep`` (not created here)."""
    return Path(os.environ.get("PROMPTSWEEP_HOME", Path.home() / ".promptsweep")).expanduser()


def cache_dir() -> Path:
    """Return the cache for converted models and tokenized datasets, creating it."""
    path = Path(os.environ.get("PROMPTSWEEP_CACHE_DIR", home_dir() / "cache")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def runs_dir() -> Path:
    """Return the directory for trial outputs and adapters, creating it."""
    path = Path(os.environ.get("PROMPTSWEEP_RUNS_DIR", home_dir() / "runs")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_db_url() -> str:
    """Return ``$PROMPTSWEEP_DB`` or the SQLite file ``$PROMPTSWEEP_HOME/promptsweep.db``."""
    env = os.environ.get("PROMPTSWEEP_DB")
    if env:
        return env
    home = home_dir()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'promptsweep.db'}"
