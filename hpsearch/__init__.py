"""hpsearch: hyperparameter search over Keras architectures on Ray, and ensembles of the
finished trials.

The public API, imported lazily (``import hpsearch`` loads no TensorFlow, Ray or Optuna)::

    import hpsearch
    spec = hpsearch.load_spec("examples/breast_cancer.yaml")
    run = hpsearch.run(spec)                    # or hpsearch.load_run("runs/breast-cancer-mlp")
    run.trials().head(); run.best()

Layers, lowest first (imports point down only; ``tests/test_layers.py`` checks it):
``search_spaces`` < ``hpsearch.core`` < ``hpsearch.search`` < ``hpsearch.cluster`` <
``ensembles`` < ``hpsearch.pipeline`` < ``hpsearch.cli``. See docs/api.md.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "load_spec": "hpsearch.core.spec",
    "Spec": "hpsearch.core.spec",
    "SpecError": "hpsearch.core.spec",
    "load_run": "hpsearch.core.runs",
    "Run": "hpsearch.core.runs",
    "UserError": "hpsearch.core.errors",
    "RunDirError": "hpsearch.core.errors",
    "StudyStopped": "hpsearch.core.errors",
    "SAMPLERS": "hpsearch.core.registry",
    "TRAINERS": "hpsearch.core.registry",
    "run": "hpsearch.search.api",
    "Interrupted": "hpsearch.search.driver",
    "Callback": "hpsearch.search.callbacks",
    "run_pipeline": "hpsearch.pipeline.run",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hpsearch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
