"""The ``promptsweep`` command line (typer + rich).

Every command shares one database option: ``--db URL`` (env ``PROMPTSWEEP_DB``; default
``sqlite:///$PROMPTSWEEP_HOME/promptsweep.db``, see :func:`promptsweep.paths.default_db_url`).

Commands import their layer inside the function body, so ``promptsweep --help`` and the commands that
only read the database (``jobs``, ``show``, ``leaderboard``, ``export``, ``report``, ``dashboard``,
``serve``, ``db upgrade``) load none of torch, transformers, peft or ray
(``tests/test_cli.py`` checks it in a subprocess). Errors that promptsweep raises on purpose
(:class:`promptsweep.PromptsweepError`) are printed as one line and exit with code 1.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich import box
from rich.console import Console
from rich.table import Table

import promptsweep
from promptsweep.exceptions import PromptsweepError

if TYPE_CHECKING:
    from promptsweep.storage import Storage

app = typer.Typer(
    name="promptsweep",
    help="Find the best prompt method (prompt tuning, prefix tuning, P-tuning) for a task on a frozen PLM.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema commands.", no_args_is_help=True)
app.add_typer(db_app, name="db")

# Piped output (files, CI logs) is not cut to 80 columns; a terminal keeps its own width.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class _State:
    db: str | None

    def url(self) -> str:
        from promptsweep.paths import default_db_url

        return self.db or default_db_url()

    def storage(self, *, must_exist: bool = False) -> Storage:
        """The job database; ``must_exist`` for the read-only commands (they never create one)."""
        from promptsweep.storage import Storage

        return Storage(self.url(), must_exist=must_exist)


def _state(ctx: typer.Context) -> _State:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, _State) else _State(db=None)


def _handle_errors(func: F) -> F:
    """Turn a :class:`PromptsweepError` into one red line on stderr and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except PromptsweepError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from exc

    return wrapper  # type: ignore[return-value]


@app.callback()
def _root(
    ctx: typer.Context,
    db: str | None = typer.Option(
        None,
        "--db",
        envvar="PROMPTSWEEP_DB",
        help="Database URL (sqlite:///FILE or postgresql+psycopg://USER:PASS@HOST/DB). "
        "Default: sqlite:///$PROMPTSWEEP_HOME/promptsweep.db (PROMPTSWEEP_HOME defaults to ~/.promptsweep).",
        show_default=False,
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log promptsweep's INFO messages to stderr."),
) -> None:
    """Find the best prompt method (prompt tuning, prefix tuning, P-tuning) for a task on a frozen PLM."""
    import logging

    from promptsweep._logging import enable_default_handler

    enable_default_handler(logging.INFO if verbose else logging.WARNING)
    ctx.obj = _State(db=db)


# ---------------------------------------------------------------------------------------------- output


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.2e}"
        return f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


_SHORT = {
    "num_virtual_tokens": "tokens",
    "learning_rate": "lr",
    "pooling": "pool",
    "prompt_init": "init",
    "prefix_projection": "proj",
    "encoder_type": "enc",
    "encoder_hidden_size": "hidden",
}


_LEFT_COLUMNS = (
    "method",
    "state",
    "params",
    "name",
    "status",
    "model",
    "objective",
    "trials",
    "best",
    "error",
)
_WRAPPED_COLUMNS = ("params", "best", "trials", "name", "objective", "error")
_TABLE_HIDDEN = ("steps",)  # in --json output only
_DROP_IF_UNIFORM = ("state", "node")  # one node: no column
_RENAMED = {"trainable_params": "trainable", "train_seconds": "seconds"}


def _compact(row: dict[str, Any]) -> dict[str, Any]:
    """Fold the hyperparameter columns into one ``params`` column, so tables fit a terminal."""
    out = {
        _RENAMED.get(k, "test" if k.startswith("test_") else k): v for k, v in row.items() if k not in _SHORT
    }
    if out.get("seconds") is not None:
        out["seconds"] = f"{out['seconds']:.1f}"
    params = [
        f"{_SHORT[k]}={f'{v:.3g}' if isinstance(v, float) else _fmt(v)}"
        for k, v in row.items()
        if k in _SHORT and v is not None
    ]
    if params:
        out["params"] = " ".join(params)
    return out


