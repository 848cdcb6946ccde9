"""Tree models: estimator factories, their parameters by family, fitting and prediction.

Used by the ``trees`` trainer (``hpsearch.search.tree_trainer``: tree families searched like
networks) and by the fixed trees of ``ensembles build --trees`` (``ensembles.trees``, which
re-exports these names). Tree model names (``hpsearch.core.registry.TREE_MODELS``) and the
tree families of the space library (``search_spaces.families.TREE_FAMILIES``):

=========  ==================  ======================================================
model      family              estimator
=========  ==================  ======================================================
``rf``     ``random_forest``   scikit-learn ``RandomForestClassifier/Regressor``
``et``     ``extra_trees``     scikit-learn ``ExtraTreesClassifier/Regressor``
``hgb``    ``hist_gbm``        scikit-learn ``HistGradientBoostingClassifier/Regressor``
``lgbm``   ``lightgbm``        LightGBM ``LGBMClassifier/Regressor``
``xgb``    ``xgboost``         XGBoost ``XGBClassifier/Regressor`` (optional extra)
``catboost`` ``catboost``      CatBoost ``CatBoostClassifier/Regressor``
=========  ==================  ======================================================

Conventions (the same as the Keras trainer's): classifiers learn the encoded target
``0..K-1``, so probability columns are in class-index order (binary: P(class 1));
regressors predict natural units. Under RMSLE a regressor learns ``log1p(target)``
(:func:`target_transform`) and predicts ``expm1`` of its output clipped at 0; under MAE
the boosters minimise the absolute error (:func:`tree_loss`), the forests keep the squared
error (their absolute-error criterion is several times slower). A forest classifier's vote
shares are shrunk towards the class frequencies by the amount that scores best on the
early-stopping rows (:class:`SmoothedClassifier`).

**Categorical columns** (``categorical``: column indices of the tree matrix, whose values
are category ids ``0..n``, 0 for a category unseen in training) are handled natively where
the library can: LightGBM ``categorical_feature``, CatBoost ``cat_features`` (int columns),
XGBoost ``feature_types`` when the configuration sets ``enable_categorical``,
HistGradientBoosting ``categorical_features`` (columns with fewer than 255 categories);
the forests split on the ids as numbers.

**Cost grows with rows**: :func:`estimator_params` scales the forests with the number of
training rows (at most :data:`FOREST_SAMPLE_CAP` rows drawn per tree, fewer trees and
larger leaves on large tables), and the boosters early-stop after
:func:`early_stopping_rounds` rounds without gain (fewer on larger tables, as AutoGluon
does), from at most :data:`MAX_ROUNDS` rounds.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from hpsearch.core.errors import UserError
from hpsearch.core.registry import TREE_MODELS as _TREE_REGISTRY

__all__ = [
    "BOOSTERS",
    "EARLY_STOPPING_ROUNDS",
    "FOREST_SAMPLE_CAP",
    "FORESTS",
    "LOG1P",
    "MAX_ROUNDS",
    "THREAD_KEYS",
    "CatBoostModel",
    "SmoothedClassifier",
    "best_rounds",
    "catboost",
    "early_stopping_rounds",
    "estimator_params",
    "extra_trees",
    "fit_estimator",
    "hist_gradient_boosting",
    "inverse_target",
    "lightgbm",
    "make_tree",
    "predict_tree",
    "random_forest",
    "rounds_param",
    "target_transform",
    "tree_loss",
    "tree_model_names",
    "tree_params",
    "without_threads",
    "xgboost",
]

LOG1P = "log1p"  # the target transform under RMSLE
EARLY_STOPPING_ROUNDS = 150  # boosters, on up to 10,000 training rows; fewer beyond
MAX_ROUNDS = 10_000  # boosters: boosting rounds at most (early stopping ends them sooner)
NO_VALID_ROUNDS = 300  # boosters fitted without early-stopping rows and MAX_ROUNDS rounds
FOREST_SAMPLE_CAP = 50_000  # forests: rows drawn per tree at most
FOREST_TREES = 300  # forests: trees on up to FOREST_SAMPLE_CAP rows
FORESTS = ("rf", "et")
BOOSTERS = ("hgb", "lgbm", "xgb", "catboost")  # early stopping, an absolute loss
THREAD_KEYS = ("n_jobs", "thread_count")  # constructor keys that only set threads
SHRINK_GRID = (0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3)
HGB_PATIENCE = 20  # HistGradientBoosting keeps the rounds past its best: stop sooner
HGB_MAX_CATEGORIES = 255  # HistGradientBoosting: categorical columns with fewer categories


def tree_model_names() -> tuple[str, ...]:
    return _TREE_REGISTRY.names()


def _unknown(name: str) -> UserError:
    return UserError(
        f"unknown tree model {name!r}; valid tree models: {', '.join(tree_model_names())}."
    )


def default_threads() -> int:
    """Threads of a tree fitted outside a trial (``ensembles build``): up to 4."""
    return max(1, min(4, os.cpu_count() or 1))


# --------------------------------------------------------------------------- targets, losses


def target_transform(task: str, metric: str | None) -> str | None:
    """How a tree's target is transformed before fitting: ``log1p`` under RMSLE (the
    prediction is ``expm1`` of the model's, clipped at 0), else None."""
    return LOG1P if task == "regression" and metric == "rmsle" else None


