"""Floors (``score_floors``): the majority class, the trained head alone and the zero-shot verbalizer,
on tiny models, checked against values computed by hand."""

from __future__ import annotations

import dataclasses
import math
import random
import shutil
from pathlib import Path

import pytest

from promptsweep.exceptions import DataError
from promptsweep.methods import DataSpec, PreparedInputs, TaskType, prepare_inputs, score_floors

#: Words that decide the label, and shared filler: the label is linearly readable from the tokens.
GOOD = ("apple", "sun", "happy", "gold", "music")
BAD = ("stone", "rain", "angry", "iron", "noise")
FILLER = ("the", "day", "house", "of", "and", "water")
#: (good, bad) examples per split: train majority "good" (24/40); validation majority "bad".
SIZES = {"train": (24, 16), "validation": (8, 12), "test": (3, 7)}


def _text(rng: random.Random, words: tuple[str, ...]) -> str:
    tokens = rng.choices(words, k=3) + rng.choices(FILLER, k=3)
    rng.shuffle(tokens)
    return " ".join(tokens)


@pytest.fixture(scope="module")
def keyword_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of train/validation/test csv files: label ``good``/``bad`` set by keyword."""
    root = tmp_path_factory.mktemp("floor-data")
    rng = random.Random(0)
    for role, (n_good, n_bad) in SIZES.items():
        rows = [(_text(rng, GOOD), "good") for _ in range(n_good)] + [
            (_text(rng, BAD), "bad") for _ in range(n_bad)
        ]
        rng.shuffle(rows)
        (root / f"{role}.csv").write_text("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in rows))
    return root


@pytest.fixture(scope="module")
def keyword_inputs(keyword_data: Path, tiny_models: dict[str, Path], cache_dir: Path) -> PreparedInputs:
    spec = DataSpec(
        source=str(keyword_data), splits={"train": "train", "validation": "validation", "test": "test"}
    )
    return prepare_inputs(
        str(tiny_models["encoder"]), spec, "classification", max_length=16, cache_dir=cache_dir
    )


def _without_seconds(floors: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    return {name: {k: v for k, v in m.items() if k != "seconds"} for name, m in floors.items()}


def test_majority_equals_hand_computed(keyword_inputs: PreparedInputs) -> None:
    floors = score_floors(keyword_inputs, floors=["majority"])
    assert set(floors) == {"majority"}
    got = floors["majority"]
    # validation: 8 good, 12 bad; the train majority is "good" (24 of 40), so every example is "good".
    assert got["accuracy"] == pytest.approx(8 / 20)
    f1_good = 2 * (8 / 20) * 1.0 / (8 / 20 + 1.0)
    assert got["macro_f1"] == pytest.approx((f1_good + 0.0) / 2)
    # eval_loss: cross-entropy of the train class frequencies (good 0.6, bad 0.4)
    assert got["eval_loss"] == pytest.approx(-(8 * math.log(24 / 40) + 12 * math.log(16 / 40)) / 20)
    assert got["accuracy"] == pytest.approx(keyword_inputs.majority_accuracy["validation"])
    assert got["seconds"] >= 0
    # on the test split (asked explicitly): 3 good of 10
    assert score_floors(keyword_inputs, split="test", floors=["majority"])["majority"][
        "accuracy"
    ] == pytest.approx(0.3)


def test_head_only_beats_majority_and_trains_only_the_head(
    keyword_inputs: PreparedInputs, monkeypatch
) -> None:
    import torch

    from promptsweep.methods import _floors
    from promptsweep.methods._modeling import build_base_model

    built = []

    def spy(*args, **kwargs):
        built.append(build_base_model(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(_floors, "build_base_model", spy)
    floors = score_floors(keyword_inputs, seed=0)
    assert set(floors) == {"majority", "head_only"}
    assert floors["head_only"]["accuracy"] >= 0.9 > floors["majority"]["accuracy"] + 0.3
    assert floors["head_only"]["eval_loss"] < floors["majority"]["eval_loss"]
    per_class = {"f1[bad]", "f1[good]", "recall[bad]", "recall[good]"}
    metrics = {"accuracy", "macro_f1", "eval_loss", "seconds", *per_class}
    assert set(floors["head_only"]) == set(floors["majority"]) == metrics
    # the majority floor is constant: its class recalled entirely, the other not at all
    assert sorted(v for k, v in floors["majority"].items() if k.startswith("recall[")) == [0.0, 1.0]

    (trained,) = built
    fresh = build_base_model(*_floors_build_args(keyword_inputs), seed=0)
    before, after = fresh.state_dict(), trained.state_dict()
    head = {k for k in after if k.startswith("classifier.")}
    assert head == {"classifier.weight", "classifier.bias"}
    assert all(torch.equal(before[k], after[k]) for k in after if k not in head)  # encoder untouched
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])  # the head trained


def _floors_build_args(inputs: PreparedInputs) -> tuple:
    from promptsweep.methods import DEFAULT_POOLING
    from promptsweep.methods._floors import _no_prompt_config

    return inputs, _no_prompt_config(DEFAULT_POOLING)


def test_floors_give_each_review_s_outcome_in_the_split_s_order(keyword_inputs: PreparedInputs) -> None:
    from promptsweep.methods._data import load_split

    labels = load_split(keyword_inputs, "validation")["labels"]
    good = keyword_inputs.label_names.index("good")  # the train majority
    floors = score_floors(keyword_inputs, seed=0, with_outcomes=True)
    assert floors["majority"]["outcomes"] == "".join("1" if y == good else "0" for y in labels)
    for floor in floors.values():
        assert len(floor["outcomes"]) == len(labels)
        assert floor["outcomes"].count("1") / len(labels) == pytest.approx(floor["accuracy"])
    # the head-only floor is right on other reviews than the majority's: pairing has something to count
    assert floors["head_only"]["outcomes"] != floors["majority"]["outcomes"]
    without = _without_seconds(score_floors(keyword_inputs, seed=0))
    assert {
        n: {k: v for k, v in m.items() if k != "outcomes"} for n, m in _without_seconds(floors).items()
    } == without


def test_head_only_is_seeded(keyword_inputs: PreparedInputs) -> None:
    first = _without_seconds(score_floors(keyword_inputs, seed=3))
    assert _without_seconds(score_floors(keyword_inputs, seed=3)) == first
    other = _without_seconds(score_floors(keyword_inputs, seed=4))
    assert other["head_only"]["eval_loss"] != first["head_only"]["eval_loss"]  # the seed reaches the head
    assert other["majority"] == first["majority"]


def test_zero_shot_equals_base_model_scored_by_hand(prepared) -> None:
    import torch
    import transformers

    from promptsweep.methods._data import load_split

    inputs = prepared(TaskType.VERBALIZER, "decoder")
    floors = score_floors(inputs)
    assert set(floors) == {"majority", "zero_shot"}

    model = transformers.AutoModelForCausalLM.from_pretrained(inputs.model_dir, dtype=torch.float32).eval()
    val = load_split(inputs, "validation")
    hits, loss, right = 0, 0.0, ""
    with torch.no_grad():
        for ids, label in zip(val["input_ids"], val["labels"], strict=True):  # one at a time: no padding
            last = model(input_ids=torch.tensor([ids])).logits[0, -1]
            scores = torch.stack([torch.logsumexp(last[list(w)], dim=0) for w in inputs.label_word_ids])
            hits += int(scores.argmax().item() == label)
            right += "1" if scores.argmax().item() == label else "0"
            loss -= torch.log_softmax(scores, dim=0)[label].item()
    n = len(val["labels"])
    assert floors["zero_shot"]["accuracy"] == pytest.approx(hits / n)
    assert floors["zero_shot"]["eval_loss"] == pytest.approx(loss / n, rel=1e-4)
    assert _without_seconds(score_floors(inputs)) == _without_seconds(floors)
    # each review's outcome, in the split's order (the floor's side of a paired test)
    with_outcomes = score_floors(inputs, with_outcomes=True)
    assert with_outcomes["zero_shot"]["outcomes"] == right
    assert _without_seconds(with_outcomes)["zero_shot"] == {
        **_without_seconds(floors)["zero_shot"],
        "outcomes": right,
    }


def test_validation_never_reads_the_test_split(keyword_inputs: PreparedInputs, tmp_path: Path) -> None:
    data_dir = tmp_path / "tokenized"
    shutil.copytree(keyword_inputs.data_dir, data_dir)
    (data_dir / "test.pt").unlink()
    no_test = dataclasses.replace(keyword_inputs, data_dir=str(data_dir))
    floors = score_floors(no_test)  # both floors, on validation
    assert set(floors) == {"majority", "head_only"}
    with pytest.raises(DataError, match="no split 'test'"):
        score_floors(no_test, split="test")


def test_generation_has_no_floor_and_bad_arguments_are_named(
    prepared, keyword_inputs: PreparedInputs
) -> None:
    assert score_floors(prepared(TaskType.GENERATION, "decoder")) == {}
    with pytest.raises(ValueError, match="zero_shot"):
        score_floors(keyword_inputs, floors=["zero_shot"])
    with pytest.raises(ValueError, match="head_steps"):
        score_floors(keyword_inputs, head_steps=0)
    with pytest.raises(ValueError):
        score_floors(keyword_inputs, floors=["nonsense"])