def _rows_table(rows: list[dict[str, Any]], title: str | None = None) -> Table:
    """A rich table of flat rows; columns empty in every row, or equal in every row of several, drop."""
    rows = [_compact(r) for r in rows]
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key in columns or key in _TABLE_HIDDEN or all(r.get(key) is None for r in rows):
                continue
            if key in _DROP_IF_UNIFORM and len(rows) > 1 and len({str(r.get(key)) for r in rows}) == 1:
                continue
            columns.append(key)
    table = Table(title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in columns:
        left = col in _LEFT_COLUMNS
        table.add_column(
            "#" if col == "rank" else col,
            justify="left" if left else "right",
            overflow="fold",
            no_wrap=col not in _WRAPPED_COLUMNS,
        )
    for row in rows:
        table.add_row(*(_fmt(row.get(c)) for c in columns))
    return table


def _print_rows(rows: list[dict[str, Any]], *, as_json: bool, title: str | None = None, empty: str) -> None:
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
    elif not rows:
        console.print(empty)
    else:
        console.print(_rows_table(rows, title=title))


def _leaderboard_rows(
    storage: Storage, job_id: int, *, per_method: bool, pareto: bool
) -> list[dict[str, Any]]:
    from promptsweep.dashboards import leaderboard_rows

    return leaderboard_rows(storage, job_id, per_method=per_method, pareto=pareto)


# --------------------------------------------------------------------------------------------- commands


#: The shortest stale-heartbeat timeout ``worker --stale-after`` takes: two heartbeats of 30 s.
MIN_STALE_AFTER_S = 60.0


def _stop_on_signals() -> list[int]:
    """Make Ctrl-C (SIGINT) and SIGTERM raise KeyboardInterrupt here, whatever this process inherited;
    return the list the signals received are appended to.

    A process started with SIGINT ignored (a non-interactive shell's background job: ``cmd &`` in a
    script or a CI runner) keeps it ignored, and Python then installs no handler, so a foreground
    ``run`` would not stop on Ctrl-C / ``kill -INT`` and its job would run on to the end. SIGTERM (a
    supervisor, ``kill``) stops a job the same way instead of ending the process mid-write (the
    embedded Ray's own SIGTERM handler is put back to this one: ``search._pool.ensure_ray``).
    """
    received: list[int] = []

    def interrupt(signum: int, frame: Any) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, interrupt)
        signal.signal(signal.SIGTERM, interrupt)
    return received


#: Seconds an interrupted ``run`` waits for a normal interpreter exit before it exits anyway.
EXIT_GRACE_S = 10.0


def _exit_soon(code: int) -> None:
    """Exit with ``code`` within :data:`EXIT_GRACE_S` seconds even if the interpreter's own exit hangs.

    After a Ctrl-C the job's state is already stored and Ray is shut down; but in 1 of 9 runs of the
    ``[SIGINT]`` test (2026-12-02) the process then did not exit within 90 s (a library thread the
    interpreter waits for at exit; not identified). A daemon timer ends the process if the normal exit
    has not by then.
    """

    def force() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    timer = threading.Timer(EXIT_GRACE_S, force)
    timer.daemon = True
    timer.start()


@app.command()
def version() -> None:
    """Print promptsweep's version."""
    typer.echo(promptsweep.__version__)


