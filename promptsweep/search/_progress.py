"""A live progress display (rich) for searches run in the foreground.

One table, redrawn as trials start, report and end: trial number, method, key parameters, state,
training step, the latest validation metrics, and the job's best so far (validation only).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

_STATE_STYLE = {
    "running": "cyan",
    "complete": "green",
    "pruned": "yellow",
    "fail": "red",
    "cancelled": "magenta",
}


@dataclass
class _Row:
    number: int
    params: dict[str, Any]
    state: str = "running"
    step: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    note: str = ""


_SHORT = {
    "num_virtual_tokens": "tokens",
    "learning_rate": "lr",
    "prompt_init": "init",
    "prefix_projection": "proj",
    "encoder_type": "enc",
    "encoder_hidden_size": "hidden",
    "encoder_dropout": "drop",
    "encoder_num_layers": "layers",
    "pooling": "pool",
}


def _describe(params: dict[str, Any]) -> str:
    parts = []
    for k, v in params.items():
        if k in ("method", "prompt_init_text"):
            continue
        name = _SHORT.get(k, k)
        parts.append(f"{name}={v:.2g}" if isinstance(v, float) else f"{name}={v}")
    return " ".join(parts)


class Progress:
    """The live table of a running job.

    Args:
        job_id: the job shown in the title.
        metric: the objective's validation metric.
        direction: ``maximize`` or ``minimize`` (for "best so far").
        total: the number of trials the job runs (``None``: time budget only).
        console: where to draw (default: stderr).
    """

    def __init__(
        self, job_id: int, metric: str, direction: str, total: int | None, console: Console | None = None
    ):
        self.job_id = job_id
        self.metric = metric
        self.sign = 1.0 if direction == "maximize" else -1.0
        self.total = total
        self.console = console or Console(stderr=True)
        self.rows: dict[int, _Row] = {}
        self.t0 = time.time()
        self._live: Live | None = None

    def __enter__(self) -> Progress:
        self._live = Live(self._render(), console=self.console, refresh_per_second=2, transient=False)
        self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.__exit__(*exc)
            self._live = None
            if not self.console.is_terminal:
                # rich ends the last frame with a newline on terminals only; redirected output would
                # run the next line into the footer.
                self.console.line()

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._render())

    # -- events ----------------------------------------------------------------------------------
    def trial_started(self, number: int, params: dict[str, Any]) -> None:
        """A trial started (or re-ran) with ``params``."""
        self.rows[number] = _Row(number, dict(params))
        self._refresh()

    def trial_result(self, number: int, step: int, metrics: dict[str, float]) -> None:
        """A trial reported validation ``metrics`` at training ``step``."""
        row = self.rows.setdefault(number, _Row(number, {}))
        row.step, row.metrics = step, dict(metrics)
        self._refresh()

    def trial_finished(self, number: int, state: str, metrics: dict[str, float], error: str | None) -> None:
        """A trial ended in ``state`` (complete / pruned / fail)."""
        row = self.rows.setdefault(number, _Row(number, {}))
        row.state = state
        if metrics:
            row.metrics = dict(metrics)
        if state == "fail" and error:
            row.note = error.strip().splitlines()[-1][:60]
        self._refresh()

    # -- rendering -----------------------------------------------------------------------------
    def best(self) -> _Row | None:
        """The complete trial with the best validation metric so far."""
        done = [r for r in self.rows.values() if r.state == "complete" and self.metric in r.metrics]
        return max(done, key=lambda r: self.sign * r.metrics[self.metric]) if done else None

    def _render(self) -> Group:
        finished = sum(r.state != "running" for r in self.rows.values())
        total = f"/{self.total}" if self.total else ""
        title = (
            f"promptsweep job {self.job_id}: {finished}{total} trials finished, {time.time() - self.t0:.0f} s"
        )
        table = Table(title=title, expand=False)
        for col in ("#", "method", "params", "state", "step", self.metric, "note"):
            table.add_column(col, no_wrap=col != "params", overflow="ellipsis")
        for row in sorted(self.rows.values(), key=lambda r: r.number)[-25:]:
            value = row.metrics.get(self.metric)
            table.add_row(
                str(row.number),
                str(row.params.get("method", "")),
                _describe(row.params),
                Text(row.state, style=_STATE_STYLE.get(row.state, "")),
                "" if row.step is None else str(row.step),
                "" if value is None else f"{value:.4f}",
                row.note,
            )
        best = self.best()
        footer = Text(
            f"best (validation {self.metric}): trial {best.number} = {best.metrics[self.metric]:.4f}"
            if best
            else "best: none complete yet"
        )
        return Group(table, footer)


# --------------------------------------------------------------------------------------------------
# Preparation (before any trial): tokenization progress and what the data became


@contextmanager
def preparation_progress(console: Console | None = None) -> Iterator[Callable[[str, int, int], None]]:
    """A ``progress(stage, done, total)`` callback for ``prepare_inputs`` drawing one bar per stage
    (``tokenizing train`` ...) on ``console`` (default: stderr) while the block runs."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as Bars

    bars = Bars(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console or Console(stderr=True),
    )
    stages: dict[str, Any] = {}

    def report(stage: str, done: int, total: int) -> None:
        if stage not in stages:
            stages[stage] = bars.add_task(stage, total=total)
        bars.update(stages[stage], completed=done)

    with bars:
        yield report


def data_summary(inputs: Any) -> dict[str, Any]:
    """What a job's prepared data holds, for the job's summary (``PreparedInputs`` -> JSON):
    ``examples`` and ``truncated`` (cut to ``max_length``) per split, ``max_length``, ``classes``
    (0 for generation) and ``notes`` (what preparation cleaned, counted)."""
    return {
        "examples": dict(inputs.counts),
        "truncated": dict(inputs.truncated),
        "max_length": int(inputs.max_length),
        "classes": len(inputs.label_names),
        "notes": list(getattr(inputs, "notes", ()) or ()),
    }


def describe_data(data: dict[str, Any]) -> list[str]:
    """Lines for ``run``/``show``: examples per split, how many were truncated, the cleaning notes."""
    examples = data.get("examples") or {}
    truncated = data.get("truncated") or {}
    classes = f" ({data['classes']} classes)" if data.get("classes") else ""
    lines = [
        "data: " + ", ".join(f"{role} {n}" for role, n in examples.items()) + f" examples{classes}; "
        f"truncated to max_length {data.get('max_length')}: "
        + ", ".join(f"{role} {truncated.get(role, 0)}" for role in examples)
    ]
    lines += [f"data note: {note}" for note in data.get("notes") or ()]
    return lines
