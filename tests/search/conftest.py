"""Fixtures for real search jobs: a tiny encoder, a small labelled dataset, one embedded Ray for the session.

The dataset is a two-class review set whose words carry the label, so that trials learn at different
speeds (different validation losses, hence ASHA decisions). Its *test* split has every label flipped:
a trial that is good on validation is bad on test, so any leak of the test split into selection would
change which trial wins.
"""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path
from typing import Any

import pytest

POSITIVE = [
    "great tasty snack",
    "love this coffee",
    "excellent flavor",
    "best tea ever",
    "delicious and fresh",
]
NEGATIVE = ["awful stale chips", "terrible taste", "bad smell", "would not buy again", "bland and old"]
FILLER = ["ok", "item", "pack", "box", "for the kids", "arrived monday"]


def write_reviews(path: Path, n: int, *, seed: int, flip: bool = False) -> None:
    """Write ``n`` reviews (``text``, ``label`` in great/other); ``flip`` inverts every label."""
    rng = random.Random(seed)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for _ in range(n):
            great = rng.random() < 0.5
            text = f"{rng.choice(POSITIVE if great else NEGATIVE)} {rng.choice(FILLER)}"
            writer.writerow([text, "great" if great != flip else "other"])


@pytest.fixture(scope="session")
def search_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PROMPTSWEEP_HOME for the session (caches, runs), inherited by Ray workers and subprocesses."""
    home = tmp_path_factory.mktemp("ps-home")
    old = os.environ.get("PROMPTSWEEP_HOME")
    os.environ["PROMPTSWEEP_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("PROMPTSWEEP_HOME", None)
    else:
        os.environ["PROMPTSWEEP_HOME"] = old


@pytest.fixture(scope="session")
def tiny_encoder(search_home: Path) -> Path:
    """A tiny random BERT (hidden 32, 2 layers) with the MiniLM tokenizer."""
    from promptsweep.methods.testing import make_tiny_model

    return make_tiny_model(search_home / "tiny-encoder", "encoder")


@pytest.fixture(scope="session")
def reviews_dir(search_home: Path) -> Path:
    """``train.csv`` (160 rows; validation is carved from it) and ``test.csv`` (60 rows, labels flipped)."""
    d = search_home / "reviews"
    d.mkdir()
    write_reviews(d / "train.csv", 160, seed=0)
    write_reviews(d / "test.csv", 60, seed=1, flip=True)
    return d


@pytest.fixture(scope="session")
def ray_local(search_home: Path) -> Any:
    """One small embedded Ray for the session (run_job reuses it and leaves it running)."""
    import ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_worker_niceness", "0")  # as promptsweep's own embedded Ray
    started = False
    if not ray.is_initialized():
        from promptsweep.search._spec import local_gpu_count

        ray.init(
            num_cpus=2,
            num_gpus=local_gpu_count(),
            include_dashboard=False,
            object_store_memory=100 * 1024 * 1024,
            configure_logging=False,
            log_to_driver=False,
        )
        started = True
    yield ray
    if started:
        ray.shutdown()


def tiny_spec(model: Path, data: Path, out: Path, **overrides: Any) -> dict[str, Any]:
    """A small job on the tiny encoder: eval_loss on validation, 40 steps, ASHA rungs at 10/20 steps."""
    spec: dict[str, Any] = {
        "name": "tiny",
        "model": str(model),
        "task": "classification",
        "dataset": {
            "source": str(data),
            "text_column": "text",
            "label_column": "label",
            "splits": {"train": "train", "test": "test"},
            "validation_fraction": 0.25,
            "max_length": 32,
        },
        "objective": {"metric": "eval_loss"},
        "budget": {"num_trials": 6, "max_steps": 40, "eval_every_steps": 10, "batch_size": 8},
        "space": {"pooling": ["mean", "first_token"]},
        "sampler": {"name": "tpe", "n_startup_trials": 3},
        "scheduler": {"name": "asha", "grace_period_steps": 10, "reduction_factor": 2},
        "resources": {"cpus_per_trial": 1, "max_concurrent_trials": 2, "num_cpus": 2},
        "seed": 0,
        "output_dir": str(out),
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec
