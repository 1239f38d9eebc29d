"""SQLAlchemy 2.x typed ORM models of promptsweep's tables (the head revision of the schema).

Every table name starts with ``promptsweep_``, and Alembic keeps its revision in
``promptsweep_alembic_version``, so Optuna's own tables (``studies``, ``trials``, ``alembic_version``, …)
live beside ours in the same database without a clash. The schema is created and changed only by the
migrations in ``_alembic/versions`` (never by ``create_all``); ``tests/storage/test_migrations.py``
checks that these models and the migrated schema agree.

Intermediate metrics have one source of truth: :class:`IntermediateMetricModel` (every validation
metric at every evaluation step). Optuna's ``trial_intermediate_values`` holds only what Ray Tune's
``OptunaSearch`` reports to its sampler and dashboard (the objective alone); promptsweep never reads it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

VERSION_TABLE = "promptsweep_alembic_version"

# Named constraints, so that Alembic's batch mode (SQLite) can find them again.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONType = JSON().with_variant(JSONB(), "postgresql")
UTCDateTime = DateTime(timezone=True)


class Base(DeclarativeBase):
    """Declarative base of promptsweep's tables (its own MetaData, apart from Optuna's)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class JobModel(Base):
    """A search job and its place in the job queue."""

    __tablename__ = "promptsweep_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255))
    spec: Mapped[dict[str, Any]] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(String(16), index=True)
    objective_metric: Mapped[str | None] = mapped_column(String(64))
    direction: Mapped[str] = mapped_column(String(8))
    secondary_objective: Mapped[str | None] = mapped_column(String(64))
    model: Mapped[str | None] = mapped_column(String(512))
    dataset: Mapped[str | None] = mapped_column(String(512))
    task: Mapped[str | None] = mapped_column(String(32))
    study_name: Mapped[str | None] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(Text)
    # Revision 0002:
    worker_id: Mapped[str | None] = mapped_column(String(255))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Revision 0003: what the search layer keeps about the job as a whole (its plan, baselines,
    # finalists, selected trial); storage does not interpret the keys.
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # Revision 0004: what happened to the job and when; the SHA-256 of its spec (canonical JSON).
    history: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)
    spec_hash: Mapped[str | None] = mapped_column(String(64))
    # Revision 0005: a pending stop / pause request; what `extend` added to the budget.
    request: Mapped[str | None] = mapped_column(String(16))
    extra_trials: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    extra_time_s: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")

    trials: Mapped[list[TrialModel]] = relationship(back_populates="job", cascade="all, delete-orphan")


class TrialModel(Base):
    """One trial of a job: parameters, state, objective value(s), metrics, costs and adapter location."""

    __tablename__ = "promptsweep_trials"
    __table_args__ = (
        UniqueConstraint("job_id", "number", name="uq_promptsweep_trials_job_id_number"),
        Index("ix_promptsweep_trials_job_id_state", "job_id", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("promptsweep_jobs.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    optuna_trial_id: Mapped[int | None] = mapped_column(Integer)
    ray_trial_id: Mapped[str | None] = mapped_column(String(64))
    method: Mapped[str | None] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(JSONType)
    state: Mapped[str] = mapped_column(String(16))
    value: Mapped[float | None] = mapped_column(Float)
    values: Mapped[list[float | None] | None] = mapped_column(JSONType)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType)
    test_metrics: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    trainable_params: Mapped[int | None] = mapped_column(BigInteger)
    total_params: Mapped[int | None] = mapped_column(BigInteger)
    train_seconds: Mapped[float | None] = mapped_column(Float)
    peak_memory_bytes: Mapped[int | None] = mapped_column(BigInteger)
    steps: Mapped[int | None] = mapped_column(Integer)
    epochs: Mapped[float | None] = mapped_column(Float)
    adapter_dir: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Revision 0002:
    variant: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Revision 0006:
    node_id: Mapped[str | None] = mapped_column(String(64))
    node_host: Mapped[str | None] = mapped_column(String(255))

    job: Mapped[JobModel] = relationship(back_populates="trials")
    intermediate: Mapped[list[IntermediateMetricModel]] = relationship(
        back_populates="trial", cascade="all, delete-orphan"
    )


class IntermediateMetricModel(Base):
    """Validation metrics of a trial at one evaluation step (revision 0002)."""

    __tablename__ = "promptsweep_intermediate_metrics"
    __table_args__ = (
        UniqueConstraint("trial_id", "step", name="uq_promptsweep_intermediate_metrics_trial_id_step"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("promptsweep_trials.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)

    trial: Mapped[TrialModel] = relationship(back_populates="intermediate")
