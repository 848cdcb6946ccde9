"""ensembles.blenders and ensembles.auto on plain arrays (no Ray): every blender on every
task, weight recovery, guarantees, the estimator contract, to_dict/from_dict, user blenders
and AutoBlender's choice by the cross-fitted score."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.optimize import minimize
from sklearn.base import clone

from ensembles.auto import AutoBlender
from ensembles.blenders import (
    BLENDERS,
    BaseBlender,
    BestSingleBlender,
    GreedyBlender,
    MeanBlender,
    NelderMeadBlender,
    StackingBlender,
    blender_class,
    cross_fit_predict,
    cross_fit_score,
    get_blender,
    nested_auto_score,
    pick_by_cross_fit,
)
from hpsearch.core import metrics

WEIGHTED = ("best", "mean", "greedy", "nelder-mead")


def _binary(n=400, m=4, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    logit = np.where(y == 1, 1.0, -1.0)
    P = np.stack([1 / (1 + np.exp(-(logit + rng.normal(scale=1.5, size=n)))) for _ in range(m)])
    return P, y


def _multiclass(n=400, m=4, k=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    out = []
    for _ in range(m):
        z = 1.5 * np.eye(k)[y] + rng.normal(scale=1.5, size=(n, k))
        e = np.exp(z)
        out.append(e / e.sum(axis=1, keepdims=True))
    return np.stack(out), y


def _regression(n=400, m=4, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=n) * 3
    P = np.stack([y + rng.normal(scale=1.0 + j, size=n) for j in range(m)])
    return P, y


TASKS = {
    "binary": (_binary, "log_loss"),
    "multiclass": (_multiclass, "log_loss"),
    "regression": (_regression, "rmse"),
}


@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize("name", list(BLENDERS))
def test_every_blender_on_every_task(name, task):
    make, metric = TASKS[task]
    P, y = make()
    b = get_blender(name, metric=metric).fit(P, y)
    pred = b.predict(P)
    assert pred.shape == P.shape[1:]
    assert b.score(P, y) == pytest.approx(metrics.score(metric, y, pred))
    assert b.fitted_score_ == pytest.approx(b.score(P, y))
    assert b.task_ == task
    if name in WEIGHTED:
        assert b.weights_.shape == (P.shape[0],)
        assert np.all(b.weights_ >= 0)
        assert b.weights_.sum() == pytest.approx(1.0)
    if task != "regression":
        if task == "binary":
            assert np.all((pred >= 0) & (pred <= 1))
        else:
            np.testing.assert_allclose(pred.sum(axis=1), 1.0, atol=1e-9)


@pytest.mark.parametrize("metric", ["roc_auc", "accuracy", "f1_macro"])
def test_other_classification_metrics(metric):
    P, y = _multiclass(m=3)
    for name in ("greedy", "nelder-mead"):
        b = get_blender(name, metric=metric).fit(P, y)
        single = max(metrics.score(metric, y, p) for p in P)
        assert b.fitted_score_ >= single - 1e-12


def test_metric_inferred_when_none():
    P, y = _binary()
    assert MeanBlender().fit(P, y).metric_ == "log_loss"
    P, y = _multiclass()
    assert MeanBlender().fit(P, y).metric_ == "log_loss"
    P, y = _regression()
    assert MeanBlender().fit(P, y).metric_ == "rmse"


def test_recover_known_regression_weights():
    rng = np.random.default_rng(3)
    n = 2000
    P0, P1, P2 = rng.normal(size=(3, n))
    y = 0.7 * P0 + 0.3 * P1
    P = np.stack([P0, P1, P2])
    for cls in (GreedyBlender, NelderMeadBlender):
        b = cls(metric="rmse").fit(P, y)
        np.testing.assert_allclose(b.weights_, [0.7, 0.3, 0.0], atol=0.03)
    # a target that is not on the greedy grid: Nelder-Mead refines it
    y = 0.637 * P0 + 0.363 * P1
    nm = NelderMeadBlender(metric="rmse").fit(P, y)
    np.testing.assert_allclose(nm.weights_, [0.637, 0.363, 0.0], atol=5e-3)
    greedy = GreedyBlender(metric="rmse").fit(P, y)
    assert nm.fitted_score_ <= greedy.fitted_score_ + 1e-12


def _adversarial(n=500, m=30, seed=1):
    """One good member hidden among 29 bad ones: uniform is awful; plain NM stalls."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    good = np.clip(np.where(y == 1, 0.8, 0.2) + rng.normal(scale=0.1, size=n), 0.01, 0.99)
    bad = [rng.random(n) ** (0.3 if j % 2 else 3.0) for j in range(m - 1)]
    return np.stack(bad[:17] + [good] + bad[17:]), y


