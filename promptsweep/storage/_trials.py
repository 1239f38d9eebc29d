"""Trials: recording them (an upsert per job and trial number), reading them, their intermediate
metrics, and the rankings over them.

:class:`TrialsMixin` is the trials part of :class:`~promptsweep.storage.Storage`; the ranking
queries themselves are SQL in ``_ranking.py``. :data:`TRIAL_FIELDS` lists what
:meth:`~TrialsMixin.record_trial` accepts, and :func:`trial_record` turns a row into the frozen
:class:`TrialRecord` every trial method returns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from promptsweep.exceptions import TrialNotFoundError
from promptsweep.storage import _ranking
from promptsweep.storage._base import StorageBase
from promptsweep.storage._models import IntermediateMetricModel, TrialModel
from promptsweep.storage._records import (
    BestResult,
    Direction,
    IntermediateRecord,
    TrialRecord,
    TrialState,
    as_utc,
    json_safe,
    method_variant,
    utcnow,
)
from promptsweep.storage._validate import check_id, check_text, enum_value, json_field

#: The keyword fields :meth:`Storage.record_trial` accepts, with the type each is stored as.
TRIAL_FIELDS: dict[str, Any] = {
    "optuna_trial_id": int,
    "ray_trial_id": str,
    "method": str,
    "params": dict,
    "state": TrialState,
    "value": float,
    "values": list,
    "metrics": dict,
    "test_metrics": dict,
    "trainable_params": int,
    "total_params": int,
    "train_seconds": float,
    "peak_memory_bytes": int,
    "steps": int,
    "epochs": float,
    "adapter_dir": str,
    "node_id": str,
    "node_host": str,
    "error": str,
    "started_at": datetime,
    "finished_at": datetime,
}


def trial_record(row: TrialModel) -> TrialRecord:
    """The frozen record of a trial row (read inside the row's session)."""
    return TrialRecord(
        job_id=row.job_id,
        number=row.number,
        optuna_trial_id=row.optuna_trial_id,
        ray_trial_id=row.ray_trial_id,
        method=row.method,
        variant=row.variant,
        params=dict(row.params or {}),
        state=TrialState(row.state),
        value=row.value,
        values=list(row.values) if row.values is not None else None,
        metrics=dict(row.metrics or {}),
        test_metrics=dict(row.test_metrics) if row.test_metrics is not None else None,
        trainable_params=row.trainable_params,
        total_params=row.total_params,
        train_seconds=row.train_seconds,
        peak_memory_bytes=row.peak_memory_bytes,
        steps=row.steps,
        epochs=row.epochs,
        adapter_dir=row.adapter_dir,
        node_id=row.node_id,
        node_host=row.node_host,
        error=row.error,
        started_at=as_utc(row.started_at),
        finished_at=as_utc(row.finished_at),
        updated_at=as_utc(row.updated_at),
    )


def _coerce_trial_field(name: str, value: Any) -> Any:
    if value is None:
        return None
    kind = TRIAL_FIELDS[name]
    try:
        if kind is TrialState:
            return TrialState(value.value if isinstance(value, TrialState) else str(value).lower()).value
        if kind is dict:
            if not isinstance(value, Mapping):
                raise TypeError("expected a dict")
            return json_field(name, value)
        if kind is list:
            if isinstance(value, str | bytes) or not isinstance(value, Iterable):
                raise TypeError("expected a list of numbers")
            return [None if v is None else float(v) for v in value]
        if kind is datetime:
            if not isinstance(value, datetime):
                raise TypeError("expected a datetime")
            return as_utc(value)
        if kind is int:
            if isinstance(value, bool):
                raise TypeError("expected an integer")
            return int(value)
        if kind is float:
            return float(value)
        text = str(value)
        if name == "error":  # diagnostic text: keep it, minus what PostgreSQL cannot store
            return text.replace("\x00", "\ufffd")
        return check_text(TrialModel.__table__.c[name], name, text)
    except (TypeError, ValueError) as exc:
        choices = f" (one of {[s.value for s in TrialState]})" if kind is TrialState else ""
        raise ValueError(f"record_trial field {name!r}={value!r} is invalid{choices}: {exc}") from exc


class TrialsMixin(StorageBase):
    """Trials: :meth:`record_trial`, :meth:`get_trial`, :meth:`list_trials`, intermediate metrics
    (:meth:`record_intermediate`, :meth:`list_intermediate`) and the rankings (:meth:`leaderboard`,
    :meth:`unranked_trials`, :meth:`best_per_method`, :meth:`pareto_front`, :meth:`best_across_jobs`)."""

    # -- trials -----------------------------------------------------------------------------------
    def _trial_row(self, session: Session, job_id: int, number: int) -> TrialModel:
        self._job_row(session, job_id)
        check_id("number", number)
        row = session.scalars(
            select(TrialModel).where(TrialModel.job_id == job_id, TrialModel.number == number)
        ).first()
        if row is None:
            raise TrialNotFoundError(f"job {job_id} has no trial number {number} in {self.display_url!r}")
        return row

    def record_trial(self, job_id: int, number: int, **fields: Any) -> TrialRecord:
        """Insert or update trial ``number`` of ``job_id`` (an upsert: recording twice keeps one row).

        Only the given fields change (see :data:`TRIAL_FIELDS`): ``optuna_trial_id``,
        ``ray_trial_id``, ``method`` (default ``params["method"]``), ``params``, ``state``
        (``running``/``complete``/``pruned``/``fail``; a new trial starts ``running``), ``value`` and
        ``values`` (objective values; either one fills the other), ``metrics``, ``test_metrics``,
        ``trainable_params``, ``total_params``, ``train_seconds`` (s), ``peak_memory_bytes`` (bytes),
        ``steps``, ``epochs``, ``adapter_dir``, ``error``, ``started_at``, ``finished_at`` (aware
        datetimes; ``finished_at`` is set when a state other than running is first recorded). The
        method variant is derived from ``params``. Non-finite numbers are stored as NULL.

        Raises:
            ValueError: an unknown field or a value of the wrong type (names it).
            JobNotFoundError: unknown job.
        """
        check_id("job_id", job_id)
        check_id("number", number)
        unknown = sorted(set(fields) - set(TRIAL_FIELDS))
        if unknown:
            raise ValueError(f"record_trial got unknown field(s) {unknown}; known: {sorted(TRIAL_FIELDS)}")
        values = {k: _coerce_trial_field(k, v) for k, v in fields.items()}
        for key in ("params", "metrics", "state"):  # never NULL: None means "leave as is"
            if key in values and values[key] is None:
                del values[key]
        if "value" in values and "values" not in values and values["value"] is not None:
            values["values"] = [values["value"]]
        if "values" in values and "value" not in values:
            values["value"] = values["values"][0] if values["values"] else None
        for key in ("value", "train_seconds", "epochs"):
            if key in values:
                values[key] = json_safe(values[key])
        if values.get("values") is not None:
            values["values"] = json_safe(values["values"])
        if values.get("params") is not None:
            values["variant"] = method_variant(values["params"])
            if "method" not in values and values["params"].get("method") is not None:
                values["method"] = _coerce_trial_field("method", values["params"]["method"])
        now = utcnow()
        values["updated_at"] = now
        state = values.get("state")
        auto_finished = (
            state is not None and state != TrialState.RUNNING.value and "finished_at" not in values
        )
        insert_values = {
            "job_id": job_id,
            "number": number,
            "params": {},
            "metrics": {},
            "state": TrialState.RUNNING.value,
            "started_at": now,
            **values,
        }
        if auto_finished:
            insert_values["finished_at"] = now
        table = TrialModel.__table__
        insert = sqlite_insert if self._is_sqlite else pg_insert
        stmt = insert(table).values(**insert_values)
        set_ = {k: stmt.excluded[k] for k in values}
        if auto_finished:
            set_["finished_at"] = func.coalesce(table.c.finished_at, stmt.excluded.finished_at)
        elif state == TrialState.RUNNING.value and "finished_at" not in values:
            set_["finished_at"] = None  # running again (a retry): not finished
        stmt = stmt.on_conflict_do_update(index_elements=[table.c.job_id, table.c.number], set_=set_)
        with self._writing("record trial") as session:
            self._job_row(session, job_id)
            session.execute(stmt)
            row = self._trial_row(session, job_id, number)
            session.refresh(row)
            return trial_record(row)

    def get_trial(self, job_id: int, number: int) -> TrialRecord:
        """Return one trial. Raises :class:`JobNotFoundError` / :class:`TrialNotFoundError`."""
        with self._read("get trial") as session:
            return trial_record(self._trial_row(session, job_id, number))

    def list_trials(
        self, job_id: int, *, states: Iterable[str | TrialState] | None = None
    ) -> list[TrialRecord]:
        """A job's trials by number; only those in ``states`` if given. Raises JobNotFoundError."""
        query = select(TrialModel).where(TrialModel.job_id == job_id).order_by(TrialModel.number)
        if states is not None:
            wanted = [enum_value(TrialState, "states", s).value for s in states]
            query = query.where(TrialModel.state.in_(wanted))
        with self._read("list trials") as session:
            self._job_row(session, job_id)
            return [trial_record(r) for r in session.scalars(query)]

    def record_intermediate(
        self, job_id: int, number: int, step: int, metrics: Mapping[str, Any]
    ) -> IntermediateRecord:
        """Store trial ``number``'s validation ``metrics`` at evaluation ``step`` (an upsert on step).

        This table is the one source of truth for learning curves (see ``_models``). The trial must
        have been recorded first (:meth:`record_trial`).

        Raises:
            ValueError: negative step or non-dict metrics. JobNotFoundError / TrialNotFoundError.
        """
        check_id("step", step)
        if not isinstance(metrics, Mapping):
            raise ValueError(f"metrics must be a dict of name → value, got {type(metrics).__name__}")
        clean = json_field("metrics", metrics)
        now = utcnow()
        table = IntermediateMetricModel.__table__
        insert = sqlite_insert if self._is_sqlite else pg_insert
        with self._writing("record intermediate metrics") as session:
            trial = self._trial_row(session, job_id, number)
            stmt = insert(table).values(trial_id=trial.id, step=step, metrics=clean, recorded_at=now)
            stmt = stmt.on_conflict_do_update(
                index_elements=[table.c.trial_id, table.c.step],
                set_={"metrics": stmt.excluded.metrics, "recorded_at": stmt.excluded.recorded_at},
            )
            session.execute(stmt)
            trial.updated_at = now
        return IntermediateRecord(job_id=job_id, number=number, step=step, metrics=clean, recorded_at=now)

    def list_intermediate(self, job_id: int, number: int) -> list[IntermediateRecord]:
        """Trial ``number``'s intermediate metrics by step. Raises JobNotFoundError / TrialNotFoundError."""
        with self._read("list intermediate metrics") as session:
            trial = self._trial_row(session, job_id, number)
            rows = session.scalars(
                select(IntermediateMetricModel)
                .where(IntermediateMetricModel.trial_id == trial.id)
                .order_by(IntermediateMetricModel.step)
            )
            return [
                IntermediateRecord(
                    job_id=job_id,
                    number=number,
                    step=r.step,
                    metrics=dict(r.metrics),
                    recorded_at=as_utc(r.recorded_at),  # type: ignore[arg-type]
                )
                for r in rows
            ]

    # -- ranking ----------------------------------------------------------------------------------
    def _ranking(self, job_id: int, what: str, build: Any) -> list[TrialRecord]:
        with self._read(what) as session:
            job = self._job_row(session, job_id)
            return [trial_record(r) for r in session.scalars(build(Direction(job.direction)))]

    def leaderboard(self, job_id: int, *, limit: int | None = None) -> list[TrialRecord]:
        """A job's ``complete`` trials, best first: objective value in the job's direction, ties →
        fewer trainable parameters → shorter training time → lower trial number. Pruned and failed
        trials are not ranked (see :meth:`unranked_trials`). Raises JobNotFoundError."""
        if limit is not None:
            check_id("limit", limit)
        return self._ranking(job_id, "leaderboard", lambda d: _ranking.leaderboard_query(job_id, d, limit))

    def unranked_trials(self, job_id: int) -> list[TrialRecord]:
        """A job's ``pruned`` and ``fail`` trials, by number (listed apart from the leaderboard)."""
        return self._ranking(job_id, "unranked trials", lambda _d: _ranking.unranked_query(job_id))

    def best_per_method(self, job_id: int) -> list[TrialRecord]:
        """The best ``complete`` trial of each :class:`MethodVariant` present in the job (same order
        and tie-breaks as :meth:`leaderboard`), best first. Raises JobNotFoundError."""
        return self._ranking(job_id, "best per method", lambda d: _ranking.best_per_method_query(job_id, d))

    def pareto_front(self, job_id: int) -> list[TrialRecord]:
        """The Pareto front of objective value vs trainable parameters over ``complete`` trials:
        those no other trial beats on one without losing on the other. Fewest parameters first.
        Raises JobNotFoundError."""
        return self._ranking(job_id, "Pareto front", lambda d: _ranking.pareto_front_query(job_id, d))

    def best_across_jobs(self) -> list[BestResult]:
        """The best ``complete`` trial per (model, dataset, task, objective metric, direction) over
        all jobs, compared in that direction (ties as in :meth:`leaderboard`, then the older job)."""
        with self._read("best across jobs") as session:
            counts = {tuple(r[:5]): r[5] for r in session.execute(_ranking.jobs_per_group_query())}
            out = []
            for trial, job in session.execute(_ranking.best_across_jobs_query()).tuples():
                key = (job.model, job.dataset, job.task, job.objective_metric, job.direction)
                out.append(
                    BestResult(
                        model=job.model,
                        dataset=job.dataset,
                        task=job.task,
                        objective_metric=job.objective_metric,
                        direction=Direction(job.direction),
                        job_id=job.id,
                        job_name=job.name,
                        trial=trial_record(trial),
                        jobs=counts.get(key, 1),
                    )
                )
            return out
