"""Architecture families: pure functions ``build(params, inputs, outputs) -> keras.Model``.

Keras is imported only when a model is built or compiled: this module keeps a registry of
family names to ``"module:function"`` strings and imports the module on first use, so
importing ``search_spaces.families`` stays cheap (``hpsearch --help`` does not load TensorFlow).

Every model takes a dict of inputs keyed by ``InputSpec.input_names()`` and returns a dict of
outputs keyed by head name (plus ``"<head>_aux"`` for an auxiliary output when sampled).
"""

from __future__ import annotations

from typing import Any

from search_spaces.families._names import output_names
from search_spaces.registry import Registry
from search_spaces.specs import InputSpec, OutputSpec

# tree family (a library space name) -> tree model name (hpsearch.core.registry.TREE_MODELS)
TREE_FAMILIES: dict[str, str] = {
    "lightgbm": "lgbm",
    "catboost": "catboost",
    "xgboost": "xgb",
    "hist_gbm": "hgb",
    "random_forest": "rf",
    "extra_trees": "et",
}
TREE_FAMILY_OF: dict[str, str] = {model: family for family, model in TREE_FAMILIES.items()}


def is_tree_family(family: Any) -> bool:
    """Whether ``family`` is a tree family (trained by the ``trees`` trainer, not a network)."""
    return isinstance(family, str) and family in TREE_FAMILIES


# name -> "module:function"; users add theirs with FAMILY_REGISTRY.register(name, build) or
# name a ``module:build`` function as a space's ``family``
FAMILY_REGISTRY = Registry(
    "architecture family",
    {
        "dense": "search_spaces.families.dense:build",
        "cnn": "search_spaces.families.cnn:build",
        "text": "search_spaces.families.text:build",
        "multi_input": "search_spaces.families.multi_input:build",
        "wide_deep": "search_spaces.families.wide_deep:build",
        "multi_output": "search_spaces.families.multi_output:build",
        "realmlp": "search_spaces.families.realmlp:build",
        # tree families validate as a space's family; building one raises TreeFamilyError
        **{family: "search_spaces.families.trees:build" for family in TREE_FAMILIES},
    },
)

# the built-in network families (buildable as Keras models; tree families are in TREE_FAMILIES)
FAMILIES: tuple[str, ...] = tuple(n for n in FAMILY_REGISTRY.names() if not is_tree_family(n))

__all__ = [
    "FAMILIES",
    "FAMILY_REGISTRY",
    "TREE_FAMILIES",
    "TREE_FAMILY_OF",
    "aux_targets",
    "build_model",
    "compile_model",
    "count_params",
    "describe_model",
    "get_builder",
    "is_tree_family",
    "output_names",
]


def get_builder(family: str):
    """The ``build(params, inputs, outputs)`` function of a family (a registered name or a
    ``module:function``); ValueError (:class:`PluginError`) when unknown."""
    return FAMILY_REGISTRY.resolve(family)


def build_model(family: str, params: dict[str, Any], inputs: InputSpec, outputs: OutputSpec) -> Any:
    """Build an uncompiled functional Keras model of ``family`` for the sampled ``params``;
    ValueError for a tree family (:func:`is_tree_family`), which is never a Keras model."""
    if is_tree_family(family):
        from search_spaces.families.trees import TreeFamilyError

        raise TreeFamilyError(
            f"family {family!r} is a tree family: it is trained by the `trees` trainer, not "
            "built as a Keras model. Fix: run it with training.trial_fn: auto (or trees), or "
            "pick a network family."
        )
    builder = get_builder(family)
    if not outputs.heads:
        raise ValueError("OutputSpec has no heads; a model needs at least one output.")
    return builder(dict(params or {}), inputs, outputs)


def compile_model(
    model: Any, params: dict[str, Any], outputs: OutputSpec, losses: dict[str, str] | None = None
) -> Any:
    """Compile with the sampled optimizer, learning rate, per-head losses and loss weights;
    ``losses`` overrides the loss of a task's heads (``{"regression": "mean_absolute_error"}``;
    default: binary and sparse categorical cross-entropy, ``mse``)."""
    from search_spaces.families import _common

    return _common.compile_model(model, params, outputs, losses)


def aux_targets(model: Any, y_by_head: dict[str, Any]) -> dict[str, Any]:
    """``y_by_head`` plus the same targets under ``"<head>_aux"`` for each auxiliary output."""
    names = output_names(model)
    out = {k: v for k, v in y_by_head.items() if k in names} or dict(y_by_head)
    for name in names:
        if name.endswith("_aux") and name not in out:
            head = name[: -len("_aux")]
            if head in y_by_head:
                out[name] = y_by_head[head]
    return out


def describe_model(model: Any) -> str:
    """One compact line, e.g. ``numeric(30) > Dense(64) > BN > relu > Dropout(0.2) > output:Dense(1,sigmoid)``.

    Inputs as ``name(shape)``, ``[+res]`` for a residual add, ``Proj`` for a shortcut projection,
    ``Wide``/``Logits`` for wide & deep terms, ``head:Layer`` for outputs.
    """
    from search_spaces.families import _common

    return _common.describe_model(model)


def count_params(model: Any) -> int:
    """Total number of weights (trainable and not)."""
    return int(model.count_params())
