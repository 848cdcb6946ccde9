"""Blenders: weight the holdout predictions of finished trials into one prediction.

Every blender is a :class:`BaseBlender` and follows the scikit-learn estimator
contract: ``__init__`` stores its parameters untouched, ``fit`` validates and learns
``weights_`` (learned state ends in ``_``); ``get_params`` / ``set_params`` /
``sklearn.base.clone`` come from ``BaseEstimator``. ``to_dict()`` gives the fitted
blender as JSON-able data and ``Class.from_dict(d)`` restores it, which is how a saved
ensemble is restored: ``BLENDERS.resolve(entry["method"]).from_dict(entry)``
(``hpsearch.core.registry.BLENDERS``: best, mean, greedy, nelder-mead, stack, or a
user's ``"module:Class"``).

Input conventions (shared with ``hpsearch.core.metrics``):

- ``P``: member predictions on the same rows, shape ``(n_members, n_rows)`` for
  binary (probability of class 1) and regression, ``(n_members, n_rows, K)`` for
  multiclass probabilities. ``(m, n, 1)`` is read as ``(m, n)``; ``(m, n, 2)`` as
  binary (the class-1 column), so ``predict`` then returns ``(n,)``.
- ``y``: class indices ``0..K-1`` (binary 0/1) or floats for regression.
- ``metric``: a name from ``hpsearch.core.metrics.METRICS``. ``None`` infers the
  default: ``log_loss`` when ``P`` is 3-D or ``y`` is 0/1 with ``P`` in [0, 1],
  else ``rmse``.

``score(P, y)`` returns the metric in its NATURAL units (lower is better for
losses), unlike scikit-learn's greater-is-better ``score`` convention; use
``hpsearch.core.metrics.is_better`` to compare.

Weighted blenders (best, mean, greedy, nelder-mead) keep non-negative
``weights_`` summing to one and predict ``sum_j weights_[j] * P[j]``; the stacking
blender fits a linear meta-model and ``weights_`` are its coefficients.
``ensembles.auto.AutoBlender`` fits every method, cross-fits each and keeps the best
cross-fitted one.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from scipy.optimize import minimize
from sklearn.base import BaseEstimator, clone
from sklearn.utils.validation import check_is_fitted

from hpsearch.core import metrics as _metrics
from hpsearch.core.registry import BLENDERS as _REGISTRY
from hpsearch.core.registry import PluginError

__all__ = [
    "BLENDERS",
    "BaseBlender",
    "BestSingleBlender",
    "GreedyBlender",
    "MeanBlender",
    "NelderMeadBlender",
    "StackingBlender",
    "best_method",
    "blender_class",
    "cross_fit_predict",
    "cross_fit_score",
    "get_blender",
    "infer_task",
    "nested_auto_score",
    "pick_by_cross_fit",
]

_FEATURE_EPS = 1e-6


# --------------------------------------------------------------------------- input handling


def _as_members(P) -> np.ndarray:
    P = np.asarray(P, dtype=np.float64)
    if P.ndim == 3 and P.shape[2] == 1:
        P = P[:, :, 0]
    elif P.ndim == 3 and P.shape[2] == 2:
        P = P[:, :, 1]
    if P.ndim not in (2, 3):
        raise ValueError(
            f"P must be (n_members, n_rows) or (n_members, n_rows, n_classes); got shape {P.shape}"
        )
    if P.shape[0] < 1 or P.shape[1] < 1:
        raise ValueError(f"P must hold at least one member and one row; got shape {P.shape}")
    if not np.all(np.isfinite(P)):
        raise ValueError("P contains NaN or infinite predictions")
    return P


def _infer_metric(P: np.ndarray, y: np.ndarray) -> str:
    if P.ndim == 3:
        return "log_loss"
    y = np.asarray(y)
    if y.dtype.kind in "biuf" and np.all(np.isin(y, (0, 1))) and P.min() >= 0 and P.max() <= 1:
        return "log_loss"
    return "rmse"


def infer_task(P, metric: str) -> str:
    """``regression`` for a regression metric, else ``multiclass`` (3-D P) or ``binary``."""
    m = _metrics.get_metric(metric)
    P = np.asarray(P)
    if "regression" in m.tasks:
        return "regression"
    if P.ndim == 3 and P.shape[2] > 2:
        return "multiclass"
    return "binary"


def _prepare(P, y, metric: str | None) -> tuple[np.ndarray, np.ndarray, str, str]:
    """Validated ``(P, y, metric_name, task)``."""
    P = _as_members(P)
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.shape[0] != P.shape[1]:
        raise ValueError(f"y must be 1-D with {P.shape[1]} rows (P's second axis); got {y.shape}")
    name = _infer_metric(P, y) if metric is None else _metrics.get_metric(metric).name
    task = infer_task(P, name)
    if task == "regression":
        if P.ndim != 2:
            raise ValueError(f"metric {name!r} is a regression metric but P is 3-D {P.shape}")
        y = y.astype(np.float64)
        if not np.all(np.isfinite(y)):
            raise ValueError("y contains NaN or infinite values")
    else:
        y = _metrics._class_labels(y)
        k = P.shape[2] if P.ndim == 3 else 2
        if y.size and y.max() >= k:
            raise ValueError(f"y holds class {int(y.max())} but P covers only {k} classes")
    return P, y, name, task


def _blend(weights: np.ndarray, P: np.ndarray) -> np.ndarray:
    return np.tensordot(weights, P, axes=1)


class _Objective:
    """The metric loss (to minimize) of a weighted blend, with a fast path for log loss.

    For log loss only the blended probability of the true class matters, and
    for weights summing to one it is the weighted sum of the members' true-class
    probabilities: ``rep`` then holds those, ``(m, n)``, whatever K.
    """

    def __init__(self, P: np.ndarray, y: np.ndarray, metric: str):
        self.metric = _metrics.get_metric(metric)
        self.y = y
        self.n_fev = 0
        if self.metric.name == "log_loss":
            if P.ndim == 2:
                rep = np.where(y[None, :] == 1, P, 1.0 - P)
            else:
                rep = P[:, np.arange(P.shape[1]), y]
            self.rep = np.ascontiguousarray(rep)
            self._fast = True
        else:
            self.rep = P
            self._fast = False

    def of_blend(self, B: np.ndarray) -> float:
        self.n_fev += 1
        if self._fast:
            return float(-np.mean(np.log(np.clip(B, _metrics.EPS, 1.0 - _metrics.EPS))))
        return self.metric.loss(self.y, B)

    def __call__(self, w: np.ndarray) -> float:
        return self.of_blend(_blend(w, self.rep))

    def single_losses(self) -> np.ndarray:
        return np.array([self.of_blend(self.rep[j]) for j in range(self.rep.shape[0])])


def _greedy_weights(
    obj: _Objective, n_iter: int, n_init: int, replacement: bool
) -> tuple[np.ndarray, float]:
    """Caruana et al. (2004) ensemble selection; returns the best prefix's weights and loss."""
    rep = obj.rep
    m = rep.shape[0]
    singles = obj.single_losses()
    order = np.argsort(singles, kind="stable")
    counts = np.zeros(m, dtype=np.int64)
    for j in order[: max(1, min(n_init, m))]:
        counts[j] += 1
    total = int(counts.sum())
    S = _blend(counts.astype(np.float64), rep)
    best_loss = obj.of_blend(S / total) if total > 1 else float(singles[order[0]])
    best_counts = counts.copy()
    for _ in range(int(n_iter)):
        cand_loss = np.full(m, np.inf)
        for j in range(m):
            if not replacement and counts[j] > 0:
                continue
            cand_loss[j] = obj.of_blend((S + rep[j]) / (total + 1))
        j = int(np.argmin(cand_loss))
        if not np.isfinite(cand_loss[j]):
            break
        counts[j] += 1
        total += 1
        S = S + rep[j]
        if cand_loss[j] < best_loss:
            best_loss = float(cand_loss[j])
            best_counts = counts.copy()
    return best_counts / best_counts.sum(), best_loss