def tree_loss(name: str, task: str, metric: str | None) -> str:
    """The loss tree model ``name`` minimises for ``task`` under ``metric``:
    ``absolute_error`` for the boosters under MAE, ``squared_error`` for other regressions
    (the forests always), ``log_loss`` for the boosters' classifiers and ``gini`` for the
    forests'."""
    if task != "regression":
        return "gini" if name in FORESTS else "log_loss"
    if metric == "mae" and name in BOOSTERS:
        return "absolute_error"
    return "squared_error"


def forward_target(y: np.ndarray, transform: str | None) -> np.ndarray:
    if transform == LOG1P:
        return np.log1p(np.maximum(np.asarray(y, dtype=np.float64), 0.0))
    return y


def inverse_target(pred: np.ndarray, transform: str | None) -> np.ndarray:
    """A regressor's prediction in the target's units: ``expm1`` clipped at 0 for
    ``log1p``, unchanged otherwise."""
    from hpsearch.core import targets

    return targets.decode(pred, transform) if transform == LOG1P else pred


# --------------------------------------------------------------------------- parameters


def early_stopping_rounds(n_rows: int | None) -> int:
    """Rounds without gain on the early-stopping rows before a booster stops:
    :data:`EARLY_STOPPING_ROUNDS` up to 10,000 training rows, proportionally fewer beyond,
    at least 10 (AutoGluon's rule: a large table's rounds cost more and gain less each)."""
    n = int(n_rows or 0)
    scale = 1.0 if n <= 10_000 else 10_000 / n
    return max(10, int(round(EARLY_STOPPING_ROUNDS * scale)))


def _forest_scale(n_rows: int | None) -> dict[str, Any]:
    """Forest settings that keep a large table within budget: at most
    :data:`FOREST_SAMPLE_CAP` rows drawn per tree (``max_samples``, with bootstrap), fewer
    trees (at least 100) and a larger minimum leaf as the rows grow."""
    n = int(n_rows or 0)
    if n <= FOREST_SAMPLE_CAP:
        return {"n_estimators": FOREST_TREES, "min_leaf": 1}
    ratio = FOREST_SAMPLE_CAP / n
    return {
        "n_estimators": max(100, int(round(FOREST_TREES * ratio))),
        "max_samples": round(ratio, 6),
        "min_leaf": int(math.ceil(n / 100_000)),
    }


