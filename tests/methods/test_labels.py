"""Labels: imbalanced multi-class carves, classes too small to split, float labels, label cleaning,
per-class F1 in the metrics, and tokenization progress."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from promptsweep.exceptions import DataError
from promptsweep.methods import DataSpec, TrainBudget, prepare_inputs, train_trial
from promptsweep.methods._data import load_split
from promptsweep.methods._labels import classification_metrics, split_indices


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def _imbalanced(counts: dict[str, int]) -> list[dict[str, Any]]:
    rows = []
    for label, n in counts.items():
        rows += [{"text": f"a {label} review, number {i}", "label": label} for i in range(n)]
    return rows


@pytest.fixture
def encoder(tiny_models: dict[str, Path]) -> str:
    return str(tiny_models["encoder"])


def _prep(encoder: str, cache_dir: Path, source: Path, **kw: Any) -> Any:
    return prepare_inputs(
        encoder, DataSpec(source=str(source), **kw), "classification", max_length=32, cache_dir=cache_dir
    )


def test_the_validation_carve_keeps_every_class_of_an_imbalanced_multi_class_set(
    tmp_path: Path, encoder: str, cache_dir: Path
) -> None:
    counts = {"common": 200, "rarer": 9, "rare": 2, "rarest": 2}
    rows = _imbalanced(counts)
    # sklearn's stratified split alone (proportional rounding) leaves the 2-example classes out of a
    # 21-example validation split: the case the carve must repair
    labels = [r["label"] for r in rows]
    _, val = split_indices(list(range(len(rows))), labels, len(rows) - 21, seed=0)
    assert {"rare", "rarest"} - {labels[i] for i in val}
    inputs = _prep(encoder, cache_dir, _jsonl(tmp_path / "d.jsonl", rows), validation_fraction=0.1)
    assert inputs.label_names == ("common", "rare", "rarer", "rarest")
    assert inputs.counts == {"train": 192, "validation": 21}  # sizes as asked
    for role in ("train", "validation"):
        seen = Counter(load_split(inputs, role)["labels"])
        assert set(seen) == {0, 1, 2, 3}, (role, seen)  # every class on both sides
    # subsamples keep every class too
    small = _prep(
        encoder,
        cache_dir,
        tmp_path / "d.jsonl",
        validation_fraction=0.1,
        max_train_examples=8,
        max_eval_examples=4,
    )
    assert small.counts == {"train": 8, "validation": 4}
    for role in ("train", "validation"):
        assert set(load_split(small, role)["labels"]) == {0, 1, 2, 3}
    with pytest.raises(DataError, match=r"dataset\.max_eval_examples=3 is fewer than the 4 classes"):
        _prep(encoder, cache_dir, tmp_path / "d.jsonl", validation_fraction=0.1, max_eval_examples=3)


def test_a_class_too_small_to_carve_is_named_with_its_count(
    tmp_path: Path, encoder: str, cache_dir: Path
) -> None:
    src = _jsonl(tmp_path / "d.jsonl", _imbalanced({"great": 30, "other": 20, "odd": 1}))
    with pytest.raises(DataError, match=r"split 'train': class 'odd' has 1 example; carving a stratified"):
        _prep(encoder, cache_dir, src)
    # with a validation split given, nothing is carved: the single example trains
    d = tmp_path / "dir"
    d.mkdir()
    _jsonl(d / "train.jsonl", _imbalanced({"great": 30, "other": 20, "odd": 1}))
    _jsonl(d / "validation.jsonl", _imbalanced({"great": 3, "other": 2}))
    assert _prep(encoder, cache_dir, d).label_names == ("great", "odd", "other")


def test_float_labels_are_one_clear_error_and_integer_floats_are_classes(
    tmp_path: Path, encoder: str, cache_dir: Path
) -> None:
    rows = [{"text": f"review {i}", "label": 0.25 * (i % 5)} for i in range(40)]
    with pytest.raises(DataError) as info:
        _prep(encoder, cache_dir, _jsonl(tmp_path / "scores.jsonl", rows))
    message = str(info.value)
    assert (
        message.startswith("dataset.label_column: ")
        and "column 'label' holds 24 non-integer number(s)" in message
    )
    assert "regression is not supported" in message and "bin the scores into classes" in message
    whole = [{"text": f"review {i}", "label": float(i % 3)} for i in range(40)]
    assert _prep(encoder, cache_dir, _jsonl(tmp_path / "ids.jsonl", whole)).label_names == ("0", "1", "2")


def test_labels_differing_by_whitespace_are_refused_and_padding_is_stripped_and_reported(
    tmp_path: Path, encoder: str, cache_dir: Path
) -> None:
    rows = _imbalanced({"great": 20, "other": 20})
    for r in rows[:3]:
        r["label"] = "great "
    with pytest.raises(
        DataError,
        match=r"column 'label' has labels that differ only by surrounding whitespace \('great': "
        r"'great' x17, 'great ' x3\); they are not merged silently",
    ):
        _prep(encoder, cache_dir, _jsonl(tmp_path / "clash.jsonl", rows))
    padded = [{**r, "label": f" {r['label']} "} for r in _imbalanced({"great": 20, "other": 20})]
    inputs = _prep(encoder, cache_dir, _jsonl(tmp_path / "padded.jsonl", padded))
    assert inputs.label_names == ("great", "other")
    assert inputs.notes == (
        "label column 'label': surrounding whitespace stripped from 2 label(s) "
        "(' great ' -> 'great', ' other ' -> 'other'; 40 rows)",
    )
    again = _prep(encoder, cache_dir, tmp_path / "padded.jsonl")  # the cached copy keeps the note
    assert again.notes == inputs.notes


def test_a_label_only_in_the_test_split_and_empty_texts_are_refused(
    tmp_path: Path, encoder: str, cache_dir: Path
) -> None:
    d = tmp_path / "dir"
    d.mkdir()
    _jsonl(d / "train.jsonl", _imbalanced({"great": 20, "other": 20}))
    _jsonl(d / "test.jsonl", _imbalanced({"great": 3, "other": 2, "terrible": 2}))
    with pytest.raises(
        DataError,
        match=r"test\.jsonl: split 'test', column 'label': label\(s\) 'terrible' \(2 rows, first row 5\) "
        r"never appear in split 'train'",
    ):
        _prep(encoder, cache_dir, d)
    rows = _imbalanced({"great": 20, "other": 20})
    rows[4]["text"], rows[9]["text"] = "", "  "
    with pytest.raises(
        DataError,
        match=r"split 'train', column 'text', row 4: empty text "
        r"\(2 empty texts in this split: rows \[4, 9\]\)",
    ):
        _prep(encoder, cache_dir, _jsonl(tmp_path / "empty.jsonl", rows))


def test_per_class_f1_and_recall_are_in_the_metrics(tmp_path: Path, encoder: str, cache_dir: Path) -> None:
    m = classification_metrics([0, 0, 1, 2], [0, 1, 1, 1], ("a", "b", "c"))
    assert (
        m["accuracy"] == 0.5 and m["f1[a]"] == pytest.approx(2 / 3) and m["f1[b]"] == 0.5 and m["f1[c]"] == 0
    )
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.5 + 0) / 3)
    # recall: a 1 of 2, b 1 of 1, c 0 of 1; a class absent from the golds has recall 0
    assert (m["recall[a]"], m["recall[b]"], m["recall[c]"]) == (0.5, 1.0, 0.0)
    assert classification_metrics([0, 0], [0, 1], ("a", "b"))["recall[b]"] == 0.0
    inputs = _prep(
        encoder,
        cache_dir,
        _jsonl(tmp_path / "d.jsonl", _imbalanced({"x": 30, "y": 12, "z": 6})),
        validation_fraction=0.25,
    )
    result = train_trial(
        inputs,
        {"method": "prompt_tuning", "num_virtual_tokens": 2, "learning_rate": 0.01},
        budget=TrainBudget(max_steps=2, batch_size=8, eval_batch_size=16, precision="fp32"),
        output_dir=tmp_path / "trial",
        seed=0,
        device="cpu",
    )
    per_class = [result.metrics[f"f1[{c}]"] for c in ("x", "y", "z")]
    assert result.metrics["macro_f1"] == pytest.approx(sum(per_class) / 3)


def test_tokenization_reports_progress_in_chunks_with_the_same_ids(
    tmp_path: Path, encoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from promptsweep.methods import _data

    rows = _imbalanced({"great": 30, "other": 20})
    for i, r in enumerate(rows):
        r["text"] += " and very tasty" * (i % 3)  # some longer than 8 tokens
    src = _jsonl(tmp_path / "d.jsonl", rows)
    whole = prepare_inputs(
        encoder, DataSpec(source=str(src)), "classification", max_length=8, cache_dir=tmp_path / "a"
    )
    monkeypatch.setattr(_data, "_CHUNK", 7)
    calls: list[tuple[str, int, int]] = []
    chunked = prepare_inputs(
        encoder,
        DataSpec(source=str(src)),
        "classification",
        max_length=8,
        cache_dir=tmp_path / "b",
        progress=lambda *a: calls.append(a),
    )
    assert [c for c in calls if c[0] == "tokenizing train"] == [
        ("tokenizing train", n, 40) for n in (0, 7, 14, 21, 28, 35, 40)
    ]
    assert calls[-1] == ("tokenizing validation", 10, 10)
    for role in ("train", "validation"):
        assert load_split(chunked, role) == load_split(whole, role)
    assert chunked.truncated == whole.truncated and whole.truncated["train"] > 0
