"""Data loading, validation, splits and the tokenization cache (``prepare_inputs``).

Each bad-data case gets one :class:`DataError` naming the file, the column and, where it applies, the row.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from promptsweep.exceptions import DataError, SpecError
from promptsweep.methods import DataSpec, prepare_inputs
from promptsweep.methods._data import TOKENIZATION_RUNS, load_split


def _csv(path: Path, rows: list[dict], columns: list[str] | None = None) -> Path:
    columns = columns or list(rows[0])
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    return path


def _rows(n: int = 20) -> list[dict]:
    return [
        {"text": f"review number {i} {'tasty' if i % 2 else 'stale'}", "label": "great" if i % 2 else "other"}
        for i in range(n)
    ]


@pytest.fixture
def encoder(tiny_models) -> str:
    return str(tiny_models["encoder"])


def _prep(encoder: str, cache_dir: Path, spec: DataSpec, task: str = "classification"):
    return prepare_inputs(encoder, spec, task, max_length=32, cache_dir=cache_dir)


def test_missing_column(tmp_path, encoder, cache_dir) -> None:
    f = _csv(tmp_path / "d.csv", [{"body": r["text"], "label": r["label"]} for r in _rows()])
    with pytest.raises(
        DataError,
        match=r"^dataset\.text_column: column 'text' not found in .*d\.csv \(split 'train'\); "
        r"columns are: \['body', 'label'\]$",
    ):
        _prep(encoder, cache_dir, DataSpec(source=str(f)))
    with pytest.raises(DataError, match=r"^dataset\.label_column: column 'stars' not found in .*d\.csv"):
        _prep(encoder, cache_dir, DataSpec(source=str(f), text_column="body", label_column="stars"))


def test_empty_split(tmp_path, encoder, cache_dir) -> None:
    d = tmp_path / "dir"
    d.mkdir()
    _csv(d / "train.csv", _rows())
    _csv(d / "test.csv", [], columns=["text", "label"])
    with pytest.raises(DataError, match=r"test\.csv: split 'test' has no rows"):
        _prep(encoder, cache_dir, DataSpec(source=str(d)))


def test_single_class(tmp_path, encoder, cache_dir) -> None:
    f = _csv(tmp_path / "d.csv", [dict(r, label="great") for r in _rows()])
    with pytest.raises(
        DataError, match=r"d\.csv: split 'train', column 'label' has a single class \['great'\]"
    ):
        _prep(encoder, cache_dir, DataSpec(source=str(f)))


def test_non_string_text(tmp_path, encoder, cache_dir) -> None:
    rows = _rows()
    rows[7] = {"text": 12345, "label": "great"}
    f = tmp_path / "d.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(DataError, match=r"d\.jsonl: split 'train', column 'text', row 7: expected a string"):
        _prep(encoder, cache_dir, DataSpec(source=str(f)))


@pytest.mark.parametrize("blank", ["", "   "])
def test_empty_text(tmp_path, encoder, cache_dir, blank) -> None:
    rows = _rows()
    rows[3]["text"] = blank
    f = tmp_path / "d.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(DataError, match=r"d\.jsonl: split 'train', column 'text', row 3: empty text"):
        _prep(encoder, cache_dir, DataSpec(source=str(f)))


def test_missing_text_and_label(tmp_path, encoder, cache_dir) -> None:
    rows = _rows()
    rows[5]["text"] = None
    f = tmp_path / "a.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(DataError, match=r"column 'text', row 5: missing text"):
        _prep(encoder, cache_dir, DataSpec(source=str(f)))
    rows = _rows()
    rows[9]["label"] = None
    f = tmp_path / "b.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(DataError, match=r"column 'label', row 9: missing label"):
        _prep(encoder, cache_dir, DataSpec(source=str(f)))


def test_unknown_label(tmp_path, encoder, cache_dir) -> None:
    d = tmp_path / "dir"
    d.mkdir()
    _csv(d / "train.csv", _rows())
    test = _rows(6)
    test[4]["label"] = "terrible"
    _csv(d / "test.csv", test)
    with pytest.raises(
        DataError,
        match=r"test\.csv: split 'test', column 'label': label\(s\) 'terrible' \(1 rows, first row 4\)",
    ):
        _prep(encoder, cache_dir, DataSpec(source=str(d)))


def test_bad_label_words(encoder, cache_dir, tiny_models) -> None:
    dec = str(tiny_models["decoder"])
    with pytest.raises(DataError, match=r"label_words.*missing \['other'\], unknown \['bad'\]"):
        prepare_inputs(
            dec,
            DataSpec(label_words={"great": ["good"], "bad": ["bad"]}, max_train_examples=16),
            "verbalizer",
            max_length=32,
            cache_dir=cache_dir,
        )
    with pytest.raises(DataError, match="same token"):
        prepare_inputs(
            dec,
            DataSpec(label_words={"great": ["good"], "other": ["good"]}, max_train_examples=16),
            "verbalizer",
            max_length=32,
            cache_dir=cache_dir,
        )


def test_bad_sources(tmp_path, encoder, cache_dir) -> None:
    with pytest.raises(DataError, match="no such file"):
        _prep(encoder, cache_dir, DataSpec(source=str(tmp_path / "nope.csv")))
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(DataError, match=r"unsupported format '\.txt'"):
        _prep(encoder, cache_dir, DataSpec(source=str(tmp_path / "d.txt")))
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(DataError, match=r"bad\.parquet.*cannot be read as parquet"):
        _prep(encoder, cache_dir, DataSpec(source=str(tmp_path / "bad.parquet")))
    with pytest.raises(SpecError, match="max_length"):
        prepare_inputs(encoder, DataSpec(), "classification", max_length=2, cache_dir=cache_dir)
    with pytest.raises(SpecError, match="task='ranking'"):
        prepare_inputs(encoder, DataSpec(), "ranking", max_length=32, cache_dir=cache_dir)
    with pytest.raises(SpecError, match=r"no config\.json"):
        prepare_inputs(str(tmp_path), DataSpec(), "classification", max_length=32, cache_dir=cache_dir)


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl", "parquet"])
def test_local_formats(tmp_path, encoder, cache_dir, fmt) -> None:
    import pandas as pd

    df = pd.DataFrame(_rows(40))
    path = tmp_path / f"d.{fmt}"
    {
        "csv": lambda: df.to_csv(path, index=False),
        "json": lambda: df.to_json(path, orient="records"),
        "jsonl": lambda: df.to_json(path, orient="records", lines=True),
        "parquet": lambda: df.to_parquet(path),
    }[fmt]()
    inputs = _prep(encoder, cache_dir, DataSpec(source=str(path), validation_fraction=0.25))
    assert inputs.counts == {"train": 30, "validation": 10}
    assert inputs.label_names == ("great", "other") and inputs.rows_filtered == {"train": 0, "validation": 0}


def test_fine_foods_splits_are_seeded_and_stratified(encoder, cache_dir) -> None:
    a = _prep(encoder, cache_dir, DataSpec(max_train_examples=200, max_eval_examples=100, seed=1))
    b = _prep(encoder, cache_dir, DataSpec(max_train_examples=200, max_eval_examples=100, seed=2))
    assert a.counts == {"train": 200, "validation": 100, "test": 100}
    # stratified: every split keeps the real class balance (2600/4000 great in training_data)
    for role in ("train", "validation"):
        assert a.majority_accuracy[role] == pytest.approx(0.65, abs=0.011)
    ta, tb = load_split(a, "train")["input_ids"], load_split(b, "train")["input_ids"]
    assert ta != tb  # another seed, another subsample
    full = _prep(encoder, cache_dir, DataSpec())
    assert full.counts == {"train": 3200, "validation": 800, "test": 1000}
    assert full.truncated["train"] > 0  # reviews longer than 32 tokens are cut, and counted


def test_tokenization_is_cached(tmp_path, encoder) -> None:
    f = _csv(tmp_path / "d.csv", _rows(30))
    spec = DataSpec(source=str(f))
    runs = TOKENIZATION_RUNS["count"]
    first = _prep(encoder, tmp_path / "cache", spec)
    assert TOKENIZATION_RUNS["count"] == runs + 1
    again = _prep(encoder, tmp_path / "cache", spec)
    assert TOKENIZATION_RUNS["count"] == runs + 1 and again == first
    prepare_inputs(encoder, spec, "classification", max_length=16, cache_dir=tmp_path / "cache")
    assert TOKENIZATION_RUNS["count"] == runs + 2  # another max_length: another key
    f.write_text(f.read_text() + "one more tasty review,great\n")  # the source file changed: another key
    changed = _prep(encoder, tmp_path / "cache", spec)
    assert TOKENIZATION_RUNS["count"] == runs + 3 and changed.cache_key != first.cache_key


def test_text_pairs_and_templates(tmp_path, encoder, cache_dir, tiny_models) -> None:
    rows = [dict(r, other=f"second part {i}") for i, r in enumerate(_rows())]
    f = _csv(tmp_path / "pairs.csv", rows)
    inputs = _prep(encoder, cache_dir, DataSpec(source=str(f), text_pair_column="other"))
    split = load_split(inputs, "train")
    assert set(split["token_type_ids"][0]) == {0, 1}  # [CLS] a [SEP] b [SEP]
    # causal LM: the text (never the template's tail) is truncated to fit
    long = [dict(r, text=r["text"] + " very" * 80) for r in _rows()]
    g = _csv(tmp_path / "long.csv", long)
    dec = str(tiny_models["decoder"])
    v = prepare_inputs(
        dec,
        DataSpec(source=str(g), template="Review: {text} Verdict:"),
        "verbalizer",
        max_length=24,
        cache_dir=cache_dir,
    )
    from transformers import AutoTokenizer

    tail = AutoTokenizer.from_pretrained(dec).encode(" Verdict:", add_special_tokens=False)
    for ids in load_split(v, "train")["input_ids"]:
        assert len(ids) == 24 and ids[-len(tail) :] == tail
    assert v.truncated["train"] == v.counts["train"]


def test_generation_targets(generation_file, tiny_models, cache_dir) -> None:
    inputs = prepare_inputs(
        str(tiny_models["decoder"]),
        DataSpec(source=str(generation_file)),
        "generation",
        max_length=48,
        cache_dir=cache_dir,
    )
    split = load_split(inputs, "validation")
    assert Counter(split["target_text"]).keys() <= {"great", "other"}
    # target = label word + EOS ([SEP] for the tiny decoder)
    assert all(t[-1] == 102 for t in split["target_ids"])
    assert all(len(p) + len(t) <= 48 for p, t in zip(split["input_ids"], split["target_ids"], strict=True))


@pytest.mark.parametrize(
    ("typo", "alias"), [("minlm", "minilm"), ("MiniLM", "minilm"), ("smollm2", "smollm2-135m")]
)
def test_a_typo_of_a_model_alias_names_the_alias_and_never_asks_the_hub(
    typo: str, alias: str, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    def no_hub(*args: object, **kwargs: object) -> None:
        raise AssertionError("the hub was asked")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_hub)
    with pytest.raises(SpecError, match=f"did you mean '{alias}'"):
        prepare_inputs(typo, DataSpec(), "classification", max_length=32, cache_dir=cache_dir)


def test_a_hub_name_that_cannot_be_fetched_is_one_short_error(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SpecError) as info:
        prepare_inputs(
            "someone/not-a-model", DataSpec(), "classification", max_length=32, cache_dir=cache_dir
        )
    message = str(info.value)
    assert "'someone/not-a-model' is not an alias" in message and "Offline, use an alias" in message
    assert len(message) < 400 and "\n" not in message
