"""A live progress display (rich) for searches run in the foreground.

One table, redrawn as trials start, report and end: trial number, method, key parameters, state,
training step, the latest validation metrics, and the job's best so far (validation only).
"""

from __future__ import annotations

import time
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