def _max_features(value: Any, task: str) -> Any:
    """``auto``: sqrt of the features for a classifier, all for a regressor (AutoGluon's and
    scikit-learn's classic defaults); other values as given."""
    if value in (None, "auto"):
        return "sqrt" if task != "regression" else 1.0
    return value


def _forest_params(
    p: dict[str, Any], task: str, seed: int, n_rows: int | None, threads: int | None
) -> dict[str, Any]:
    """A forest's constructor arguments (:func:`estimator_params`), scaled with the rows."""
    scale = _forest_scale(n_rows)
    out = {
        "n_estimators": scale["n_estimators"],
        "max_features": _max_features(p.get("max_features", "auto"), task),
        "min_samples_leaf": max(int(p.get("min_samples_leaf", 1)), scale["min_leaf"]),
        "random_state": seed,
    }
    if p.get("max_leaf_nodes") is not None:
        out["max_leaf_nodes"] = int(p["max_leaf_nodes"])
    if "max_samples" in scale:
        out["bootstrap"] = True  # extra trees too: max_samples needs it
        out["max_samples"] = scale["max_samples"]
    if threads:
        out["n_jobs"] = int(threads)
    return out


def estimator_params(
    family: str,
    params: dict[str, Any],
    task: str,
    metric: str | None,
    seed: int,
    n_rows: int | None,
    threads: int | None,
) -> dict[str, Any]:
    """The constructor arguments of tree family ``family``'s estimator for a configuration
    of its library space (``search_spaces/library/<family>.yaml``): the sampled ``params``
    translated to the library's names, the loss for ``task`` under ``metric``
    (:func:`tree_loss`), seeded with ``seed``, scaled with the training rows ``n_rows``
    (forests) and using ``threads`` threads (None: leave the thread count out)."""
    from search_spaces.families import TREE_FAMILIES

    if family not in TREE_FAMILIES:
        raise UserError(
            f"family {family!r} is not a tree family; tree families: {', '.join(TREE_FAMILIES)}."
        )
    name = TREE_FAMILIES[family]
    p = dict(params or {})
    seed = int(seed) % (2**31)
    absolute = tree_loss(name, task, metric) == "absolute_error"
    out: dict[str, Any]
    if name in FORESTS:
        return _forest_params(p, task, seed, n_rows, threads)
    if name == "hgb":
        out = {
            "max_iter": MAX_ROUNDS,
            "learning_rate": float(p.get("learning_rate", 0.1)),
            "max_leaf_nodes": int(p.get("max_leaf_nodes", 31)),
            "min_samples_leaf": int(p.get("min_samples_leaf", 20)),
            "l2_regularization": float(p.get("l2_regularization", 0.0)),
            "max_features": float(p.get("max_features", 1.0)),
            "early_stopping": True,
            "validation_fraction": 0.1,
            "n_iter_no_change": min(early_stopping_rounds(n_rows), HGB_PATIENCE),
            "random_state": seed,
        }
        return {**out, "loss": "absolute_error"} if absolute else out
    if name == "lgbm":
        out = {
            "n_estimators": MAX_ROUNDS,
            "learning_rate": float(p.get("learning_rate", 0.05)),
            "num_leaves": int(p.get("num_leaves", 31)),
            "colsample_bytree": float(p.get("feature_fraction", 1.0)),
            "min_child_samples": int(p.get("min_data_in_leaf", 20)),
            "extra_trees": bool(p.get("extra_trees", False)),
            "reg_lambda": float(p.get("lambda_l2", 0.0)),
            "random_state": seed,
            "verbose": -1,
        }
        if absolute:
            out["objective"] = "l1"
        if threads:
            out["n_jobs"] = int(threads)
        return out
    if name == "xgb":
        out = {
            "n_estimators": MAX_ROUNDS,
            "learning_rate": float(p.get("learning_rate", 0.1)),
            "max_depth": int(p.get("max_depth", 6)),
            "min_child_weight": float(p.get("min_child_weight", 1.0)),
            "colsample_bytree": float(p.get("colsample_bytree", 1.0)),
            "enable_categorical": bool(p.get("enable_categorical", False)),
            "tree_method": "hist",
            "random_state": seed,
        }
        if absolute:
            out["objective"] = "reg:absoluteerror"
        if threads:
            out["n_jobs"] = int(threads)
        return out
    if name == "catboost":
        out = {
            "iterations": MAX_ROUNDS,
            "learning_rate": float(p.get("learning_rate", 0.05)),
            "depth": int(p.get("depth", 6)),
            "l2_leaf_reg": float(p.get("l2_leaf_reg", 3.0)),
            "max_ctr_complexity": int(p.get("max_ctr_complexity", 4)),
            "one_hot_max_size": int(p.get("one_hot_max_size", 2)),
            "grow_policy": str(p.get("grow_policy", "SymmetricTree")),
            "random_seed": seed,
            "verbose": False,
            "allow_writing_files": False,
        }
        if task == "regression":
            out["loss_function"] = "MAE" if absolute else "RMSE"
        if threads:
            out["thread_count"] = int(threads)
        return out
    raise _unknown(name)  # pragma: no cover - TREE_FAMILIES names known models