def test_nelder_mead_never_worse_than_best_single_adversarial():
    P, y = _adversarial()
    m = P.shape[0]
    singles = [metrics.score("log_loss", y, p) for p in P]
    best = min(singles)

    # plain Nelder-Mead from uniform weights, same budget, stalls above the best member
    def f(z):
        w = np.abs(z) / np.abs(z).sum()
        return metrics.loss("log_loss", y, w @ P)

    plain = minimize(
        f, np.full(m, 1 / m), method="Nelder-Mead", options={"adaptive": True, "maxfev": 3200}
    )
    assert plain.fun > best + 0.01

    b = NelderMeadBlender(metric="log_loss").fit(P, y)
    assert b.fitted_score_ <= best + 1e-12
    assert b.weights_[int(np.argmin(singles))] > 0.9
    assert np.all(b.weights_ >= 0) and b.weights_.sum() == pytest.approx(1.0)
    assert b.n_fev_ <= 200 + 100 * m


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("task", list(TASKS))
def test_nelder_mead_not_worse_than_best_single_or_greedy(task, seed):
    make, metric = TASKS[task]
    P, y = make(n=300, m=6, seed=seed)
    nm = NelderMeadBlender(metric=metric).fit(P, y)
    greedy = GreedyBlender(metric=metric).fit(P, y)
    single = min(metrics.score(metric, y, p) for p in P)
    assert nm.fitted_score_ <= single + 1e-12
    assert nm.fitted_score_ <= greedy.fitted_score_ + 1e-12


def test_nelder_mead_budget_respected():
    P, y = _multiclass(m=8)
    b = NelderMeadBlender(metric="log_loss", max_fev=150).fit(P, y)
    assert b.n_fev_ <= 150
    assert np.all(b.weights_ >= 0) and b.weights_.sum() == pytest.approx(1.0)


