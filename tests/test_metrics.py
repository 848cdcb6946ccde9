"""hpsearch.core.metrics: values against scikit-learn, directions, input handling, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from hpsearch.core import metrics

RNG = np.random.default_rng(0)
N = 200
Y_BIN = RNG.integers(0, 2, N)
P_BIN = np.clip(0.3 * Y_BIN + 0.7 * RNG.random(N), 0.01, 0.99)
K = 4
Y_MC = RNG.integers(0, K, N)
_raw = RNG.random((N, K)) + 1.5 * np.eye(K)[Y_MC]
P_MC = _raw / _raw.sum(axis=1, keepdims=True)
Y_REG = RNG.random(N) * 10
P_REG = Y_REG + RNG.normal(scale=1.0, size=N) ** 2


def test_log_loss_matches_sklearn():
    assert metrics.score("log_loss", Y_BIN, P_BIN) == pytest.approx(
        skm.log_loss(Y_BIN, P_BIN, labels=[0, 1]), rel=1e-12
    )
    assert metrics.score("log_loss", Y_MC, P_MC) == pytest.approx(
        skm.log_loss(Y_MC, P_MC, labels=list(range(K))), rel=1e-12
    )


def test_log_loss_known_value_and_clipping():
    # sklearn's docstring example: 0.21616
    y = [1, 0, 0, 1]
    p = np.array([[0.1, 0.9], [0.9, 0.1], [0.8, 0.2], [0.35, 0.65]])
    assert metrics.score("log_loss", y, p) == pytest.approx(0.21616, abs=1e-5)
    # a confident wrong answer is clipped, not infinite
    assert metrics.score("log_loss", [1], [0.0]) == pytest.approx(-math.log(1e-15))
    # an absent class still counts thanks to labels=range(K)
    assert math.isfinite(metrics.score("log_loss", [0, 0], [[0.8, 0.1, 0.1], [0.7, 0.2, 0.1]]))
    # multiclass rows are clipped then renormalised, as competitions score them
    rows = np.array([[0.6, 0.3, 0.3], [0.0, 0.5, 0.5]])
    expected = -np.mean(np.log([0.5, 1e-15 / (1.0 + 1e-15)]))
    assert metrics.score("log_loss", [0, 0], rows) == pytest.approx(expected, rel=1e-9)


def test_binary_prediction_shapes_agree():
    two = np.column_stack([1 - P_BIN, P_BIN])
    for name in ("log_loss", "roc_auc", "accuracy", "f1_macro"):
        a = metrics.score(name, Y_BIN, P_BIN)
        assert metrics.score(name, Y_BIN, P_BIN[:, None]) == pytest.approx(a)
        assert metrics.score(name, Y_BIN, two) == pytest.approx(a)


def test_roc_auc_matches_sklearn():
    assert metrics.score("roc_auc", Y_BIN, P_BIN) == pytest.approx(skm.roc_auc_score(Y_BIN, P_BIN))
    assert metrics.score("roc_auc", Y_MC, P_MC) == pytest.approx(
        skm.roc_auc_score(Y_MC, P_MC, multi_class="ovr", average="macro")
    )


def test_accuracy_and_f1_match_sklearn():
    hard_bin = (P_BIN >= 0.5).astype(int)
    hard_mc = P_MC.argmax(axis=1)
    assert metrics.score("accuracy", Y_BIN, P_BIN) == pytest.approx(
        skm.accuracy_score(Y_BIN, hard_bin)
    )
    assert metrics.score("accuracy", Y_MC, P_MC) == pytest.approx(skm.accuracy_score(Y_MC, hard_mc))
    assert metrics.score("f1_macro", Y_BIN, P_BIN) == pytest.approx(
        skm.f1_score(Y_BIN, hard_bin, average="macro")
    )
    assert metrics.score("f1_macro", Y_MC, P_MC) == pytest.approx(
        skm.f1_score(Y_MC, hard_mc, average="macro")
    )
    assert metrics.score("accuracy", [0, 1, 2], np.eye(3)) == 1.0


def test_regression_metrics_match_sklearn():
    assert metrics.score("rmse", Y_REG, P_REG) == pytest.approx(
        math.sqrt(skm.mean_squared_error(Y_REG, P_REG))
    )
    assert metrics.score("mae", Y_REG, P_REG) == pytest.approx(
        skm.mean_absolute_error(Y_REG, P_REG)
    )
    assert metrics.score("rmsle", Y_REG, P_REG) == pytest.approx(
        math.sqrt(skm.mean_squared_log_error(Y_REG, P_REG))
    )
    assert metrics.score("rmse", [1.0, 2.0], [[1.0], [4.0]]) == pytest.approx(math.sqrt(2.0))


def test_rmsle_clips_negative_predictions_and_rejects_negative_targets():
    # a negative prediction scores as 0, as the submission writer clips it
    assert metrics.score("rmsle", [1.0, 2.0], [1.0, -0.5]) == pytest.approx(
        math.sqrt(skm.mean_squared_log_error([1.0, 2.0], [1.0, 0.0]))
    )
    with pytest.raises(ValueError, match="negative"):
        metrics.score("rmsle", [-1.0, 2.0], [1.0, 0.5])


@pytest.mark.parametrize(
    "name, greater",
    [
        ("log_loss", False),
        ("roc_auc", True),
        ("accuracy", True),
        ("f1_macro", True),
        ("rmse", False),
        ("rmsle", False),
        ("mae", False),
    ],
)
def test_direction_loss_and_is_better(name, greater):
    m = metrics.get_metric(name)
    assert m.greater_is_better is greater
    assert m.name == name and metrics.METRICS[name] is m
    if "regression" in m.tasks:
        y, good, bad = Y_REG, Y_REG + 0.01, P_REG
    else:
        y, good, bad = Y_BIN, np.where(Y_BIN == 1, 0.9, 0.1), 1 - P_BIN
    s_good, s_bad = metrics.score(name, y, good), metrics.score(name, y, bad)
    assert metrics.is_better(name, s_good, s_bad)
    assert not metrics.is_better(name, s_bad, s_good)
    assert metrics.loss(name, y, good) < metrics.loss(name, y, bad)
    assert metrics.loss(name, y, good) == pytest.approx(-s_good if greater else s_good)


def test_is_better_handles_missing():
    assert metrics.is_better("rmse", 1.0, None)
    assert metrics.is_better("rmse", 1.0, float("nan"))
    assert not metrics.is_better("rmse", None, 1.0)
    assert not metrics.is_better("rmse", 1.0, 1.0)


def test_unknown_metric_message():
    with pytest.raises(ValueError) as err:
        metrics.get_metric("log-loss")
    msg = str(err.value)
    assert "'log-loss'" in msg
    assert "roc_auc" in msg and "rmse" in msg  # lists the valid ones
    assert "Did you mean 'log_loss'" in msg
    with pytest.raises(ValueError, match="unknown metric 'zzz'"):
        metrics.score("zzz", [0], [0.5])


def test_default_metric_and_tasks():
    assert metrics.default_metric("binary") == "log_loss"
    assert metrics.default_metric("multiclass") == "log_loss"
    assert metrics.default_metric("regression") == "rmse"
    with pytest.raises(ValueError, match="unknown task"):
        metrics.default_metric("ranking")
    assert set(metrics.metrics_for_task("regression")) == {"rmse", "rmsle", "mae"}
    with pytest.raises(ValueError, match="does not apply"):
        metrics.check_metric_task("rmse", "binary")


def test_bad_inputs_raise_clearly():
    with pytest.raises(ValueError, match="rows"):
        metrics.score("log_loss", [0, 1, 1], [0.5, 0.5])
    with pytest.raises(ValueError, match="class index 3"):
        metrics.score("log_loss", [0, 3], np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match="NaN"):
        metrics.score("rmse", [0.0, 1.0], [np.nan, 1.0])
    with pytest.raises(ValueError, match="integer class"):
        metrics.score("accuracy", [0.5, 1.0], [0.2, 0.8])