def without_threads(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` less the keys that only set the thread count (:data:`THREAD_KEYS`)."""
    return {k: v for k, v in params.items() if k not in THREAD_KEYS}


def tree_params(
    name: str, task: str, seed: int, metric: str | None = None, n_rows: int | None = None
) -> dict[str, Any]:
    """The constructor parameters of the fixed tree ``name`` of ``ensembles build --trees``:
    its family's first portfolio configuration (the library default) through
    :func:`estimator_params`, without a thread count."""
    from search_spaces import load_space
    from search_spaces.families import TREE_FAMILY_OF

    if name not in TREE_FAMILY_OF:
        raise _unknown(name)
    family = TREE_FAMILY_OF[name]
    space = load_space(family)
    config = dict(space.portfolio[0]) if space.portfolio else {}
    return without_threads(estimator_params(family, config, task, metric, seed, n_rows, None))


def rounds_param(name: str) -> str | None:
    """The constructor key of a booster's number of rounds (None for a forest)."""
    return {"hgb": "max_iter", "lgbm": "n_estimators", "xgb": "n_estimators"}.get(
        name, "iterations" if name == "catboost" else None
    )


# --------------------------------------------------------------------------- factories


def _with_threads(params: dict[str, Any], key: str = "n_jobs") -> dict[str, Any]:
    return params if key in params else {**params, key: default_threads()}


def random_forest(task: str, params: dict[str, Any]) -> Any:
    """``rf``: scikit-learn's random forest (classifier or regressor)."""
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    cls = RandomForestRegressor if task == "regression" else RandomForestClassifier
    return cls(**_with_threads(params))


def extra_trees(task: str, params: dict[str, Any]) -> Any:
    """``et``: scikit-learn's extremely randomized trees."""
    from sklearn.ensemble import ExtraTreesClassifier, ExtraTreesRegressor

    cls = ExtraTreesRegressor if task == "regression" else ExtraTreesClassifier
    return cls(**_with_threads(params))


def hist_gradient_boosting(task: str, params: dict[str, Any]) -> Any:
    """``hgb``: scikit-learn's histogram gradient boosting (threads: OpenMP, limited at fit
    time by :func:`fit_estimator`)."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    cls = HistGradientBoostingRegressor if task == "regression" else HistGradientBoostingClassifier
    return cls(**params)


def lightgbm(task: str, params: dict[str, Any]) -> Any:
    """``lgbm``: LightGBM's scikit-learn estimator."""
    import lightgbm as lgb

    cls = lgb.LGBMRegressor if task == "regression" else lgb.LGBMClassifier
    return cls(**_with_threads(params))


def xgboost(task: str, params: dict[str, Any]) -> Any:
    """``xgb``: XGBoost's scikit-learn estimator (needs the xgboost package: the
    ``xgboost`` extra installs ``xgboost-cpu``)."""
    import xgboost as xgb

    cls = xgb.XGBRegressor if task == "regression" else xgb.XGBClassifier
    return cls(**_with_threads(params))


def catboost(task: str, params: dict[str, Any]) -> Any:
    """``catboost``: CatBoost's estimator, wrapped so that its categorical columns are
    given as ints (:class:`CatBoostModel`)."""
    return CatBoostModel(task, _with_threads(params, "thread_count"))


def make_tree(name: str, task: str, params: dict[str, Any]) -> Any:
    """An unfitted estimator: classifier for binary/multiclass, regressor for regression,
    made by the factory ``hpsearch.core.registry.TREE_MODELS`` names."""
    if name not in _TREE_REGISTRY:
        raise _unknown(name)
    return _TREE_REGISTRY.resolve(name)(task, dict(params))


class CatBoostModel:
    """A CatBoost classifier or regressor whose categorical columns (indices of the tree
    matrix) are passed as ints, at fit and at predict time: CatBoost refuses float
    categorical values. Pickles with joblib like the other estimators."""

    def __init__(self, task: str, params: dict[str, Any]) -> None:
        self.task = task
        self.params = dict(params)
        self.cat_features: list[int] = []
        self.estimator: Any = None

    def _frame(self, X: np.ndarray) -> Any:
        import pandas as pd

        X = np.asarray(X)
        if not self.cat_features:
            return X
        df = pd.DataFrame(X)
        for c in self.cat_features:
            df[c] = np.nan_to_num(X[:, c], nan=0.0).astype(np.int64)
        return df

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        *,
        cat_features: Sequence[int] = (),
        eval_set: tuple[np.ndarray, np.ndarray] | None = None,
        early_stopping_rounds: int | None = None,
        deadline: float | None = None,
    ) -> CatBoostModel:
        from catboost import CatBoostClassifier, CatBoostRegressor

        cls = CatBoostRegressor if self.task == "regression" else CatBoostClassifier
        self.cat_features = [int(c) for c in cat_features]
        self.estimator = cls(**self.params)
        kwargs: dict[str, Any] = {}
        if self.cat_features:
            kwargs["cat_features"] = self.cat_features
        if eval_set is not None:
            kwargs["eval_set"] = (self._frame(eval_set[0]), eval_set[1])
            kwargs["early_stopping_rounds"] = early_stopping_rounds
            kwargs["use_best_model"] = True
        if deadline is not None:
            kwargs["callbacks"] = [_CatBoostDeadline(deadline)]
        self.estimator.fit(self._frame(X), y, **kwargs)
        return self

    @property
    def classes_(self) -> np.ndarray:
        return np.asarray(self.estimator.classes_)

    @property
    def best_iteration_(self) -> int | None:
        """Rounds kept (1-based), or None without early stopping."""
        best = self.estimator.get_best_iteration()
        return None if best is None else int(best) + 1

    @property
    def n_features_in_(self) -> int:
        return len(self.estimator.feature_names_)

    def predict(self, X: np.ndarray) -> np.ndarray:
        pred = np.asarray(self.estimator.predict(self._frame(X)))
        return pred.reshape(-1) if self.task == "regression" else pred

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator.predict_proba(self._frame(X)))


# --------------------------------------------------------------------------- fitting


def _hgb_categorical(categorical: Sequence[int], X: np.ndarray, n: int) -> list[bool] | None:
    """HistGradientBoosting's mask of categorical columns: those whose ids stay below
    :data:`HGB_MAX_CATEGORIES` (more are split on as numbers)."""
    mask = [False] * n
    for c in categorical:
        col = X[:, c]
        finite = col[np.isfinite(col)]
        if finite.size and finite.max() < HGB_MAX_CATEGORIES - 1:
            mask[c] = True
    return mask if any(mask) else None


def _threads_limited(threads: int | None):
    if not threads:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=int(threads), user_api="openmp")


def fit_estimator(
    name: str,
    task: str,
    params: dict[str, Any],
    X: np.ndarray,
    y: np.ndarray,
    *,
    transform: str | None = None,
    X_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    categorical: Sequence[int] | None = None,
    threads: int | None = None,
    deadline: float | None = None,
) -> Any:
    """A fitted tree model ``name`` on ``(X, y)``; the target is transformed first
    (:func:`target_transform`). With ``X_val``/``y_val`` (the valid split of a holdout
    run, a cross-validated fold's inner slice; never rows a score or blend is taken on) the
    boosters early-stop on those rows after :func:`early_stopping_rounds` rounds without
    gain, and a forest's class probabilities are calibrated on them
    (:class:`SmoothedClassifier`). ``categorical``: column indices of category ids, handled
    natively where the library can; ``threads``: the thread count (HistGradientBoosting's
    OpenMP threads are limited for the fit); ``deadline`` (``time.time()`` seconds): LightGBM,
    CatBoost and XGBoost stop adding rounds when it has passed, keeping what they have
    (CatBoost and XGBoost their best round on the early-stopping rows, LightGBM the rounds
    so far)."""
    params = dict(params)
    categorical = [int(c) for c in (categorical or ())]
    n_features = int(np.asarray(X).shape[1]) if np.ndim(X) == 2 else 0
    categorical = [c for c in categorical if 0 <= c < n_features]
    if threads:
        if name in FORESTS or name in ("lgbm", "xgb"):
            params["n_jobs"] = int(threads)
        elif name == "catboost":
            params["thread_count"] = int(threads)
    if name == "hgb" and categorical:
        mask = _hgb_categorical(categorical, np.asarray(X), n_features)
        if mask is not None:
            params["categorical_features"] = mask
    if name == "xgb" and categorical and params.get("enable_categorical"):
        params["feature_types"] = ["c" if j in categorical else "q" for j in range(n_features)]
    rounds = early_stopping_rounds(len(y))
    has_val = X_val is not None and y_val is not None and len(y_val) > 0
    key = rounds_param(name)
    if not has_val and key and name != "hgb" and int(params.get(key, 0)) >= MAX_ROUNDS:
        params[key] = NO_VALID_ROUNDS  # nothing to stop on: a fixed number of rounds
    if name == "xgb" and deadline is not None:
        params["callbacks"] = [_xgb_deadline(deadline)]
    model = make_tree(name, task, params)
    y = forward_target(y, transform)
    late = [_lgbm_deadline(deadline)] if name == "lgbm" and deadline is not None else []
    with _threads_limited(threads if name == "hgb" else None):
        if name in FORESTS:
            model.fit(X, y)
            if task != "regression" and has_val:
                return SmoothedClassifier.fit_on(model, y, X_val, y_val)
            return model
        if name == "catboost":
            val = (X_val, forward_target(y_val, transform)) if has_val else None
            return model.fit(
                X,
                y,
                cat_features=categorical,
                eval_set=val,
                early_stopping_rounds=rounds,
                deadline=deadline,
            )
        if not has_val:
            if name == "lgbm":
                cat = {"categorical_feature": categorical} if categorical else {}
                model.fit(X, y, callbacks=late, **cat)
            else:
                model.fit(X, y)
            if name == "xgb":
                model.set_params(callbacks=None)  # the deadline's callback is not saved
            return model
        y_val = forward_target(y_val, transform)
        if name == "hgb":
            # scikit-learn keeps every round it grew (no return to the best one), so a
            # short patience: the rounds past the best stay in the model
            model.set_params(n_iter_no_change=min(rounds, HGB_PATIENCE))
            model.fit(X, y, X_val=X_val, y_val=y_val)
        elif name == "lgbm":
            import lightgbm as lgb

            stop = [lgb.early_stopping(rounds, verbose=False), *late]
            cat = {"categorical_feature": categorical} if categorical else {}
            if "eval_X" in inspect.signature(model.fit).parameters:  # LightGBM 4.7+
                model.fit(X, y, eval_X=X_val, eval_y=y_val, callbacks=stop, **cat)
            else:  # pragma: no cover - older LightGBM
                model.fit(X, y, eval_set=[(X_val, y_val)], callbacks=stop, **cat)
        else:  # xgb
            model.set_params(early_stopping_rounds=rounds)
            if task != "regression":
                fitted = LabelMapped.fit_xgb(model, X, y, X_val, y_val)
            else:
                fitted = model.fit(X, y, eval_set=[(X_val, y_val)], verbose=False)
            model.set_params(callbacks=None)  # the deadline's callback is not saved
            return fitted
    return model


class _CatBoostDeadline:
    """CatBoost's ``after_iteration`` callback: go on until ``deadline`` has passed."""

    def __init__(self, deadline: float) -> None:
        self.deadline = float(deadline)

    def after_iteration(self, info: Any) -> bool:
        return time.time() < self.deadline


def _lgbm_deadline(deadline: float) -> Callable[[Any], None]:
    """A LightGBM callback that stops the boosting once ``deadline`` has passed."""
    import lightgbm as lgb

    def stop_at_deadline(env: Any) -> None:
        if time.time() >= deadline:
            raise lgb.callback.EarlyStopException(env.iteration, env.evaluation_result_list)

    stop_at_deadline.order = 40  # after the early-stopping callback (order 30)
    return stop_at_deadline


def _xgb_deadline(deadline: float) -> Any:
    """An XGBoost training callback that stops the boosting once ``deadline`` has passed."""
    import xgboost as xgb

    class StopAtDeadline(xgb.callback.TrainingCallback):
        def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
            return time.time() >= deadline

    return StopAtDeadline()


class LabelMapped:
    """An XGBoost classifier fitted on the classes its training rows hold, renumbered
    ``0..m-1`` (XGBoost refuses labels that are not exactly ``0..K-1``, as when a rare class
    is missing from a fold's training rows); ``classes_`` are the original class indices,
    so :func:`predict_tree` places each probability column at its class. Early-stopping
    rows of a class the training rows lack are left out of the early stopping."""

    def __init__(self, estimator: Any, classes: np.ndarray) -> None:
        self.estimator = estimator
        self.classes_ = np.asarray(classes)

    @classmethod
    def fit_xgb(
        cls, model: Any, X: np.ndarray, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray
    ):
        """``model`` fitted on ``(X, y)`` early-stopping on ``(X_val, y_val)``: itself when
        the labels are ``0..K-1`` already, else wrapped with the renumbering."""
        classes = np.unique(y)
        if np.array_equal(classes, np.arange(len(classes))):
            model.fit(X, y, eval_set=[(X_val, y_val)], verbose=False)
            return model
        index = {c: i for i, c in enumerate(classes.tolist())}
        keep = np.array([v in index for v in np.asarray(y_val).tolist()], dtype=bool)
        renumber = np.vectorize(index.__getitem__, otypes=[np.int64])
        if not keep.any():  # no early-stopping row of a class it learns
            model.set_params(early_stopping_rounds=None)
            model.fit(X, renumber(y), verbose=False)
            return cls(model, classes)
        model.fit(
            X,
            renumber(y),
            eval_set=[(np.asarray(X_val)[keep], renumber(np.asarray(y_val)[keep]))],
            verbose=False,
        )
        return cls(model, classes)

    @property
    def n_features_in_(self) -> int:
        return int(self.estimator.n_features_in_)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator.predict_proba(X), dtype=np.float64)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


def best_rounds(model: Any) -> int | None:
    """The boosting rounds a fitted booster kept (1-based; None for a forest, or a booster
    fitted without early stopping)."""
    estimator = getattr(model, "estimator", model)
    if isinstance(model, CatBoostModel):
        return model.best_iteration_
    module = type(estimator).__module__
    if module.startswith("xgboost"):
        try:
            best = getattr(estimator, "best_iteration", None)
        except AttributeError:  # stopped by the deadline before early stopping's first round
            best = None
        if best is None and getattr(estimator, "early_stopping_rounds", None):
            return int(estimator.get_booster().num_boosted_rounds()) or None
        return None if best is None else int(best) + 1
    for attr in ("best_iteration_", "n_iter_"):
        value = getattr(estimator, attr, None)
        if isinstance(value, int | np.integer) and not isinstance(value, bool) and value > 0:
            return int(value)
    return None


class SmoothedClassifier:
    """A forest classifier whose class probabilities are shrunk towards the class
    frequencies of its training rows: ``(1 - alpha) p + alpha prior``. A forest's
    probabilities are vote shares, often exactly 0 or 1, which log loss punishes without
    bound; ``alpha`` is the value of :data:`SHRINK_GRID` with the lowest log loss on
    held-apart rows (the valid split, or a fold's inner slice), never on rows a blend is
    scored on. The order of classes (and so ROC AUC of a binary task) is unchanged.

    Saved fits before this class moved name it ``ensembles.trees.SmoothedClassifier``,
    which ``ensembles.trees`` still exports, so they load."""

    def __init__(self, estimator: Any, alpha: float, prior: np.ndarray) -> None:
        self.estimator = estimator
        self.alpha = float(alpha)
        self.prior = np.asarray(prior, dtype=np.float64)
        self.classes_ = estimator.classes_

    @classmethod
    def fit_on(cls, estimator: Any, y: np.ndarray, X_val: np.ndarray, y_val: np.ndarray):
        """The fitted ``estimator`` wrapped with the shrinkage that scores best on
        ``(X_val, y_val)``."""
        classes = np.asarray(estimator.classes_)
        y = np.asarray(y)
        prior = np.array([np.mean(y == c) for c in classes], dtype=np.float64)
        proba = np.asarray(estimator.predict_proba(X_val), dtype=np.float64)
        # the column of each valid row's class (rows of a class unseen in training: none)
        col = {c: i for i, c in enumerate(classes.tolist())}
        idx = np.array([col.get(v, -1) for v in np.asarray(y_val).tolist()])
        seen = idx >= 0
        best, best_loss = 0.0, np.inf
        for alpha in SHRINK_GRID:
            p = (1.0 - alpha) * proba[seen, idx[seen]] + alpha * prior[idx[seen]]
            loss = float(-np.mean(np.log(np.clip(p, 1e-15, 1.0)))) if seen.any() else 0.0
            if loss < best_loss - 1e-12:
                best, best_loss = alpha, loss
        return cls(estimator, best, prior)

    @property
    def n_features_in_(self) -> int:
        return int(self.estimator.n_features_in_)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        proba = np.asarray(self.estimator.predict_proba(X), dtype=np.float64)
        return (1.0 - self.alpha) * proba + self.alpha * self.prior

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


def predict_tree(
    model: Any, X: np.ndarray, task: str, n_classes: int, transform: str | None = None
) -> np.ndarray:
    """Predictions in the run's conventions: ``(n,)`` P(class 1) for binary, ``(n, K)``
    class-index-ordered probabilities for multiclass, ``(n,)`` values for regression
    (in the target's units: ``transform`` is undone, :func:`inverse_target`)."""
    if task == "regression":
        pred = np.asarray(model.predict(X), dtype=np.float64).reshape(-1)
        return inverse_target(pred, transform)
    proba = np.asarray(model.predict_proba(X), dtype=np.float64)
    full = np.zeros((proba.shape[0], n_classes))
    # a class absent from the train rows has no column: place the others by their index
    full[:, np.asarray(model.classes_, dtype=np.int64).reshape(-1)] = proba
    return full[:, 1] if task == "binary" else full
