"""promptsweep.search: job spec, conditional search space, Ray Tune + Optuna orchestration, workers.

- :class:`JobSpec`, :func:`load_spec`, :func:`parse_spec`, :func:`default_spec` - the typed job spec
  (YAML/JSON); invalid specs raise :class:`~promptsweep.exceptions.SpecError` naming the field.
- :func:`data_spec` - the :class:`promptsweep.methods.DataSpec` a job's spec prepares its data with;
  :func:`job_inputs` - the prepared inputs themselves (capped, or the whole validation/test splits).
- :func:`sample_params` - the define-by-run space (method first, each method's own parameters under it).
- :func:`submit` - queue a job; :func:`run_job` - run/resume it (Ray Tune + Optuna, trials recorded in
  storage as they happen); :func:`run_worker` - run queued jobs.

Importing this package loads neither ray nor torch: they load when a job runs.
"""

from promptsweep.search._runner import JobOutcome, job_inputs, run_job
from promptsweep.search._selecting import PER_REVIEW_KEYS
from promptsweep.search._space import sample_params, warm_start_params
from promptsweep.search._spec import (
    JobSpec,
    SearchSpace,
    default_spec,
    default_spec_path,
    load_spec,
    parse_spec,
)
from promptsweep.search._submitting import data_spec, submit
from promptsweep.search._worker import run_worker

__all__ = [
    "PER_REVIEW_KEYS",
    "JobOutcome",
    "JobSpec",
    "SearchSpace",
    "data_spec",
    "default_spec",
    "default_spec_path",
    "job_inputs",
    "load_spec",
    "parse_spec",
    "run_job",
    "run_worker",
    "sample_params",
    "submit",
    "warm_start_params",
]
