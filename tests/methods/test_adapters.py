"""Where an adapter lies: a local folder used in place, a storage URI fetched once into the cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from promptsweep.exceptions import DataError
from promptsweep.methods import local_adapter_dir


def _adapter(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "adapter_config.json").write_text("{}")
    (root / "adapter_model.safetensors").write_bytes(b"weights")
    return root


def test_a_local_folder_is_used_in_place(tmp_path: Path) -> None:
    folder = _adapter(tmp_path / "adapter")
    assert local_adapter_dir(folder, cache_dir=tmp_path / "cache") == folder
    assert not (tmp_path / "cache").exists()


def test_a_uri_is_fetched_once_into_the_cache(tmp_path: Path) -> None:
    folder = _adapter(tmp_path / "bucket" / "run" / "checkpoint_000000")
    uri = f"file://{folder}"
    fetched = local_adapter_dir(uri, cache_dir=tmp_path / "cache")
    assert fetched.is_relative_to(tmp_path / "cache") and fetched != folder
    assert (fetched / "adapter_model.safetensors").read_bytes() == b"weights"
    assert sorted(p.name for p in fetched.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    (folder / "adapter_model.safetensors").write_bytes(b"changed")  # a checkpoint never changes: reused
    assert local_adapter_dir(uri, cache_dir=tmp_path / "cache") == fetched
    assert (fetched / "adapter_model.safetensors").read_bytes() == b"weights"


def test_a_uri_that_cannot_be_read_names_itself(tmp_path: Path) -> None:
    uri = f"file://{tmp_path / 'no-such-bucket' / 'checkpoint_000000'}"
    with pytest.raises(DataError, match=f"adapter '{uri}' cannot be fetched"):
        local_adapter_dir(uri, cache_dir=tmp_path / "cache")
    assert not any((tmp_path / "cache" / "adapters").iterdir())  # no half-fetched copy left
