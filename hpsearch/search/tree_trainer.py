"""The ``trees`` trainer: one tree-family trial (LightGBM, CatBoost, XGBoost, scikit-learn).

``train_tree_trial(payload, data, reporter)`` runs inside a Ray worker like the Keras
trainer (``hpsearch.search.training``) and returns the same kind of ``TrialResult``, so a
tree trial is stored, ranked and blended like a network trial. ``data`` is the tree matrix
of each split, ``{"x": {split: {"tree": matrix}}, "y": {split: targets}, "tree_meta":
{"categorical": [column indices], "cardinality": [...]}}`` (the driver ships it for a run
whose space is a tree family; ``hpsearch.core.data.Preprocessor.tree_meta``).

- **Parameters**: the sampled configuration of the family's space translated to the
  estimator's arguments (``hpsearch.search.tree_models.estimator_params``), seeded with
  ``payload.seed``, scaled with the training rows, with ``cpus_per_trial`` threads
  (``payload.training["cpus_per_trial"]``).
- **Early stopping** (boosters) and the forests' probability calibration use
  ``data["x"]["valid"]``: the valid split of a holdout run, a fold's inner slice of its own
  training rows in a cross-validated run (``hpsearch.search.folds``), never held-out rows.
- **Predictions** of every split of ``payload.splits`` (valid, holdout, test; a fold's valid,
  oof, test) in the run's conventions: binary P(class 1), class-index-ordered probabilities,
  regression in natural units (``log1p`` learnt and undone under RMSLE; an absolute loss
  for the boosters under MAE).
- **Deadline**: a booster stops adding rounds at ``payload.training["deadline"]`` (the
  end of the search's time budget and its grace: ``hpsearch.search.driver``), keeping the
  rounds it has.
- **Value**: the metric on the valid rows. ``epochs`` and ``best_epoch`` are the boosting
  rounds kept (0 and None for a forest); ``trial.json`` also records the estimator's
  arguments (``estimator_params``, without threads), ``tree_model``, ``threads``,
  ``target_transform``, ``loss``, ``seed``, ``early_stopping_rounds``, ``shrink`` (a
  forest classifier's calibration) and ``fit_s``.
- **Model**: the fitted estimator pickled with joblib (``model_format: "joblib"``), saved as
  ``model.joblib`` (``model_fold<k>.joblib`` per fold), its SHA-256 in ``trial.json``.
"""

from __future__ import annotations

import io
import math
import time
from typing import Any

import numpy as np

from hpsearch.core import metrics
from hpsearch.search.trial import COMPLETE, TrialPayload, TrialResult

__all__ = ["TREE_INPUT", "model_bytes", "train_tree_trial", "trial_threads"]

TREE_INPUT = "tree"  # the name of the tree matrix among a split's inputs


def trial_threads(payload: TrialPayload) -> int:
    """The threads a tree trial uses: its ``cpus_per_trial`` (rounded up, at least 1)."""
    cpus = payload.training.get("cpus_per_trial") or 1
    try:
        return max(1, int(math.ceil(float(cpus))))
    except (TypeError, ValueError):
        return 1


def _n_classes(payload: TrialPayload) -> int:
    heads = (payload.outputs or {}).get("heads") or [{}]
    k = int(heads[0].get("n_classes") or 1)
    return max(2, k) if payload.task != "regression" else 1


def _matrix(data: dict[str, Any], split: str) -> np.ndarray:
    inputs = data["x"][split]
    if TREE_INPUT not in inputs:
        raise ValueError(
            f"the trial's {split} rows hold no tree matrix (inputs: {', '.join(inputs)}): the "
            "trees trainer needs a run whose space is a tree family"
        )
    return np.asarray(inputs[TREE_INPUT])


def _patience(name: str, n_rows: int) -> int:
    """The rounds without gain after which the booster ``name`` stopped."""
    from hpsearch.search.tree_models import HGB_PATIENCE, early_stopping_rounds

    rounds = early_stopping_rounds(n_rows)
    return min(rounds, HGB_PATIENCE) if name == "hgb" else rounds


def model_bytes(model: Any) -> bytes:
    """A fitted estimator pickled with joblib (what ``model.joblib`` holds)."""
    import joblib

    buf = io.BytesIO()
    joblib.dump(model, buf)
    return buf.getvalue()


def train_tree_trial(payload: TrialPayload, data: dict[str, Any], reporter: Any) -> TrialResult:
    """The ``trees`` trainer: fit the trial's tree model, score it on the valid rows and
    predict every split (``hpsearch.core.registry.TRAINERS``; see the module docstring)."""
    from hpsearch.search.tree_models import (
        best_rounds,
        estimator_params,
        fit_estimator,
        predict_tree,
        target_transform,
        tree_loss,
        without_threads,
    )
    from search_spaces.families import TREE_FAMILIES

    family, task, metric = payload.family, payload.task, payload.metric
    if family not in TREE_FAMILIES:
        raise ValueError(
            f"the trees trainer trains tree families ({', '.join(TREE_FAMILIES)}), not "
            f"family {family!r}; use training.trial_fn: auto or keras for it"
        )
    name = TREE_FAMILIES[family]
    threads = trial_threads(payload)
    y_train = np.asarray(data["y"]["train"])
    y_valid = data["y"].get("valid")
    y_valid = None if y_valid is None else np.asarray(y_valid)
    x_train = _matrix(data, "train")
    x_valid = _matrix(data, "valid") if "valid" in data["x"] else None
    categorical = list((data.get("tree_meta") or {}).get("categorical") or [])
    transform = target_transform(task, metric)
    params = estimator_params(
        family, payload.params, task, metric, payload.seed, len(y_train), threads
    )
    t0 = time.perf_counter()
    model = fit_estimator(
        name,
        task,
        params,
        x_train,
        y_train,
        transform=transform,
        X_val=x_valid,
        y_val=y_valid,
        categorical=categorical,
        threads=threads,
        deadline=payload.training.get("deadline"),
    )
    fit_s = time.perf_counter() - t0
    k = _n_classes(payload)
    splits = [s for s in payload.splits if s in data["x"]]
    predictions = {s: predict_tree(model, _matrix(data, s), task, k, transform) for s in splits}
    value = float(metrics.score(metric, y_valid, predictions["valid"]))
    result_metrics = {metric: value}
    if "holdout" in predictions and data["y"].get("holdout") is not None:
        result_metrics[f"holdout_{metric}"] = float(
            metrics.score(metric, data["y"]["holdout"], predictions["holdout"])
        )
    rounds = best_rounds(model)
    return TrialResult(
        number=payload.number,
        state=COMPLETE,
        value=value,
        metrics=result_metrics,
        predictions=predictions,
        model_bytes=model_bytes(model),
        model_format="joblib",
        epochs=int(rounds or 0),
        extra={
            "tree_model": name,
            "estimator_params": without_threads(params),
            "threads": threads,
            "target_transform": transform,
            "target_scaling": None,
            "loss": tree_loss(name, task, metric),
            "seed": int(payload.seed),
            "best_epoch": rounds,
            "early_stopping_rounds": _patience(name, len(y_train)) if rounds else None,
            "shrink": getattr(model, "alpha", None),
            "n_train": int(len(y_train)),
            "fit_s": round(fit_s, 4),
        },
    )