def _many_members(n=3000, m=30, k=2, seed=0):
    """Out-of-fold-like members: graded quality, errors correlated through a shared signal,
    so most members deserve no weight and some only a small one."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    shared = rng.normal(size=(n, k))
    out = []
    for j in range(m):
        z = 1.5 * np.eye(k)[y] + 0.7 * shared + rng.normal(scale=0.6 + 0.06 * j, size=(n, k))
        e = np.exp(z - z.max(axis=1, keepdims=True))
        out.append(e / e.sum(axis=1, keepdims=True))
    P = np.stack(out)
    return (P[:, :, 1] if k == 2 else P), y


def _simplex_optimum(P, y):
    """The log loss minimum over the simplex, by SLSQP with the exact gradient."""
    R = np.where(y == 1, P, 1 - P) if P.ndim == 2 else P[:, np.arange(P.shape[1]), y]
    m = R.shape[0]

    def f(w):
        b = np.clip(w @ R, 1e-15, None)
        return -np.mean(np.log(b)), -(R @ (1 / b)) / b.size

    res = minimize(
        f, np.full(m, 1 / m), jac=True, method="SLSQP", bounds=[(0, 1)] * m,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}],
        options={"ftol": 1e-13, "maxiter": 1000},
    )  # fmt: skip
    return res.fun


@pytest.mark.parametrize("k", [2, 3])
def test_nelder_mead_reaches_the_optimum_of_log_loss(k):
    """Log loss is convex in the weights: the active-set search must find its minimum
    over all 30 members, small weights included, well before its budget."""
    P, y = _many_members(k=k)
    nm = NelderMeadBlender(metric="log_loss").fit(P, y)
    optimum = _simplex_optimum(P, y)
    assert nm.fitted_score_ <= optimum * (1 + 5e-7)
    greedy = GreedyBlender(metric="log_loss").fit(P, y)
    assert greedy.fitted_score_ > optimum * (1 + 1e-5)  # there was something to gain
    assert nm.start_ == "nm-from-greedy" and not nm.fell_back_
    # a fixed scale (k - 1 free weights) lets the simplex shrink: it stops on its tolerances
    assert nm.n_fev_ < (200 + 100 * P.shape[0]) / 2


@pytest.mark.parametrize(
    "task,metric",
    [("binary", "log_loss"), ("binary", "roc_auc"), ("multiclass", "log_loss"),
     ("multiclass", "accuracy"), ("regression", "rmse"), ("regression", "mae")],
)  # fmt: skip
def test_nelder_mead_guarantees_with_many_members(task, metric):
    if task == "regression":
        rng = np.random.default_rng(5)
        y = rng.normal(size=1500) * 3
        common = rng.normal(size=1500)
        P = np.stack([y + common + rng.normal(scale=0.5 + 0.1 * j, size=1500) for j in range(30)])
    else:
        # roc_auc sorts the rows at each evaluation: fewer rows and members keep it quick
        n, m = (400, 10) if metric == "roc_auc" else (1500, 30)
        P, y = _many_members(n=n, m=m, k=2 if task == "binary" else 3, seed=2)
    nm = NelderMeadBlender(metric=metric).fit(P, y)
    greedy = GreedyBlender(metric=metric).fit(P, y)
    singles = [metrics.score(metric, y, p) for p in P]
    best = max(singles) if metrics.get_metric(metric).greater_is_better else min(singles)
    assert not metrics.is_better(metric, best, nm.fitted_score_)
    assert not metrics.is_better(metric, greedy.fitted_score_, nm.fitted_score_)
    assert np.all(nm.weights_ >= 0) and nm.weights_.sum() == pytest.approx(1.0, abs=1e-12)
    assert nm.n_fev_ <= 200 + 100 * P.shape[0]


def test_nelder_mead_is_deterministic():
    P, y = _many_members(n=2000, k=3, seed=4)
    a = NelderMeadBlender(metric="log_loss").fit(P, y)
    b = clone(a).fit(P.copy(), y.copy())
    np.testing.assert_array_equal(a.weights_, b.weights_)
    assert (a.start_, a.n_fev_, a.fitted_score_) == (b.start_, b.n_fev_, b.fitted_score_)


def _plain_greedy(P, y, metric, n_iter=50):
    """Caruana's selection with the metric itself, in float64, one candidate at a time."""
    singles = [metrics.loss(metric, y, p) for p in P]
    counts = np.zeros(P.shape[0], dtype=int)
    counts[int(np.argmin(singles))] = 1
    best, best_counts = min(singles), counts.copy()
    for _ in range(n_iter):
        total = counts.sum() + 1
        S = np.tensordot(counts, P, axes=1)
        losses = [metrics.loss(metric, y, (S + P[j]) / total) for j in range(P.shape[0])]
        counts[int(np.argmin(losses))] += 1
        if min(losses) < best:
            best, best_counts = min(losses), counts.copy()
    return best_counts / best_counts.sum()


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("task", list(TASKS))
def test_greedy_chooses_as_plain_selection_does(task, seed):
    """The fast path (every candidate at once, ranked in float32) picks what the metric
    evaluated one candidate at a time picks."""
    make, metric = TASKS[task]
    P, y = make(n=500, m=8, seed=seed)
    fitted = GreedyBlender(metric=metric).fit(P, y)
    np.testing.assert_allclose(fitted.weights_, _plain_greedy(P, y, metric), atol=1e-12)


def test_greedy_without_replacement_and_init():
    P, y = _regression(m=5)
    b = GreedyBlender(metric="rmse", n_iter=10, replacement=False).fit(P, y)
    counts = b.weights_ * 1  # each member used at most once: weights are multiples of 1/k
    nonzero = counts[counts > 0]
    np.testing.assert_allclose(nonzero, nonzero[0])
    b = GreedyBlender(metric="rmse", n_iter=0, n_init=3).fit(P, y)
    assert np.count_nonzero(b.weights_) == 3