# --------------------------------------------------------------------------- serialisation


def _jsonable(value: Any) -> Any:
    """``value`` with numpy arrays and scalars turned into lists and Python numbers."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


# --------------------------------------------------------------------------- blenders


class BaseBlender(BaseEstimator):
    """The base of every blender: validation, prediction, scoring and (de)serialisation.

    A subclass takes ``metric=None`` and its own parameters in ``__init__`` (stored
    untouched) and implements ``_fit(P, y)``, which sets ``weights_`` (one number per
    member). ``_predict(P)`` defaults to the weighted sum ``sum_j weights_[j] * P[j]``;
    override it for another blend. ``fit`` validates ``P`` and ``y`` first and sets
    ``metric_``, ``task_``, ``n_members_``, ``n_classes_`` (K, 2 for binary, 0 for
    regression) and, after ``_fit``, ``fitted_score_``.

    ``to_dict()`` writes ``method`` (the registered name, else ``"module:Class"``),
    ``params``, those attributes and ``weights``; ``from_dict(d)`` reads them back. A
    blender with more learned state extends both (call ``super()``).
    """

    # ----------------------------------------------------------------- fitting

    def fit(self, P, y):
        P, y, metric, task = _prepare(P, y, self.metric)
        self.metric_ = metric
        self.task_ = task
        self.n_members_ = P.shape[0]
        self.n_classes_ = P.shape[2] if P.ndim == 3 else (2 if task == "binary" else 0)
        self._fit(P, y)
        self.fitted_score_ = float(_metrics.score(metric, y, self._predict(P)))
        return self

    def _fit(self, P: np.ndarray, y: np.ndarray) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement _fit(P, y)")

    def _predict(self, P: np.ndarray) -> np.ndarray:
        return _blend(self.weights_, P)

    def _check_P(self, P) -> np.ndarray:
        check_is_fitted(self, "weights_")
        P = _as_members(P)
        if P.shape[0] != self.n_members_:
            raise ValueError(
                f"P has {P.shape[0]} members; the blender was fitted on {self.n_members_}"
            )
        fitted_ndim = 3 if self.task_ == "multiclass" else 2
        if P.ndim != fitted_ndim or (P.ndim == 3 and P.shape[2] != self.n_classes_):
            raise ValueError(f"P has shape {P.shape}; the blender was fitted on another layout")
        return P

    def predict(self, P) -> np.ndarray:
        """Blended predictions: ``(n,)`` for binary/regression, ``(n, K)`` for multiclass."""
        return self._predict(self._check_P(P))

    def score(self, P, y) -> float:
        """The metric of the blend on ``(P, y)``, in natural units (see the module docstring)."""
        P = self._check_P(P)
        return float(_metrics.score(self.metric_, y, self._predict(P)))

    def member_weights(self) -> list[float]:
        """One number per member: its blend weight (for ``stack``, see ``StackingBlender``)."""
        check_is_fitted(self, "weights_")
        return [float(w) for w in np.ravel(self.weights_)]

    def members_used(self) -> np.ndarray:
        """Per member, whether ``predict`` reads its predictions (a zero weight is not read)."""
        return np.asarray(self.member_weights()) != 0.0

    def _single_scores(self, P: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.array([_metrics.score(self.metric_, y, P[j]) for j in range(P.shape[0])])

    def _best_member(self, scores: np.ndarray) -> int:
        best = 0
        for j in range(1, len(scores)):
            if _metrics.is_better(self.metric_, scores[j], scores[best]):
                best = j
        return best

    # ----------------------------------------------------------------- saving

    @classmethod
    def method_name(cls) -> str:
        """The name ``BLENDERS`` knows this class by, else its ``"module:Class"`` path."""
        path = f"{cls.__module__}:{cls.__qualname__}"
        for name in _REGISTRY:
            if _REGISTRY.target(name) in (cls, path):
                return name
        return path

    def to_dict(self) -> dict[str, Any]:
        """The fitted blender as JSON-able data; ``from_dict`` restores it."""
        check_is_fitted(self, "weights_")
        return {
            "method": self.method_name(),
            "params": _jsonable(self.get_params()),
            "metric": self.metric_,
            "task": self.task_,
            "n_members": int(self.n_members_),
            "n_classes": int(self.n_classes_),
            "fitted_score": _jsonable(getattr(self, "fitted_score_", None)),
            "weights": _jsonable(np.asarray(self.weights_, dtype=np.float64)),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BaseBlender:
        """A fitted blender from ``to_dict()``'s data (ValueError when it is another's)."""
        method = d.get("method")
        if method is not None and method != cls.method_name():
            try:
                other = _REGISTRY.resolve(method)
            except PluginError:
                other = None
            if other is not cls:
                raise ValueError(
                    f"{cls.__name__}.from_dict: the data is of blend method {method!r}. "
                    "Fix: restore it with BLENDERS.resolve(d['method']).from_dict(d)."
                )
        params = dict(d.get("params") or {})
        blender = cls(**params)
        metric = d.get("metric") or params.get("metric")
        if metric is None or "task" not in d:
            raise ValueError(
                f"{cls.__name__}.from_dict: the data names no metric or task. "
                "Fix: pass what to_dict() wrote."
            )
        blender.metric_ = _metrics.get_metric(metric).name
        blender.task_ = str(d["task"])
        if "weights" in d:
            blender.weights_ = np.asarray(d["weights"], dtype=np.float64)
        blender.n_members_ = int(d.get("n_members", np.shape(d.get("weights", []))[0]))
        blender.n_classes_ = int(d.get("n_classes", 2 if blender.task_ == "binary" else 0))
        if d.get("fitted_score") is not None:
            blender.fitted_score_ = float(d["fitted_score"])
        return blender


class BestSingleBlender(BaseBlender):
    """All weight on the member with the best metric on the fitting rows."""

    def __init__(self, metric: str | None = None):
        self.metric = metric

    def _fit(self, P, y):
        scores = self._single_scores(P, y)
        self.member_scores_ = scores
        self.best_member_ = self._best_member(scores)
        self.weights_ = np.zeros(P.shape[0])
        self.weights_[self.best_member_] = 1.0


class MeanBlender(BaseBlender):
    """Uniform weights."""

    def __init__(self, metric: str | None = None):
        self.metric = metric

    def _fit(self, P, y):
        self.weights_ = np.full(P.shape[0], 1.0 / P.shape[0])


class GreedyBlender(BaseBlender):
    """Greedy forward selection with replacement (Caruana et al., 2004).

    Starts from the ``n_init`` best single members (equal counts), then adds, ``n_iter``
    times, the member whose addition most improves the metric (with replacement
    unless ``replacement=False``); the weights are the counts of the best prefix.
    """

    def __init__(
        self,
        metric: str | None = None,
        n_iter: int = 50,
        n_init: int = 1,
        replacement: bool = True,
    ):
        self.metric = metric
        self.n_iter = n_iter
        self.n_init = n_init
        self.replacement = replacement

    def _fit(self, P, y):
        if int(self.n_iter) < 0 or int(self.n_init) < 1:
            raise ValueError(
                f"n_iter must be >= 0 and n_init >= 1; got {self.n_iter}, {self.n_init}"
            )
        obj = _Objective(P, y, self.metric_)
        self.weights_, _ = _greedy_weights(obj, self.n_iter, self.n_init, self.replacement)


class _BudgetSpent(Exception):
    """Raised inside the objective to stop Nelder-Mead exactly at its budget."""


class NelderMeadBlender(BaseBlender):
    """Weights on the simplex found by Nelder-Mead on the metric loss.

    Weights are ``|z| / sum|z|`` (abs-normalize, so a weight can reach exactly 0).
    Nelder-Mead (``adaptive=True``) runs from three starts (the greedy solution,
    the best single member and uniform weights) and then restarts from the best
    point found, with all the budget left, while it improves by more than ``tol``
    (the starts share half of the budget). The total budget is ``max_fev``
    function evaluations (default ``200 + maxfev_per_member * n_members``). The result is the best point seen;
    if its fitted metric is worse than the best single member's, the blender
    falls back to that member (``fell_back_ = True``), so the fitted blend is
    never worse than the best single member.
    """

    def __init__(
        self,
        metric: str | None = None,
        maxfev_per_member: int = 100,
        max_fev: int | None = None,
        restarts: int = 3,
        greedy_iter: int = 50,
        init_step: float = 0.1,
        tol: float = 1e-7,
    ):
        self.metric = metric
        self.maxfev_per_member = maxfev_per_member
        self.max_fev = max_fev
        self.restarts = restarts
        self.greedy_iter = greedy_iter
        self.init_step = init_step
        self.tol = tol

    @staticmethod
    def _to_weights(z: np.ndarray) -> np.ndarray:
        a = np.abs(z)
        s = a.sum()
        if not np.isfinite(s) or s <= 0:
            return np.full(z.shape[0], 1.0 / z.shape[0])
        return a / s

    def _run(self, obj, w0: np.ndarray, step: float, maxfev: int) -> tuple[np.ndarray, float]:
        """One Nelder-Mead run of at most ``maxfev`` evaluations; the best point it saw."""
        m = w0.shape[0]
        simplex = np.vstack([w0, w0 + step * np.eye(m)])
        best = [w0, np.inf]
        count = [0]

        def f(z):
            if count[0] >= maxfev:
                raise _BudgetSpent
            count[0] += 1
            w = self._to_weights(z)
            loss = obj(w)
            if loss < best[1]:
                best[0], best[1] = w, loss
            return loss

        with contextlib.suppress(_BudgetSpent):
            minimize(
                f,
                w0,
                method="Nelder-Mead",
                options={
                    "adaptive": True,
                    "maxfev": int(maxfev),
                    "initial_simplex": simplex,
                    "xatol": 1e-6,
                    "fatol": float(self.tol) / 10,
                },
            )
        return best[0], float(best[1])

    def _budget(self, m: int) -> int:
        if int(self.restarts) < 0 or float(self.init_step) <= 0:
            raise ValueError("restarts must be >= 0 and init_step > 0")
        budget = (
            int(self.max_fev) if self.max_fev is not None else 200 + int(self.maxfev_per_member) * m
        )
        if budget < 1:
            raise ValueError(f"the Nelder-Mead budget must be positive; got {budget}")
        return budget

    def _starts(self, obj: _Objective) -> list[tuple[str, np.ndarray, float]]:
        """(name, weights, loss) of the greedy solution, the best member and uniform weights."""
        m = obj.rep.shape[0]
        singles = obj.single_losses()
        best_j = int(np.argmin(singles))
        one_hot = np.zeros(m)
        one_hot[best_j] = 1.0
        w_greedy, l_greedy = _greedy_weights(obj, self.greedy_iter, 1, True)
        starts = [("greedy", w_greedy, l_greedy), ("best", one_hot, float(singles[best_j]))]
        if m > 1:
            uniform = np.full(m, 1.0 / m)
            starts.append(("uniform", uniform, obj(uniform)))
        return starts

    def _search(self, obj: _Objective, starts, budget: int) -> tuple[str, np.ndarray]:
        """Half the budget probes the starts, the rest refines the best point found."""
        m = obj.rep.shape[0]
        best_name, best_w, best_l = min(starts, key=lambda s: s[2])
        obj.n_fev = 0
        self.n_restarts_ = 0
        if m == 1:
            return best_name, best_w
        per_start = max(m + 2, budget // (2 * len(starts)))
        for name, w0, _ in starts:
            if budget - obj.n_fev < m + 2:
                break
            w, loss = self._run(obj, w0, self.init_step, min(per_start, budget - obj.n_fev))
            if loss < best_l:
                best_name, best_w, best_l = f"nm-from-{name}", w, loss
        step = float(self.init_step) / 2
        for _ in range(int(self.restarts)):
            if budget - obj.n_fev < m + 2:
                break
            w, loss = self._run(obj, best_w, step, budget - obj.n_fev)
            self.n_restarts_ += 1
            improved = best_l - loss
            if loss < best_l:
                best_w, best_l = w, loss
                if not best_name.endswith("+restart"):
                    best_name += "+restart"
            if improved <= float(self.tol):
                break
            step /= 2
        return best_name, best_w

    def _fit(self, P, y):
        budget = self._budget(P.shape[0])
        obj = _Objective(P, y, self.metric_)
        starts = self._starts(obj)
        self.start_, self.weights_ = self._search(obj, starts, budget)
        self.n_fev_ = obj.n_fev
        # The guarantee, checked with the metric itself (not the fast objective).
        one_hot = next(w for name, w, _ in starts if name == "best")
        best_single = float(_metrics.score(self.metric_, y, P[int(np.argmax(one_hot))]))
        fitted = float(_metrics.score(self.metric_, y, self._predict(P)))
        self.fell_back_ = bool(_metrics.is_better(self.metric_, best_single, fitted))
        if self.fell_back_:
            self.weights_ = one_hot
            self.start_ = "best"

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "start": self.start_, "fell_back": bool(self.fell_back_)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NelderMeadBlender:
        blender = super().from_dict(d)
        if "start" in d:
            blender.start_ = d["start"]
        if "fell_back" in d:
            blender.fell_back_ = bool(d["fell_back"])
        return blender


class StackingBlender(BaseBlender):
    """A linear meta-model on the members' predictions.

    Classification: ``LogisticRegression(C=C)`` on the members' logits (binary) or
    log-probabilities (multiclass, ``n_members * K`` features), probabilities
    clipped at 1e-6; regression: ``Ridge(alpha=alpha)`` (``alpha=0`` is plain least
    squares). The learned state is the meta-model's ``coef_``, ``intercept_`` and
    (classification) ``classes_``; ``predict`` applies them itself (sigmoid or
    softmax of the linear scores), so a restored blender needs no scikit-learn model.
    ``weights_`` are the coefficients (``(n_members,)``, or ``(K, n_members * K)`` for
    multiclass; ``member_weights()`` then gives each member's share of the absolute
    coefficients). ``meta_`` is the fitted scikit-learn model, on a blender fitted in
    this process only. The meta-model fits its own loss (log loss / squared error);
    ``metric`` is used for scoring.
    """

    def __init__(self, metric: str | None = None, C: float = 1.0, alpha: float = 1.0):
        self.metric = metric
        self.C = C
        self.alpha = alpha

    def _features(self, P: np.ndarray) -> np.ndarray:
        if self.task_ == "regression":
            return P.T
        p = np.clip(P, _FEATURE_EPS, 1.0 - _FEATURE_EPS)
        if self.task_ == "binary":
            return (np.log(p) - np.log1p(-p)).T
        return np.log(p).transpose(1, 0, 2).reshape(P.shape[1], -1)

    def _fit(self, P, y):
        from sklearn.linear_model import LogisticRegression, Ridge

        X = self._features(P)
        if self.task_ == "regression":
            meta = Ridge(alpha=float(self.alpha))
            meta.fit(X, y)
            self.coef_ = np.asarray(meta.coef_, dtype=np.float64).ravel()
            self.intercept_ = float(meta.intercept_)
        else:
            if np.unique(y).size < 2:
                raise ValueError("StackingBlender needs at least two classes in y")
            meta = LogisticRegression(C=float(self.C), max_iter=2000)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                meta.fit(X, y)
            self.coef_ = np.array(meta.coef_, dtype=np.float64, order="C")
            self.intercept_ = np.array(meta.intercept_, dtype=np.float64)
            self.classes_ = np.asarray(meta.classes_, dtype=np.int64)
        self.weights_ = self._coef_weights()
        self.meta_ = meta

    def _coef_weights(self) -> np.ndarray:
        if self.task_ == "multiclass":
            return self.coef_
        return np.asarray(self.coef_, dtype=np.float64).ravel()

    def _proba(self, X: np.ndarray) -> np.ndarray:
        """The meta-model's class probabilities, columns in ``classes_`` order."""
        from scipy.special import expit, softmax

        z = X @ self.coef_.T + self.intercept_
        if self.coef_.shape[0] == 1:  # two classes: one logit
            p = expit(z[:, 0])
            return np.column_stack([1.0 - p, p])
        return softmax(z, axis=1)

    def _predict(self, P: np.ndarray) -> np.ndarray:
        X = self._features(P)
        if self.task_ == "regression":
            return X @ self.coef_ + self.intercept_
        proba = self._proba(X)
        classes = list(self.classes_)
        if self.task_ == "binary":
            if 1 in classes:
                return proba[:, classes.index(1)]
            return np.zeros(P.shape[1])
        out = np.zeros((P.shape[1], self.n_classes_))
        out[:, self.classes_] = proba
        if len(classes) < self.n_classes_:
            out = (out + _FEATURE_EPS) / (1.0 + _FEATURE_EPS * self.n_classes_)
        return out

    def member_weights(self) -> list[float]:
        """The coefficient on each member's logit (binary) or value (regression); for
        multiclass each member's share of the absolute coefficients."""
        check_is_fitted(self, "coef_")
        if self.task_ != "multiclass":
            return [float(c) for c in np.ravel(self.coef_)]
        k = int(self.n_classes_)
        coef = np.abs(np.asarray(self.coef_))
        per = np.array([coef[:, j * k : (j + 1) * k].sum() for j in range(self.n_members_)])
        total = per.sum()
        return [float(v) for v in (per / total if total > 0 else per)]

    def members_used(self) -> np.ndarray:
        return np.ones(self.n_members_, dtype=bool)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["coef"] = _jsonable(self.coef_)
        out["intercept"] = _jsonable(self.intercept_)
        if self.task_ != "regression":
            out["classes"] = [int(c) for c in self.classes_]
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StackingBlender:
        blender = super().from_dict(d)
        if blender.task_ == "regression":
            blender.coef_ = np.asarray(d["coef"], dtype=np.float64).ravel()
            blender.intercept_ = float(d["intercept"])
        else:
            blender.coef_ = np.atleast_2d(np.asarray(d["coef"], dtype=np.float64))
            blender.intercept_ = np.asarray(d["intercept"], dtype=np.float64).ravel()
            blender.classes_ = np.asarray(d["classes"], dtype=np.int64)
        blender.weights_ = blender._coef_weights()
        if "n_members" not in d:  # written before n_members was saved
            k = blender.n_classes_ if blender.task_ == "multiclass" else 1
            blender.n_members_ = int(np.shape(blender.coef_)[-1]) // k
        return blender


# --------------------------------------------------------------------------- the registry


class _RegisteredBlenders(Mapping):
    """``hpsearch.core.registry.BLENDERS`` as a read-only ``name -> class`` mapping."""

    def __getitem__(self, name: str) -> type[BaseBlender]:
        if name not in _REGISTRY:
            raise KeyError(name)
        return blender_class(name)

    def __iter__(self) -> Iterator[str]:
        return iter(_REGISTRY)

    def __len__(self) -> int:
        return len(_REGISTRY)

    def __repr__(self) -> str:
        return f"BLENDERS({', '.join(_REGISTRY)})"


BLENDERS: Mapping[str, type[BaseBlender]] = _RegisteredBlenders()


def blender_class(name: str) -> type[BaseBlender]:
    """The blender class for a registered name or a ``"module:Class"`` path.

    ValueError (``PluginError``) naming the valid methods, with did-you-mean, when the
    name is unknown, and when the class is not a ``BaseBlender``."""
    cls = _REGISTRY.resolve(name)
    if not (isinstance(cls, type) and issubclass(cls, BaseBlender)):
        raise PluginError(
            f"blend method {name!r} is {cls!r}, not a BaseBlender subclass. "
            "Fix: subclass ensembles.BaseBlender (see docs/plugins.md)."
        )
    return cls


