"""Hugging Face ``datasets`` sources: ``save_to_disk`` folders and hub names served from the local cache
offline. Everything is built here with ``datasets`` itself; nothing touches the network."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from promptsweep.exceptions import DataError
from promptsweep.methods import DataSpec, prepare_inputs
from promptsweep.methods._data import TOKENIZATION_RUNS, load_split

#: A commit hash, as the hub's revision folder in the datasets cache is named.
REVISION = "0123456789abcdef0123456789abcdef01234567"


def _table(n: int, seed: int = 0) -> dict[str, list[Any]]:
    words = ["tasty", "stale", "fine"]
    return {
        "sentence": [f"review {seed}-{i}: {words[i % 3]} snack" for i in range(n)],
        "stars": [i % 3 for i in range(n)],
    }


def _dataset(n: int, seed: int = 0) -> Any:
    import datasets

    features = datasets.Features(
        {"sentence": datasets.Value("string"), "stars": datasets.ClassLabel(names=["bad", "good", "ok"])}
    )
    return datasets.Dataset.from_dict(_table(n, seed), features=features)


@pytest.fixture
def encoder(tiny_models: dict[str, Path]) -> str:
    return str(tiny_models["encoder"])


def _spec(source: Path | str, **kw: Any) -> DataSpec:
    return DataSpec(source=str(source), text_column="sentence", label_column="stars", **kw)


def test_a_save_to_disk_dataset_dict_gives_its_named_splits_with_class_names(
    tmp_path: Path, encoder: str, cache_dir: Path
) -> None:
    import datasets

    folder = tmp_path / "saved"
    datasets.DatasetDict(
        {"training": _dataset(30), "dev": _dataset(12, seed=1), "heldout": _dataset(9, seed=2)}
    ).save_to_disk(str(folder))
    spec = _spec(folder, splits={"train": "training", "validation": "dev", "test": "heldout"})
    inputs = prepare_inputs(encoder, spec, "classification", max_length=32, cache_dir=cache_dir)
    assert inputs.counts == {"train": 30, "validation": 12, "test": 9}
    assert inputs.label_names == ("bad", "good", "ok")  # ClassLabel ids became their names
    # row i has class i % 3 -> label id (bad, good, ok) = (0, 1, 2)
    assert load_split(inputs, "test")["labels"] == [i % 3 for i in range(9)]
    # the cache key follows the folder's files: rewriting a split re-tokenizes
    runs = TOKENIZATION_RUNS["count"]
    datasets.DatasetDict(
        {"training": _dataset(33), "dev": _dataset(12, seed=1), "heldout": _dataset(9, seed=2)}
    ).save_to_disk(str(folder))
    again = prepare_inputs(encoder, spec, "classification", max_length=32, cache_dir=cache_dir)
    assert TOKENIZATION_RUNS["count"] == runs + 1 and again.counts["train"] == 33


def test_a_save_to_disk_dataset_is_the_train_split(tmp_path: Path, encoder: str, cache_dir: Path) -> None:
    folder = tmp_path / "one"
    _dataset(40).save_to_disk(str(folder))
    inputs = prepare_inputs(
        encoder, _spec(folder, validation_fraction=0.25), "classification", max_length=32, cache_dir=cache_dir
    )
    assert inputs.counts == {"train": 30, "validation": 10}
    with pytest.raises(
        DataError,
        match=r"dataset\.splits\.test: split 'test' not found in .*one.* \(save_to_disk\) \(a single "
        r"Dataset: the train split\); it has: \['train'\]",
    ):
        prepare_inputs(
            encoder,
            _spec(folder, splits={"train": "train", "test": "test"}),
            "classification",
            max_length=32,
            cache_dir=cache_dir,
        )


def test_missing_splits_and_columns_name_the_field_and_what_exists(
    tmp_path: Path, encoder: str, cache_dir: Path
) -> None:
    import datasets

    folder = tmp_path / "saved"
    datasets.DatasetDict({"a": _dataset(12), "b": _dataset(6)}).save_to_disk(str(folder))

    def prep(**kw: Any) -> Any:
        return prepare_inputs(
            encoder, _spec(folder, **kw), "classification", max_length=32, cache_dir=cache_dir
        )

    with pytest.raises(
        DataError, match=r"^dataset\.splits\.train: split 'train' not found in .*; it has: \['a', 'b'\]$"
    ):
        prep()
    with pytest.raises(
        DataError, match=r"^dataset\.splits\.test: split 'heldout' not found .*it has: \['a', 'b'\]"
    ):
        prep(splits={"train": "a", "test": "heldout"})
    with pytest.raises(
        DataError,
        match=r"^dataset\.label_column: column 'label' not found in .*\[a\] \(split 'train'\); "
        r"columns are: \['sentence', 'stars'\]$",
    ):
        prepare_inputs(
            encoder,
            DataSpec(source=str(folder), text_column="sentence", splits={"train": "a"}),
            "classification",
            max_length=32,
            cache_dir=cache_dir,
        )
    # a directory of per-split files says the same, listing the files' split names
    files = tmp_path / "files"
    files.mkdir()
    _dataset(12).to_csv(str(files / "training.csv"))
    with pytest.raises(
        DataError, match=r"dataset\.splits\.train: split 'train' not found .*it has: \['training'\]"
    ):
        prepare_inputs(encoder, _spec(files), "classification", max_length=32, cache_dir=cache_dir)


def _cache_hub_dataset(cache: Path, repo_id: str, splits: dict[str, Any]) -> None:
    """Write ``splits`` into ``cache`` as ``load_dataset(repo_id)`` leaves a hub dataset there.

    A hub dataset's files are prepared by a packaged builder (here ``Csv``) named after the repository
    (``dataset_name``) at the repository's commit (``hash``), under the cache folder the builder's own
    ``_build_cache_dir`` gives for ``repo_id`` (``<namespace>___<name>/<config>/<version>/<hash>``).
    The repository id is set after construction because the builder checks that the data files live
    in that repository (``hf://datasets/<repo_id>@...``), which local files cannot.
    """
    from datasets.packaged_modules.csv.csv import Csv

    raw = cache.parent / "raw"
    raw.mkdir(exist_ok=True)
    files = {}
    for name, ds in splits.items():
        files[name] = str(raw / f"{name}.csv")
        ds.to_csv(files[name], index=False)
    builder = Csv(
        cache_dir=str(cache),
        dataset_name=repo_id.split("/")[-1],
        config_id="default",
        hash=REVISION,
        data_files=files,
    )
    builder.repo_id = repo_id
    builder._cache_dir = builder._build_cache_dir()
    builder.download_and_prepare()


@pytest.fixture
def offline_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A datasets cache of our own, with datasets in offline mode (what HF_DATASETS_CACHE and
    HF_DATASETS_OFFLINE=1 set when datasets is imported)."""
    import datasets.config

    cache = tmp_path / "hf-datasets"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    return cache


def test_a_hub_name_is_served_from_the_local_cache_offline(
    offline_hub_cache: Path, encoder: str, cache_dir: Path
) -> None:
    from datasets import Dataset

    table = {"text": [f"snack {i} {'tasty' if i % 2 else 'stale'}" for i in range(24)]}
    _cache_hub_dataset(
        offline_hub_cache,
        "someone/tiny_reviews",
        {
            "train": Dataset.from_dict(
                {**table, "label": ["great" if i % 2 else "other" for i in range(24)]}
            ),
            "test": Dataset.from_dict({"text": ["fine", "bad"], "label": ["great", "other"]}),
        },
    )
    spec = DataSpec(source="someone/tiny_reviews", splits={"train": "train", "test": "test"})
    inputs = prepare_inputs(encoder, spec, "classification", max_length=32, cache_dir=cache_dir)
    assert inputs.counts == {"train": 19, "validation": 5, "test": 2}
    assert inputs.label_names == ("great", "other")
    # a hub name that is not cached: one error naming the source and where it was looked for
    with pytest.raises(DataError) as info:
        prepare_inputs(
            encoder,
            DataSpec(source="someone/elsewhere"),
            "classification",
            max_length=32,
            cache_dir=cache_dir,
        )
    message = str(info.value)
    assert "dataset.source 'someone/elsewhere'" in message and "not in the local datasets cache" in message
    assert str(offline_hub_cache) in message and "HF_DATASETS_OFFLINE=1" in message
    with pytest.raises(
        DataError, match=r"dataset\.splits\.validation: split 'dev' not found .*\['test', 'train'\]"
    ):
        prepare_inputs(
            encoder,
            DataSpec(source="someone/tiny_reviews", splits={"train": "train", "validation": "dev"}),
            "classification",
            max_length=32,
            cache_dir=cache_dir,
        )


def test_a_missing_class_label_is_an_error_naming_the_row(
    tmp_path: Path, encoder: str, cache_dir: Path
) -> None:
    import datasets

    table = _table(12)
    table["stars"][5] = None  # a ClassLabel column holding a null (pandas reads it as NaN)
    features = datasets.Features(
        {"sentence": datasets.Value("string"), "stars": datasets.ClassLabel(names=["bad", "good", "ok"])}
    )
    folder = tmp_path / "holes"
    datasets.Dataset.from_dict(table, features=features).save_to_disk(str(folder))
    with pytest.raises(DataError, match=r"column 'stars', row 5: missing label"):
        prepare_inputs(
            encoder,
            _spec(folder, validation_fraction=0.25),
            "classification",
            max_length=32,
            cache_dir=cache_dir,
        )