@pytest.mark.parametrize("task", list(TASKS))
def test_cross_fit_scores_present_and_differ(task):
    make, metric = TASKS[task]
    P, y = make(n=300, m=5, seed=7)
    for name in ("greedy", "nelder-mead", "stack"):
        b = get_blender(name, metric=metric)
        cf = cross_fit_score(b, P, y, metric, folds=5, seed=0)
        fitted = clone(b).fit(P, y).fitted_score_
        assert np.isfinite(cf)
        assert cf != pytest.approx(fitted, rel=1e-9, abs=1e-12)
        # an honest estimate is not better than the in-sample fit, here
        assert cf >= fitted - 1e-9
    oof = cross_fit_predict(MeanBlender(metric=metric), P, y, folds=3)
    assert oof.shape == P.shape[1:]
    # mean weights do not depend on the fold: out-of-fold equals in-sample
    np.testing.assert_allclose(oof, P.mean(axis=0))
    # the folds are drawn from the seed: another seed, other folds, another score
    scores = [
        cross_fit_score(GreedyBlender(metric=metric), P, y, folds=5, seed=s) for s in (0, 1, 0)
    ]
    assert scores[0] != pytest.approx(scores[1], rel=1e-9, abs=1e-12)
    assert scores[2] == scores[0]  # and the same seed, the same folds


@pytest.mark.parametrize("task", list(TASKS))
def test_nested_auto_score_chooses_inside_each_fold(task):
    make, metric = TASKS[task]
    P, y = make(n=240, m=4, seed=3)
    # one method: nothing is chosen, so nesting is plain cross-fitting
    score, chosen = nested_auto_score(P, y, metric, ["mean"], folds=4, seed=1)
    assert chosen == ["mean"] * 4
    assert score == pytest.approx(cross_fit_score(MeanBlender(metric=metric), P, y, metric, 4, 1))
    # the choice is made on each fold's training rows; with a member that is near perfect,
    # `best` wins every inner cross-fit against `mean` and nesting scores `best`
    P2 = P.copy()
    P2[0] = (
        y if task == "regression" else (np.eye(P.shape[2])[y] if P.ndim == 3 else y) * 0.98 + 0.01
    )
    assert pick_by_cross_fit(P2, y, metric, ["best", "mean"], folds=4, seed=1)[0] == "best"
    score, chosen = nested_auto_score(P2, y, metric, ["best", "mean"], folds=4, seed=1)
    assert chosen == ["best"] * 4
    assert score == pytest.approx(
        cross_fit_score(get_blender("best", metric=metric), P2, y, metric, 4, 1)
    )


def test_cross_fit_tolerates_rare_classes():
    P, y = _multiclass(n=60, m=3, k=3)
    y = y.copy()
    y[:2] = 2
    y[2:] = np.where(y[2:] == 2, 0, y[2:])  # class 2 has only 2 rows
    for name in BLENDERS:
        assert np.isfinite(cross_fit_score(get_blender(name, metric="log_loss"), P, y, folds=5))


@pytest.mark.parametrize("name", list(BLENDERS))
def test_estimator_contract(name):
    cls = BLENDERS[name]
    b = cls(metric="rmse")
    params = b.get_params()
    assert params["metric"] == "rmse"
    c = clone(b)
    assert c.get_params() == params and c is not b
    P, y = _regression()
    b.fit(P, y)
    assert b.get_params() == params  # params unchanged after fit
    assert not hasattr(clone(b), "weights_")
    b.set_params(metric="mae")
    assert b.get_params()["metric"] == "mae"
    with pytest.raises(Exception, match="not fitted"):
        cls(metric="rmse").predict(P)


def test_stacking_weights_are_meta_coefficients():
    P, y = _binary(m=3)
    b = StackingBlender(metric="log_loss", C=10.0).fit(P, y)
    np.testing.assert_allclose(b.weights_, b.meta_.coef_.ravel())
    # the blender applies the meta-model itself, as scikit-learn would
    X = np.log(np.clip(P, 1e-6, 1 - 1e-6) / (1 - np.clip(P, 1e-6, 1 - 1e-6))).T
    np.testing.assert_allclose(b.predict(P), b.meta_.predict_proba(X)[:, 1], atol=1e-12)
    P, y = _multiclass(m=3, k=3)
    b = StackingBlender(metric="log_loss").fit(P, y)
    assert b.weights_.shape == (3, 9)
    X = np.log(np.clip(P, 1e-6, 1 - 1e-6)).transpose(1, 0, 2).reshape(P.shape[1], -1)
    np.testing.assert_allclose(b.predict(P), b.meta_.predict_proba(X), atol=1e-12)
    P, y = _regression(m=3)
    b = StackingBlender(metric="rmse", alpha=0.0).fit(P, y)
    np.testing.assert_allclose(b.predict(P), P.T @ b.weights_ + b.intercept_)


