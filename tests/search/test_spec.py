"""Job spec: loading, round trips, and one field-named SpecError per invalid case (no Ray, no torch)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml

from promptsweep.exceptions import SpecError
from promptsweep.search import JobSpec, default_spec, default_spec_path, load_spec, parse_spec, submit
from promptsweep.search._spec import (
    check_resources,
    local_gpu_count,
)


def _base() -> dict[str, Any]:
    return default_spec().to_dict()


def _set(d: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(d)
    node = out
    keys = dotted.split(".")
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value
    return out


def test_default_spec_is_valid_and_round_trips() -> None:
    spec = default_spec()
    assert spec.model == "minilm" and spec.task == "classification"
    assert spec.space.methods == ["prompt_tuning", "prefix_tuning", "p_tuning"]
    assert spec.space.num_virtual_tokens.log and spec.space.num_virtual_tokens.low == 1
    assert spec.space.num_virtual_tokens.high == 128
    again = parse_spec(json.loads(json.dumps(spec.to_dict())))
    assert again == spec
    assert default_spec_path().name == "fine_foods_minilm.yaml"


def test_yaml_and_json_files_load_the_same(tmp_path) -> None:
    data = _base()
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "s.json").write_text(json.dumps(data))
    assert load_spec(tmp_path / "s.yaml") == load_spec(tmp_path / "s.json") == parse_spec(data)


def test_example_specs_validate() -> None:
    from pathlib import Path

    examples = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))
    for path in examples:
        assert isinstance(load_spec(path), JobSpec), path


def test_non_classification_tasks_have_no_pooling_dimension() -> None:
    spec = parse_spec({"name": "v", "model": "smollm2-135m", "task": "verbalizer"})
    assert spec.space.pooling is None
    # and the default spec (classification) still has one: the default was not mutated
    assert default_spec().space.pooling == ["mean", "first_token"]


INVALID: list[tuple[str, Any, str]] = [
    ("space.methods", ["lora"], "space.methods: unknown method"),
    ("space.methods", [], "space.methods: the method list is empty"),
    ("space.methods", ["p_tuning", "p_tuning"], "space.methods: methods repeat"),
    (
        "space.prompt_tuning.learning_rate",
        {"low": 0.3, "high": 0.001, "log": True},
        "space.prompt_tuning.learning_rate: low (0.3) must be <= high (0.001)",
    ),
    ("space.p_tuning.learning_rate", {"low": -1e-3, "high": 1e-2}, "space.p_tuning.learning_rate"),
    ("space.num_virtual_tokens", {"low": 0, "high": 8}, "space.num_virtual_tokens"),
    ("space.num_virtual_tokens", {"low": 64, "high": 8, "log": True}, "space.num_virtual_tokens: low (64)"),
    ("space.prefix_tuning.encoder_hidden_size", {"low": 0, "high": 8}, "encoder_hidden_size"),
    ("space.p_tuning.encoder_dropout", {"low": 0.0, "high": 1.5}, "space.p_tuning.encoder_dropout"),
    ("space.p_tuning.encoder_type", ["GRU"], "space.p_tuning.encoder_type"),
    ("budget.num_trials", 0, "budget.num_trials: must be positive"),
    ("budget.time_budget_s", 0, "budget.time_budget_s: must be positive"),
    ("budget.compute_budget_s", -5, "budget.compute_budget_s: must be positive"),
    ("precision", "fp16", "precision: Input should be 'auto', 'fp32' or 'bf16'"),
    ("selection.finalists", 0, "selection.finalists: Input should be greater than or equal to 1"),
    ("budget.max_steps", 0, "budget.max_steps: must be positive"),
    ("budget", {"max_steps": 100, "eval_every_steps": 1000}, "budget.eval_every_steps: 1000 exceeds"),
    ("resources.cpus_per_trial", 0, "resources.cpus_per_trial"),
    ("resources.gpus_per_trial", 1.5, "resources.gpus_per_trial"),
    ("resources.max_concurrent_trials", 0, "resources.max_concurrent_trials"),
    ("gradient_checkpointing", True, "gradient_checkpointing: prefix tuning cannot run with gradient"),
    ("task", "verbalizer", "task: model 'minilm' is an encoder"),
    ("objective.metric", "bleu", "objective.metric: unknown metric"),
    ("objective.metric", "perplexity", "objective.metric: metric 'perplexity' is not reported"),
    ("objective.direction", "minimize", "objective.direction: 'minimize' contradicts"),
    ("sampler.name", "nsga2", "sampler.name: nsga2 is for multi-objective"),
    ("sampler.name", "cmaes", "sampler.name"),
    ("scheduler.name", "hyperband", "scheduler.name"),
    ("ray_address", "localhost", "ray_address: expected null"),
    ("ray_storage_path", "runs/ray", "ray_storage_path: expected an absolute path every Ray node mounts"),
    ("ray_storage_path", "~/ray", "ray_storage_path: expected an absolute path"),
    ("warm_start_configs", [{"method": "lora"}], "warm_start_configs[0].method"),
    (
        "warm_start_configs",
        [{"method": "prompt_tuning", "lr": 0.1, "encoder_type": "MLP"}],
        "warm_start_configs[0]: ['encoder_type', 'lr'] are not parameters of prompt_tuning",
    ),
    ("surprise", 1, "surprise: unknown field"),
    ("name", "", "name: String should have at least 1 character"),
    ("name", "x" * 256, "name: String should have at most 255 characters"),
]


@pytest.mark.parametrize(("field", "value", "message"), INVALID, ids=[f"{c[0]}={c[1]!r}" for c in INVALID])
def test_invalid_spec_names_the_field(field: str, value: Any, message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(_set(_base(), field, value))
    assert message in str(info.value)


@pytest.mark.parametrize("where", ["/nfs/promptsweep/ray", "s3://bucket/prefix", "gs://bucket/x"])
def test_ray_storage_path_takes_a_mounted_path_or_a_uri(where: str) -> None:
    spec = parse_spec(_set(_base(), "ray_storage_path", where))
    assert spec.ray_storage_path == where and parse_spec(spec.to_dict()).ray_storage_path == where


def test_a_spec_without_any_budget_gets_the_default_compute_budget() -> None:
    data = _set(_base(), "budget", {"batch_size": 8})
    budget = parse_spec(data).budget
    assert budget.compute_budget_s == 1800 and budget.num_trials is None and budget.max_steps is None
    # any one of the three is a budget of its own, and nothing else is added
    for key in ("num_trials", "time_budget_s", "compute_budget_s"):
        given = parse_spec(_set(data, f"budget.{key}", 60)).budget
        assert getattr(given, key) == 60
        assert [k for k in ("num_trials", "time_budget_s", "compute_budget_s") if getattr(given, k)] == [key]


def test_pooling_on_a_causal_lm_task_is_refused() -> None:
    data = {"name": "v", "model": "smollm2-135m", "task": "verbalizer", "space": {"pooling": ["mean"]}}
    with pytest.raises(SpecError, match=r"space\.pooling: pooling applies to classification only"):
        parse_spec(data)


def test_bad_files(tmp_path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="does not parse"):
        load_spec(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(SpecError, match="expected a mapping"):
        load_spec(tmp_path / "list.yaml")


def test_gpus_requested_where_none_exist(tmp_path) -> None:
    spec = parse_spec(_set(_base(), "resources.gpus_per_trial", 0.25))
    with pytest.raises(SpecError, match=r"resources\.gpus_per_trial: 0\.25 GPU"):
        check_resources(spec, gpus_available=0)
    check_resources(spec, gpus_available=1)  # fractional GPUs pack on one GPU
    if local_gpu_count() > 0:
        pytest.skip("this machine has a GPU: submit() accepts the spec")
    from promptsweep.storage import Storage

    storage = Storage(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with pytest.raises(SpecError, match="this machine has no GPU"):
        submit(spec, storage)
    assert storage.list_jobs() == []  # refused before anything was stored


def test_submit_stores_the_spec_and_objectives(tmp_path) -> None:
    from promptsweep.storage import Storage

    storage = Storage(f"sqlite:///{tmp_path / 'db.sqlite'}")
    data = _set(_set(_base(), "objective.secondary", "trainable_params"), "sampler.name", "nsga2")
    job_id = submit(data, storage)
    job = storage.get_job(job_id)
    assert parse_spec(dict(job.spec)) == parse_spec(data)  # the space travels with the job
    assert job.objective_metric == "accuracy" and job.secondary_objective == "trainable_params"
    assert list(job.directions) == ["maximize", "minimize"]


def test_submit_refuses_a_missing_data_file_and_stores_local_paths_absolute(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from promptsweep.storage import Storage

    storage = Storage(f"sqlite:///{tmp_path / 'ps.db'}")
    monkeypatch.chdir(tmp_path)
    missing = _set(_base(), "dataset.source", "data/my-reviews.csv")
    with pytest.raises(SpecError, match=r"dataset\.source: no such file .*data/my-reviews\.csv"):
        submit(missing, storage)
    assert storage.list_jobs() == []
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "my-reviews.csv").write_text("review,score\ngood,great\nbad,other\n")
    job_id = submit(_set(_base(), "dataset.source", "data/my-reviews.csv"), storage)
    assert storage.get_job(job_id).spec["dataset"]["source"] == str(tmp_path / "data" / "my-reviews.csv")
    alias = submit(_base(), storage)  # aliases pass unchanged
    assert storage.get_job(alias).spec["dataset"]["source"] == _base()["dataset"]["source"]


def test_bf16_on_a_cpu_without_native_bf16_is_refused_naming_precision() -> None:
    from promptsweep.search._spec import check_cpu_precision

    spec = parse_spec({"name": "p", "precision": "bf16"})
    with pytest.raises(SpecError, match=r"^precision: 'bf16' needs a CPU with native bf16"):
        check_cpu_precision(spec, cpu_flags=["avx2", "avx512f"])
    check_cpu_precision(spec, cpu_flags=["avx512_bf16"])  # a CPU with it: accepted
    check_cpu_precision(spec, cpu_flags=["amx_bf16"])
    # auto and fp32 never need it
    for precision in ("auto", "fp32"):
        check_cpu_precision(parse_spec({"name": "p", "precision": precision}), cpu_flags=[])


def _node(host: str, cpus: float, gpus: float = 0) -> dict[str, Any]:
    return {"NodeManagerHostname": host, "Alive": True, "Resources": {"CPU": cpus, "GPU": gpus}}


def test_the_cluster_refuses_what_no_node_or_no_shared_storage_can_run() -> None:
    from promptsweep.search._pool import check_nodes

    cluster = _set(_set(_base(), "ray_address", "head:6379"), "ray_storage_path", "/nfs/ray")
    nodes = [_node("a", 4, 1), _node("b", 8)]
    check_nodes(parse_spec(cluster), nodes)  # 1 CPU and no GPU per trial: fits
    with pytest.raises(
        SpecError, match=r"resources\.cpus_per_trial: 16 CPU\(s\) per trial, the largest of the 2"
    ):
        check_nodes(parse_spec(_set(cluster, "resources.cpus_per_trial", 16)), nodes)
    gpu = parse_spec(_set(cluster, "resources.gpus_per_trial", 2))
    with pytest.raises(
        SpecError, match=r"gpus_per_trial: 2 GPU\(s\) per trial.*GPUs per node \[0, 1\]\) has 1"
    ):
        check_nodes(gpu, nodes)
    # Several machines and the default storage (the driver's disk): refused, naming the machines.
    default_storage = parse_spec(_set(_base(), "ray_address", "head:6379"))
    with pytest.raises(
        SpecError, match=r"ray_storage_path: the Ray cluster at 'head:6379' has nodes on 2 machines \(a, b\)"
    ):
        check_nodes(default_storage, nodes)
    check_nodes(default_storage, [_node("a", 4), _node("a", 2)])  # nodes of one machine share its disk