def get_blender(name: str, **params: Any) -> BaseBlender:
    """A new blender by name (or ``"module:Class"``); ValueError listing the valid names."""
    return blender_class(name)(**params)


# --------------------------------------------------------------------------- cross-fitting


def _splits(y: np.ndarray, task: str, folds: int, seed: int):
    from sklearn.model_selection import KFold, StratifiedKFold

    n = y.shape[0]
    k = min(int(folds), n)
    if k < 2:
        raise ValueError(f"cross-fitting needs folds >= 2 and at least 2 rows; got {folds}, {n}")
    if task != "regression":
        counts = np.bincount(y)
        counts = counts[counts > 0]
        if counts.size >= 2 and counts.max() >= k:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return list(
                    StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(n), y)
                )
    return list(KFold(k, shuffle=True, random_state=seed).split(np.zeros(n)))


def cross_fit_predict(blender, P, y, metric: str | None = None, folds: int = 5, seed: int = 0):
    """Out-of-fold blended predictions: each fold predicted by a clone fitted on the others.

    Folds are stratified for classification. ``metric`` overrides the blender's.
    """
    metric = metric if metric is not None else blender.get_params().get("metric")
    P, y, name, task = _prepare(P, y, metric)
    oof = np.zeros(P.shape[1:]) if task == "multiclass" else np.zeros(P.shape[1])
    for train, test in _splits(y, task, folds, seed):
        est = clone(blender).set_params(metric=name)
        est.fit(P[:, train], y[train])
        oof[test] = est.predict(P[:, test])
    return oof


