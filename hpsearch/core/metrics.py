"""Metrics by name, with their direction; shared by the search (`hpsearch`) and `ensembles`.

Conventions for the arrays every metric takes:

- ``y_true``: integer class indices ``0..K-1`` for classification (binary: 0/1;
  integer-valued floats are accepted), floats for regression.
- ``pred``: for binary, shape ``(n,)`` holding the probability of class 1
  (``(n, 1)`` and ``(n, 2)`` are accepted too); for multiclass ``(n, K)``
  probabilities in class-index order; for regression ``(n,)`` (or ``(n, 1)``).

``score`` returns a metric in its natural units; ``loss`` returns a value to
MINIMIZE (the score, negated when greater is better). The metric functions are
plain numpy (log loss, RMSE, ...) or scikit-learn (ROC AUC, F1) and match
scikit-learn's values; ``log_loss`` clips probabilities to ``[1e-15, 1 - 1e-15]``.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

EPS = 1e-15
TASKS = ("binary", "multiclass", "regression")
CLASSIFICATION = ("binary", "multiclass")


@dataclass(frozen=True)
class Metric:
    """A named metric: ``fn(y_true, pred) -> float`` in natural units, and its direction."""

    name: str
    greater_is_better: bool
    needs_proba: bool
    tasks: tuple[str, ...]
    fn: Callable[[np.ndarray, np.ndarray], float]

    def __call__(self, y_true, pred) -> float:
        return self.fn(y_true, pred)

    def loss(self, y_true, pred) -> float:
        """A value to minimize."""
        value = self.fn(y_true, pred)
        return -value if self.greater_is_better else value

    @property
    def direction(self) -> str:
        """``"maximize"`` or ``"minimize"`` (Optuna's words)."""
        return "maximize" if self.greater_is_better else "minimize"

    @property
    def worst(self) -> float:
        """The worst possible value, in natural units."""
        return -math.inf if self.greater_is_better else math.inf


# --------------------------------------------------------------------------- input handling


def _as_1d(a, what: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{what} must be 1-D (n,) or (n, 1); got shape {arr.shape}")
    return arr


def _finite(arr: np.ndarray, what: str) -> None:
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{what} contains {bad} NaN or infinite value(s)")


def _class_labels(y_true) -> np.ndarray:
    y = _as_1d(y_true, "y_true")
    if y.dtype.kind in "fc":
        yf = y.astype(np.float64)
        _finite(yf, "y_true")
        if not np.all(yf == np.round(yf)):
            raise ValueError("classification y_true must hold integer class indices 0..K-1")
        y = yf.astype(np.int64)
    elif y.dtype.kind == "b":
        y = y.astype(np.int64)
    elif y.dtype.kind not in "iu":
        raise ValueError(
            f"classification y_true must hold integer class indices 0..K-1; got dtype {y.dtype}"
        )
    y = y.astype(np.int64, copy=False)
    if y.size and y.min() < 0:
        raise ValueError("classification y_true must hold class indices >= 0")
    return y


def _classification_inputs(y_true, pred) -> tuple[np.ndarray, np.ndarray, int]:
    """Returns ``(y, proba, K)``: proba is ``(n,)`` (class 1) when K == 2, else ``(n, K)``."""
    y = _class_labels(y_true)
    p = np.asarray(pred, dtype=np.float64)
    if p.ndim == 2 and p.shape[1] == 1:
        p = p[:, 0]
    if p.ndim == 2 and p.shape[1] == 2:
        p = p[:, 1]
    if p.ndim == 1:
        k = 2
    elif p.ndim == 2:
        k = p.shape[1]
    else:
        raise ValueError(f"classification predictions must be (n,) or (n, K); got shape {p.shape}")
    if p.shape[0] != y.shape[0]:
        raise ValueError(f"y_true has {y.shape[0]} rows but predictions have {p.shape[0]}")
    if y.size and y.max() >= k:
        raise ValueError(
            f"y_true holds class index {int(y.max())} but predictions cover only {k} classes"
        )
    _finite(p, "predictions")
    return y, p, k


def _regression_inputs(y_true, pred) -> tuple[np.ndarray, np.ndarray]:
    y = _as_1d(y_true, "y_true").astype(np.float64)
    p = _as_1d(pred, "predictions").astype(np.float64)
    if p.shape[0] != y.shape[0]:
        raise ValueError(f"y_true has {y.shape[0]} rows but predictions have {p.shape[0]}")
    _finite(y, "y_true")
    _finite(p, "predictions")
    return y, p


def _hard_labels(p: np.ndarray) -> np.ndarray:
    if p.ndim == 1:
        return (p >= 0.5).astype(np.int64)
    return np.argmax(p, axis=1)


# --------------------------------------------------------------------------- metric functions


def log_loss(y_true, pred) -> float:
    """Cross-entropy, probabilities clipped to ``[1e-15, 1 - 1e-15]`` (as ``labels=range(K)``).

    Multiclass rows are clipped, then divided by their sum, as competitions score them.
    """
    y, p, _ = _classification_inputs(y_true, pred)
    if y.size == 0:
        raise ValueError("log_loss of zero rows")
    if p.ndim == 2:
        p = np.clip(p, EPS, 1.0 - EPS)
        p = p / p.sum(axis=1, keepdims=True)
    p_true = np.where(y == 1, p, 1.0 - p) if p.ndim == 1 else p[np.arange(y.shape[0]), y]
    return float(-np.mean(np.log(np.clip(p_true, EPS, 1.0 - EPS))))


def roc_auc(y_true, pred) -> float:
    """Binary ROC AUC; multiclass: one-vs-rest macro average over the classes present."""
    from sklearn.metrics import roc_auc_score

    y, p, k = _classification_inputs(y_true, pred)
    if p.ndim == 1:
        if np.unique(y).size < 2:
            raise ValueError("roc_auc needs both classes in y_true; only one is present")
        return float(roc_auc_score(y, p))
    aucs = []
    for c in range(k):
        pos = y == c
        if 0 < pos.sum() < y.shape[0]:
            aucs.append(roc_auc_score(pos, p[:, c]))
    if not aucs:
        raise ValueError("roc_auc needs at least two classes in y_true; only one is present")
    return float(np.mean(aucs))


def accuracy(y_true, pred) -> float:
    """Share of rows whose argmax (binary: p >= 0.5) is the true class."""
    y, p, _ = _classification_inputs(y_true, pred)
    return float(np.mean(_hard_labels(p) == y))


def f1_macro(y_true, pred) -> float:
    """Macro F1 over ``labels=range(K)`` (a class never predicted nor present scores 0)."""
    from sklearn.metrics import f1_score

    y, p, k = _classification_inputs(y_true, pred)
    return float(
        f1_score(y, _hard_labels(p), labels=list(range(k)), average="macro", zero_division=0)
    )


def rmse(y_true, pred) -> float:
    y, p = _regression_inputs(y_true, pred)
    return float(np.sqrt(np.mean((p - y) ** 2)))


def rmsle(y_true, pred) -> float:
    """Root mean squared log error, ``log1p`` of both sides.

    A negative target is an error (the spec check refuses it up front). Predictions are
    clipped at 0 first, as every submission under RMSLE is (``hpsearch.core.submission``): a
    network trained on a near-zero target predicts slightly negative values, which a
    competition would reject but which mean "0".
    """
    y, p = _regression_inputs(y_true, pred)
    if y.size and y.min() < 0:
        raise ValueError(
            f"rmsle is undefined for negative values: y_true has {int((y < 0).sum())} "
            f"negative value(s) (min {y.min():.6g}); use rmse or mae"
        )
    p = np.maximum(p, 0.0)
    return float(np.sqrt(np.mean((np.log1p(p) - np.log1p(y)) ** 2)))


def mae(y_true, pred) -> float:
    y, p = _regression_inputs(y_true, pred)
    return float(np.mean(np.abs(p - y)))


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("log_loss", False, True, CLASSIFICATION, log_loss),
        Metric("roc_auc", True, True, CLASSIFICATION, roc_auc),
        Metric("accuracy", True, False, CLASSIFICATION, accuracy),
        Metric("f1_macro", True, False, CLASSIFICATION, f1_macro),
        Metric("rmse", False, False, ("regression",), rmse),
        Metric("rmsle", False, False, ("regression",), rmsle),
        Metric("mae", False, False, ("regression",), mae),
    )
}

