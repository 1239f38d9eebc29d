"""The conditional search space over prompt methods, define-by-run (Optuna).

The method is sampled first; each method's own parameters are sampled only under it:

- prompt tuning (Lester et al. 2021): ``learning_rate``, ``prompt_init``;
- prefix tuning (Li & Liang 2021; P-tuning v2 without projection): ``learning_rate``,
  ``prefix_projection`` and, only with projection, ``encoder_hidden_size``;
- P-tuning (Liu et al. 2021): ``learning_rate``, ``encoder_type``, ``encoder_hidden_size``,
  ``encoder_dropout`` and, only for the LSTM encoder, ``encoder_num_layers``.

``num_virtual_tokens`` (log scale) and, for classification, ``pooling`` are shared by all methods.

Optuna names: a parameter whose range differs per method is stored under ``<method>.<name>`` (e.g.
``prompt_tuning.learning_rate``), so that each Optuna distribution keeps one range (TPE with
``group=True`` models each method's sub-space separately); :func:`sample_params` returns the flat
dict the methods layer takes (``learning_rate``, ...), as in docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from promptsweep._logging import get_logger
from promptsweep.search._spec import JobSpec
from promptsweep.search._spec_space import FloatRange, IntRange, SearchSpace

if TYPE_CHECKING:
    import optuna

    from promptsweep.search._planning import Plan

_log = get_logger(__name__)

#: P-tuning's warm-start prompt-encoder width (PEFT's P-tuning examples).
P_TUNING_DEFAULT_HIDDEN = 128

#: The order in which each task's paper defaults run first, most reliable first. Ray Tune's ASHA
#: promotes the first trial to reach a rung (nothing to compare it with yet), so the first warm-start
#: config usually trains its whole budget: it should be the one most likely to win. Measured here:
#: on MiniLM (classification) prefix tuning's default (P-tuning v2, lr 1e-2) was the best default in
#: every quality run (docs/quality.md); on SmolLM2 (verbalizer) prompt tuning with its init text was.
WARM_START_ORDER: dict[str, tuple[str, ...]] = {
    "classification": ("prefix_tuning", "prompt_tuning", "p_tuning"),
    "verbalizer": ("prompt_tuning", "prefix_tuning", "p_tuning"),
    "generation": ("prompt_tuning", "prefix_tuning", "p_tuning"),
}

#: Parameters shared by every method (one Optuna name each).
SHARED = ("method", "num_virtual_tokens", "pooling")


def _qualified(method: str, name: str) -> str:
    return name if name in SHARED else f"{method}.{name}"


def _suggest_float(trial: optuna.Trial, name: str, rng: FloatRange) -> float:
    if rng.low == rng.high:
        return float(rng.low)
    return trial.suggest_float(name, rng.low, rng.high, log=rng.log)


def _suggest_int(trial: optuna.Trial, name: str, rng: IntRange) -> int:
    if rng.low == rng.high:
        return int(rng.low)
    return trial.suggest_int(name, rng.low, rng.high, log=rng.log)


def _suggest_choice(trial: optuna.Trial, name: str, choices: list[Any]) -> Any:
    return trial.suggest_categorical(name, list(choices))


def _dimensions(method: str, space: SearchSpace, chosen: Mapping[str, Any]) -> Iterator[tuple[Any, Any]]:
    """Yield ``(ParamSpec, dimension)`` for each of ``method``'s registry parameters that the job's
    ``space`` searches and that is active given the values in ``chosen`` so far.

    The methods registry lists a method's parameters in dependency order, with the condition
    (``active_when``) under which each belongs to a trial; the caller fills ``chosen`` as it goes, so
    a conditional parameter is judged on the value just given to its parent. The dimension is a
    ``FloatRange``/``IntRange``, a list of choices, or a fixed value (``prompt_init_text``); parameters
    the space leaves out (pooling off the classification task, no init text) are skipped.
    """
    from promptsweep.methods import method_parameters

    sub = getattr(space, method)
    for param in method_parameters(method):
        if param.active_when is not None and chosen.get(param.active_when[0]) != param.active_when[1]:
            continue
        dim = getattr(space, param.name) if param.name in SHARED else getattr(sub, param.name, None)
        if dim is not None:
            yield param, dim


def sample_params(trial: optuna.Trial, space: SearchSpace) -> dict[str, Any]:
    """Sample one trial's flat parameters from ``space`` (define-by-run).

    Args:
        trial: an Optuna trial (or Ray's captor around one); its ``suggest_*`` calls define the
            space as it is sampled, so a method's parameters appear only in that method's trials.
        space: the job's :class:`SearchSpace`.

    Returns:
        The flat dict ``promptsweep.methods.train_trial`` takes: ``method``, ``num_virtual_tokens``,
        ``learning_rate``, the method's own keys, and ``pooling`` for classification. A range whose
        ``low == high`` is fixed and not registered with Optuna.
    """
    method = _suggest_choice(trial, "method", space.methods)
    params: dict[str, Any] = {"method": method}
    for param, dim in _dimensions(method, space, params):
        name = _qualified(method, param.name)
        if isinstance(dim, FloatRange):
            params[param.name] = _suggest_float(trial, name, dim)
        elif isinstance(dim, IntRange):
            params[param.name] = _suggest_int(trial, name, dim)
        elif isinstance(dim, list):
            value = _suggest_choice(trial, name, dim)
            params[param.name] = bool(value) if param.kind == "bool" else value
        else:  # a fixed value (prompt_init_text)
            params[param.name] = dim
    return params


def to_optuna_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Map flat trial params to the Optuna names :func:`sample_params` uses (for ``enqueue_trial``).

    Keys that are not sampled (``prompt_init_text``) are dropped.
    """
    method = params["method"]
    return {_qualified(method, k): v for k, v in params.items() if k != "prompt_init_text"}


def _clip(value: Any, rng: FloatRange | IntRange) -> Any:
    return min(max(value, rng.low), rng.high)


def _in_space(params: dict[str, Any], space: SearchSpace) -> dict[str, Any]:
    """Fit a flat config into ``space``: walks the method's registry parameters the way
    :func:`sample_params` does, clipping numbers to their range, replacing a value outside the choices
    by the first choice, and dropping keys the space (or an unmet ``active_when``) leaves out.
    ``num_virtual_tokens`` and ``pooling`` get a value when missing (20; ``mean`` when searched);
    other missing keys stay missing (the sampler draws them for an enqueued trial)."""
    method = params["method"]
    given = {"num_virtual_tokens": 20, **params}
    if space.pooling is not None and "pooling" not in given:
        given["pooling"] = "mean" if "mean" in space.pooling else space.pooling[0]
    out: dict[str, Any] = {"method": method}
    for param, dim in _dimensions(method, space, out):
        if param.name not in given:
            continue
        value = given[param.name]
        if isinstance(dim, FloatRange | IntRange):
            value = (float if isinstance(dim, FloatRange) else int)(_clip(value, dim))
        elif isinstance(dim, list) and value not in dim:
            value = dim[0]
        out[param.name] = value
    return out


def paper_default_params(method: str, spec: JobSpec) -> dict[str, Any]:
    """The paper-default config of ``method`` for ``spec`` (warm start), fitted into the job's space.

    Taken from ``promptsweep.methods.default_params`` (the registry's paper defaults), then clipped to
    the space's ranges and choices so that Optuna accepts it as an enqueued trial.
    """
    from promptsweep.methods import default_params

    base = dict(default_params(method, spec.task))
    if method == "prompt_tuning" and spec.task != "classification":
        # Lester et al.: a prompt initialized from words (here the label words or the space's init text)
        # beats a random one on a causal LM, the more so in a short budget.
        base["prompt_init"] = "text"
    if method == "p_tuning" and base.get("encoder_hidden_size") is None:
        # PEFT's default is the model's hidden size, unknown before the model loads; its P-tuning
        # examples use 128 (and the space always samples this key for P-tuning).
        base["encoder_hidden_size"] = P_TUNING_DEFAULT_HIDDEN
    return _in_space(base, spec.space)


def warm_start_order(spec: JobSpec) -> list[str]:
    """The job's methods in the order their paper defaults run (:data:`WARM_START_ORDER`)."""
    order = WARM_START_ORDER.get(spec.task, ())
    return sorted(spec.space.methods, key=lambda m: order.index(m) if m in order else len(order))


def warm_start_params(spec: JobSpec) -> list[dict[str, Any]]:
    """The flat configs to enqueue first: each method's paper default (when ``spec.warm_start``), in
    :func:`warm_start_order`, then ``spec.warm_start_configs`` in order."""
    out: list[dict[str, Any]] = []
    if spec.warm_start:
        out.extend(paper_default_params(m, spec) for m in warm_start_order(spec))
    out.extend(_in_space(dict(c), spec.space) for c in spec.warm_start_configs)
    return out


def space_to_json(space: SearchSpace) -> dict[str, Any]:
    """The space as JSON (stored with the job; :meth:`SearchSpace.model_validate` reloads it)."""
    return space.model_dump(mode="json")


def make_sampler(spec: JobSpec, plan: Plan | None = None) -> Any:
    """The Optuna sampler of ``spec``: TPE (``multivariate=True, group=True`` for the conditional
    space), random, or NSGA-II; seeded with ``spec.seed``.

    TPE's random start-up (``sampler.n_startup_trials``) defaults to a third of the planned configs,
    at least 4 (the enqueued warm-start configs count among them), so that TPE models the rest.
    """
    import warnings

    import optuna

    s = spec.sampler
    if s.name == "random":
        return optuna.samplers.RandomSampler(seed=spec.seed)
    if s.name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=spec.seed)
    startup = s.n_startup_trials
    if startup is None:
        configs = plan.configs if plan is not None and plan.configs else 12
        startup = max(4, configs // 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            multivariate=True,
            group=True,
            n_startup_trials=startup,
            seed=spec.seed,
            constant_liar=spec.resources.max_concurrent_trials > 1,
        )
