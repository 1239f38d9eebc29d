"""Submitting a job: validate its spec, model and data, and queue it (nothing is stored when refused).

:func:`submit` parses the spec, resolves a local ``dataset.source`` to an absolute path, checks the
model's architecture (``_spec.check_model``), the data (:func:`check_dataset`), GPUs and bf16 on a local
pool, then stores the job. :func:`data_spec` is the methods layer's view of the job's data.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from promptsweep._logging import get_logger
from promptsweep.exceptions import SpecError
from promptsweep.search._spec import (
    JobSpec,
    check_cpu_precision,
    check_model,
    check_resources,
    local_gpu_count,
    parse_spec,
)

_log = get_logger(__name__)


def submit(spec: JobSpec | dict[str, Any], storage: Any) -> int:
    """Validate ``spec`` and queue it as a job; return the job id.

    The spec is stored with the job (JSON), including its search space. A local spec (no
    ``ray_address``) asking for GPUs on a machine without any is refused here, and so is data the
    job could not use (:func:`check_dataset`): nothing is stored then.

    Raises:
        SpecError: the spec is invalid (the message names the field).
        StorageError: the database cannot be written.
    """
    job_spec = _with_local_source_resolved(parse_spec(spec))
    check_model(job_spec)
    check_dataset(job_spec)
    if job_spec.ray_address is None and job_spec.resources.gpus_per_trial > 0:
        check_resources(job_spec, gpus_available=local_gpu_count(), pool="this machine")
    if job_spec.ray_address is None and job_spec.resources.gpus_per_trial == 0:
        check_cpu_precision(job_spec)
    job = storage.create_job(
        job_spec.name,
        job_spec.to_dict(),
        objective_metric=job_spec.objective.metric,
        direction=job_spec.objective.resolved_direction,
        secondary_objective=job_spec.objective.secondary,
        model=job_spec.model,
        dataset=job_spec.dataset.source,
        task=job_spec.task,
    )
    _log.info("submitted job %d (%s)", job.id, job_spec.name)
    return int(job.id)


# ------------------------------------------------------------------------------------------------
# helpers

#: Suffixes that mark ``dataset.source`` as a local data file (the formats promptsweep.methods reads).
_DATA_SUFFIXES = (".csv", ".json", ".jsonl", ".parquet")


def _with_local_source_resolved(spec: JobSpec) -> JobSpec:
    """Check a local ``dataset.source`` at submit time and store it as an absolute path.

    A source naming a data file (by suffix) or an existing path is local: relative paths resolve
    against the submitting process's directory, so a worker started elsewhere finds the same file.
    Aliases (``fine-foods``) and hub names pass unchanged.

    Raises:
        SpecError: a data file that does not exist (names ``dataset.source`` and the resolved path).
    """
    source = spec.dataset.source
    path = Path(source).expanduser()
    if not (path.exists() or path.suffix.lower() in _DATA_SUFFIXES):
        return spec
    resolved = path.resolve()
    if not resolved.exists():
        raise SpecError(
            f"dataset.source: no such file {str(resolved)!r} (relative paths resolve against the "
            f"current directory, {os.getcwd()!r})"
        )
    dataset = spec.dataset.model_copy(update={"source": str(resolved)})
    return spec.model_copy(update={"dataset": dataset})


def check_dataset(spec: JobSpec) -> None:
    """Load and check the job's data as its preparation will (``promptsweep.methods.check_data``:
    splits, columns, texts, labels), so bad data is refused before the job is stored.

    Only data this process can read without the network: a local file or folder, or the packaged
    alias. A hub name is left to the job's preparation (before any trial): a submitter need not reach
    the hub, nor download a dataset the workers will load.

    Raises:
        SpecError: the data's problem (a missing split or column names ``dataset.splits.<role>`` /
            ``dataset.<kind>_column`` and what the source has; a bad row is ``dataset.source: `` +
            the file, column and row).
    """
    from promptsweep.exceptions import DataError
    from promptsweep.methods import DATA_ALIASES, check_data

    source = spec.dataset.source
    if source not in DATA_ALIASES and not Path(source).expanduser().exists():
        return
    try:
        notes = check_data(data_spec(spec), spec.task)
    except DataError as exc:
        message = str(exc)  # a bad row or file is the source's problem: name that field
        raise SpecError(message if message.startswith("dataset.") else f"dataset.source: {message}") from exc
    for note in notes:
        _log.warning("dataset: %s", note)


def data_spec(spec: JobSpec) -> Any:
    """Return the :class:`promptsweep.methods.DataSpec` that a job with ``spec`` prepares its data with
    (the job's dataset settings and seed), e.g. to rebuild a job's inputs for evaluating an adapter."""
    from promptsweep.methods import DataSpec

    d = spec.dataset
    return DataSpec(
        source=d.source,
        text_column=d.text_column,
        text_pair_column=d.text_pair_column,
        label_column=d.label_column,
        target_column=d.target_column,
        label_words=d.label_words,
        splits={k: v for k, v in d.splits.items() if v is not None},
        validation_fraction=d.validation_fraction,
        max_train_examples=d.max_train_examples,
        max_eval_examples=d.max_eval_examples,
        seed=spec.seed,
    )