_DEFAULTS = {"binary": "log_loss", "multiclass": "log_loss", "regression": "rmse"}


# --------------------------------------------------------------------------- public API


def get_metric(name: str | Metric) -> Metric:
    """The metric called ``name``; ValueError naming it, the valid ones and the closest."""
    if isinstance(name, Metric):
        return name
    try:
        return METRICS[name]
    except (KeyError, TypeError):
        pass
    valid = ", ".join(METRICS)
    close = difflib.get_close_matches(str(name).lower().replace("-", "_"), list(METRICS), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown metric {name!r}; valid metrics: {valid}.{hint}")


def score(name: str | Metric, y_true, pred) -> float:
    """The metric in its natural units."""
    return get_metric(name).fn(y_true, pred)


def loss(name: str | Metric, y_true, pred) -> float:
    """A value to minimize: the score, negated when greater is better."""
    return get_metric(name).loss(y_true, pred)


def default_metric(task: str) -> str:
    """``log_loss`` for binary/multiclass, ``rmse`` for regression."""
    try:
        return _DEFAULTS[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}") from None


def metrics_for_task(task: str) -> list[str]:
    """Names of the metrics that apply to ``task``."""
    default_metric(task)  # validates task
    return [m.name for m in METRICS.values() if task in m.tasks]


def check_metric_task(name: str | Metric, task: str) -> Metric:
    """The metric, or ValueError when it does not apply to ``task``."""
    metric = get_metric(name)
    default_metric(task)
    if task not in metric.tasks:
        raise ValueError(
            f"metric {metric.name!r} does not apply to a {task} task; "
            f"use one of: {', '.join(metrics_for_task(task))}"
        )
    return metric


def is_better(name: str | Metric, a: float | None, b: float | None) -> bool:
    """True when ``a`` is strictly better than ``b``. None/NaN is worse than any number."""
    metric = get_metric(name)
    a_ok = a is not None and not math.isnan(a)
    b_ok = b is not None and not math.isnan(b)
    if not a_ok:
        return False
    if not b_ok:
        return True
    return a > b if metric.greater_is_better else a < b
