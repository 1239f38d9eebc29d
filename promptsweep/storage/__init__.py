"""promptsweep.storage: the only layer that sees SQL.

Everything the service knows lives behind one database URL shared by the CLI, the API, the workers
and optuna-dashboard: SQLite by default (a file, WAL mode, busy timeout) or PostgreSQL via psycopg 3
for many workers. Jobs, the job queue, trials, intermediate metrics and ranking queries go through
:class:`Storage`, which returns frozen records; the schema is versioned by Alembic migrations shipped
with the package (``promptsweep db upgrade`` → :func:`upgrade_database`). Trial adapters become Optuna
artifacts of their trials in an artifact store beside the database (:func:`attach_trial_artifact`,
:func:`default_artifact_dir`).

Importing this package loads SQLAlchemy only (no Alembic, Optuna, torch or ray).
"""

from promptsweep.exceptions import (
    JobNotFoundError,
    JobStateError,
    SchemaVersionError,
    StorageError,
    TrialNotFoundError,
)
from promptsweep.storage._artifacts import (
    artifact_name,
    attach_trial_artifact,
    default_artifact_dir,
    trial_artifacts,
)
from promptsweep.storage._engine import SQLITE_BUSY_TIMEOUT_S, mask_url
from promptsweep.storage._jobs import spec_hash
from promptsweep.storage._migrations import HEAD_REVISION, UPGRADE_COMMAND
from promptsweep.storage._records import (
    BestResult,
    Direction,
    IntermediateRecord,
    JobRecord,
    JobStatus,
    MethodVariant,
    TrialRecord,
    TrialState,
    method_variant,
)
from promptsweep.storage._storage import STUDY_NAME_PREFIX, TRIAL_FIELDS, Storage, upgrade_database

__all__ = [
    "HEAD_REVISION",
    "SQLITE_BUSY_TIMEOUT_S",
    "STUDY_NAME_PREFIX",
    "TRIAL_FIELDS",
    "UPGRADE_COMMAND",
    "BestResult",
    "Direction",
    "IntermediateRecord",
    "JobNotFoundError",
    "JobRecord",
    "JobStateError",
    "JobStatus",
    "MethodVariant",
    "SchemaVersionError",
    "Storage",
    "StorageError",
    "TrialNotFoundError",
    "TrialRecord",
    "TrialState",
    "artifact_name",
    "attach_trial_artifact",
    "default_artifact_dir",
    "mask_url",
    "method_variant",
    "spec_hash",
    "trial_artifacts",
    "upgrade_database",
]
