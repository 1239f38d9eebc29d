"""Export a trial's adapter: the job's best trial (or one chosen trial) → a self-describing directory.

The directory holds:

- ``adapter_config.json`` + ``adapter_model.safetensors`` — the PEFT adapter, loadable with plain
  ``peft.PeftModel.from_pretrained(base_model, DIR)``;
- every other file the trial saved beside them (the full prompt-encoder / reparameterization state
  needed to resume training: PEFT itself stores only the encoder's *output* embeddings, see
  peft issues #1247 and #1607);
- ``README.md`` — a model card (base model, method and hyperparameters, metrics, trainable parameters,
  job and trial ids, how to load it);
- ``metrics.json`` — the same facts, machine-readable;
- ``.promptsweep-export`` — a marker, so ``force=True`` only ever replaces an earlier export.

Nothing is written outside the directory given: the export is assembled in a temporary sibling
directory, every destination is checked to lie inside it, symbolic links in the source are refused,
and the finished directory is moved into place. Only files are read here (no torch).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import promptsweep
from promptsweep._logging import get_logger
from promptsweep.exceptions import ExportError

if TYPE_CHECKING:
    from promptsweep.storage import JobRecord, Storage, TrialRecord

_log = get_logger(__name__)

MARKER = ".promptsweep-export"
PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_adapter` wrote.

    Attributes:
        out_dir: the export directory (absolute).
        job_id: the job's id.
        trial_number: the exported trial's number within the job.
        method: the trial's prompt method (``prompt_tuning``, ``prefix_tuning``, ``p_tuning``).
        files: every file written, absolute paths, sorted.
        metrics: the content of ``metrics.json``.
    """

    out_dir: Path
    job_id: int
    trial_number: int
    method: str
    files: list[Path] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)


def select_trial(storage: Storage, job_id: int, trial_number: int | None = None) -> TrialRecord:
    """Return the trial to export: ``trial_number``, else the trial the search selected (the job's
    summary's ``selected_trial``), else the leaderboard's first.

    Raises:
        JobNotFoundError: no job ``job_id``.
        TrialNotFoundError: no trial ``trial_number`` in the job.
        ExportError: the job has no finished trial yet, or the trial saved no adapter.
    """
    job = storage.get_job(job_id)
    selected = (getattr(job, "summary", None) or {}).get("selected_trial")
    if trial_number is not None:
        trial = storage.get_trial(job_id, trial_number)
    elif selected is not None:
        # The search's selection (the best of its finalists on the whole validation split, when re-scored).
        trial = storage.get_trial(job_id, int(selected))
    else:
        ranked = storage.leaderboard(job_id)
        if not ranked:
            raise ExportError(f"job {job_id} has no finished trial to export yet")
        trial = ranked[0]
    adapter_dir = getattr(trial, "adapter_dir", None)
    if not adapter_dir:
        raise ExportError(f"job {job_id} trial {trial.number} saved no adapter (state {_state(trial)})")
    from promptsweep.methods import local_adapter_dir

    path = local_adapter_dir(adapter_dir)  # a storage URI (a bucket) is fetched into the cache first
    missing = [name for name in PEFT_FILES if not (path / name).is_file()]
    if missing:
        raise ExportError(
            f"job {job_id} trial {trial.number}: adapter directory {path} lacks {', '.join(missing)}"
        )
    return trial


def _state(trial: Any) -> str:
    return str(getattr(trial.state, "value", trial.state))


def _inside(root: Path, dest: Path) -> Path:
    """Return ``dest`` resolved, or raise :class:`ExportError` if it is not inside ``root``."""
    resolved = dest.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise ExportError(f"refusing to write {dest}: it lies outside the export directory {root}")
    return resolved


def _copy_tree(src: Path, dst_root: Path) -> list[Path]:
    written = []
    for dirpath, dirnames, filenames in os.walk(src, followlinks=False):
        here = Path(dirpath)
        for name in dirnames + filenames:
            if (here / name).is_symlink():
                raise ExportError(f"refusing to export {here / name}: symbolic links are not copied")
        for name in sorted(filenames):
            rel = (here / name).relative_to(src)
            dest = _inside(dst_root, dst_root / rel)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(here / name, dest)
            written.append(dest)
    return written


def _metrics_doc(job: JobRecord, trial: TrialRecord, adapter_config: dict[str, Any]) -> dict[str, Any]:
    from promptsweep.dashboards import describe_method, job_metric

    metric, direction = job_metric(job)
    spec = dict(job.spec or {})
    return {
        "promptsweep_version": promptsweep.__version__,
        "job_id": job.id,
        "job_name": job.name,
        "study_name": getattr(job, "study_name", None),
        "trial_number": trial.number,
        "state": _state(trial),
        "method": trial.method,
        "method_variant": describe_method(trial.params, trial.method),
        "params": dict(trial.params or {}),
        "base_model": spec.get("model") or adapter_config.get("base_model_name_or_path"),
        "base_model_name_or_path": adapter_config.get("base_model_name_or_path"),
        "peft_type": adapter_config.get("peft_type"),
        "peft_task_type": adapter_config.get("task_type"),
        "task": spec.get("task"),
        "metric": metric,
        "direction": direction,
        "validation_metrics": dict(trial.metrics or {}),
        "test_metrics": dict(getattr(trial, "test_metrics", None) or {}),
        "trainable_params": getattr(trial, "trainable_params", None),
        "total_params": getattr(trial, "total_params", None),
        "train_seconds": getattr(trial, "train_seconds", None),
        "steps": getattr(trial, "steps", None),
        "epochs": getattr(trial, "epochs", None),
        "peak_memory_bytes": getattr(trial, "peak_memory_bytes", None),
        "dataset": spec.get("dataset") or spec.get("data"),
        "max_length": (spec.get("dataset") or {}).get("max_length"),
        "seed": spec.get("seed"),
    }


