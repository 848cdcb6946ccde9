"""Metric-aware learning of networks: under ``rmsle`` a regression network learns
``log1p(target)`` and predicts it back, under ``mae`` its head minimizes absolute error
(``hpsearch.core.targets``, ``hpsearch.search.training``). Tiny real Keras models, no Ray."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from hpsearch.core import metrics, targets


def test_transform_and_loss_follow_the_metric():
    assert targets.transform_for("rmsle", "regression") == "log1p"
    assert targets.transform_for("rmse", "regression") is None
    assert targets.transform_for("mae", "regression") is None
    assert targets.transform_for("log_loss", "binary") is None
    assert targets.regression_loss("mae") == "mean_absolute_error"
    assert targets.regression_loss("rmse") == targets.regression_loss("rmsle") == "mse"


def test_log1p_round_trip_and_clipping():
    y = np.array([0.0, 0.5, 3.0, 1e6])
    scaling = targets.fit_scaling(y, "log1p")
    t = targets.to_network(y, scaling, "log1p")
    np.testing.assert_allclose(t.mean(), 0.0, atol=1e-6)  # standardized on the log1p scale
    np.testing.assert_allclose(
        targets.from_network(t, "regression", scaling, "log1p"), y, rtol=1e-5
    )
    # far below the smallest target: expm1 gives > -1, clipped at 0 (RMSLE stays defined)
    low = targets.from_network(np.array([-50.0]), "regression", scaling, "log1p")
    assert low.tolist() == [0.0]
    # a diverged output stays finite
    assert np.isfinite(targets.from_network(np.array([1e9]), "regression", scaling, "log1p")).all()
    # classification outputs are untouched
    p = np.array([0.2, 0.9])
    np.testing.assert_array_equal(targets.from_network(p, "binary", [5.0, 2.0], None), p)
    with pytest.raises(ValueError, match="unknown target transform 'sqrt'"):
        targets.decode(p, "sqrt")


def _regression_data(n: int = 240, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    # a skewed, non-negative target spanning orders of magnitude: what RMSLE is for
    y = np.exp(2.0 + x[:, 0] + 0.5 * x[:, 1] + 0.1 * rng.normal(size=n))
    cut = {"train": slice(0, 160), "valid": slice(160, 200), "holdout": slice(200, 240)}
    return {
        "x": {s: {"numeric": x[c]} for s, c in cut.items()},
        "y": {s: y[c] for s, c in cut.items()},
    }


def _payload(metric: str):
    from hpsearch.search.trial import TrialPayload
    from search_spaces.specs import InputSpec, OutputSpec

    return TrialPayload(
        number=0,
        params={"n_layers": 1, "units": 16, "learning_rate": 0.01},
        family="dense",
        metric=metric,
        task="regression",
        seed=3,
        training={"max_epochs": 3, "batch_size": 32, "patience": 2, "tensorboard": False},
        inputs=InputSpec(numeric=4).to_dict(),
        outputs=OutputSpec.single("regression").to_dict(),
        splits=("valid", "holdout"),
    )


def _train(metric: str):
    from hpsearch.search.runner import NullReporter
    from hpsearch.search.training import train_trial

    data = _regression_data()
    return data, train_trial(_payload(metric), data, NullReporter())


def _load(model_bytes: bytes):
    from hpsearch.core.store import load_keras_model

    return load_keras_model(model_bytes)


@pytest.mark.slow
def test_rmsle_network_learns_log1p_and_predicts_back():
    data, result = _train("rmsle")
    assert result.state == "COMPLETE"
    extra = result.extra
    assert extra["target_transform"] == "log1p"
    assert extra["loss"] == "mse"
    mu, sd = extra["target_scaling"]
    # the scaling is that of log1p(y) on the train rows, not of y
    np.testing.assert_allclose(mu, np.log1p(data["y"]["train"]).mean(), rtol=1e-6)
    np.testing.assert_allclose(sd, np.log1p(data["y"]["train"]).std(), rtol=1e-6)
    model = _load(result.model_bytes)
    raw = np.asarray(model.predict(data["x"]["holdout"], verbose=0)["output"]).reshape(-1)
    log_scale = raw * sd + mu
    stored = result.predictions["holdout"]
    # the stored predictions are the raw output un-standardized on the log1p scale, expm1'd
    np.testing.assert_allclose(stored, np.maximum(np.expm1(log_scale), 0.0), rtol=1e-4)
    assert (stored >= 0).all()
    # and what every reader of a saved network computes from trial.json's records
    np.testing.assert_allclose(
        targets.from_network(raw, "regression", [mu, sd], extra["target_transform"]),
        stored,
        rtol=1e-4,
    )
    # the validation value is RMSLE of those predictions
    assert result.value == pytest.approx(
        metrics.score("rmsle", data["y"]["valid"], result.predictions["valid"])
    )


@pytest.mark.slow
def test_mae_network_compiles_an_absolute_loss(tmp_path):
    import keras

    data, result = _train("mae")
    extra = result.extra
    assert extra["loss"] == "mean_absolute_error"
    assert extra["target_transform"] is None
    mu, sd = extra["target_scaling"]
    np.testing.assert_allclose(mu, data["y"]["train"].mean(), rtol=1e-6)
    # the saved model was compiled with the absolute loss
    path = tmp_path / "model.keras"
    path.write_bytes(result.model_bytes)
    model = keras.saving.load_model(path)  # compiled, as it was trained
    assert model.loss == {"output": "mean_absolute_error"}
    raw = np.asarray(model.predict(data["x"]["valid"], verbose=0)["output"]).reshape(-1)
    y = targets.to_network(data["y"]["valid"], [mu, sd], None)
    # its compiled loss on the valid rows is their mean absolute error (standardized)
    assert model.evaluate(data["x"]["valid"], y, verbose=0) == pytest.approx(
        float(np.mean(np.abs(raw - y))), rel=1e-3
    )
    np.testing.assert_allclose(result.predictions["valid"], raw * sd + mu, rtol=1e-4)


@pytest.mark.slow
def test_classification_keeps_cross_entropy():
    from hpsearch.search.runner import NullReporter
    from hpsearch.search.training import train_trial
    from search_spaces.specs import OutputSpec

    data = _regression_data()
    data["y"] = {s: (y > np.median(y)).astype(int) for s, y in data["y"].items()}
    payload = _payload("log_loss")
    payload.task = "binary"
    payload.outputs = OutputSpec.single("binary").to_dict()
    result = train_trial(payload, data, NullReporter())
    assert result.extra["target_scaling"] is None
    assert result.extra["target_transform"] is None and result.extra["loss"] is None
    with zipfile.ZipFile(io.BytesIO(result.model_bytes)) as zf:
        assert "binary_crossentropy" in zf.read("config.json").decode()
        assert "mean_absolute_error" not in zf.read("config.json").decode()
    p = result.predictions["holdout"]
    assert ((p > 0) & (p < 1)).all()
