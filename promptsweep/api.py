"""promptsweep's REST API (FastAPI): submit search jobs, follow them, rank their trials, fetch adapters.

==========================================  =====================================================
``POST /jobs``                              job spec JSON → 201 ``{"id": ...}``; invalid → 422
``GET /jobs``                               every job
``GET /jobs/{id}``                          one job, with trial counts and its best trial
``GET /jobs/{id}/trials``                   every trial of the job
``GET /jobs/{id}/leaderboard``              ranked trials (``?per_method=true`` / ``?pareto=true``)
``POST /jobs/{id}/cancel``                  end a job now (running trials killed, recorded cancelled)
``POST /jobs/{id}/stop``                    no new trial; running ones finish; then select and export
``POST /jobs/{id}/pause``                   pause (running trials finish); ``/resume`` queues it again
``POST /jobs/{id}/resume``                  queue a paused or interrupted job again
``POST /jobs/{id}/extend``                  ``{"trials": N, "time_s": S}`` more budget, same study
``POST /jobs/{id}/retry``                   queue a failed or interrupted job again
``GET /jobs/{id}/adapter``                  a zip of the best adapter (``?trial=N`` for another)
``GET /openapi.json``, ``/docs``            the OpenAPI schema and its browsable page
==========================================  =====================================================

Jobs posted here are queued; ``promptsweep worker`` processes run them. The server binds to
127.0.0.1 by default; :func:`serve` refuses any other address unless a bearer token is set, and with a
token every endpoint but the schema pages needs ``Authorization: Bearer <token>``.

``import promptsweep.api`` loads FastAPI only: the search layer is imported by :func:`create_app`.
"""

import dataclasses
import ipaddress
import re
import secrets
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, model_validator

import promptsweep
from promptsweep._logging import get_logger
from promptsweep.exceptions import (
    ExportError,
    JobNotFoundError,
    JobStateError,
    PromptsweepError,
    SchemaVersionError,
    SpecError,
    StorageError,
    TrialNotFoundError,
)

if TYPE_CHECKING:
    from promptsweep.storage import Storage

_log = get_logger(__name__)

TOKEN_ENV = "PROMPTSWEEP_API_TOKEN"
_FIELD_PREFIX = re.compile(r"^([A-Za-z_][\w.\[\]]*): ")


class Extension(BaseModel):
    """Body of ``POST /jobs/{id}/extend``: at least one of the two."""

    trials: int | None = Field(
        None, gt=0, strict=True, description="Add this many trials to the job's budget (a whole number)."
    )
    time_s: float | None = Field(
        None,
        ge=1,
        allow_inf_nan=False,
        description="Add this many wall-clock seconds of new trials (at least 1 s).",
    )

    @model_validator(mode="after")
    def _one_given(self) -> "Extension":
        if self.trials is None and self.time_s is None:
            raise ValueError("give trials and/or time_s")
        return self


class JobCreated(BaseModel):
    """Answer to ``POST /jobs``."""

    id: int = Field(description="The new job's id.")
    status: str = Field(description="Always `queued`: a `promptsweep worker` runs it.")
    study_name: str = Field(description="The job's Optuna study (see `promptsweep dashboard`).")


class Trial(BaseModel):
    """One trial (a prompt method and its hyperparameters, trained on the frozen PLM)."""

    job_id: int
    number: int
    rank: int | None = Field(None, description="Position on the leaderboard (leaderboard answers only).")
    method: str | None
    variant: str | None
    params: dict[str, Any]
    state: str
    value: float | None = Field(description="The objective value (validation split).")
    values: list[float | None] | None
    metrics: dict[str, Any]
    test_metrics: dict[str, Any] | None
    trainable_params: int | None
    total_params: int | None
    train_seconds: float | None = Field(description="Training wall-clock time, seconds.")
    peak_memory_bytes: int | None
    steps: int | None
    epochs: float | None
    error: str | None
    optuna_trial_id: int | None
    ray_trial_id: str | None
    node_id: str | None = Field(None, description="The Ray node that ran the trial (its last attempt).")
    node_host: str | None = Field(None, description="That node's host name and IP address.")
    started_at: datetime | None
    finished_at: datetime | None


