"""Recording trials as they happen: a Ray Tune callback in the driver (the only database writer).

:class:`TrialRecorder` writes each trial's start, every validation evaluation (intermediate metrics at
the training step), its end state (the same state :class:`PromptsweepSearch` told Optuna), error text,
counts, timings, the node that ran it and its adapter to :class:`promptsweep.storage.Storage`, and
feeds the live progress display. A trial's adapter arrives as the Tune checkpoint of its final result,
persisted by Ray to the run's ``storage_path`` whichever node trained it; the recorder records where
(:func:`checkpoint_location`: a local folder, or a URI for a bucket), and readers fetch a URI with
``promptsweep.methods.local_adapter_dir``. Tune calls the searcher's ``on_trial_complete`` before the
callbacks', so the Optuna study and our tables agree on every trial's state. The checkpoint arrives
before either (Tune handles the save, then the stop): :meth:`TrialRecorder.attach_adapter`, which the
searcher calls just before it tells Optuna the trial ended, uploads the adapter (zipped) as an Optuna
artifact of the trial, so optuna-dashboard offers it on that trial.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from ray.tune import Callback
from ray.tune.stopper import Stopper

from promptsweep._logging import get_logger
from promptsweep.methods import PER_CLASS_F1, PER_CLASS_RECALL, is_uri, local_adapter_dir, per_class_values
from promptsweep.search._progress import Progress
from promptsweep.search._searcher import end_state
from promptsweep.search._trainable import (
    DONE_KEY,
    ERROR_KEY,
    NODE_KEY,
    NUMBER_KEY,
    PARAMS_KEY,
    STEP_KEY,
)
from promptsweep.storage import artifact_name, attach_trial_artifact, method_variant

_log = get_logger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


def validation_metrics(result: dict[str, Any], names: tuple[str, ...]) -> dict[str, float]:
    """The validation metrics in a Tune result: the names the task reports and, for classification and
    verbalizer tasks, each class's F1 and recall (``PER_CLASS_F1``: ``f1[<label>]``,
    ``PER_CLASS_RECALL``: ``recall[<label>]``; the labels depend on the data)."""
    per_class = sorted(
        pattern.format(label)
        for pattern in (PER_CLASS_F1, PER_CLASS_RECALL)
        for label in per_class_values(result, pattern)
    )
    return {k: float(result[k]) for k in (*names, *per_class) if isinstance(result.get(k), int | float)}


def _error_text(trial: Any) -> str:
    path = getattr(trial, "error_file", None) or getattr(trial, "pickled_error_file", None)
    text = ""
    if path and Path(path).is_file() and not str(path).endswith(".pkl"):
        text = Path(path).read_text(errors="replace")
    if not text:
        err = trial.get_error() if hasattr(trial, "get_error") else None
        text = repr(err) if err is not None else "the trial raised (no error text)"
    # Keep the exception line and its cause, not the whole remote traceback.
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    tail = "\n".join(lines[-12:])
    return tail[-4000:]


class TrialRecorder(Callback):
    """Ray Tune callback writing every trial to storage as it happens.

    Args:
        storage: the job's :class:`promptsweep.storage.Storage`.
        job_id: the job.
        metric_names: the objective names (``values`` are stored in this order).
        task_metrics: the validation metric names the task reports.
        study: the job's Optuna study (for Optuna trial ids).
        storage_path: the run's ``storage_path`` (a local folder or a pyarrow URI), where Ray persists
            each trial's final checkpoint (its adapter).
        progress: the live display, or ``None``.
        artifact_dir: the Optuna artifact store the adapters are uploaded to (``None``: none are).
    """

    def __init__(
        self,
        *,
        storage: Any,
        job_id: int,
        metric_names: list[str],
        task_metrics: tuple[str, ...],
        study: Any,
        storage_path: str,
        progress: Progress | None = None,
        artifact_dir: str | Path | None = None,
    ) -> None:
        self.storage = storage
        self.artifact_dir = artifact_dir
        self.storage_path = storage_path
        self.job_id = job_id
        self.metric_names = metric_names
        self.task_metrics = task_metrics
        self.study = study
        self.progress = progress
        self._started: dict[str, float] = {}
        self._numbers: dict[str, int] = {}
        #: Tune trial id -> its method variant (the adapter's artifact name).
        self._variants: dict[str, str | None] = {}
        self._last: dict[str, dict[str, Any]] = {}
        #: Tune trial id -> why its process died, for each restart (``max_failures``).
        self._restarts: dict[str, list[str]] = {}
        #: Tune trial id -> the node recorded for it (recorded again only when it changes).
        self._nodes: dict[str, str] = {}
        #: Ray node id -> its host name and IP address.
        self._hosts: dict[str, str] = {}
        #: Tune trial id -> where its adapter is (its final checkpoint).
        self._adapters: dict[str, str] = {}
        #: Tune trial id -> why its adapter's location could not be recorded.
        self._lost_adapters: dict[str, str] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the Tuner's state; the database, the study and the live
        # display stay in the driver (a restored copy would record nothing).
        return {**self.__dict__, "storage": None, "study": None, "progress": None}

    # -- helpers -----------------------------------------------------------------------------
    def _number(self, trial: Any) -> int:
        return int(trial.config[NUMBER_KEY])

    def _optuna_id(self, number: int) -> int | None:
        try:
            return self.study._storage.get_trial_id_from_study_id_trial_number(self.study._study_id, number)
        except Exception:  # pragma: no cover - the trial exists by construction
            return None

    def _host(self, node_id: str, result: dict[str, Any]) -> str | None:
        """``"<host name> (<IP address>)"`` of a Ray node, as the cluster reports it (``ray.nodes()``);
        Tune's own ``hostname`` / ``node_ip`` result keys where the cluster does not answer."""
        if node_id not in self._hosts:
            import ray

            try:
                found = {n["NodeID"]: n for n in ray.nodes()}.get(node_id)
            except Exception:  # pragma: no cover - a GCS hiccup must not lose the trial
                found = None
            if found:
                self._hosts[node_id] = f"{found['NodeManagerHostname']} ({found['NodeManagerAddress']})"
            elif result.get("hostname"):
                return f"{result['hostname']} ({result.get('node_ip', '?')})"
            else:
                return None
        return self._hosts[node_id]

    def _record(self, number: int, **fields: Any) -> None:
        try:
            self.storage.record_trial(self.job_id, number, **fields)
        except Exception:
            _log.exception("could not record trial %d of job %d", number, self.job_id)

    # -- Tune hooks ---------------------------------------------------------------------------
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        number = self._number(trial)
        params = dict(trial.config[PARAMS_KEY])
        self._started[trial.trial_id] = time.time()
        self._numbers[trial.trial_id] = number
        self._variants[trial.trial_id] = method_variant(params)
        self._record(
            number,
            optuna_trial_id=self._optuna_id(number),
            ray_trial_id=trial.trial_id,
            method=params.get("method"),
            params=params,
            state="running",
            started_at=_now(),
        )
        if self.progress:
            self.progress.trial_started(number, params)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        number = self._number(trial)
        self._last[trial.trial_id] = dict(result)
        node = result.get(NODE_KEY)
        if node and self._nodes.get(trial.trial_id) != node:
            self._nodes[trial.trial_id] = node
            self._record(number, node_id=str(node), node_host=self._host(str(node), result))
        step = result.get(STEP_KEY)
        metrics = validation_metrics(result, self.task_metrics)
        if step is None or not metrics:
            return
        try:
            self.storage.record_intermediate(self.job_id, number, int(step), metrics)
        except Exception:
            _log.exception("could not record step %s of trial %d", step, number)
        if self.progress:
            self.progress.trial_result(number, int(step), metrics)

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any) -> None:
        # Only a trial's final result carries one: its adapter, wherever Ray persisted it. (Tune logs
        # and swallows what a callback raises here: the trial would end complete with no adapter and
        # no reason.)
        try:
            self._adapters[trial.trial_id] = checkpoint_location(checkpoint, self.storage_path)
        except Exception as exc:
            _log.exception("trial %d: where its adapter was persisted is unknown", self._number(trial))
            self._lost_adapters[trial.trial_id] = (
                f"its adapter's location {checkpoint.path!r} was lost: {exc}"
            )

    def attach_adapter(self, trial_id: str, ot_trial: Any) -> None:
        """Upload Tune trial ``trial_id``'s adapter (if its final checkpoint brought one) as an Optuna
        artifact of ``ot_trial``; the searcher calls this while the trial is still RUNNING in Optuna.
        A failure is logged: ``promptsweep dashboard`` attaches the adapter later."""
        location = self._adapters.get(trial_id)
        if location is None or self.artifact_dir is None or self.storage is None or self.study is None:
            return
        number = self._numbers.get(trial_id, ot_trial.number)
        try:
            folder = local_adapter_dir(location)
            if not (folder / "adapter_config.json").is_file():
                return
            attach_trial_artifact(
                self.storage,
                self.study._study_id,
                ot_trial._trial_id,
                folder,
                artifact_name(number, self._variants.get(trial_id)),
                self.artifact_dir,
            )
        except Exception as exc:
            _log.warning(
                "trial %d: its adapter was not uploaded as an Optuna artifact (`promptsweep dashboard` "
                "attaches it): %s",
                number,
                exc,
            )

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial.trial_id, dict(trial.last_result or {}), error=None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial.trial_id, dict(trial.last_result or {}), error=_error_text(trial))

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # Only a trial whose process died gets here: training errors end the trial (ERROR_KEY).
        number = self._number(trial)
        why = _error_text(trial)
        lines = [ln for ln in why.splitlines() if ln.strip()]
        self._restarts.setdefault(trial.trial_id, []).append(lines[-1][:300] if lines else why[:300])
        self._record(number, state="running", error=f"retrying after: {why}")

    def finish_unended(self, searcher: Any, reason: str, *, cancelled: bool = False) -> list[int]:
        """End the trials Tune left running when the search stopped as a whole (the job's time
        budget, a cancel): told PRUNED to Optuna by ``searcher`` with their last value, and recorded
        so with ``reason`` (``cancelled``: recorded ``cancelled``, Optuna having no such state).
        Returns their trial numbers."""
        ended = []
        for trial_id in list(self._started):
            result = self._last.get(trial_id, {})
            searcher.on_trial_complete(trial_id, result=result, error=False)
            self._finish(trial_id, result, error=None, reason=reason, cancelled=cancelled)
            ended.append(self._numbers[trial_id])
        return ended

    def _finish(
        self,
        trial_id: str,
        result: dict[str, Any],
        error: str | None,
        reason: str | None = None,
        *,
        cancelled: bool = False,
    ) -> None:
        number = self._numbers[trial_id]
        if error is None and result.get(ERROR_KEY):  # training raised: FAIL, not retried
            error = str(result[ERROR_KEY])
        state = end_state(result, error is not None).name.lower()
        if cancelled and state == "pruned":
            state, error = "cancelled", f"killed at step {result.get(STEP_KEY)}: {reason}"
        metrics = validation_metrics(result, self.task_metrics)
        values = None
        if state == "complete":
            vals = [result.get(m) for m in self.metric_names]
            if any(v is None for v in vals):
                state, error = "fail", f"the trial ended without {self.metric_names}"
            else:
                values = [float(v) for v in vals]
        started = self._started.pop(trial_id, None)
        if error is None and state == "pruned":
            error = f"stopped early at step {result.get(STEP_KEY)}: {reason or 'by the scheduler'}"
        shown = error  # the progress table shows the error itself, not the restart note
        lost = self._lost_adapters.pop(trial_id, None)
        if lost:
            error = f"{error}\n{lost}" if error else lost
        restarts = self._restarts.pop(trial_id, [])
        if restarts:  # kept on the trial, a complete one included: its process died on the way
            note = f"its process was restarted {len(restarts)} time(s), last after: {restarts[-1]}"
            error = f"{error}\n{note}" if error else note
        fields: dict[str, Any] = dict(
            state=state,
            values=values,
            metrics=metrics,
            error=error,
            steps=int(result[STEP_KEY]) if result.get(STEP_KEY) is not None else None,
            finished_at=_now(),
        )
        if result.get(DONE_KEY):
            for key in ("trainable_params", "total_params", "peak_memory_bytes"):
                if result.get(key) is not None:
                    fields[key] = int(result[key])
            for key in ("train_seconds", "epochs"):
                if result.get(key) is not None:
                    fields[key] = float(result[key])
            fields["steps"] = int(result.get("steps") or result[STEP_KEY])
            fields["adapter_dir"] = self._adapters.pop(trial_id, None)
        elif started is not None:
            fields["train_seconds"] = time.time() - started
        self._record(number, **fields)
        if self.progress:
            self.progress.trial_finished(number, state, metrics, shown)


