"""A model the job cannot use is refused at submit, before the job is stored: one SpecError naming the
field (``model``, ``task``, ``space.methods``, ``space.pooling``) and what was found. The model folders
hold only a ``config.json`` - the architecture is read from it, nothing is loaded (no torch)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from promptsweep.exceptions import SpecError
from promptsweep.search import default_spec, parse_spec, submit

CONFIGS = {
    "bert": {"model_type": "bert", "architectures": ["BertModel"]},
    "roberta": {"model_type": "roberta", "architectures": ["RobertaForMaskedLM"]},
    "distilbert": {"model_type": "distilbert", "architectures": ["DistilBertModel"]},
    "deberta-v2": {"model_type": "deberta-v2", "architectures": ["DebertaV2Model"]},
    "t5": {"model_type": "t5", "architectures": ["T5ForConditionalGeneration"], "is_encoder_decoder": True},
    "llama": {"model_type": "llama", "architectures": ["LlamaForCausalLM"]},
    "bart": {
        "model_type": "bart",
        "architectures": ["BartForConditionalGeneration"],
        "is_encoder_decoder": True,
    },
    "electra": {"model_type": "electra", "architectures": ["ElectraForPreTraining"]},
}


def _model(tmp_path: Path, name: str) -> str:
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(CONFIGS[name]))
    return str(folder)


def _spec(model: str, task: str = "classification", **space: Any) -> dict[str, Any]:
    data = default_spec().to_dict()
    data["model"] = model
    data["task"] = task
    if task != "classification":
        data["space"].pop("pooling", None)
        data["objective"]["metric"] = "eval_loss" if task == "generation" else "accuracy"
        if task == "generation":
            data["dataset"]["target_column"] = "target"
    data["space"].update(space)
    return data


REFUSED = [
    # (model, task, space, field, what the message names)
    ("bart", "generation", {}, "model", r"model_type 'bart'.*not a supported architecture.*'t5'"),
    (
        "electra",
        "classification",
        {},
        "model",
        r"model_type 'electra'.*ElectraForPreTraining.*not a supported",
    ),
    ("bert", "generation", {}, "task", r"is an encoder \(model_type 'bert'\).*not 'generation'"),
    ("t5", "classification", {}, "task", r"is an encoder-decoder \(model_type 't5'\).*not 'classification'"),
    ("llama", "classification", {}, "task", r"is a causal LM \(model_type 'llama'\).*not 'classification'"),
    (
        "distilbert",
        "classification",
        {},
        "space.methods",
        r"'prefix_tuning' cannot run on .*'distilbert'.*past_key_values",
    ),
    (
        "deberta-v2",
        "classification",
        {"methods": ["prefix_tuning"]},
        "space.methods",
        r"'prefix_tuning'.*'deberta-v2'",
    ),
    (
        "roberta",
        "classification",
        {"pooling": ["mean", "pooler"]},
        "space.pooling",
        r"'pooler' .*'roberta'.*no pooler",
    ),
    (
        "distilbert",
        "classification",
        {"methods": ["p_tuning"], "pooling": ["pooler"]},
        "space.pooling",
        r"'pooler'.*'distilbert'",
    ),
]


@pytest.mark.parametrize(
    ("name", "task", "space", "field", "message"), REFUSED, ids=[f"{r[0]}-{r[3]}" for r in REFUSED]
)
def test_submit_refuses_what_the_model_cannot_do(tmp_path: Path, name, task, space, field, message) -> None:
    from promptsweep.storage import Storage

    storage = Storage(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with pytest.raises(SpecError, match=rf"{field}: (model|method|pooling) .*{message}") as info:
        submit(_spec(_model(tmp_path, name), task, **space), storage)
    assert str(info.value).count(f"{field}:") == 1  # one error, naming the field
    assert storage.list_jobs() == []  # refused before anything was stored


@pytest.mark.parametrize(
    ("name", "task", "space"),
    [
        ("bert", "classification", {"pooling": ["pooler", "first_token", "mean"]}),
        ("roberta", "classification", {}),  # default space: all methods, mean + first_token
        ("distilbert", "classification", {"methods": ["prompt_tuning", "p_tuning"]}),
        ("deberta-v2", "classification", {"methods": ["p_tuning"], "pooling": ["pooler", "mean"]}),
        ("t5", "verbalizer", {}),
        ("t5", "generation", {}),
        ("llama", "generation", {}),
    ],
)
def test_what_the_model_can_do_is_accepted(tmp_path: Path, name, task, space) -> None:
    spec = parse_spec(_spec(_model(tmp_path, name), task, **space))
    assert spec.model == str(tmp_path / name)


def test_aliases_and_unknown_names_are_checked_where_known() -> None:
    with pytest.raises(SpecError, match=r"task: model 'smollm2-135m' is a causal LM"):
        parse_spec(_spec("smollm2-135m", "classification"))
    # a hub name is not resolved at submit (it needs the hub): the job's run checks it before any data
    # is prepared (test_a_hub_model_is_checked_when_its_job_runs_before_any_trial)
    assert parse_spec(_spec("someone/some-model", "classification")).model == "someone/some-model"


def _hub_model(hub_cache: Path, repo_id: str, config: dict[str, Any]) -> None:
    """``repo_id`` laid out in a Hugging Face hub cache as a download leaves it (only its config)."""
    repo = hub_cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(config))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)


def _job_spec(tmp_path: Path, model: str, task: str = "classification", **space: Any) -> dict[str, Any]:
    data = _spec(model, task, **space)
    data["output_dir"] = str(tmp_path / "runs")
    return data


def test_a_hub_model_is_checked_when_its_job_runs_before_any_trial(tmp_path: Path, monkeypatch) -> None:
    from huggingface_hub import constants

    from promptsweep.search import run_job
    from promptsweep.storage import Storage

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    _hub_model(tmp_path / "hub", "someone/tiny-llama", CONFIGS["llama"])
    storage = Storage(f"sqlite:///{tmp_path / 'db.sqlite'}")
    cases = [
        # (model, the one error the run gives for a classification job)
        ("someone/tiny-llama", r"^task: model 'someone/tiny-llama' is a causal LM"),
        ("someone/absent", r"^model 'someone/absent' is not an alias .*the hub did not give it"),
    ]
    for model, message in cases:
        job_id = submit(_job_spec(tmp_path, model), storage)  # submit lets a hub name in
        with pytest.raises(SpecError, match=message):
            run_job(job_id, storage, progress=False)
        job = storage.get_job(job_id)
        assert job.status.value == "failed" and "SpecError: " in job.error
        assert storage.list_trials(job_id) == []
        assert "data" not in job.summary  # refused before its data was prepared
    # the same hub model with a task it can do passes the check (the run goes on to prepare its data)
    from promptsweep.search._runner import check_job_model

    check_job_model(parse_spec(_job_spec(tmp_path, "someone/tiny-llama", "verbalizer")))


def test_a_stored_jobs_local_model_is_checked_again_when_it_runs(tmp_path: Path) -> None:
    from promptsweep.search import run_job
    from promptsweep.storage import Storage

    storage = Storage(f"sqlite:///{tmp_path / 'db.sqlite'}")
    model = _model(tmp_path, "bert")
    job_id = submit(_job_spec(tmp_path, model), storage)
    # the folder's checkpoint was replaced by one the job cannot use after the job was stored
    (Path(model) / "config.json").write_text(json.dumps(CONFIGS["electra"]))
    with pytest.raises(SpecError, match=r"^model: .*model_type 'electra'"):
        run_job(job_id, storage, progress=False)
    job = storage.get_job(job_id)
    assert job.status.value == "failed" and storage.list_trials(job_id) == []