class Job(BaseModel):
    """A search job as stored (times in UTC, ISO 8601)."""

    id: int
    name: str
    status: str
    objective_metric: str | None
    direction: str
    secondary_objective: str | None
    model: str | None
    dataset: str | None
    task: str | None
    study_name: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None = Field(
        None, description="Why the job ended as it did: a failed job's error, `stopped by the user ...`."
    )
    attempts: int
    spec: dict[str, Any]
    summary: dict[str, Any] = Field(
        default_factory=dict,
        description="What the search decided: its budget `plan` (configs, rungs, steps, timed costs), "
        "`floors` (validation scores of the cheap baselines) with `floor_outcomes` (each floor right `1` or "
        "wrong `0` on every ranked validation review, for paired tests; like `selected_outcomes`, only on "
        "GET /jobs/{id}), `finalists` (the top trials, "
        "re-scored on the whole validation split when the ranking used a subsample of it and there is more "
        "than one; "
        "`rescored` and `kept` say which; with standard errors), `selected_trial`, and `separation` / "
        "`floor_warning` / `floor_separation` / `kept_state` notes.",
    )
    history: list[dict[str, Any]] = Field(
        default_factory=list,
        description="What happened to the job and when, oldest first: `at` (UTC), `event` (`submitted`, "
        "`claimed`, `running`, `interrupted`, `requeued`, `cancelled`, `retried`, `stop requested`, "
        "`pause requested`, `paused`, `resumed`, `extended`, `succeeded`, `failed`), `detail`.",
    )
    request: str | None = Field(
        None, description="A pending `stop` or `pause` of the running job (acted on within seconds)."
    )
    extra_trials: int = Field(0, description="Trials `extend` added to the budget, in all.")
    extra_time_s: float = Field(0.0, description="Seconds `extend` added to the budget, in all.")
    spec_hash: str = Field("", description="SHA-256 of the stored spec in canonical JSON (sorted keys).")
    trial_counts: dict[str, int] | None = Field(
        None, description="Trials per state (only on GET /jobs/{id})."
    )
    best_trial: Trial | None = Field(None, description="The best finished trial (only on GET /jobs/{id}).")


def _plain(record: Any, **extra: Any) -> dict[str, Any]:
    data = {}
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        data[f.name] = value.value if isinstance(value, Enum) else value
    data.update(extra)
    return data


def _trial(record: Any, rank: int | None = None) -> Trial:
    return Trial.model_validate(_plain(record, rank=rank))