def test_validation_errors():
    P, y = _binary()
    with pytest.raises(ValueError, match="rows"):
        MeanBlender(metric="log_loss").fit(P, y[:-1])
    with pytest.raises(ValueError, match="unknown metric"):
        MeanBlender(metric="nope").fit(P, y)
    with pytest.raises(ValueError, match="NaN"):
        MeanBlender(metric="log_loss").fit(np.full_like(P, np.nan), y)
    with pytest.raises(
        ValueError, match=r"unknown blend method 'median' \(did you mean 'mean'\?\)"
    ):
        get_blender("median")
    b = MeanBlender(metric="log_loss").fit(P, y)
    with pytest.raises(ValueError, match="members"):
        b.predict(P[:2])
    Pm, ym = _multiclass()
    with pytest.raises(ValueError, match="regression metric"):
        MeanBlender(metric="rmse").fit(Pm, ym)


def test_binary_two_column_layout_is_accepted():
    P, y = _binary(m=3)
    P2 = np.stack([1 - P, P], axis=2)
    a = GreedyBlender(metric="log_loss").fit(P, y)
    b = GreedyBlender(metric="log_loss").fit(P2, y)
    np.testing.assert_allclose(a.weights_, b.weights_)
    np.testing.assert_allclose(a.predict(P), b.predict(P2))


# --------------------------------------------------------------------------- to_dict / from_dict


def _round_trip(d: dict) -> dict:
    return json.loads(json.dumps(d))  # what ensemble.json keeps


@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize("name", list(BLENDERS))
def test_a_saved_blender_is_restored_by_its_own_class(name, task):
    make, metric = TASKS[task]
    P, y = make(n=200, m=4)
    fitted = get_blender(name, metric=metric).fit(P, y)
    d = _round_trip(fitted.to_dict())
    assert d["method"] == name and d["task"] == task and d["metric"] == metric
    restored = BLENDERS[name].from_dict(d)
    assert type(restored) is type(fitted) and restored.get_params() == fitted.get_params()
    assert not hasattr(restored, "meta_")  # no scikit-learn model is rebuilt
    np.testing.assert_array_equal(restored.predict(P), fitted.predict(P))
    assert restored.member_weights() == fitted.member_weights()
    assert restored.score(P, y) == fitted.score(P, y)
    with pytest.raises(ValueError, match="members"):
        restored.predict(P[:2])


def test_from_dict_refuses_another_methods_data():
    P, y = _binary()
    d = GreedyBlender(metric="log_loss").fit(P, y).to_dict()
    with pytest.raises(ValueError, match="data is of blend method 'greedy'"):
        StackingBlender.from_dict(d)
    with pytest.raises(ValueError, match="names no metric or task"):
        MeanBlender.from_dict({"method": "mean", "weights": [0.5, 0.5]})


def _legacy_info(blend: dict, task: str, metric: str, k: int, m: int) -> dict:
    """The parts of an ensemble.json written before the blend saved metric, task and sizes."""
    classes = list(range(k)) if task != "regression" else None
    return {"metric": metric, "task": task, "classes": classes, "members": [{}] * m, "blend": blend}


@pytest.mark.parametrize("task", list(TASKS))
def test_blends_saved_in_the_first_format_still_load(task):
    """ensemble.json files written before the blenders saved themselves: weighted blends kept
    only their weights, stack its meta-model's coef, intercept, classes."""
    from ensembles.ensemble import restore_blender

    make, metric = TASKS[task]
    P, y = make(n=200, m=4)
    k = P.shape[2] if P.ndim == 3 else (2 if task == "binary" else 0)
    nm = NelderMeadBlender(metric=metric).fit(P, y)
    old = {"method": "nelder-mead", "weights": nm.weights_.tolist(), "start": nm.start_,
           "fell_back": nm.fell_back_}  # fmt: skip
    restored = restore_blender(_legacy_info(old, task, metric, k, 4))
    np.testing.assert_array_equal(restored.predict(P), nm.predict(P))
    assert restored.start_ == nm.start_
    stack = StackingBlender(metric=metric).fit(P, y)
    old = {"method": "stack", "task": task, "n_classes": k, "coef": stack.meta_.coef_.tolist()}
    if task == "regression":
        old.update(intercept=float(stack.meta_.intercept_), alpha=1.0)
    else:
        old.update(intercept=stack.meta_.intercept_.tolist(), classes=[0, 1, 2][:k], C=1.0)
    restored = restore_blender(_legacy_info(old, task, metric, k, 4))
    np.testing.assert_allclose(restored.predict(P), stack.predict(P), atol=1e-12)
    assert restored.member_weights() == stack.member_weights()


