"""Hold points for the chaos tests: a process told to hold at a point stops there until killed.

``PROMPTSWEEP_CHAOS_HOLD=<point>`` makes the first :func:`hold` call at ``<point>`` write the process
id to ``$PROMPTSWEEP_CHAOS_MARK`` (a file path) and then sleep until the process is killed; every
other call returns at once. The points (``tests/search/test_chaos.py`` kills a worker at each):

- ``prepare``: inside data preparation, after the first split's token ids were written to the
  cache's temporary directory (``promptsweep.methods.prepare_inputs``);
- ``study``: the job's Optuna study created (warm-start configs enqueued), before the first trial;
- ``between_trials``: a trial of this run has ended, the next is about to be asked for;
- ``select``: the winner's test metrics recorded, its summary (``selected_trial``) not yet.

Without the variable (always, outside the tests) :func:`hold` is one dictionary lookup.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

HOLD_ENV = "PROMPTSWEEP_CHAOS_HOLD"
MARK_ENV = "PROMPTSWEEP_CHAOS_MARK"
POINTS = ("prepare", "study", "between_trials", "select")


def hold(point: str) -> None:
    """Stop here for good (until killed) if this process was told to hold at ``point``."""
    if os.environ.get(HOLD_ENV) != point:
        return
    mark = os.environ.get(MARK_ENV)
    if mark:
        tmp = Path(mark).with_suffix(".tmp")
        tmp.write_text(f"{os.getpid()} {point}\n")
        tmp.replace(mark)
    while True:  # pragma: no cover - ends when the test kills the process
        time.sleep(1.0)