@app.command()
@_handle_errors
def run(
    ctx: typer.Context,
    spec: Path | None = typer.Argument(
        None, help="Job spec file (YAML or JSON), e.g. examples/fine-foods-minilm.yaml.", show_default=False
    ),
    job: int | None = typer.Option(None, "--job", help="Resume job JOB instead of submitting a spec."),
    name: str | None = typer.Option(None, help="Job name (default: the spec's name)."),
    progress: bool = typer.Option(True, help="Show the trials' progress."),
) -> None:
    """Submit SPEC (or resume --job N) and run its search in the foreground, then print the leaderboard."""
    from promptsweep.search import load_spec, run_job
    from promptsweep.search import submit as submit_job

    if (spec is None) == (job is None):
        raise typer.BadParameter("give a SPEC file or --job N (one of them)")
    state = _state(ctx)
    storage = state.storage()
    if job is None:
        job_spec = load_spec(spec)
        if name is not None:
            job_spec = job_spec.model_copy(update={"name": name})
        job = submit_job(job_spec, storage)
        console.print(f"job [bold]{job}[/] submitted to {storage.display_url}; running it here")
    else:
        console.print(f"resuming job [bold]{job}[/] from {storage.display_url}")
    received = _stop_on_signals()
    try:
        outcome = run_job(job, storage, progress=progress)
    except KeyboardInterrupt:
        err_console.print(
            f"[bold red]interrupted:[/] job {job} is interrupted; its unfinished trials re-run when you "
            "resume it: "
            f"promptsweep run --job {job} (on the same database, {storage.display_url})",
            highlight=False,
            soft_wrap=True,
        )
        code = 143 if received and received[-1] == signal.SIGTERM else 130
        _exit_soon(code)
        raise typer.Exit(code) from None
    from promptsweep._cli_jobs import print_job

    print_job(storage, job, limit=10)
    if outcome.status == "paused":
        console.print(f"job {job} paused: `promptsweep resume {job}` queues it again", highlight=False)
        return
    for number, metrics in outcome.test_metrics.items():
        shown = ", ".join(f"{k} {_fmt(v)}" for k, v in metrics.items())
        # markup=False: per-class metrics are named f1[<label>], which rich would read as a style tag
        console.print(f"selected trial {number} on the test split: {shown}", highlight=False, markup=False)
    if outcome.status != "succeeded":
        raise PromptsweepError(f"job {job} {outcome.status}: {outcome.error}")


@app.command()
@_handle_errors
def submit(
    ctx: typer.Context,
    spec: Path = typer.Argument(..., help="Job spec file (YAML or JSON)."),
    name: str | None = typer.Option(None, help="Job name (default: the spec's name)."),
) -> None:
    """Validate SPEC and queue it as a job; a `promptsweep worker` runs it. Prints the job id."""
    from promptsweep.search import load_spec
    from promptsweep.search import submit as submit_job

    job_spec = load_spec(spec)
    if name is not None:
        job_spec = job_spec.model_copy(update={"name": name})
    job_id = submit_job(job_spec, _state(ctx).storage())
    typer.echo(job_id)