def checkpoint_location(checkpoint: Any, storage_path: str) -> str:
    """Where a persisted Tune checkpoint lies, as readers anywhere can find it: its folder when the
    run's ``storage_path`` is a local path (one machine, or an NFS mount), else the ``storage_path``
    URI extended by the checkpoint's path below it (``s3://bucket/prefix/<run>/<trial>/checkpoint_000000``,
    query parameters kept)."""
    import pyarrow.fs

    if not is_uri(storage_path):
        return str(checkpoint.path)
    base, _, query = storage_path.partition("?")
    _, root = pyarrow.fs.FileSystem.from_uri(storage_path)
    below = PurePosixPath(checkpoint.path).relative_to(PurePosixPath(root))
    return f"{base.rstrip('/')}/{below}" + (f"?{query}" if query else "")


class CancelStopper(Stopper):
    """Acts on what users do to a running job in storage; polls the job's row at most every
    ``poll_s`` seconds from Tune's loop in the driver (foreground runs and workers alike).

    - cancelled (``Storage.cancel_job``): stops the whole search now; its running trials end without
      their final result (recorded ``cancelled``).
    - a ``stop`` or ``pause`` request (``Storage.stop_job`` / ``pause_job``): calls ``on_request``
      once (the searcher then starts no new trial) and lets the running trials finish;
      :attr:`request` tells the driver which.
    - for a worker (``worker_id`` given), the job no longer running under it (re-queued after a
      missed heartbeat, or claimed by another worker, who now owns it): stops the search here.
    """

    def __init__(
        self,
        storage: Any,
        job_id: int,
        poll_s: float = 5.0,
        worker_id: str | None = None,
        on_request: Callable[[str], None] | None = None,
    ) -> None:
        self.storage = storage
        self.job_id = job_id
        self.poll_s = poll_s
        self.worker_id = worker_id
        self.on_request = on_request
        self._last = 0.0
        self.cancelled = False
        self.lost = False
        #: ``"stop"`` / ``"pause"`` once such a request was seen (and handed to ``on_request``).
        self.request: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "storage": None, "on_request": None}

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        if self.cancelled or self.lost or self.storage is None:
            return self.cancelled or self.lost
        now = time.time()
        if now - self._last >= self.poll_s:
            self._last = now
            try:
                job = self.storage.get_job(self.job_id)
            except Exception:  # pragma: no cover - a transient read error must not stop the search
                _log.exception("could not read the status of job %d", self.job_id)
                return False
            self.cancelled = job.status.value == "cancelled"
            self.lost = (
                not self.cancelled
                and self.worker_id is not None
                and (job.status.value != "running" or job.worker_id != self.worker_id)
            )
            if self.cancelled:
                _log.warning("job %d was cancelled: stopping its trials", self.job_id)
            elif self.lost:
                _log.warning(
                    "job %d is no longer held by worker %s (re-queued or claimed by another worker): "
                    "stopping its trials here",
                    self.job_id,
                    self.worker_id,
                )
            elif job.request in ("stop", "pause") and self.request is None:
                self.request = job.request
                _log.warning(
                    "job %d: %s requested; no new trial starts, the running ones finish",
                    self.job_id,
                    job.request,
                )
                if self.on_request is not None:
                    self.on_request(job.request)
        return self.cancelled or self.lost
