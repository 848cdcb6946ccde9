"""Tree families: searched like network families, but never built as Keras models.

A space whose ``family`` is a tree family (``lightgbm``, ``catboost``, ``xgboost``,
``hist_gbm``, ``random_forest``, ``extra_trees``) is trained by the ``trees`` trainer
(``hpsearch.search.tree_trainer``), which translates a sampled configuration into the
estimator's arguments (``hpsearch.search.tree_models.estimator_params``). Their entries in
``FAMILY_REGISTRY`` point here so a space validates; building one as a network is an error.
"""

from __future__ import annotations

from typing import Any


class TreeFamilyError(ValueError):
    """A tree family was asked for a Keras model."""


def build(params: dict[str, Any], inputs: Any, outputs: Any) -> Any:
    raise TreeFamilyError(
        "a tree family is trained by the `trees` trainer, not built as a Keras model. "
        "Fix: run it with training.trial_fn: auto (or trees), or pick a network family."
    )
