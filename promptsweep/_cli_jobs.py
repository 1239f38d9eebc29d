"""The job commands of the ``promptsweep`` CLI: ``jobs``, ``show`` and the lifecycle verbs
``cancel``, ``stop``, ``pause``, ``resume``, ``extend``, ``retry`` (registered on
:data:`promptsweep.cli.app`; like every read-only command they load no torch or ray).

Each verb answers one line with the job's new status; a verb on a job in a state where it does not
apply exits 1 naming the state (:class:`~promptsweep.exceptions.JobStateError`), an unknown job
exits 1 naming it, and neither changes the stored job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from promptsweep.cli import (
    _fmt,
    _handle_errors,
    _leaderboard_rows,
    _print_rows,
    _rows_table,
    _state,
    app,
    console,
)

if TYPE_CHECKING:
    from promptsweep.storage import Storage


@app.command()
@_handle_errors
def jobs(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the jobs: id, name, status, trial counts and best value."""
    from promptsweep.dashboards import job_summary

    storage = _state(ctx).storage(must_exist=True)
    rows = [job_summary(storage, job) for job in storage.list_jobs()]
    if not as_json:
        rows = [{k: v for k, v in _job_line(r).items() if k != "objective"} for r in rows]
    _print_rows(rows, as_json=as_json, title="jobs", empty="no jobs yet")


def _job_line(summary: dict[str, Any]) -> dict[str, Any]:
    """A job summary folded into the few columns of the ``jobs`` table."""
    counts = ", ".join(
        f"{summary[k]} {k}"
        for k in ("complete", "pruned", "failed", "cancelled", "running")
        if summary.get(k)
    )
    best = None
    if summary.get("best") is not None:
        best = f"{_fmt(summary['best'])} (trial {summary['best_trial']}, {summary['best_method']})"
    return {
        "id": summary["id"],
        "name": summary["name"],
        "status": summary["status"],
        "model": summary["model"],
        "objective": summary["objective"],
        "trials": f"{summary['trials']}" + (f": {counts}" if counts else ""),
        "best": best,
        "created": summary["created"][5:16] if summary.get("created") else None,
    }


def print_job(storage: Storage, job_id: int, *, limit: int) -> None:
    from promptsweep.dashboards import job_summary

    job = storage.get_job(job_id)
    summary = _job_line(job_summary(storage, job))
    summary["task"] = job.task
    summary["study"] = job.study_name
    summary["spec hash"] = job.spec_hash[:16]
    for key, value in summary.items():
        console.print(f"[bold]{key:>10}[/]  {_fmt(value)}", highlight=False)
    if job.request:
        console.print(f"[bold yellow]{'request':>10}[/]  {job.request} (pending)", highlight=False)
    if job.extra_trials or job.extra_time_s:
        extended = f"+{job.extra_trials} trials, +{job.extra_time_s:g} s (extend)"
        console.print(f"[bold]{'extended':>10}[/]  {extended}", highlight=False)
    if job.error:
        label = "[bold red]     error[/]" if job.status.value == "failed" else f"[bold]{'reason':>10}[/]"
        console.print(f"{label}  {job.error}", highlight=False, soft_wrap=True)
    print_job_summary(job)
    _print_history(job.history)
    rows = _leaderboard_rows(storage, job_id, per_method=False, pareto=False)
    if rows:
        console.print(_rows_table(rows[:limit], title=f"leaderboard (top {min(limit, len(rows))})"))
    from promptsweep.dashboards import unranked_rows

    unranked = unranked_rows(storage, job_id)
    if unranked:
        title = f"stopped early or failed ({len(unranked)}; last validation value)"
        console.print(_rows_table(unranked[:limit], title=title))


def _print_history(history: list[dict[str, Any]], *, last: int = 12) -> None:
    """The job's last events: time (UTC), event, detail."""
    if not history:
        return
    skipped = len(history) - last
    console.print("history" + (f" (last {last} of {len(history)})" if skipped > 0 else "") + ":")
    for event in history[-last:]:
        when = str(event.get("at", ""))[:19].replace("T", " ")
        detail = f"  {event['detail']}" if event.get("detail") else ""
        console.print(f"  {when}  {event.get('event')}{detail}", highlight=False, soft_wrap=True)


def print_job_summary(job: Any) -> None:
    """The job's data (examples and truncations per split, cleaning notes), plan, floors, finalists and
    warnings (its stored summary), as ``run`` / ``show`` print."""
    from promptsweep.search._planning import describe_plan
    from promptsweep.search._selecting import describe_finalists, describe_floors

    summary = getattr(job, "summary", None) or {}
    metric = job.objective_metric or "accuracy"
    if summary.get("data"):
        from promptsweep.search._progress import describe_data

        for line in describe_data(summary["data"]):
            console.print(line, highlight=False, soft_wrap=True, markup=False)
    if summary.get("plan"):
        for line in describe_plan(summary["plan"]):
            console.print(line, highlight=False)
    if summary.get("floors"):
        console.print(describe_floors(summary["floors"], metric), highlight=False)
    for line in describe_finalists(summary.get("finalists") or [], metric):
        console.print(line, highlight=False)
    if summary.get("selected_trial") is not None:
        console.print(f"selected: trial {summary['selected_trial']} (exported by default)", highlight=False)
    if summary.get("kept_state"):
        console.print(f"      {summary['kept_state']}", highlight=False, soft_wrap=True)
    for key in ("separation", "floor_warning", "floor_separation"):
        if summary.get(key):
            console.print(f"[bold yellow]note:[/] {summary[key]}", highlight=False)