# --------------------------------------------------------------------------- user blenders


def test_a_user_blender_plugs_in_as_module_and_class():
    from tests.blender_plugins import Memorizer, TopTwoMean

    P, y = _regression(m=5)
    b = get_blender("tests.blender_plugins:TopTwoMean", metric="rmse").fit(P, y)
    assert type(b) is TopTwoMean and np.count_nonzero(b.weights_) == 2
    d = _round_trip(b.to_dict())
    assert d["method"] == "tests.blender_plugins:TopTwoMean" and d["params"]["k"] == 2
    restored = blender_class(d["method"]).from_dict(d)
    assert type(restored) is TopTwoMean
    np.testing.assert_array_equal(restored.predict(P), b.predict(P))
    assert np.isfinite(cross_fit_score(TopTwoMean(metric="rmse"), P, y))
    # extra learned state travels through the blender's own to_dict / from_dict
    memo = Memorizer(metric="rmse").fit(P, y)
    again = Memorizer.from_dict(_round_trip(memo.to_dict()))
    np.testing.assert_array_equal(again.predict(P), y)
    assert again.predict(P[:, :3] + 1.0).tolist() == [memo.prior_] * 3


def test_registered_user_blender_and_bad_plugins():
    from hpsearch.core.registry import BLENDERS as REGISTRY
    from tests.blender_plugins import TopTwoMean

    REGISTRY.register("top-two", TopTwoMean)
    try:
        assert BLENDERS["top-two"] is TopTwoMean and "top-two" in list(BLENDERS)
        assert TopTwoMean.method_name() == "top-two"
        P, y = _binary()
        assert get_blender("top-two", metric="log_loss").fit(P, y).to_dict()["method"] == "top-two"
    finally:
        REGISTRY.unregister("top-two")
    assert TopTwoMean.method_name() == "tests.blender_plugins:TopTwoMean"
    with pytest.raises(ValueError, match="is <class 'tests.blender_plugins.NotABlender'>, not a "
                       "BaseBlender subclass"):  # fmt: skip
        get_blender("tests.blender_plugins:NotABlender")
    with pytest.raises(ValueError, match="has no attribute 'Nope'"):
        get_blender("tests.blender_plugins:Nope")
    assert issubclass(BLENDERS["best"], BaseBlender) and BLENDERS["best"] is BestSingleBlender


# --------------------------------------------------------------------------- AutoBlender


