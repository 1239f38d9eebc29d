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
    # a hub name is not resolved at submit (no network): the trainer checks it when it builds the model
    assert parse_spec(_spec("someone/some-model", "classification")).model == "someone/some-model"
