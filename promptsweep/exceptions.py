"""One exception root for promptsweep (follows optuna's ``exceptions.py``).

Every error promptsweep raises on purpose is a :class:`PromptsweepError`; the subclasses say which
layer or which input was wrong. Messages name the field, file, column or URL at fault and what was
expected.
"""

from __future__ import annotations


class PromptsweepError(Exception):
    """Base class of every error promptsweep raises on purpose."""


class SpecError(PromptsweepError, ValueError):
    """A job spec is invalid. Raised before any trial starts; the message names the field."""


class MethodConfigError(PromptsweepError, ValueError):
    """A prompt method's configuration is invalid (names the parameter and its value)."""


class DataError(PromptsweepError, ValueError):
    """A dataset cannot be used: names the file, column and, where it applies, the row."""


class TrainingError(PromptsweepError):
    """A trial's training cannot go on (e.g. a NaN/inf loss); the message gives the reason and step."""


class StorageError(PromptsweepError):
    """The database cannot be reached or a write failed; the URL is named without its password."""


class SchemaVersionError(StorageError):
    """The database schema is older than this promptsweep; run ``promptsweep db upgrade``."""


class JobNotFoundError(StorageError, LookupError):
    """No job with the given id exists."""


class JobStateError(StorageError):
    """A verb (cancel, retry, ...) does not apply to the job in its current state (names the state)."""


class TrialNotFoundError(StorageError, LookupError):
    """No trial with the given job id and trial number exists."""


class ExportError(PromptsweepError):
    """An adapter cannot be exported (target exists without ``--force``, path escapes, no trial)."""


__all__ = [
    "DataError",
    "ExportError",
    "JobNotFoundError",
    "MethodConfigError",
    "PromptsweepError",
    "SchemaVersionError",
    "SpecError",
    "StorageError",
    "TrainingError",
    "TrialNotFoundError",
]