def _metrics_table(metrics: dict[str, Any]) -> str:
    if not metrics:
        return "(none recorded)\n"
    lines = ["| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()]
    return "\n".join(lines) + "\n"


def _count(n: int | None) -> str:
    return "unknown" if n is None else f"{n:,}"


#: The job spec's dataset fields that make up the trial's ``promptsweep.methods.DataSpec`` (the same
#: mapping as ``promptsweep.search.data_spec``): with all of them, ``prepare_inputs`` rebuilds the very
#: splits the trial was evaluated on.
_DATASPEC_KEYS = (
    "source",
    "text_column",
    "text_pair_column",
    "label_column",
    "target_column",
    "label_words",
    "splits",
    "validation_fraction",
    "max_train_examples",
    "max_eval_examples",
)


def _dataspec_kwargs(doc: dict[str, Any]) -> str:
    data = dict(doc.get("dataset") or {})
    if isinstance(data.get("splits"), dict):
        data["splits"] = {k: v for k, v in data["splits"].items() if v is not None}
    if doc.get("seed") is not None:
        data["seed"] = doc["seed"]
    return ", ".join(f"{k}={data[k]!r}" for k in (*_DATASPEC_KEYS, "seed") if data.get(k) is not None)


def _loading_section(doc: dict[str, Any]) -> str:
    """How to load the adapter: plain PEFT, with promptsweep's pooling where the trial replaced the pooler."""
    base = doc.get("base_model_name_or_path") or "<base model directory>"
    task = doc.get("task") or "classification"
    pooling = doc["params"].get("pooling")
    if task == "classification" and pooling in ("mean", "first_token"):
        kwargs = _dataspec_kwargs(doc)
        return f"""The trial classified from **{pooling}** pooling of the encoder's states, which promptsweep
installs in place of BERT's pooler; a base loaded by `transformers` alone keeps its own pooler and
scores differently. Rebuild the frozen base as the trial did; the adapter itself is then loaded with
plain `PeftModel.from_pretrained(base, DIR)`:

```python
from promptsweep.methods import DataSpec, TaskType, load_adapter_model, prepare_inputs

inputs = prepare_inputs({doc["base_model"]!r}, DataSpec({kwargs}),
                        TaskType.CLASSIFICATION, max_length={doc.get("max_length") or 128})
model = load_adapter_model(inputs, "path/to/this/directory")  # a peft.PeftModel, in eval mode
```
"""
    auto = "AutoModelForSequenceClassification" if task == "classification" else "AutoModelForCausalLM"
    if doc.get("peft_task_type") == "SEQ_2_SEQ_LM":  # an encoder-decoder (T5)
        auto = "AutoModelForSeq2SeqLM"
    extra = f", num_labels={len(doc.get('label_names') or []) or 2}" if task == "classification" else ""
    return f"""```python
from peft import PeftModel
from transformers import {auto}

base = {auto}.from_pretrained("{base}"{extra})
model = PeftModel.from_pretrained(base, "path/to/this/directory")
```
"""


def model_card(doc: dict[str, Any]) -> str:
    """Render the export's ``README.md`` model card from the ``metrics.json`` document."""
    params = "\n".join(f"| `{k}` | `{v}` |" for k, v in sorted(doc["params"].items()))
    trainable = doc.get("trainable_params")
    total = doc.get("total_params")
    share = f" ({100 * trainable / total:.3f} % of {total:,})" if trainable and total else ""
    seconds = "?" if doc.get("train_seconds") is None else f"{doc['train_seconds']:.1f}"
    kept = ""
    if doc.get("kept_step") is not None:
        kept = (
            f" The adapter holds the state validated at step {doc['kept_step']}: the last validation "
            "fell clearly below it."
        )
    return f"""---
library_name: peft
tags: [promptsweep, {doc["peft_type"] or doc["method"]}]
---

# promptsweep adapter: job {doc["job_id"]} trial {doc["trial_number"]} — {doc["method_variant"]}

A **{doc["method"]}** adapter (PEFT `{doc["peft_type"]}`) for the frozen pretrained model
`{doc["base_model"]}`, selected by promptsweep's search (job {doc["job_id"]} "{doc["job_name"]}",
Optuna study `{doc["study_name"]}`, trial {doc["trial_number"]}, state {doc["state"]}).

- Task: {doc.get("task")}; selection metric: `{doc["metric"]}` ({doc["direction"]}) on the validation split.
- Trainable parameters: {_count(trainable)}{share}; the base model stays frozen.
- Training: {doc.get("steps")} steps, {doc.get("epochs")} epochs, {seconds} s.{kept}

## Hyperparameters

| parameter | value |
|---|---|
{params}

## Metrics

Validation split (used to select this trial):

{_metrics_table(doc["validation_metrics"])}
Test split (measured once, for the selected trial only):

{_metrics_table(doc["test_metrics"])}
## Loading it

{_loading_section(doc)}
`metrics.json` holds the facts above, machine-readable. The files besides `adapter_config.json` and
`adapter_model.safetensors` keep the full prompt-encoder / reparameterization state (PEFT saves only the
encoder's output embeddings), for resuming training.
"""


def _apply_umask(root: Path) -> None:
    """Give the export the modes a plain ``mkdir``/``open`` would (``mkdtemp`` makes it owner-only,
    and copied adapter files keep the trial's modes)."""
    mask = os.umask(0)
    os.umask(mask)
    root.chmod(0o777 & ~mask)
    for path in root.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def export_adapter(
    storage: Storage,
    job_id: int,
    out_dir: str | os.PathLike[str],
    *,
    trial_number: int | None = None,
    force: bool = False,
) -> ExportResult:
    """Export the best trial of ``job_id`` (or ``trial_number``) into ``out_dir``.

    Args:
        storage: the database holding the job.
        job_id: the job's id.
        out_dir: the directory to create. It must not exist or be empty, unless ``force`` is set and it
            holds an earlier promptsweep export (which is then replaced).
        trial_number: export this trial instead of the best one.
        force: replace an earlier export in ``out_dir``.

    Returns:
        An :class:`ExportResult` listing the files written.

    Raises:
        JobNotFoundError, TrialNotFoundError: unknown job or trial.
        ExportError: ``out_dir`` exists (without ``force``), is not an earlier export, is a file, a
            destination would fall outside ``out_dir``, ``out_dir`` overlaps the trial's adapter
            directory, or the trial saved no adapter.
    """
    out = Path(out_dir).expanduser().absolute()
    job = storage.get_job(job_id)
    trial = select_trial(storage, job_id, trial_number)
    from promptsweep.methods import local_adapter_dir

    adapter_dir = local_adapter_dir(trial.adapter_dir)
    source = adapter_dir.resolve()
    if out.resolve().is_relative_to(source) or source.is_relative_to(out.resolve()):
        raise ExportError(f"cannot export into {out}: it overlaps the trial's adapter directory {source}")
    if out.is_symlink():
        raise ExportError(f"refusing to export into {out}: it is a symbolic link")
    if out.exists():
        if not out.is_dir():
            raise ExportError(f"cannot export into {out}: it exists and is not a directory")
        if any(out.iterdir()):
            if not force:
                raise ExportError(f"{out} exists and is not empty; pass --force to replace an earlier export")
            if not (out / MARKER).is_file():
                raise ExportError(
                    f"{out} is not a promptsweep export (no {MARKER}); not replacing it, even with --force"
                )
    out.parent.mkdir(parents=True, exist_ok=True)

    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _copy_tree(adapter_dir, staging)
        adapter_config = json.loads((staging / "adapter_config.json").read_text())
        doc = _metrics_doc(job, trial, adapter_config)
        meta_path = staging / "promptsweep_adapter.json"  # written by promptsweep.methods beside the adapter
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            doc["label_names"] = meta.get("label_names")
            doc["kept_step"] = meta.get("kept_step")
        for name, text in (
            ("metrics.json", json.dumps(doc, indent=2, default=str) + "\n"),
            ("README.md", model_card(doc)),
            (MARKER, json.dumps({"job_id": job_id, "trial_number": trial.number}) + "\n"),
        ):
            _inside(staging, staging / name).write_text(text)
        _apply_umask(staging)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    files = sorted(p for p in out.rglob("*") if p.is_file())
    _log.info("exported job %d trial %d to %s", job_id, trial.number, out)
    return ExportResult(
        out_dir=out,
        job_id=job_id,
        trial_number=trial.number,
        method=str(trial.method),
        files=files,
        metrics=doc,
    )


def export_zip(storage: Storage, job_id: int, *, trial_number: int | None = None) -> tuple[str, bytes]:
    """Export like :func:`export_adapter` and return ``(file name, zip bytes)`` (for the REST API).

    The archive holds the export directory's files at its top level.

    Raises:
        The same errors as :func:`export_adapter`.
    """
    with tempfile.TemporaryDirectory(prefix="promptsweep-export-") as tmp:
        result = export_adapter(storage, job_id, Path(tmp) / "adapter", trial_number=trial_number)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for path in result.files:
                zf.write(path, arcname=path.relative_to(result.out_dir).as_posix())
    name = f"promptsweep-job{job_id}-trial{result.trial_number}-adapter.zip"
    return name, buffer.getvalue()


__all__ = ["ExportResult", "export_adapter", "export_zip", "model_card", "select_trial"]
