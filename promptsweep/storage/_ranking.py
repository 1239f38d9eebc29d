"""Ranking queries, expressed in SQL (the database sorts and filters; Python only converts rows).

Order of a job's leaderboard (:func:`ranked_order`): the objective value in the job's direction,
ties broken by fewer trainable parameters, then shorter training time, then the lower trial number
(so the order is total and the same on SQLite and PostgreSQL). Only ``complete`` trials with a value
rank.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, and_, case, exists, func, or_, select
from sqlalchemy.orm import aliased

from promptsweep.storage._models import JobModel, TrialModel
from promptsweep.storage._records import Direction, TrialState

_COMPLETE = TrialState.COMPLETE.value


def ranked_order(direction: Direction) -> list[Any]:
    """ORDER BY terms of a leaderboard in ``direction``."""
    value = TrialModel.value.desc() if direction is Direction.MAXIMIZE else TrialModel.value.asc()
    return [
        value,
        TrialModel.trainable_params.asc().nulls_last(),
        TrialModel.train_seconds.asc().nulls_last(),
        TrialModel.number.asc(),
    ]


def _ranked(job_id: int) -> Any:
    return and_(
        TrialModel.job_id == job_id,
        TrialModel.state == _COMPLETE,
        TrialModel.value.is_not(None),
    )


def leaderboard_query(job_id: int, direction: Direction, limit: int | None = None) -> Select:
    """Complete trials of a job, best first."""
    query = select(TrialModel).where(_ranked(job_id)).order_by(*ranked_order(direction))
    return query.limit(limit) if limit is not None else query


def unranked_query(job_id: int) -> Select:
    """Pruned, failed and cancelled trials of a job, by trial number."""
    return (
        select(TrialModel)
        .where(
            TrialModel.job_id == job_id,
            TrialModel.state.in_(
                [TrialState.PRUNED.value, TrialState.FAIL.value, TrialState.CANCELLED.value]
            ),
        )
        .order_by(TrialModel.number.asc())
    )


def best_per_method_query(job_id: int, direction: Direction) -> Select:
    """The best complete trial of each method variant (``ROW_NUMBER() OVER (PARTITION BY variant …)``)."""
    rank = func.row_number().over(partition_by=TrialModel.variant, order_by=ranked_order(direction))
    ranked = (
        select(TrialModel.id.label("id"), rank.label("rank"))
        .where(_ranked(job_id), TrialModel.variant.is_not(None))
        .subquery("ranked")
    )
    return (
        select(TrialModel)
        .join(ranked, ranked.c.id == TrialModel.id)
        .where(ranked.c.rank == 1)
        .order_by(*ranked_order(direction))
    )


def pareto_front_query(job_id: int, direction: Direction) -> Select:
    """Complete trials that no other complete trial dominates on (objective value, trainable params).

    Trial ``u`` dominates ``t`` when it is at least as good on both (value in the job's direction,
    fewer or equal trainable parameters) and strictly better on one. Trials with equal points both
    stay on the front. Ordered by trainable parameters, fewest first.
    """
    other = aliased(TrialModel)
    if direction is Direction.MAXIMIZE:
        no_worse, better = other.value >= TrialModel.value, other.value > TrialModel.value
    else:
        no_worse, better = other.value <= TrialModel.value, other.value < TrialModel.value
    dominated = exists().where(
        other.job_id == TrialModel.job_id,
        other.state == _COMPLETE,
        other.value.is_not(None),
        other.trainable_params.is_not(None),
        no_worse,
        other.trainable_params <= TrialModel.trainable_params,
        or_(better, other.trainable_params < TrialModel.trainable_params),
    )
    value = TrialModel.value.desc() if direction is Direction.MAXIMIZE else TrialModel.value.asc()
    return (
        select(TrialModel)
        .where(_ranked(job_id), TrialModel.trainable_params.is_not(None), ~dominated)
        .order_by(TrialModel.trainable_params.asc(), value, TrialModel.number.asc())
    )


_GROUP = (JobModel.model, JobModel.dataset, JobModel.task, JobModel.objective_metric, JobModel.direction)


def best_across_jobs_query() -> Select:
    """Per (model, dataset, task, objective metric, direction): the best complete trial over all jobs.

    Rows are ``(TrialModel, JobModel)``. The value is compared in the job's direction (negated for
    ``minimize``); ties → fewer trainable parameters → shorter training → older job → lower number.
    """
    signed = case((JobModel.direction == Direction.MINIMIZE.value, -TrialModel.value), else_=TrialModel.value)
    rank = func.row_number().over(
        partition_by=list(_GROUP),
        order_by=[
            signed.desc(),
            TrialModel.trainable_params.asc().nulls_last(),
            TrialModel.train_seconds.asc().nulls_last(),
            JobModel.id.asc(),
            TrialModel.number.asc(),
        ],
    )
    ranked = (
        select(TrialModel.id.label("id"), rank.label("rank"))
        .join(JobModel, JobModel.id == TrialModel.job_id)
        .where(TrialModel.state == _COMPLETE, TrialModel.value.is_not(None))
        .subquery("ranked")
    )
    return (
        select(TrialModel, JobModel)
        .join(ranked, ranked.c.id == TrialModel.id)
        .join(JobModel, JobModel.id == TrialModel.job_id)
        .where(ranked.c.rank == 1)
        .order_by(
            JobModel.model.asc().nulls_last(),
            JobModel.dataset.asc().nulls_last(),
            JobModel.task.asc().nulls_last(),
            JobModel.objective_metric.asc().nulls_last(),
            JobModel.direction.asc(),
        )
    )


def jobs_per_group_query() -> Select:
    """How many jobs share each (model, dataset, task, objective metric, direction) group."""
    return select(*_GROUP, func.count(JobModel.id)).group_by(*_GROUP)
