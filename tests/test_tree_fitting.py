"""How tree members are fitted: forests' probabilities calibrated on held-apart rows, boosters
early-stopped on the valid split in holdout mode (``ensembles.trees``)."""

from __future__ import annotations

import numpy as np
import pytest

from ensembles import trees
from hpsearch.core import metrics


def _noisy(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    logits = X[:, :k] * 0.8 if k > 2 else X[:, :1] * np.array([[-0.8, 0.8]])
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(k, p=row) for row in p])
    return X, y


@pytest.mark.parametrize("name,k", [("rf", 2), ("et", 3)])
def test_forest_probabilities_are_calibrated_on_the_valid_rows(name, k):
    X, y = _noisy(1500, k, 0)
    tr, va, te = slice(0, 900), slice(900, 1200), slice(1200, 1500)
    task = "binary" if k == 2 else "multiclass"
    params = {"n_estimators": 50, "random_state": 0}
    raw = trees.fit_estimator(name, task, params, X[tr], y[tr])
    smooth = trees.fit_estimator(name, task, params, X[tr], y[tr], X_val=X[va], y_val=y[va])
    assert isinstance(smooth, trees.SmoothedClassifier) and smooth.alpha > 0
    p_raw = trees.predict_tree(raw, X[te], task, k)
    p_smooth = trees.predict_tree(smooth, X[te], task, k)
    # noisy labels: vote shares of 0 and 1 cost log loss that the shrinkage saves
    assert metrics.score("log_loss", y[te], p_smooth) < metrics.score("log_loss", y[te], p_raw)
    if task == "binary":  # the order of the rows is unchanged: the same ROC AUC
        assert metrics.score("roc_auc", y[te], p_smooth) == pytest.approx(
            metrics.score("roc_auc", y[te], p_raw)
        )
    # the alpha is the grid's best on the valid rows, never worse than none there
    p_val_raw = trees.predict_tree(raw, X[va], task, k)
    p_val = trees.predict_tree(smooth, X[va], task, k)
    assert metrics.score("log_loss", y[va], p_val) <= metrics.score("log_loss", y[va], p_val_raw)


def test_a_clean_signal_needs_little_shrinkage():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(1200, 4))
    y = (X[:, 0] > 0).astype(int)  # learnable without noise
    smooth = trees.fit_estimator(
        "rf", "binary", {"n_estimators": 50, "random_state": 0}, X[:800], y[:800],
        X_val=X[800:], y_val=y[800:],
    )  # fmt: skip
    assert smooth.alpha <= 0.02


def test_holdout_trees_early_stop_on_the_valid_split(tmp_path):
    """In holdout mode a booster stops on the valid rows: on pure noise, long before its
    rounds run out; tree.json records it, and the fit version makes older fits refit."""
    import pandas as pd

    from hpsearch.core.data import prepare
    from hpsearch.core.spec import load_spec

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(600, 5)), columns=list("abcde"))
    frame["y"] = rng.normal(size=600)
    frame.to_csv(tmp_path / "train.csv", index=False)
    spec = load_spec(
        {
            "name": "noise",
            "data": {"train": str(tmp_path / "train.csv"), "target": "y"},
            "space": "tabular_mlp",
            "metric": "rmse",
            "output": str(tmp_path / "run"),
        }
    )
    prepared = prepare(spec, tmp_path / "run")
    rec = trees.fit_tree(tmp_path / "run", "lgbm", prepared, "rmse", 0)
    assert rec.info["fit_version"] == trees.FIT_VERSION
    assert rec.info["best_iteration"] < trees.tree_params("lgbm", "regression", 0)["n_estimators"]
