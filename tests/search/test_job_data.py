"""A job's data: ``submit`` loads and checks it (a split, column or label the job cannot use is one
:class:`SpecError` naming the field and what the data has, and nothing is stored); what preparation
made of it (examples and truncations per split, cleaning notes) is shown by ``show``/``run``."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from promptsweep.exceptions import SpecError
from promptsweep.search import default_spec, submit
from promptsweep.storage import Storage


def _spec(source: str, **dataset: Any) -> dict[str, Any]:
    spec = copy.deepcopy(default_spec().to_dict())
    spec["dataset"].update(source=source, **dataset)
    return spec


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    return Storage(f"sqlite:///{tmp_path / 'ps.db'}")


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    """A ``save_to_disk`` DatasetDict with splits ``train`` and ``dev`` (``sentence``, ``stars``)."""
    import datasets

    rows = {
        "sentence": [f"snack {i} {'tasty' if i % 2 else 'stale'}" for i in range(20)],
        "stars": ["great" if i % 2 else "other" for i in range(20)],
    }
    folder = tmp_path / "saved"
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict(rows), "dev": datasets.Dataset.from_dict(rows)}
    ).save_to_disk(str(folder))
    return folder


def test_a_split_the_folder_lacks_is_refused_naming_the_field_and_the_splits(
    storage: Storage, saved: Path
) -> None:
    spec = _spec(str(saved), text_column="sentence", label_column="stars")  # default splits: train, test
    with pytest.raises(
        SpecError,
        match=r"^dataset\.splits\.test: split 'test' not found in .*saved.*; it has: \['dev', 'train'\]$",
    ):
        submit(spec, storage)
    assert storage.list_jobs() == []
    spec["dataset"]["splits"] = {"train": "train", "validation": "dev", "test": None}
    job_id = submit(spec, storage)
    assert storage.get_job(job_id).spec["dataset"]["source"] == str(saved.resolve())


def test_a_column_the_data_lacks_is_refused_naming_the_field_and_the_columns(
    storage: Storage, saved: Path
) -> None:
    spec = _spec(str(saved), label_column="stars", splits={"train": "train"})  # text_column: review
    with pytest.raises(
        SpecError,
        match=r"^dataset\.text_column: column 'review' not found in .*\[train\] \(split 'train'\); "
        r"columns are: \['sentence', 'stars'\]$",
    ):
        submit(spec, storage)
    with pytest.raises(
        SpecError, match=r"^dataset\.text_column: column 'text' not found in fine-foods .*'review'"
    ):
        submit(_spec("fine-foods", text_column="text"), storage)
    assert storage.list_jobs() == []


def test_float_labels_are_refused_at_submit(storage: Storage, tmp_path: Path) -> None:
    path = tmp_path / "scores.csv"
    path.write_text("review,score\n" + "".join(f"review {i},{i / 10 + 0.05}\n" for i in range(10)))
    with pytest.raises(SpecError, match=r"^dataset\.label_column: .*regression is not supported"):
        submit(_spec(str(path)), storage)
    # a bad row is named by its file, column and row, under the field dataset.source
    empty = tmp_path / "empty.csv"
    empty.write_text(
        "review,score\n"
        + "".join(f"review {i},{'great' if i % 2 else 'other'}\n" for i in range(9))
        + '" ",great\n'
    )
    with pytest.raises(
        SpecError, match=r"^dataset\.source: .*empty\.csv: split 'train', column 'review', row 9: empty text"
    ):
        submit(_spec(str(empty)), storage)
    assert storage.list_jobs() == []


def test_show_prints_examples_and_truncations_per_split(
    storage: Storage, tmp_path: Path, tiny_encoder: Path, reviews_dir: Path
) -> None:
    from typer.testing import CliRunner

    from promptsweep.cli import app
    from promptsweep.search import job_inputs, parse_spec
    from promptsweep.search._progress import data_summary
    from tests.search.conftest import tiny_spec

    data = tmp_path / "reviews"
    data.mkdir()
    for name in ("train.csv", "test.csv"):  # every third review is longer than 9 tokens: cut, and counted
        lines = (reviews_dir / name).read_text().splitlines()
        lines[1::3] = [line.replace(",", " and then some more words,", 1) for line in lines[1::3]]
        (data / name).write_text("\n".join(lines) + "\n")
    spec = tiny_spec(tiny_encoder, data, tmp_path / "runs")
    spec["dataset"]["max_length"] = 9
    job_id = submit(spec, storage)
    calls: list[tuple[str, int, int]] = []
    inputs = job_inputs(parse_spec(spec), progress=lambda *a: calls.append(a))
    assert ("tokenizing test", 60, 60) in calls
    summary = data_summary(inputs)  # as run_job stores it after preparing, plus a note to show
    summary["notes"] = [
        "label column 'label': surrounding whitespace stripped from 1 label(s) ('[a] ' -> '[a]'; 2 rows)"
    ]
    storage.update_job_summary(job_id, data=summary)
    assert all(0 < inputs.truncated[role] < inputs.counts[role] for role in inputs.counts)
    out = CliRunner().invoke(app, ["--db", storage.url, "show", str(job_id)], env={"COLUMNS": "200"}).output
    t = inputs.truncated
    assert (
        f"data: train 120, validation 40, test 60 examples (2 classes); truncated to max_length 9: "
        f"train {t['train']}, validation {t['validation']}, test {t['test']}"
    ) in out
    assert (
        "data note: label column 'label': surrounding whitespace stripped from 1 label(s) ('[a] ' -> '[a]'"
        in out
    )