@app.command()
@_handle_errors
def show(
    ctx: typer.Context,
    job: int = typer.Argument(..., help="Job id."),
    limit: int = typer.Option(10, help="Leaderboard rows to show."),
) -> None:
    """Show a job: status, trial counts per state, and its leaderboard."""
    print_job(_state(ctx).storage(must_exist=True), job, limit=limit)


def _said(record: Any, what: str) -> None:
    console.print(f"job {record.id} {record.status.value}: {what}", highlight=False, soft_wrap=True)


@app.command()
@_handle_errors
def cancel(ctx: typer.Context, job: int = typer.Argument(..., help="Job id.")) -> None:
    """End a queued, running, paused or interrupted job now: its running trials are killed and
    recorded cancelled; finished trials are kept."""
    record = _state(ctx).storage(must_exist=True).cancel_job(job)
    _said(record, "running trials (if any) are killed within seconds")


@app.command()
@_handle_errors
def stop(ctx: typer.Context, job: int = typer.Argument(..., help="Job id.")) -> None:
    """Start no new trial; let the running ones finish and count, then select and export as usual
    (the job ends succeeded, "stopped by the user")."""
    storage = _state(ctx).storage(must_exist=True)
    record = storage.stop_job(job)
    if record.status.value == "queued":
        _said(record, f"a `promptsweep worker` on {storage.display_url} selects from its finished trials")
    else:
        _said(record, "stopping: no new trial; the running ones finish, then the selection")


@app.command()
@_handle_errors
def pause(ctx: typer.Context, job: int = typer.Argument(..., help="Job id.")) -> None:
    """Pause a job: a queued one now; a running one starts no new trial, lets the running ones
    finish, and is left paused with its study (`promptsweep resume` continues it)."""
    record = _state(ctx).storage(must_exist=True).pause_job(job)
    if record.status.value == "paused":
        _said(record, f"no worker claims it until `promptsweep resume {job}`")
    else:
        _said(record, "pausing: no new trial; it is paused once the running trials finish")


@app.command()
@_handle_errors
def resume(ctx: typer.Context, job: int = typer.Argument(..., help="Job id.")) -> None:
    """Queue a paused or interrupted job again (a worker continues the same study: sampler history
    kept, trial numbers continue), or withdraw a pending pause."""
    storage = _state(ctx).storage(must_exist=True)
    record = storage.resume_job(job)
    if record.status.value == "queued":
        _said(record, f"a `promptsweep worker` on {storage.display_url} continues it")
    else:
        _said(record, "the pending pause is withdrawn")


@app.command()
@_handle_errors
def extend(
    ctx: typer.Context,
    job: int = typer.Argument(..., help="Job id."),
    trials: int | None = typer.Option(None, "--trials", help="Add this many trials to the budget."),
    time_s: float | None = typer.Option(
        None, "--time", help="Add this many wall-clock seconds of new trials to the budget."
    ),
) -> None:
    """Add trials (--trials N) and/or time (--time S) to a running, paused or succeeded (stopped
    included) job: its study is continued, never restarted; a succeeded job is queued again and
    the worker that claims it runs exactly N more trials, then selects again."""
    if trials is None and time_s is None:
        raise typer.BadParameter("give --trials N and/or --time S")
    if trials is not None and trials < 1:
        raise typer.BadParameter(f"must be a positive whole number, got {trials}", param_hint="--trials")
    if time_s is not None and not 1 <= time_s < float("inf"):
        raise typer.BadParameter(
            f"must be a number of seconds, at least 1, got {time_s:g}", param_hint="--time"
        )
    record = _state(ctx).storage(must_exist=True).extend_job(job, trials=trials, time_s=time_s)
    added = ", ".join(
        p for p in (f"+{trials} trials" if trials else "", f"+{time_s:g} s" if time_s else "") if p
    )
    _said(record, f"{added} (in all +{record.extra_trials} trials, +{record.extra_time_s:g} s)")


@app.command()
@_handle_errors
def retry(ctx: typer.Context, job: int = typer.Argument(..., help="Job id.")) -> None:
    """Put a failed or interrupted job back in the queue: the next `promptsweep worker` resumes it
    (finished trials are kept, unfinished ones re-run)."""
    storage = _state(ctx).storage(must_exist=True)
    record = storage.retry_job(job)
    _said(record, f"a `promptsweep worker` on {storage.display_url} resumes it")
