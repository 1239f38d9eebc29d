"""The method registry and parameter validation (no torch needed)."""

from __future__ import annotations

import pytest

from promptsweep.exceptions import MethodConfigError, SpecError
from promptsweep.methods import (
    METHOD_REGISTRY,
    METRICS,
    TASK_METRICS,
    DataSpec,
    EncoderType,
    MethodEntry,
    Pooling,
    PrefixTuningConfig,
    PromptInit,
    PromptMethod,
    PromptTuningConfig,
    PTuningConfig,
    TaskType,
    TrainBudget,
    default_params,
    method_config_from_params,
    method_parameters,
    register_method,
)


def test_registry_covers_every_method_with_its_config_class() -> None:
    assert set(METHOD_REGISTRY) == set(PromptMethod)
    assert METHOD_REGISTRY[PromptMethod.PROMPT_TUNING].config_cls is PromptTuningConfig
    assert METHOD_REGISTRY[PromptMethod.PREFIX_TUNING].config_cls is PrefixTuningConfig
    assert METHOD_REGISTRY[PromptMethod.P_TUNING].config_cls is PTuningConfig


def test_duplicate_registration_is_refused() -> None:
    entry = METHOD_REGISTRY[PromptMethod.P_TUNING]
    with pytest.raises(MethodConfigError, match="already registered"):
        register_method(entry)
    with pytest.raises(MethodConfigError, match="duplicate parameter"):
        register_method(
            MethodEntry(
                PromptMethod.P_TUNING,
                PTuningConfig,
                entry.parameters + entry.parameters[:1],
                entry.build_peft_config,
                "",
            )
        )


def test_metric_directions() -> None:
    assert METRICS == {
        "accuracy": "maximize",
        "macro_f1": "maximize",
        "eval_loss": "minimize",
        "perplexity": "minimize",
        "exact_match": "maximize",
    }
    assert all(m in METRICS for names in TASK_METRICS.values() for m in names)


def test_method_parameters_per_task() -> None:
    names = [p.name for p in method_parameters("p_tuning", "classification")]
    assert names == [
        "num_virtual_tokens",
        "learning_rate",
        "encoder_type",
        "encoder_hidden_size",
        "encoder_num_layers",
        "encoder_dropout",
        "pooling",
    ]
    assert "pooling" not in [p.name for p in method_parameters("p_tuning", "verbalizer")]
    layers = {p.name: p for p in method_parameters("p_tuning")}["encoder_num_layers"]
    assert layers.active_when == ("encoder_type", "LSTM")
    pooling = {p.name: p for p in method_parameters("prompt_tuning", "classification")}["pooling"]
    assert set(pooling.choices) == {p.value for p in Pooling}


@pytest.mark.parametrize("method", list(PromptMethod))
@pytest.mark.parametrize("task", list(TaskType))
def test_default_params_validate(method: PromptMethod, task: TaskType) -> None:
    params = default_params(method, task)
    config = method_config_from_params(params, task)
    assert config.method is method
    assert (config.pooling is not None) == (task is TaskType.CLASSIFICATION)
    assert config.to_params() == method_config_from_params(config.to_params(), task).to_params()


def test_typed_configs() -> None:
    c = method_config_from_params(
        {"method": "p_tuning", "learning_rate": 1e-3, "encoder_type": "LSTM", "encoder_num_layers": 2},
        "verbalizer",
    )
    assert isinstance(c, PTuningConfig) and c.encoder_type is EncoderType.LSTM and c.encoder_num_layers == 2
    c = method_config_from_params({"method": "prompt_tuning", "learning_rate": 0.3, "prompt_init": "text"})
    assert isinstance(c, PromptTuningConfig) and c.prompt_init is PromptInit.TEXT
    c = method_config_from_params({"method": "prefix_tuning", "learning_rate": 0.01}, "classification")
    assert c.is_p_tuning_v2 and c.pooling is Pooling.MEAN and c.num_virtual_tokens == 20