def cross_fit_score(
    blender, P, y, metric: str | None = None, folds: int = 5, seed: int = 0
) -> float:
    """The metric (natural units) of the out-of-fold blended predictions (``cross_fit_predict``)."""
    metric = metric if metric is not None else blender.get_params().get("metric")
    P, y, name, _ = _prepare(P, y, metric)
    oof = cross_fit_predict(blender, P, y, name, folds=folds, seed=seed)
    return float(_metrics.score(name, y, oof))


def best_method(scores: Mapping[str, float | None], direction: str) -> str | None:
    """The name with the best finite score; ties go to the earlier (simpler) name."""
    best = None
    for m, v in scores.items():
        if v is None or not np.isfinite(v):
            continue
        if best is None or (
            v > scores[best] + 1e-12 if direction == "maximize" else v < scores[best] - 1e-12
        ):
            best = m
    return best


def pick_by_cross_fit(
    P, y, metric: str, methods, folds: int = 5, seed: int = 0
) -> tuple[str, dict[str, float]]:
    """The method (a BLENDERS name) whose cross-fitted score on ``(P, y)`` is best, and every
    method's score; ties go to the earlier (simpler) method. Methods that cannot be fitted
    are left out."""
    scores: dict[str, float] = {}
    for m in methods:
        try:
            scores[m] = cross_fit_score(get_blender(m, metric=metric), P, y, metric, folds, seed)
        except ValueError:
            continue
    best = best_method(scores, _metrics.get_metric(metric).direction)
    if best is None:
        raise ValueError("no blend method could be cross-fitted")
    return best, scores


def nested_auto_score(
    P, y, metric: str, methods, folds: int = 5, seed: int = 0
) -> tuple[float, list[str]]:
    """The honest score of *choosing* the method by its cross-fitted score (``auto``).

    Each outer fold of the rows is predicted by the method that wins an inner cross-fit on
    the other folds, fitted there; the chosen methods differ between folds. Scoring the
    chosen method's plain cross-fitted score instead would reuse the rows that chose it
    (a winner's curse). Returns (score, the method chosen in each outer fold).
    """
    P, y, name, task = _prepare(P, y, metric)
    oof = np.zeros(P.shape[1:]) if task == "multiclass" else np.zeros(P.shape[1])
    chosen = []
    for train, test in _splits(y, task, folds, seed):
        m, _ = pick_by_cross_fit(P[:, train], y[train], name, methods, folds, seed)
        est = get_blender(m, metric=name).fit(P[:, train], y[train])
        oof[test] = est.predict(P[:, test])
        chosen.append(m)
    return float(_metrics.score(name, y, oof)), chosen