@app.command()
@_handle_errors
def worker(
    ctx: typer.Context,
    once: bool = typer.Option(False, "--once", help="Run at most one queued job, then exit."),
    stale_after: float = typer.Option(
        300.0,
        "--stale-after",
        envvar="PROMPTSWEEP_STALE_AFTER_S",
        help="Seconds without a heartbeat after which a running job's worker counts as dead and the "
        "job is re-queued.",
    ),
    max_attempts: int = typer.Option(
        3,
        "--max-attempts",
        envvar="PROMPTSWEEP_MAX_JOB_ATTEMPTS",
        help="Times a job may be taken before a dead worker's job is failed instead of re-queued.",
    ),
) -> None:
    """Claim queued jobs from the database and run them (until interrupted, or one with --once)."""
    from promptsweep.search import run_worker

    if not stale_after >= MIN_STALE_AFTER_S:
        raise typer.BadParameter(
            f"must be at least {MIN_STALE_AFTER_S:g} s (two heartbeats: a live worker beats every "
            f"30 s), got {stale_after:g}",
            param_hint="--stale-after",
        )
    if max_attempts < 1:
        raise typer.BadParameter(f"must be at least 1, got {max_attempts}", param_hint="--max-attempts")
    storage = _state(ctx).storage()
    # SIGTERM (a supervisor, `kill`) and Ctrl-C stop the worker the same way: the job it runs goes
    # back to the queue at once, its unfinished trials left for the next worker to re-run.
    signals = _stop_on_signals()
    try:
        ran = run_worker(storage, once=once, stale_after_s=stale_after, max_job_attempts=max_attempts)
    except KeyboardInterrupt:
        term = bool(signals) and signals[-1] == signal.SIGTERM
        err_console.print(
            f"[bold red]worker stopped ({'SIGTERM' if term else 'Ctrl-C'}):[/] the job it was running, if "
            "any, is queued again; the next `promptsweep worker` resumes it",
            highlight=False,
            soft_wrap=True,
        )
        code = 143 if term else 130
        _exit_soon(code)
        raise typer.Exit(code) from None
    if once and ran == 0:
        running = storage.list_jobs(status="running")
        held = "; ".join(
            f"job {j.id} by {j.worker_id or 'a foreground run'}, last heartbeat "
            + (f"{j.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC" if j.heartbeat_at else "never")
            for j in running
        )
        console.print(
            f"no queued job to claim in {storage.display_url}"
            + (
                f"; running: {held} (a running job's worker counts as dead after {stale_after:g} s "
                "without a heartbeat; then the next worker re-queues and resumes it)"
                if running
                else ""
            ),
            highlight=False,
            soft_wrap=True,
        )


