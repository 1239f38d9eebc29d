"""Which model architectures promptsweep runs, for which tasks, methods and poolings (no torch here).

A model is recognised from its ``config.json`` alone (``model_type``, ``architectures``,
``is_encoder_decoder``), so the search layer can refuse a model, task, method or pooling the
architecture cannot do when a job is submitted, before anything is stored or loaded. The trainer checks
the same table again when it builds the model (hub names are only resolved then).

Encoders (``classification``; the head trains, the encoder is frozen):

============  =========================================  ===========================  ==================
model_type    what the head receives per ``pooling``     head modules trained         prefix tuning
============  =========================================  ===========================  ==================
bert          pooler: the checkpoint's pooler (dense +   ``classifier``               yes
              tanh on [CLS], frozen); first_token: the
              raw [CLS] state; mean
deberta-v2    pooler: ``ContextPooler`` (dense + act on  ``classifier`` (+ ``pooler``  no (no
              [CLS], trained: base checkpoints lack it);  for ``pooler``)              past_key_values)
              first_token; mean
roberta       first_token (the HF head: dense + tanh +    ``classifier``               yes
              out_proj on <s>); mean (the same head on
              the mean). No pooler: refused
distilbert    first_token (the HF head: pre_classifier +  ``pre_classifier``,          no (no
              ReLU + classifier on [CLS]); mean. No        ``classifier``               past_key_values)
              pooler: refused
============  =========================================  ===========================  ==================

Encoder-decoders (``verbalizer``, ``generation``): ``t5``, ``mt5`` (T5, T5 v1.1, Flan-T5, mT5), all three
methods (peft ``SEQ_2_SEQ_LM``). Causal LMs (``verbalizer``, ``generation``): any config whose
``architectures`` names a ``...ForCausalLM`` / ``...LMHeadModel`` class (tested: Llama, GPT-2).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from promptsweep.exceptions import MethodConfigError
from promptsweep.methods._config import Pooling, PromptMethod, TaskType


class ModelFamily(enum.StrEnum):
    """How a model is built and which tasks it serves."""

    ENCODER = "encoder"  # AutoModelForSequenceClassification
    CAUSAL_LM = "causal_lm"  # AutoModelForCausalLM
    SEQ2SEQ_LM = "seq2seq_lm"  # AutoModelForSeq2SeqLM (peft SEQ_2_SEQ_LM)


#: The tasks of each family.
FAMILY_TASKS: dict[ModelFamily, tuple[TaskType, ...]] = {
    ModelFamily.ENCODER: (TaskType.CLASSIFICATION,),
    ModelFamily.CAUSAL_LM: (TaskType.VERBALIZER, TaskType.GENERATION),
    ModelFamily.SEQ2SEQ_LM: (TaskType.VERBALIZER, TaskType.GENERATION),
}


class HeadInput(enum.StrEnum):
    """Where an encoder's classification head reads the pooled vector (how a pooling is installed).

    - ``pooler_slot``: the model calls a pooler module on the sequence output and feeds its output to the
      head (BERT: ``bert.pooler``; DeBERTa-v2: the top-level ``pooler``); ``mean``/``first_token`` replace
      that module.
    - ``first_position``: the head takes the sequence output and reads position 0 itself (RoBERTa's
      ``classifier``, DistilBERT's ``pre_classifier``); ``mean`` writes the pooled vector there.
    """

    POOLER_SLOT = "pooler_slot"
    FIRST_POSITION = "first_position"


@dataclass(frozen=True)
class Architecture:
    """One supported architecture.

    Attributes:
        model_type: the ``config.json`` ``model_type`` (``"causal_lm"`` for the causal-LM catch-all).
        family: how it is built, which tasks it serves.
        methods: the prompt methods it runs; ``refused_methods`` gives the reason for the others.
        poolings: encoders: the poolings that take effect; ``refused_poolings``: why the others do not.
        head_input: encoders: where the pooled vector goes (:class:`HeadInput`).
        pooler_slot: the pooler module's path from the task model (``pooler_slot``: replaced by the
            pooling; RoBERTa: the empty slot peft's prefix-tuning path reads, filled with the pooling).
        head_modules: per pooling, the task model's modules trained with the head besides ``classifier``
            (peft ``modules_to_save``).
    """

    model_type: str
    family: ModelFamily
    methods: tuple[PromptMethod, ...] = tuple(PromptMethod)
    refused_methods: Mapping[PromptMethod, str] = field(default_factory=dict)
    poolings: tuple[Pooling, ...] = ()
    refused_poolings: Mapping[Pooling, str] = field(default_factory=dict)
    head_input: HeadInput | None = None
    pooler_slot: str | None = None
    head_modules: Mapping[Pooling, tuple[str, ...]] = field(default_factory=dict)

    @property
    def tasks(self) -> tuple[TaskType, ...]:
        """The tasks this architecture serves."""
        return FAMILY_TASKS[self.family]


_NO_PAST_KV = (
    "its encoder takes no past_key_values, which peft's prefix tuning injects the prefix through; use "
    "prompt_tuning or p_tuning"
)

ENCODERS: dict[str, Architecture] = {
    "bert": Architecture(
        "bert",
        ModelFamily.ENCODER,
        poolings=(Pooling.POOLER, Pooling.FIRST_TOKEN, Pooling.MEAN),
        head_input=HeadInput.POOLER_SLOT,
        pooler_slot="bert.pooler",
    ),
    "deberta-v2": Architecture(
        "deberta-v2",
        ModelFamily.ENCODER,
        methods=(PromptMethod.PROMPT_TUNING, PromptMethod.P_TUNING),
        refused_methods={PromptMethod.PREFIX_TUNING: _NO_PAST_KV},
        poolings=(Pooling.POOLER, Pooling.FIRST_TOKEN, Pooling.MEAN),
        head_input=HeadInput.POOLER_SLOT,
        pooler_slot="pooler",
        head_modules={Pooling.POOLER: ("pooler",)},
    ),
    "roberta": Architecture(
        "roberta",
        ModelFamily.ENCODER,
        poolings=(Pooling.FIRST_TOKEN, Pooling.MEAN),
        refused_poolings={
            Pooling.POOLER: "RobertaForSequenceClassification has no pooler (its head applies its own "
            "dense + tanh to <s>: that is 'first_token'); use 'first_token' or 'mean'",
        },
        head_input=HeadInput.FIRST_POSITION,
        pooler_slot="roberta.pooler",  # empty in the classification model; filled for peft's prefix path
    ),
    "distilbert": Architecture(
        "distilbert",
        ModelFamily.ENCODER,
        methods=(PromptMethod.PROMPT_TUNING, PromptMethod.P_TUNING),
        refused_methods={PromptMethod.PREFIX_TUNING: _NO_PAST_KV},
        poolings=(Pooling.FIRST_TOKEN, Pooling.MEAN),
        refused_poolings={
            Pooling.POOLER: "DistilBERT has no pooler (its head applies pre_classifier + ReLU to [CLS]: that "
            "is 'first_token'); use 'first_token' or 'mean'",
        },
        head_input=HeadInput.FIRST_POSITION,
        head_modules={p: ("pre_classifier",) for p in Pooling},
    ),
}
# XLM-R and CamemBERT are RoBERTa's classes under other names (same head, same module paths).
for _name in ("xlm-roberta", "camembert"):
    ENCODERS[_name] = replace(ENCODERS["roberta"], model_type=_name)
SEQ2SEQ: dict[str, Architecture] = {t: Architecture(t, ModelFamily.SEQ2SEQ_LM) for t in ("t5", "mt5")}
CAUSAL_LM = Architecture("causal_lm", ModelFamily.CAUSAL_LM)

#: Model aliases -> the ``config.json`` fields that identify them (known without loading the model).
ALIAS_CONFIGS: dict[str, dict[str, Any]] = {
    "minilm": {"model_type": "bert", "architectures": ["BertModel"]},
    "smollm2-135m": {"model_type": "llama", "architectures": ["LlamaForCausalLM"]},
}


def supported_summary() -> str:
    """One line naming what is supported (for error messages and docs)."""
    return (
        f"encoders {sorted(ENCODERS)} (task classification), encoder-decoders {sorted(SEQ2SEQ)} and causal "
        "LMs (config.json architectures '...ForCausalLM' / '...LMHeadModel') (tasks verbalizer, generation)"
    )


def read_model_config(model_dir: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a local model directory as a dict.

    Raises:
        MethodConfigError: naming ``model`` when the file is missing or not JSON.
    """
    path = Path(model_dir) / "config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MethodConfigError(f"model: cannot read {str(path)!r}: {exc}") from exc


def architecture_of(model_config: Mapping[str, Any]) -> Architecture | None:
    """The :class:`Architecture` of a ``config.json`` dict, or ``None`` when it is not supported."""
    model_type = str(model_config.get("model_type", ""))
    if model_type in ENCODERS:
        return ENCODERS[model_type]
    if model_type in SEQ2SEQ:
        return SEQ2SEQ[model_type]
    if model_config.get("is_encoder_decoder"):
        return None
    names = model_config.get("architectures") or []
    if any(str(n).endswith(("ForCausalLM", "LMHeadModel")) for n in names):
        return CAUSAL_LM
    return None


class ModelSupportError(MethodConfigError):
    """A model cannot do what the job asks; ``field`` names the job-spec field at fault
    (``model``, ``task``, ``space.methods`` or ``space.pooling``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:  # pickled across Ray processes
        return type(self), (self.field, self.message)


def check_model_support(
    model_config: Mapping[str, Any],
    task: TaskType | str,
    *,
    methods: Iterable[PromptMethod | str] = (),
    poolings: Iterable[Pooling | str | None] = (),
    model: str | None = None,
) -> Architecture:
    """Return the architecture of ``model_config`` after checking it can run ``task``, ``methods`` and
    (classification) ``poolings``.

    Args:
        model_config: the model's ``config.json`` as a dict (:func:`read_model_config`).
        task: the job's task.
        methods: the prompt methods the job will run.
        poolings: the poolings it will use (``None`` entries are skipped).
        model: the model as the user named it (for the messages).

    Raises:
        ModelSupportError: one error naming the field (``model``, ``task``, ``space.methods``,
            ``space.pooling``), the model type found and what is supported.
    """
    task = TaskType(task)
    model_type = model_config.get("model_type")
    named = f"model {model!r} (model_type {model_type!r})" if model else f"model_type {model_type!r}"
    subject = f"model {model!r}" if model else "the model"
    arch = architecture_of(model_config)
    if arch is None:
        found = model_config.get("architectures")
        raise ModelSupportError(
            "model",
            f"{named} with architectures {found!r} is not a supported architecture; supported: "
            f"{supported_summary()}",
        )
    if task not in arch.tasks:
        need = {
            TaskType.CLASSIFICATION: f"an encoder ({', '.join(sorted(ENCODERS))})",
            TaskType.VERBALIZER: "a causal LM or an encoder-decoder (T5)",
            TaskType.GENERATION: "a causal LM or an encoder-decoder (T5)",
        }[task]
        raise ModelSupportError(
            "task",
            f"{subject} is {_family_words(arch.family)} (model_type {model_type!r}): it can do "
            f"{[t.value for t in arch.tasks]}, not {task.value!r}, which needs {need}",
        )
    for method in methods:
        m = PromptMethod(method)
        if m not in arch.methods:
            raise ModelSupportError(
                "space.methods",
                f"method {m.value!r} cannot run on {named}: {arch.refused_methods.get(m, 'not supported')}",
            )
    if task is TaskType.CLASSIFICATION:
        for pooling in poolings:
            if pooling is None:
                continue
            p = Pooling(pooling)
            if p not in arch.poolings:
                raise ModelSupportError(
                    "space.pooling",
                    f"pooling {p.value!r} does not apply to {named}: "
                    f"{arch.refused_poolings.get(p, 'not supported')}",
                )
    return arch


def _family_words(family: ModelFamily) -> str:
    return {
        ModelFamily.ENCODER: "an encoder",
        ModelFamily.CAUSAL_LM: "a causal LM",
        ModelFamily.SEQ2SEQ_LM: "an encoder-decoder",
    }[family]


def model_config_if_known(model: str) -> dict[str, Any] | None:
    """The ``config.json`` fields of ``model`` when known without the network or loading weights: an alias
    (:data:`ALIAS_CONFIGS`) or a local directory with a ``config.json``; ``None`` otherwise (a hub name,
    a path that does not exist here - the trainer checks again when it builds the model)."""
    if model in ALIAS_CONFIGS:
        return dict(ALIAS_CONFIGS[model])
    path = Path(model).expanduser()
    if (path / "config.json").is_file():
        return read_model_config(path)
    return None