def _stack_overfits(n=40, m=8, seed=0):
    """Members that are pure noise on a tiny holdout: the stacking meta-model fits the noise
    (the best fitted score) while the plain mean cross-fits best."""
    rng = np.random.default_rng(seed)
    y = np.tile([0, 1], n // 2)
    return rng.uniform(0.25, 0.75, size=(m, n)), y


def test_auto_follows_the_cross_fitted_score_where_the_fitted_one_disagrees():
    P, y = _stack_overfits()
    auto = AutoBlender(metric="log_loss", folds=5, seed=0).fit(P, y)
    fitted = {m: s["fitted"] for m, s in auto.scores_.items()}
    cross = {m: s["cross_fitted"] for m, s in auto.scores_.items()}
    assert list(auto.scores_) == list(BLENDERS)
    # the premise: the two choices disagree on these rows
    assert min(fitted, key=fitted.get) == "stack"
    assert min(cross, key=cross.get) == "mean"
    assert auto.method_ == "mean"
    assert isinstance(auto.blender_, MeanBlender) and auto.blender_ is auto.blenders_["mean"]
    np.testing.assert_array_equal(auto.predict(P), MeanBlender().fit(P, y).predict(P))
    assert auto.score(P, y) == fitted["mean"]
    for name in BLENDERS:  # the scores are each method's own
        assert cross[name] == cross_fit_score(
            get_blender(name, metric="log_loss"), P, y, None, 5, 0
        )
    # the nested score: each outer fold chose by its own inner cross-fit
    nested, per_fold = nested_auto_score(P, y, "log_loss", list(BLENDERS), folds=5, seed=0)
    assert auto.nested_score_ == nested and auto.chosen_per_fold_ == per_fold
    assert auto.auto_scores() == {"fitted": fitted["mean"], "cross_fitted": nested,
                                  "chosen": "mean", "chosen_per_fold": per_fold}  # fmt: skip


def test_auto_maximizes_a_greater_is_better_metric():
    P, y = _binary(n=200, m=4, seed=2)
    auto = AutoBlender(metric="roc_auc", methods=["best", "mean", "greedy"], nested=False)
    auto.fit(P, y)
    cross = {m: s["cross_fitted"] for m, s in auto.scores_.items()}
    assert auto.method_ == max(cross, key=cross.get) and len(set(cross.values())) == 3
    assert auto.nested_score_ is None and "chosen" not in auto.auto_scores()


def test_auto_blender_contract_and_round_trip():
    P, y = _multiclass(n=200, m=3)
    auto = AutoBlender(methods=["mean", "stack"], folds=3, nested=False)
    params = auto.get_params()
    assert params == {"methods": ["mean", "stack"], "metric": None, "folds": 3, "seed": 0,
                      "nested": False}  # fmt: skip
    with pytest.raises(Exception, match="not fitted"):
        auto.predict(P)
    auto.fit(P, y)
    assert auto.get_params() == params and not hasattr(clone(auto), "method_")
    assert auto.metric_ == "log_loss" and auto.task_ == "multiclass"
    assert set(auto.scores_) == {"mean", "stack"}
    again = AutoBlender.from_dict(_round_trip(auto.to_dict()))
    assert again.method_ == auto.method_ and again.scores_ == auto.scores_
    np.testing.assert_allclose(again.predict(P), auto.predict(P), atol=1e-12)
    with pytest.raises(ValueError, match="unknown blend method 'avg'"):
        AutoBlender(methods=["mean", "avg"]).fit(P, y)
    with pytest.raises(ValueError, match="methods is empty"):
        AutoBlender(methods=[]).fit(P, y)


def test_auto_keeps_the_methods_that_fit_and_says_why_the_others_did_not():
    P, y = _binary(n=60, m=3)
    y = np.zeros_like(y)  # one class: stacking cannot be fitted, weights can
    auto = AutoBlender(metric="log_loss", methods=["stack", "mean"], nested=False).fit(P, y)
    assert auto.scores_["stack"] == {
        "fitted": None,
        "cross_fitted": None,
        "error": "StackingBlender needs at least two classes in y",
    }
    assert set(auto.blenders_) == {"mean"} and auto.method_ == "mean"
    with pytest.raises(ValueError, match="no blend method could be fitted"):
        AutoBlender(metric="log_loss", methods=["stack"]).fit(P, y)


def test_auto_on_too_few_rows_to_cross_fit_says_it_chose_by_default():
    """One holdout row (issue 16: `split.min_rows` lowered): no method has a cross-fitted
    score, so `auto` compares nothing and must not claim "the best cross-fitted score"."""
    from ensembles.report import _auto_words

    P, y = _binary(n=1, m=3)
    said: list[str] = []
    auto = AutoBlender(metric="log_loss", methods=["best", "mean", "nelder-mead"])
    auto.fit(P, y, log=said.append)
    assert all(s["cross_fitted"] is None for s in auto.scores_.values())
    assert auto.method_ == "nelder-mead" and auto.fallback_
    assert "auto: no method could be cross-fitted (1 row(s)), so nothing was compared; " \
        "nelder-mead is used by default" in said  # fmt: skip
    assert not any("best cross-fitted" in s for s in said)
    row = auto.auto_scores()
    assert row["fallback"] is True and row["cross_fitted"] is None
    assert AutoBlender.from_dict(json.loads(json.dumps(auto.to_dict()))).fallback_
    info = {"requested_method": "auto", "scores": {**auto.scores_, "auto": row}}
    assert _auto_words(info) == " (auto: no method could be cross-fitted; chosen by default)"
    del info["scores"]["auto"]["fallback"]
    assert _auto_words(info) == " (auto: the best cross-fitted score)"
    # with rows enough, the choice is by the cross-fitted score and says so
    P, y = _binary(n=200, m=3)
    auto = AutoBlender(metric="log_loss", methods=["best", "mean"], nested=False).fit(P, y)
    assert not auto.fallback_ and "fallback" not in auto.auto_scores()