@app.command()
@_handle_errors
def leaderboard(
    ctx: typer.Context,
    job: int = typer.Argument(..., help="Job id."),
    per_method: bool = typer.Option(False, "--per-method", help="Only the best trial of each method."),
    pareto: bool = typer.Option(
        False, "--pareto", help="Only the Pareto front: best metric against fewest trainable parameters."
    ),
    limit: int | None = typer.Option(None, help="Show at most this many rows."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Rank a job's finished trials by its metric (validation split)."""
    if per_method and pareto:
        raise typer.BadParameter("give --per-method or --pareto, not both")
    storage = _state(ctx).storage(must_exist=True)
    storage.get_job(job)  # JobNotFoundError names the id
    rows = _leaderboard_rows(storage, job, per_method=per_method, pareto=pareto)
    if limit is not None:
        rows = rows[:limit]
    title = "Pareto front" if pareto else "best per method" if per_method else "leaderboard"
    _print_rows(rows, as_json=as_json, title=f"job {job}: {title}", empty="no finished trials yet")


@app.command()
@_handle_errors
def export(
    ctx: typer.Context,
    job: int = typer.Argument(..., help="Job id."),
    out: Path = typer.Option(
        ..., "--out", help="Directory to write (must not exist, or be empty, or --force)."
    ),
    trial: int | None = typer.Option(None, "--trial", help="Trial number (default: the job's best trial)."),
    force: bool = typer.Option(False, "--force", help="Replace an earlier promptsweep export in OUT."),
) -> None:
    """Export the best adapter (or --trial N): PEFT files, encoder state, model card, metrics.json."""
    from promptsweep.export import export_adapter

    result = export_adapter(_state(ctx).storage(must_exist=True), job, out, trial_number=trial, force=force)
    console.print(
        f"exported job {job} trial {result.trial_number} ({result.method}) to [bold]{result.out_dir}[/]"
    )
    for path in result.files:
        console.print(f"  {path.relative_to(result.out_dir)}", highlight=False)


@app.command()
@_handle_errors
def report(
    ctx: typer.Context,
    job: int = typer.Argument(..., help="Job id."),
    out: Path = typer.Option(
        ..., "--out", help="HTML file to write (replaced if it exists), e.g. report.html."
    ),
) -> None:
    """Write a self-contained HTML report: leaderboard, Pareto front, history, importances."""
    from promptsweep.dashboards import write_report

    path = write_report(_state(ctx).storage(must_exist=True), job, out)
    console.print(f"report written to [bold]{path}[/] (open it in a browser; no server needed)")


@app.command()
@_handle_errors
def dashboard(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", help="Interface to bind (127.0.0.1: this machine only)."),
    port: int = typer.Option(8080, help="TCP port."),
    artifact_dir: Path | None = typer.Option(
        None,
        help="Optuna artifact store for trial adapters (default: $PROMPTSWEEP_ARTIFACT_DIR, else "
        "`artifacts/` beside a SQLite database, else $PROMPTSWEEP_HOME/artifacts).",
    ),
    attach: bool = typer.Option(
        True, help="Attach each finished trial's adapter (zip) that lacks it as an artifact of its trial."
    ),
) -> None:
    """Start optuna-dashboard on the same database (Ctrl-C or SIGTERM stops it)."""
    from promptsweep.dashboards import default_artifact_dir, prepare_studies, run_dashboard

    state = _state(ctx)
    storage = state.storage(must_exist=True)
    artifacts = artifact_dir or default_artifact_dir(storage)
    _, added = prepare_studies(storage, artifacts, attach=attach)
    if added:
        console.print(f"attached {added} trial adapter(s) as Optuna artifacts in {artifacts}")
    from promptsweep.api import is_loopback

    if not is_loopback(host):
        err_console.print(
            f"[bold yellow]warning:[/] optuna-dashboard has no authentication; anyone who reaches "
            f"{host}:{port} can read and change the studies"
        )
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    console.print(
        f"optuna-dashboard on [bold]http://{shown}:{port}/[/] (studies are named promptsweep-job-<id>)"
    )
    sys.stdout.flush()
    sys.stderr.flush()
    # optuna-dashboard runs as a child; SIGTERM (a service manager) and Ctrl-C stop it before this
    # process exits, so it never keeps the port.
    code = run_dashboard(state.url(), host=host, port=port, artifact_dir=artifacts)
    if code < 0:  # the child was killed by a signal: exit as a shell reports it
        code = 128 - code
    if code in (128 + signal.SIGTERM, 128 + signal.SIGINT):
        err_console.print(f"optuna-dashboard stopped ({signal.Signals(code - 128).name})", highlight=False)
    elif code != 0:
        err_console.print(f"[bold red]error:[/] optuna-dashboard exited with code {code}", highlight=False)
    raise typer.Exit(code)


@app.command()
@_handle_errors
def serve(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", help="Interface to bind; any non-loopback address needs --token."),
    port: int = typer.Option(8000, help="TCP port."),
    token: str | None = typer.Option(
        None,
        envvar="PROMPTSWEEP_API_TOKEN",
        help="Bearer token every request must carry (required when HOST is not loopback).",
        show_default=False,
    ),
) -> None:
    """Serve the REST API (OpenAPI at /docs) on the same database."""
    from promptsweep.api import serve as serve_api

    serve_api(_state(ctx).url(), host=host, port=port, token=token)


@db_app.command("upgrade")
@_handle_errors
def db_upgrade(ctx: typer.Context) -> None:
    """Migrate the database schema to this promptsweep's version (Alembic head)."""
    from promptsweep.storage import upgrade_database

    url = _state(ctx).url()
    before, after = upgrade_database(url)
    if before == after:
        console.print(f"database {storage_label(url)} is already at schema revision {after}")
    else:
        console.print(f"database {storage_label(url)} upgraded from schema revision {before} to {after}")


def storage_label(url: str) -> str:
    """The database URL with its password hidden (for messages)."""
    from promptsweep.storage import mask_url

    try:
        return mask_url(url)
    except Exception:  # an unparsable URL is reported by Storage itself
        return url


def main() -> None:
    """Console-script entry point."""
    app()


# The job commands (jobs, show, and the lifecycle verbs) register themselves on ``app``.
from promptsweep import _cli_jobs  # noqa: E402, F401

if __name__ == "__main__":  # pragma: no cover
    main()