def is_loopback(host: str) -> bool:
    """True if ``host`` names only this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _error_response(status_code: int, exc: Exception) -> JSONResponse:
    return JSONResponse(status_code=status_code, content={"detail": str(exc)})


def create_app(
    db_url: str | None = None, *, token: str | None = None, storage: "Storage | None" = None
) -> FastAPI:
    """Build the FastAPI application on one database.

    Args:
        db_url: the database URL (default :func:`promptsweep.paths.default_db_url`); ignored when
            ``storage`` is given.
        token: when set, every endpoint except ``/openapi.json`` and ``/docs`` requires
            ``Authorization: Bearer <token>`` (401 otherwise).
        storage: an open :class:`promptsweep.storage.Storage` to use instead of ``db_url``.

    Raises:
        StorageError, SchemaVersionError: the database cannot be opened or is too old.
    """
    from promptsweep.export import export_zip
    from promptsweep.search import PER_REVIEW_KEYS, JobSpec, submit
    from promptsweep.storage import Storage

    store = storage if storage is not None else Storage(db_url)
    bearer = HTTPBearer(auto_error=False, description="The token given to `promptsweep serve --token`.")

    def require_token(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        if not token:  # no token (or an empty one): loopback only, see serve()
            return
        if credentials is None or not secrets.compare_digest(
            credentials.credentials.encode(), token.encode()
        ):
            raise HTTPException(
                status_code=status.HTTP_401_UNAUTHORIZED,
                detail="missing or wrong bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )

    app = FastAPI(
        title="promptsweep",
        version=promptsweep.__version__,
        description="Search prompt methods (prompt tuning, prefix tuning, P-tuning) on a frozen PLM.",
    )
    app.state.storage = store
    router = APIRouter(dependencies=[Depends(require_token)])

    @app.exception_handler(JobNotFoundError)
    @app.exception_handler(TrialNotFoundError)
    async def _not_found(request: Request, exc: PromptsweepError) -> JSONResponse:
        # the storage's message names its database, which is the server's business, not the client's
        detail = str(exc).replace(f" in {store.display_url!r}", "")
        return JSONResponse(status_code=status.HTTP_404_NOT_FOUND, content={"detail": detail})

    @app.exception_handler(ExportError)
    @app.exception_handler(JobStateError)
    async def _conflict(request: Request, exc: PromptsweepError) -> JSONResponse:
        return _error_response(status.HTTP_409_CONFLICT, exc)

    @app.exception_handler(SpecError)
    async def _bad_spec(request: Request, exc: SpecError) -> JSONResponse:
        # SpecError messages start with the dotted field path ("resources.gpus_per_trial: ...").
        field = getattr(exc, "field", None)
        if field is None:
            match = _FIELD_PREFIX.match(str(exc).removeprefix("invalid job spec (dict): "))
            field = match.group(1) if match else None
        loc = ["body", *str(field).split(".")] if field else ["body"]
        return JSONResponse(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            content={"detail": [{"loc": loc, "msg": str(exc), "type": "spec_error"}]},
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # A cross-field check in JobSpec names its own field (``exc.field``, a dotted path): append it
        # to the location, so every 422 says which field is at fault.
        detail = []
        for err in exc.errors():
            err = dict(err)
            cause = (err.get("ctx") or {}).get("error")
            field = getattr(cause, "field", None)
            if field:
                err["loc"] = [*err["loc"], *str(field).split(".")]
                err["msg"] = str(getattr(cause, "message", cause))
            detail.append(err)
        return JSONResponse(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, content={"detail": jsonable_encoder(detail)}
        )

    @app.exception_handler(SchemaVersionError)
    @app.exception_handler(StorageError)
    async def _unavailable(request: Request, exc: PromptsweepError) -> JSONResponse:
        return _error_response(status.HTTP_503_SERVICE_UNAVAILABLE, exc)

    @app.exception_handler(PromptsweepError)
    async def _bad_request(request: Request, exc: PromptsweepError) -> JSONResponse:
        return _error_response(status.HTTP_400_BAD_REQUEST, exc)

    def _job(job_id: int, *, detail: bool = False) -> Job:
        record = store.get_job(job_id)
        extra: dict[str, Any] = {}
        if detail:
            from promptsweep.dashboards import state_counts

            extra["trial_counts"] = state_counts(store.list_trials(job_id))
            best = store.leaderboard(job_id)[:1]
            extra["best_trial"] = _trial(best[0], rank=1) if best else None
        return Job.model_validate(_plain(record, **extra))

    @router.post("/jobs", status_code=status.HTTP_201_CREATED, response_model=JobCreated)
    def post_job(spec: JobSpec) -> JobCreated:
        """Validate a job spec and queue the job (422 names the invalid fields)."""
        job_id = submit(spec, store)
        job = store.get_job(job_id)
        return JobCreated(id=job.id, status=str(job.status.value), study_name=job.study_name)

    @router.get("/jobs", response_model=list[Job])
    def list_jobs() -> list[Job]:
        """Every job, newest first as the storage lists them (their summaries without the per-review
        outcomes, which GET /jobs/{id} gives)."""
        return [
            Job.model_validate(
                _plain(j, summary={k: v for k, v in (j.summary or {}).items() if k not in PER_REVIEW_KEYS})
            )
            for j in store.list_jobs()
        ]

    @router.get("/jobs/{job_id}", response_model=Job)
    def get_job(job_id: int) -> Job:
        """One job with its trial counts per state and its best trial."""
        return _job(job_id, detail=True)

    @router.get("/jobs/{job_id}/trials", response_model=list[Trial])
    def list_trials(job_id: int) -> list[Trial]:
        """Every trial of the job, by trial number."""
        store.get_job(job_id)
        return [_trial(t) for t in store.list_trials(job_id)]

    @router.get("/jobs/{job_id}/leaderboard", response_model=list[Trial])
    def leaderboard(
        job_id: int,
        per_method: Annotated[bool, Query(description="Only the best trial of each method variant.")] = False,
        pareto: Annotated[
            bool, Query(description="Only the Pareto front (metric vs trainable params).")
        ] = False,
    ) -> list[Trial]:
        """The job's finished trials ranked by its objective (validation split)."""
        store.get_job(job_id)
        if pareto:
            trials = store.pareto_front(job_id)
        elif per_method:
            trials = store.best_per_method(job_id)
        else:
            trials = store.leaderboard(job_id)
        return [_trial(t, rank=i + 1) for i, t in enumerate(trials)]

    @router.post(
        "/jobs/{job_id}/cancel",
        response_model=Job,
        responses={409: {"description": "The job has finished (the answer names its status)."}},
    )
    def cancel(job_id: int) -> Job:
        """End a queued, running, paused or interrupted job now. A running job's worker stops it
        within seconds; its running trials are killed and recorded `cancelled`."""
        store.cancel_job(job_id)
        return _job(job_id)

    @router.post(
        "/jobs/{job_id}/stop",
        response_model=Job,
        responses={409: {"description": "The job has finished or never started (names its status)."}},
    )
    def stop(job_id: int) -> Job:
        """Start no new trial; the running ones finish and count; then select and export as usual
        (status `succeeded`, `error` "stopped by the user ..."). A paused or interrupted job is queued
        for a worker to select from its finished trials."""
        store.stop_job(job_id)
        return _job(job_id)

    @router.post(
        "/jobs/{job_id}/pause",
        response_model=Job,
        responses={409: {"description": "The job is neither queued nor running (names its status)."}},
    )
    def pause(job_id: int) -> Job:
        """Pause a queued job now, or a running one once its running trials finish (no new trial
        starts; `request` is `pause` until then). The study is kept for `resume`."""
        store.pause_job(job_id)
        return _job(job_id)

    @router.post(
        "/jobs/{job_id}/resume",
        response_model=Job,
        responses={409: {"description": "The job is not paused or interrupted (names its status)."}},
    )
    def resume(job_id: int) -> Job:
        """Queue a paused or interrupted job again (a worker continues the same study), or withdraw a
        running job's pending pause."""
        store.resume_job(job_id)
        return _job(job_id)

    @router.post(
        "/jobs/{job_id}/extend",
        response_model=Job,
        responses={
            409: {"description": "The job is failed or cancelled, or being stopped (names its status)."},
            422: {"description": "Neither `trials` nor `time_s`, or a non-positive one (names it)."},
        },
    )
    def extend(job_id: int, body: Extension) -> Job:
        """Add trials and/or seconds to a job's budget; its study is continued, never restarted. A
        succeeded (or stopped) job is queued again: the next worker runs exactly that many more
        trials, then selects again."""
        store.extend_job(job_id, trials=body.trials, time_s=body.time_s)
        return _job(job_id)

    @router.post(
        "/jobs/{job_id}/retry",
        response_model=Job,
        responses={409: {"description": "The job is neither failed nor interrupted (names its status)."}},
    )
    def retry(job_id: int) -> Job:
        """Put a failed or interrupted job back in the queue; the next worker resumes it (finished
        trials kept, unfinished ones re-run)."""
        store.retry_job(job_id)
        return _job(job_id)

    @router.get(
        "/jobs/{job_id}/adapter",
        response_class=Response,
        responses={200: {"content": {"application/zip": {}}, "description": "The adapter export, zipped."}},
    )
    def adapter(
        job_id: int,
        trial: Annotated[int | None, Query(description="Trial number (default: the best).")] = None,
    ) -> Response:
        """A zip of the best trial's adapter (PEFT files, encoder state, model card, metrics.json)."""
        name, data = export_zip(store, job_id, trial_number=trial)
        return Response(
            content=data,
            media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    app.include_router(router)
    return app


def serve(
    db_url: str | None = None, *, host: str = "127.0.0.1", port: int = 8000, token: str | None = None
) -> None:
    """Run the API with uvicorn until interrupted.

    Args:
        db_url: the database URL (default :func:`promptsweep.paths.default_db_url`).
        host: the interface to bind; 127.0.0.1 by default.
        port: the TCP port.
        token: the bearer token; required whenever ``host`` is not a loopback address.

    Raises:
        PromptsweepError: ``host`` is not loopback and no token is given (nothing is started).
    """
    if not is_loopback(host) and not token:
        raise PromptsweepError(
            f"refusing to serve on {host}: binding beyond this machine needs a bearer token "
            f"(--token or {TOKEN_ENV})"
        )
    import uvicorn

    app = create_app(db_url, token=token)
    _log.info("serving the promptsweep API on http://%s:%d", host, port)
    uvicorn.run(app, host=host, port=port, log_level="info")
