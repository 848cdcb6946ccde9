"""The project's plug-in registries, by name, with no import of the layers that fill them.

Each entry is a ``"module:attr"`` string imported on first use (``search_spaces.registry``),
so the spec can validate a name without importing Optuna, Keras or scikit-learn. Every
registry also takes ``"module:Name"`` for user code. The architecture families' registry is
``search_spaces.families.FAMILY_REGISTRY``.

- ``SAMPLERS``: ``optuna.samplers.BaseSampler`` factories ``(space, seed, max_concurrent,
  n_startup_trials) -> BaseSampler`` (``hpsearch.search.samplers``); a user's ``module:Class``
  is any ``BaseSampler`` subclass, built as ``Class(seed=seed)`` when it takes a seed.
- ``TRAINERS``: trial functions ``(payload, arrays, reporter) -> TrialResult``
  (``hpsearch.search.trial``).
- ``BLENDERS``: ``ensembles.BaseBlender`` subclasses, restored from ``ensemble.json`` by their
  own ``from_dict``.
- ``TREE_MODELS``: tree-model factories ``(task, params) -> estimator``
  (``hpsearch.search.tree_models``; each is also a tree family of the space library:
  ``search_spaces.families.TREE_FAMILIES``).
"""

from __future__ import annotations

import importlib.util

from search_spaces.registry import PluginError, Registry, import_target, is_import_path

__all__ = [
    "BLENDERS",
    "SAMPLERS",
    "TRAINERS",
    "TREE_MODELS",
    "TREE_PACKAGES",
    "PluginError",
    "Registry",
    "import_target",
    "is_import_path",
    "missing_package",
]

SAMPLERS = Registry(
    "sampler",
    {
        "tpe": "hpsearch.search.samplers:tpe_sampler",
        "hyperopt-tpe": "hpsearch.search.samplers:hyperopt_sampler",
        "random": "hpsearch.search.samplers:random_sampler",
        "cmaes": "hpsearch.search.samplers:cmaes_sampler",
        "gp": "hpsearch.search.samplers:gp_sampler",
    },
)

TRAINERS = Registry(
    "trainer",
    {
        "keras": "hpsearch.search.training:train_trial",
        "trees": "hpsearch.search.tree_trainer:train_tree_trial",
    },
)

BLENDERS = Registry(
    "blend method",
    {
        "best": "ensembles.blenders:BestSingleBlender",
        "mean": "ensembles.blenders:MeanBlender",
        "greedy": "ensembles.blenders:GreedyBlender",
        "nelder-mead": "ensembles.blenders:NelderMeadBlender",
        "stack": "ensembles.blenders:StackingBlender",
    },
)

TREE_MODELS = Registry(
    "tree model",
    {
        "rf": "hpsearch.search.tree_models:random_forest",
        "et": "hpsearch.search.tree_models:extra_trees",
        "hgb": "hpsearch.search.tree_models:hist_gradient_boosting",
        "lgbm": "hpsearch.search.tree_models:lightgbm",
        "xgb": "hpsearch.search.tree_models:xgboost",
        "catboost": "hpsearch.search.tree_models:catboost",
    },
)

# tree models whose library is optional: name -> the package to install
TREE_PACKAGES = {"lgbm": "lightgbm", "xgb": "xgboost", "catboost": "catboost"}
# what to install for a missing package (xgboost: the CPU-only wheel of the `xgboost` extra)
TREE_INSTALL = {"xgboost": "xgboost-cpu"}


def missing_package(name: str) -> str | None:
    """The package a tree model needs and this Python lacks (lightgbm, xgboost, catboost), else
    None."""
    package = TREE_PACKAGES.get(name)
    return package if package and importlib.util.find_spec(package) is None else None