@pytest.mark.parametrize(
    ("params", "task", "message"),
    [
        ({"learning_rate": 0.1}, None, "need 'method'"),
        ({"method": "lora", "learning_rate": 0.1}, None, r"'method'='lora'"),
        ({"method": "prompt_tuning"}, None, "needs 'learning_rate'"),
        ({"method": "prompt_tuning", "learning_rate": -1.0}, None, r"'learning_rate'=-1.0 must be >="),
        ({"method": "prompt_tuning", "learning_rate": float("nan")}, None, "finite"),
        (
            {"method": "prompt_tuning", "learning_rate": 0.1, "num_virtual_tokens": 0},
            None,
            "'num_virtual_tokens'=0",
        ),
        ({"method": "prompt_tuning", "learning_rate": 0.1, "num_virtual_tokens": 2.5}, None, "integer"),
        (
            {"method": "prompt_tuning", "learning_rate": 0.1, "prompt_init": "zeros"},
            None,
            "'prompt_init'='zeros'",
        ),
        (
            {"method": "prompt_tuning", "learning_rate": 0.1, "prompt_init_text": "hi"},
            None,
            "prompt_init='text'",
        ),
        # keys foreign to the method are rejected, not silently ignored
        (
            {"method": "prompt_tuning", "learning_rate": 0.1, "encoder_type": "MLP"},
            None,
            "'encoder_type'='MLP'",
        ),
        ({"method": "prefix_tuning", "learning_rate": 0.1, "prompt_init": "text"}, None, "do not belong"),
        ({"method": "p_tuning", "learning_rate": 0.1, "prefix_projection": True}, None, "do not belong"),
        # encoder_num_layers with MLP: PEFT would ignore it - rejected
        (
            {"method": "p_tuning", "learning_rate": 0.1, "encoder_type": "MLP", "encoder_num_layers": 2},
            None,
            r"'encoder_num_layers'=2 applies only when encoder_type='LSTM'",
        ),
        ({"method": "p_tuning", "learning_rate": 0.1, "encoder_num_layers": 2}, None, "encoder_type='MLP'"),
        ({"method": "p_tuning", "learning_rate": 0.1, "encoder_type": "GRU"}, None, "'encoder_type'='GRU'"),
        ({"method": "p_tuning", "learning_rate": 0.1, "encoder_dropout": 1.5}, None, "'encoder_dropout'=1.5"),
        (
            {"method": "prefix_tuning", "learning_rate": 0.1, "encoder_hidden_size": 64},
            None,
            "applies only when prefix_projection=True",
        ),
        (
            {"method": "prefix_tuning", "learning_rate": 0.1, "prefix_projection": "yes"},
            None,
            "true or false",
        ),
        (
            {"method": "prompt_tuning", "learning_rate": 0.1, "pooling": "max"},
            "classification",
            "'pooling'='max'",
        ),
        (
            {"method": "prompt_tuning", "learning_rate": 0.1, "pooling": "mean"},
            "verbalizer",
            "classification task",
        ),
    ],
)
def test_bad_params_name_key_and_value(params, task, message) -> None:
    with pytest.raises(MethodConfigError, match=message):
        method_config_from_params(params, task)


def test_data_spec_and_budget_validation() -> None:
    with pytest.raises(SpecError, match="validation_fraction"):
        DataSpec(validation_fraction=1.5)
    with pytest.raises(SpecError, match="max_train_examples"):
        DataSpec(max_train_examples=1)
    with pytest.raises(SpecError, match=r"data.splits has unknown role\(s\) \['dev'\]"):
        DataSpec(splits={"dev": "x"})
    with pytest.raises(SpecError, match="label_words"):
        DataSpec(label_words={"great": []})
    with pytest.raises(SpecError, match="template"):
        DataSpec(template="no slot")
    with pytest.raises(SpecError, match="unknown key"):
        DataSpec.from_dict({"source": "fine-foods", "colum": "x"})
    spec = DataSpec(label_words={"great": " good", "other": [" bad", " meh"]}, splits={})
    assert spec.label_words == {"great": (" good",), "other": (" bad", " meh")} and spec.splits is None
    assert DataSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(SpecError, match="max_steps or max_epochs"):
        TrainBudget(max_steps=None, max_epochs=None)
    with pytest.raises(SpecError, match="batch_size"):
        TrainBudget(batch_size=0)
    with pytest.raises(SpecError, match=r"budget\.eval_at_steps=\(0,\) must be integers >= 1"):
        TrainBudget(eval_at_steps=(0,))
    budget = TrainBudget(eval_every_steps=2, eval_at_steps=[8, 4, 4])
    assert budget.eval_at_steps == (4, 8)
    assert [s for s in range(1, 10) if budget.evaluates_at(s)] == [4, 8]
    assert [s for s in range(1, 10) if TrainBudget(eval_every_steps=3).evaluates_at(s)] == [3, 6, 9]


def test_prepared_inputs_and_results_pickle() -> None:
    import pickle

    from promptsweep.methods import PreparedInputs

    p = PreparedInputs(
        model="m",
        model_dir="/x",
        data_dir="/y",
        task=TaskType.VERBALIZER,
        max_length=8,
        label_names=("a", "b"),
        label_word_ids=((1,), (2,)),
        init_text="a b",
        counts={"train": 2},
        rows_filtered={"train": 0},
        truncated={"train": 0},
        majority_accuracy={"train": 0.5},
        pad_token_id=0,
        cache_key="k",
    )
    assert pickle.loads(pickle.dumps(p)) == p
