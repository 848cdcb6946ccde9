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


def _one_blas_thread():
    """A context in which BLAS runs on one thread. A blend's products are matrix-vector
    products (weights times member rows), bound by memory bandwidth: more threads gain
    little there, and on CPUs shared with other work each product waits for its slowest
    thread (measured on 2 shared CPUs: Nelder-Mead 3 to 5 times slower with the default
    threads)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _blend(weights: np.ndarray, P: np.ndarray) -> np.ndarray:
    """``sum_j weights[j] * P[j]`` as one matrix-vector product (``P``: (m, n) or (m, n, K))."""
    weights = weights.astype(P.dtype, copy=False)
    if P.ndim == 2:
        return weights @ P
    return (weights @ P.reshape(P.shape[0], -1)).reshape(P.shape[1:])


# Values per block of the all-candidates evaluation (``_Objective.mix_losses``): a block of
# every candidate's rows in float32 stays within a core's cache.
_BLOCK_VALUES = 1 << 17


class _Objective:
    """The metric loss (to minimize) of a weighted blend, with a fast path for log loss.

    For log loss only the blended probability of the true class matters, and
    for weights summing to one it is the weighted sum of the members' true-class
    probabilities: ``rep`` then holds those, ``(m, n)``, whatever K. Searches that
    only compare candidates (a greedy step's ranking, Nelder-Mead's simplex and
    probes) use ``rep32()``, its float32 copy: half the memory traffic of float64,
    and a loss within about 1e-7 (relative) of the float64 one; the results they return are
    evaluated in float64.
    """

    def __init__(self, P: np.ndarray, y: np.ndarray, metric: str):
        self.metric = _metrics.get_metric(metric)
        self.y = y
        self.n_fev = 0
        self._rep32: np.ndarray | None = None
        if self.metric.name == "log_loss":
            if P.ndim == 2:
                # |(1 - y) - p|: p where y is 1, 1 - p where y is 0
                rep = np.subtract((1 - y).astype(P.dtype), P)
                np.abs(rep, out=rep)
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
            return float(
                -np.log(np.clip(B, _metrics.EPS, 1.0 - _metrics.EPS)).mean(dtype=np.float64)
            )
        return self.metric.loss(self.y, B)

    def __call__(self, w: np.ndarray) -> float:
        return self.of_blend(_blend(w, self.rep))

    def rows(self, members: np.ndarray, low: bool = False) -> np.ndarray:
        """``rep`` of some members (``rep`` itself when that is all of them); with ``low``,
        in float32 where the fast path allows it."""
        rep = self.rep32() if low and self._fast else self.rep
        if members.shape[0] == rep.shape[0]:
            return rep
        return np.ascontiguousarray(rep[members])

    def rep32(self) -> np.ndarray:
        if self._rep32 is None:
            self._rep32 = self.rep.astype(np.float32)
        return self._rep32

    def single_losses(self) -> np.ndarray:
        return np.array([self.of_blend(self.rep[j]) for j in range(self.rep.shape[0])])

    def mix_losses(self, base: np.ndarray, R: np.ndarray, a: float, b: float) -> np.ndarray:
        """The loss of ``a * base + b * R[j]`` for every row ``j`` of ``R`` (rows of ``rep``,
        or of ``rep32()``: the arithmetic follows ``R``'s dtype).

        For log loss every row is evaluated at once, in blocks of rows that stay in
        cache; otherwise one ``of_blend`` per row.
        """
        q = R.shape[0]
        if not self._fast:
            return np.array([self.of_blend(a * base + b * R[j]) for j in range(q)])
        self.n_fev += q
        n = R.shape[1]
        # A greedy step (a == b) saves a pass: log(a * (base + r)) = log(a) + log(base + r),
        # with the clip bounds divided by a. Otherwise (a probe, where a / b reaches 1e4 and
        # that form would lose float32 digits) the blend itself.
        same = a == b
        base = (base if same else a * base).astype(R.dtype, copy=False)
        # Only the lower clip can bite: a blend of probabilities with weights summing to one
        # exceeds 1 by rounding at most.
        lo = _metrics.EPS / a if same else _metrics.EPS
        block = max(1024, _BLOCK_VALUES // max(q, 1))
        buf = np.empty((q, min(block, n)), dtype=R.dtype)
        acc = np.zeros(q)
        for start in range(0, n, block):
            stop = min(start + block, n)
            blk = buf[:, : stop - start]
            if same:
                np.add(R[:, start:stop], base[start:stop], out=blk)
            else:
                np.multiply(R[:, start:stop], b, out=blk)
                blk += base[start:stop]
            np.maximum(blk, lo, out=blk)
            np.log(blk, out=blk)
            acc += blk.sum(axis=1)
        return -(acc / n + (np.log(a) if same else 0.0))


def _greedy_weights(
    obj: _Objective, n_iter: int, n_init: int, replacement: bool
) -> tuple[np.ndarray, float]:
    """Caruana et al. (2004) ensemble selection; returns the best prefix's weights and loss.

    Each step adds the member whose addition gives the lowest loss
    (``_Objective.mix_losses``); the loss of every prefix is evaluated exactly.
    """
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
    all_members = np.arange(m)
    for _ in range(int(n_iter)):
        # Only ranks the candidates (in float32 for log loss); the step is evaluated exactly.
        cand_loss = obj.mix_losses(
            S, obj.rows(all_members, low=True), 1 / (total + 1), 1 / (total + 1)
        )
        if not replacement:
            cand_loss[counts > 0] = np.inf
        j = int(np.argmin(cand_loss))
        if not np.isfinite(cand_loss[j]):
            break
        counts[j] += 1
        total += 1
        S = S + rep[j]
        loss = obj.of_blend(S / total)
        if loss < best_loss:
            best_loss = float(loss)
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
    regression) and, after ``_fit``, ``fitted_score_``; ``_fit`` runs with BLAS on one
    thread (``_one_blas_thread``).

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
        with _one_blas_thread():
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
    For log loss a step ranks every candidate at once in float32; the prefixes are
    compared in float64.
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

    Starts: the greedy solution (``greedy_iter`` steps, as ``GreedyBlender``), the best
    single member and uniform weights; the search starts from the one with the lowest
    loss and works on an *active set* of members, at first those with a non-zero
    weight there:

    1. Nelder-Mead (``adaptive=True`` from 3 active members on) moves the weights of
       the active members only, the others staying 0. ``k`` active members have
       ``k - 1`` free coordinates ``u``: ``x = w0 + D u`` with ``D``'s columns
       pointing from the start ``w0`` to each active member but one, so ``x`` sums
       to one and the weights are ``|x| / sum|x|`` (a weight can reach exactly 0).
       Pinning the sum leaves no direction along which the loss is flat, so the
       simplex shrinks; a run stops when its vertices are within 1e-3 of each other
       in ``u`` and within ``tol`` (relative to the loss) in the loss. The first
       simplex moves ``init_step`` of the weight towards each active member.
    2. Probes: ``init_step``, ``init_step / 10``, ``/ 100`` and ``/ 1000`` of the
       weight moved to each inactive member. The members that any probe improves
       join the active set, the search moves to the best probe, and step 1 runs
       again with the full step.
    3. When no member joins: a restart from the best point with half the step, up
       to ``restarts`` times, while the last round improved the loss by more than
       ``tol`` (relative).

    The active set keeps both the dimension and the cost of one evaluation (a
    matrix-vector product over the active members) small; for log loss the search
    evaluates the blend in float32 (``_Objective``). The budget is ``max_fev``
    evaluations (default ``200 + maxfev_per_member * n_members``; a probe of ``q``
    members counts ``q``); ``n_fev_`` is what the search used. The result is the
    best, by the metric itself on the fitting rows, of the search's point, the
    greedy solution and the best single member, so the fitted blend is never worse
    than either (``fell_back_ = True`` when one of those two won, ``start_`` names
    where the weights came from). Deterministic: nothing is random.
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

    _XATOL = 1e-3  # how close the simplex's vertices must be, in the weights
    _PROBES = (1.0, 10.0, 100.0, 1000.0)

    def _budget(self, m: int) -> int:
        if int(self.restarts) < 0 or not 0 < float(self.init_step) < 1 or float(self.tol) < 0:
            raise ValueError(
                "restarts must be >= 0, init_step in (0, 1) and tol >= 0; got "
                f"{self.restarts}, {self.init_step}, {self.tol}"
            )
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

    def _face_run(
        self,
        obj: _Objective,
        active: np.ndarray,
        w: np.ndarray,
        loss: float,
        step: float,
        maxfev: int,
    ) -> tuple[np.ndarray, float]:
        """Nelder-Mead over the weights of the ``active`` members (the others stay 0), from
        ``w`` (whose weight lies on them; its loss is ``loss``), at most ``maxfev``
        evaluations; the best point it saw (weights over every member) and its loss."""
        R = obj.rows(active, low=True)
        w0 = w[active] / w[active].sum()
        k = active.shape[0]
        pivot = int(np.argmax(w0))
        # Directions towards each active member but the pivot: x = w0 + D @ u sums to 1.
        D = (np.eye(k) - w0)[np.arange(k) != pivot].T
        best = [w0, np.inf]
        count = [0]

        def f(u):
            if count[0] >= maxfev:
                raise _BudgetSpent
            count[0] += 1
            a = np.abs(w0 + D @ u)
            wa = a / a.sum()
            loss = obj.of_blend(_blend(wa, R))
            if loss < best[1]:
                best[0], best[1] = wa, loss
            return loss

        with contextlib.suppress(_BudgetSpent):
            minimize(
                f,
                np.zeros(k - 1),
                method="Nelder-Mead",
                options={
                    "adaptive": k - 1 >= 2,
                    "maxfev": int(maxfev),
                    "initial_simplex": np.vstack([np.zeros(k - 1), step * np.eye(k - 1)]),
                    "xatol": self._XATOL,
                    "fatol": float(self.tol) * max(abs(loss), 1e-12),
                },
            )
        out = np.zeros_like(w)
        out[active] = best[0]
        return out, float(best[1])

    def _probe(
        self, obj: _Objective, active: np.ndarray, w: np.ndarray, loss: float, budget: int
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """Move ``init_step``, ``/ 10``, ``/ 100`` and ``/ 1000`` of the weight to each
        inactive member (while ``budget`` evaluations last): the members that lower the loss
        any way, and the best probed point and its loss."""
        inactive = np.setdiff1d(np.arange(w.shape[0]), active)
        B = _blend(w[active], obj.rows(active, low=True))
        R = obj.rows(inactive, low=True)
        threshold = loss - float(self.tol) * abs(loss)
        better = np.zeros(inactive.shape[0], dtype=bool)
        best = (loss, -1, 0.0)
        for eps in float(self.init_step) / np.array(self._PROBES):
            if budget < inactive.shape[0]:
                break
            budget -= inactive.shape[0]
            probed = obj.mix_losses(B, R, 1.0 - eps, eps)
            better |= probed < threshold
            i = int(np.argmin(probed))
            if probed[i] < best[0]:
                best = (float(probed[i]), int(inactive[i]), eps)
        if best[1] >= 0 and better.any():
            loss, j, eps = best
            w = (1.0 - eps) * w
            w[j] += eps
        return inactive[better], w, float(loss)

    def _search(self, obj: _Objective, w: np.ndarray, loss: float, budget: int):
        """The active-set search from ``(w, loss)``; the best point and its loss."""
        m = w.shape[0]
        active = np.flatnonzero(w > 0)
        step = float(self.init_step)
        restarts = int(self.restarts)
        if obj._fast:
            loss = obj.of_blend(_blend(w, obj.rep32()))
        obj.n_fev = 0
        self.n_restarts_ = 0
        while budget - obj.n_fev >= 2:
            before = loss
            if active.shape[0] >= 2 and budget - obj.n_fev >= active.shape[0] + 1:
                w_new, l_new = self._face_run(obj, active, w, loss, step, budget - obj.n_fev)
                if l_new < loss:
                    w, loss = w_new, l_new
            if active.shape[0] == m:
                added = active[:0]
            else:
                added, w, loss = self._probe(obj, active, w, loss, budget - obj.n_fev)
            if added.size:
                active = np.union1d(active, added)
                step = float(self.init_step)
                continue
            if before - loss <= float(self.tol) * abs(before) or self.n_restarts_ >= restarts:
                break
            self.n_restarts_ += 1
            step /= 2
        return w, loss

    def _fit(self, P, y):
        budget = self._budget(P.shape[0])
        obj = _Objective(P, y, self.metric_)
        starts = self._starts(obj)
        name, w0, l0 = min(starts, key=lambda s: s[2])
        w, loss = self._search(obj, w0, l0, budget) if P.shape[0] > 1 else (w0, l0)
        self.n_fev_ = obj.n_fev
        # The guarantees, checked with the metric itself (not the fast objective): the
        # search's point, else the greedy solution, else the best single member.
        candidates = [(name if np.array_equal(w, w0) else f"nm-from-{name}", w)]
        candidates += [(s, ws) for s, ws, _ in starts if s in ("greedy", "best")]
        scores = [float(_metrics.score(self.metric_, y, _blend(ws, P))) for _, ws in candidates]
        pick = 0
        for i in range(1, len(candidates)):
            if _metrics.is_better(self.metric_, scores[i], scores[pick]):
                pick = i
        self.start_, self.weights_ = candidates[pick]
        self.fell_back_ = pick > 0

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

    Classification: ``LogisticRegression(C=C, tol=1e-3)`` on the members' logits (binary)
    or log-probabilities (multiclass, ``n_members * K`` features), probabilities
    clipped at 1e-6, standardized for the fit (the coefficients are then mapped back to
    the raw features); regression: ``Ridge(alpha=alpha)`` (``alpha=0`` is plain least
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
        if self.task_ == "binary":  # the logit, log(p / (1 - p)), in place
            np.divide(p, 1.0 - p, out=p)
            return np.log(p, out=p).T
        return np.log(p, out=p).transpose(1, 0, 2).reshape(P.shape[1], -1)

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
            # fitted on standardized features (10-20x fewer L-BFGS iterations on
            # log-probabilities of very different ranges), then folded back into
            # coefficients on the raw features, which predict applies
            mu = X.mean(axis=0)
            sd = X.std(axis=0)
            sd[sd < 1e-12] = 1.0
            meta = LogisticRegression(C=float(self.C), max_iter=2000, tol=1e-3)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                meta.fit((X - mu) / sd, y)
            coef = np.asarray(meta.coef_, dtype=np.float64) / sd
            # the meta-model itself then reads raw features too (``meta_.predict_proba``)
            meta.coef_ = np.array(coef, dtype=np.float64, order="C")
            meta.intercept_ = np.asarray(meta.intercept_, dtype=np.float64) - coef @ mu
            self.coef_ = meta.coef_
            self.intercept_ = meta.intercept_
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
