"""ensembles: blend the finished trials of hpsearch runs (and tree models) into one prediction.

The public API, imported on first use (PEP 562) so ``import ensembles`` stays light (no
scikit-learn, SciPy or TensorFlow until a name is used):

- ``build(runs, **options) -> Ensemble`` and ``load(path) -> Ensemble``;
- ``Ensemble``: ``.predict(frame)``, ``.predict_frame(frame)``, ``.members``, ``.weights``,
  ``.scores``, ``.method``, ``.path``, ``.blender``;
- ``AutoBlender``, ``BaseBlender`` and the blenders ``BestSingleBlender``, ``MeanBlender``,
  ``GreedyBlender``, ``NelderMeadBlender``, ``StackingBlender`` (the registry of blend
  methods is ``hpsearch.core.registry.BLENDERS``).

See docs/ensembles.md.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "build": "ensembles.api",
    "load": "ensembles.api",
    "Ensemble": "ensembles.ensemble",
    "AutoBlender": "ensembles.auto",
    "BaseBlender": "ensembles.blenders",
    "BestSingleBlender": "ensembles.blenders",
    "MeanBlender": "ensembles.blenders",
    "GreedyBlender": "ensembles.blenders",
    "NelderMeadBlender": "ensembles.blenders",
    "StackingBlender": "ensembles.blenders",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ensembles' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
