"""``AutoBlender``: fit every blend method, cross-fit each, keep the best cross-fitted one.

Choosing by the *fitted* score (on the rows the weights were learnt on) favours the
methods that overfit most (stacking, Nelder-Mead on a small holdout); the cross-fitted
score (``ensembles.blenders.cross_fit_score``) is an honest estimate of each method on
rows it has not seen, so ``auto`` chooses by it. The nested score
(``nested_auto_score``) is the honest estimate of the choice itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from ensembles.blenders import (
    BaseBlender,
    _jsonable,
    _prepare,
    best_method,
    blender_class,
    cross_fit_score,
    get_blender,
    nested_auto_score,
)
from hpsearch.core import metrics as _metrics
from hpsearch.core.registry import BLENDERS as _REGISTRY

__all__ = ["AutoBlender"]

_FALLBACK = "nelder-mead"  # the choice when no method could be cross-fitted


class AutoBlender(BaseEstimator):
    """Fits every blend method, cross-fits each, and keeps the best cross-fitted one.

    Parameters: ``methods`` (names or ``"module:Class"``; None: every registered
    method, in registry order, which breaks ties towards the simpler method),
    ``metric`` (None infers it, as for every blender), ``folds`` and ``seed`` of the
    cross-fitting, ``nested`` (also score the choice itself by nested cross-fitting).

    After ``fit``: ``scores_`` (method -> ``{fitted, cross_fitted}``, with ``error``
    where a method could not be fitted or cross-fitted), ``blenders_`` (method ->
    fitted blender, for every method that fitted), ``method_`` (the best cross-fitted;
    ``nelder-mead``, else the first fitted, when none could be cross-fitted: then
    ``fallback_`` is True and the ``auto`` score row says ``fallback: true``),
    ``blender_`` (its fitted blender, which ``predict`` uses), ``metric_``, ``task_``,
    and with ``nested``: ``nested_score_`` (the nested cross-fitted score of choosing,
    None when it failed), ``chosen_per_fold_`` and ``nested_error_``.
    """

    def __init__(
        self,
        methods: Sequence[str] | None = None,
        metric: str | None = None,
        folds: int = 5,
        seed: int = 0,
        nested: bool = True,
    ):
        self.methods = methods
        self.metric = metric
        self.folds = folds
        self.seed = seed
        self.nested = nested

    def _method_names(self) -> list[str]:
        names = list(_REGISTRY) if self.methods is None else list(self.methods)
        if not names:
            raise ValueError("methods is empty. Fix: name at least one blend method, or None.")
        for name in names:
            problem = _REGISTRY.problem(name)
            if problem:
                raise ValueError(f"{problem}.")
        return names

    def _fit_one(self, name: str, P, y) -> tuple[dict[str, Any], BaseBlender | None]:
        """(scores entry, fitted blender or None) of one method."""
        blender = get_blender(name, metric=self.metric_)
        try:
            blender.fit(P, y)
        except ValueError as exc:
            return {"fitted": None, "cross_fitted": None, "error": str(exc)}, None
        entry: dict[str, Any] = {"fitted": float(blender.fitted_score_), "cross_fitted": None}
        try:
            entry["cross_fitted"] = cross_fit_score(
                get_blender(name, metric=self.metric_), P, y, self.metric_, self.folds, self.seed
            )
        except ValueError as exc:
            entry["error"] = f"cross-fitting failed: {exc}"
        return entry, blender

    def fit(self, P, y, log: Callable[[str], None] | None = None) -> AutoBlender:
        """Fit and cross-fit every method on ``(P, y)``; ``log`` gets one line per step."""
        say = log or (lambda _msg: None)
        names = self._method_names()
        P, y, self.metric_, self.task_ = _prepare(P, y, self.metric)
        self.scores_: dict[str, dict[str, Any]] = {}
        self.blenders_: dict[str, BaseBlender] = {}
        for name in names:
            say(f"blending: {name}...")
            self.scores_[name], blender = self._fit_one(name, P, y)
            if blender is not None:
                self.blenders_[name] = blender
        if not self.blenders_:
            errors = "; ".join(f"{m}: {s['error']}" for m, s in self.scores_.items())
            raise ValueError(f"no blend method could be fitted ({errors})")
        cross = {m: s["cross_fitted"] for m, s in self.scores_.items()}
        best = best_method(cross, _metrics.get_metric(self.metric_).direction)
        self.fallback_ = best is None
        if best is None:
            best = _FALLBACK if _FALLBACK in self.blenders_ else next(iter(self.blenders_))
            say(
                f"auto: no method could be cross-fitted ({len(y)} row(s)), so nothing was "
                f"compared; {best} is used by default"
            )
        self.method_ = best
        self.blender_ = self.blenders_[best]
        self.nested_score_, self.chosen_per_fold_, self.nested_error_ = None, [], None
        if self.nested:
            if not self.fallback_:
                say(
                    f"auto: {best} has the best cross-fitted {self.metric_}; nested cross-fitting..."
                )
            self._fit_nested(P, y)
        return self

    def _fit_nested(self, P: np.ndarray, y: np.ndarray) -> None:
        fitted = [m for m in self.scores_ if m in self.blenders_]
        try:
            score, per_fold = nested_auto_score(P, y, self.metric_, fitted, self.folds, self.seed)
        except ValueError as exc:
            self.nested_error_ = f"nested cross-fitting failed: {exc}"
        else:
            self.nested_score_, self.chosen_per_fold_ = score, per_fold

    def auto_scores(self) -> dict[str, Any]:
        """The ``auto`` row of ``ensemble.json``'s scores: the chosen method's fitted score
        beside the nested cross-fitted score of choosing (or the nesting's error)."""
        check_is_fitted(self, "blender_")
        row: dict[str, Any] = {
            "fitted": self.scores_[self.method_]["fitted"],
            "cross_fitted": self.nested_score_,
        }
        if self.fallback_:
            row["fallback"] = True  # chosen by default: no method could be cross-fitted
        if self.nested_error_:
            row["error"] = self.nested_error_
        elif self.nested:
            row.update(chosen=self.method_, chosen_per_fold=list(self.chosen_per_fold_))
        return row

    def predict(self, P) -> np.ndarray:
        """The chosen blender's predictions (``blender_.predict``)."""
        check_is_fitted(self, "blender_")
        return self.blender_.predict(P)

    def score(self, P, y) -> float:
        """The chosen blender's metric on ``(P, y)``, in natural units."""
        check_is_fitted(self, "blender_")
        return self.blender_.score(P, y)

    def to_dict(self) -> dict[str, Any]:
        """The choice, the scores and the chosen blender's ``to_dict()``."""
        check_is_fitted(self, "blender_")
        return {
            "method": "auto",
            "params": _jsonable(self.get_params()),
            "metric": self.metric_,
            "task": self.task_,
            "chosen": self.method_,
            "scores": _jsonable(self.scores_),
            "nested_score": self.nested_score_,
            "chosen_per_fold": list(self.chosen_per_fold_),
            "nested_error": self.nested_error_,
            "fallback": self.fallback_,
            "blender": self.blender_.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AutoBlender:
        """An AutoBlender from ``to_dict()``: it predicts with the restored chosen blender
        (``blenders_`` holds that one only)."""
        params = dict(d.get("params") or {})
        if params.get("methods") is not None:
            params["methods"] = list(params["methods"])
        auto = cls(**params)
        entry = d["blender"]
        auto.blender_ = blender_class(entry["method"]).from_dict(entry)
        auto.method_ = str(d["chosen"])
        auto.blenders_ = {auto.method_: auto.blender_}
        auto.metric_ = d.get("metric") or auto.blender_.metric_
        auto.task_ = d.get("task") or auto.blender_.task_
        auto.scores_ = {m: dict(s) for m, s in (d.get("scores") or {}).items()}
        auto.nested_score_ = d.get("nested_score")
        auto.chosen_per_fold_ = list(d.get("chosen_per_fold") or [])
        auto.nested_error_ = d.get("nested_error")
        auto.fallback_ = bool(d.get("fallback", False))
        return auto
