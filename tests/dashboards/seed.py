"""Write a small, finished job into a real database: promptsweep records plus its Optuna study.

The entry-point tests (CLI, API, report, export) read jobs that a search would have written. Until
they run a real search (tests/test_demo.py does), they write the same records through the public
:class:`promptsweep.storage.Storage` API and Optuna's own API on the same SQLite file; nothing is
mocked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from promptsweep.storage import Storage

SPEC: dict[str, Any] = {
    "name": "seeded",
    "model": "minilm",
    "task": "classification",
    "dataset": {"source": "fine-foods"},
    "objective": {"metric": "accuracy", "direction": "maximize"},
}

# (number, params, state, accuracy, trainable params, history of (step, accuracy))
TRIALS: list[tuple[int, dict[str, Any], str, float | None, int, list[tuple[int, float]]]] = [
    (
        0,
        {"method": "prompt_tuning", "num_virtual_tokens": 8, "learning_rate": 0.03, "prompt_init": "random"},
        "complete",
        0.72,
        3_840,
        [(50, 0.66), (100, 0.70), (150, 0.72)],
    ),
    (
        1,
        {
            "method": "prefix_tuning",
            "num_virtual_tokens": 16,
            "learning_rate": 0.01,
            "prefix_projection": False,
        },
        "complete",
        0.76,
        73_728,
        [(50, 0.69), (100, 0.74), (150, 0.76)],
    ),
    (
        2,
        {
            "method": "p_tuning",
            "num_virtual_tokens": 4,
            "learning_rate": 0.003,
            "encoder_type": "LSTM",
            "encoder_hidden_size": 64,
        },
        "complete",
        0.70,
        250_000,
        [(50, 0.65), (100, 0.68), (150, 0.70)],
    ),
    (
        3,
        {
            "method": "p_tuning",
            "num_virtual_tokens": 32,
            "learning_rate": 0.0005,
            "encoder_type": "MLP",
            "encoder_hidden_size": 128,
        },
        "pruned",
        0.61,
        90_000,
        [(50, 0.61)],
    ),
    (
        4,
        {
            "method": "prompt_tuning",
            "num_virtual_tokens": 2,
            "learning_rate": 0.2,
            "prompt_init": "sample_vocab",
        },
        "fail",
        None,
        960,
        [],
    ),
]

_DISTRIBUTIONS = {
    "method": CategoricalDistribution(["prompt_tuning", "prefix_tuning", "p_tuning"]),
    "num_virtual_tokens": IntDistribution(1, 64, log=True),
    "learning_rate": FloatDistribution(1e-4, 0.3, log=True),
    "prompt_init": CategoricalDistribution(["random", "sample_vocab", "text"]),
    "prefix_projection": CategoricalDistribution([False, True]),
    "encoder_type": CategoricalDistribution(["LSTM", "MLP"]),
    "encoder_hidden_size": IntDistribution(32, 512, log=True),
}
_OPTUNA_STATE = {
    "complete": optuna.trial.TrialState.COMPLETE,
    "pruned": optuna.trial.TrialState.PRUNED,
    "fail": optuna.trial.TrialState.FAIL,
}


def seed_job(
    storage: Storage,
    *,
    adapter_dirs: dict[int, Path] | None = None,
    name: str = "seeded",
    metric_names: bool = True,
) -> int:
    """Create one finished job with the :data:`TRIALS` above; return its id.

    ``adapter_dirs`` maps trial numbers to adapter directories to record for them. ``metric_names=False``
    creates the study as promptsweep did before it named the objectives (plain ``optuna.create_study``).
    """
    adapter_dirs = adapter_dirs or {}
    job = storage.create_job(name, {**SPEC, "name": name})
    if metric_names:
        storage.create_study(job.id)
    else:
        optuna.create_study(
            storage=storage.optuna_storage(), study_name=job.study_name, directions=job.directions
        )
    ostorage = storage.optuna_storage()
    study = optuna.load_study(study_name=job.study_name, storage=ostorage)
    study_id = ostorage.get_study_id_from_name(job.study_name)
    for number, params, state, value, trainable, history in TRIALS:
        frozen = optuna.trial.create_trial(
            params=params,
            distributions={k: _DISTRIBUTIONS[k] for k in params},
            value=value if state == "complete" else None,
            state=_OPTUNA_STATE[state],
            intermediate_values=dict(history),
        )
        study.add_trial(frozen)
        optuna_id = ostorage.get_trial_id_from_study_id_trial_number(study_id, number)
        storage.record_trial(
            job.id,
            number,
            optuna_trial_id=optuna_id,
            params=params,
            state="running",
        )
        for step, acc in history:
            storage.record_intermediate(job.id, number, step, {"accuracy": acc})
        fields: dict[str, Any] = {
            "state": state,
            "trainable_params": trainable,
            "total_params": 22_713_216 + trainable,
            "train_seconds": 12.5 + number,
            "steps": history[-1][0] if history else 0,
            "epochs": 0.5,
        }
        if value is not None:
            fields["metrics"] = {"accuracy": value, "macro_f1": value - 0.05, "eval_loss": 1 - value}
            if state == "complete":
                fields["value"] = value
        if state == "fail":
            fields["error"] = "TrainingError: loss became nan at step 7"
        if number in adapter_dirs:
            fields["adapter_dir"] = str(adapter_dirs[number])
        storage.record_trial(job.id, number, **fields)
    storage.set_job_status(job.id, "running")
    storage.set_job_status(job.id, "succeeded")
    return job.id


def tiny_peft_adapter(path: Path, *, num_virtual_tokens: int = 4, seed: int = 0) -> Path:
    """Save a real PEFT prompt-tuning adapter of a tiny random BERT (built from a config, no download)."""
    import torch
    from peft import PromptTuningConfig, get_peft_model
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    model = get_peft_model(
        BertModel(config),
        PromptTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=num_virtual_tokens),
    )
    model.save_pretrained(str(path))
    return path
