"""The ``realmlp`` family and its training knobs: robust scaling and smooth clipping, periodic
numeric embeddings, TabM-mini ensembling, safe-mode save/load of its layers, AdamW, label
smoothing, the cosine schedule and a trial through the Keras trainer. Tiny data."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from search_spaces.specs import Head, InputSpec, OutputSpec

SPECS = {
    "numeric": InputSpec(numeric=5),
    "both": InputSpec(
        numeric=5,
        categorical={"colour": 4, "city": 12},
        numeric_center=(0.0, 0.5, 0.0, -1.0, 0.0),
        numeric_scale=(1.0, 2.0, 0.5, 1.0, 1.0),
    ),
    "categorical": InputSpec(categorical={"colour": 4}),
}
TASKS = {
    "binary": Head("output", "binary", 1),
    "multiclass": Head("output", "multiclass", 3),
    "regression": Head("output", "regression", 1),
}
SMALL = {"n_layers": 2, "units": 16, "plr_frequencies": 4, "plr_dim": 3}


def tiny_x(model, n: int = 48, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = {}
    for t in model.inputs:
        shape = (n, *t.shape[1:])
        if "int" in str(t.dtype):
            x[t.name] = rng.integers(0, 4, size=shape).astype("int32")
        else:
            x[t.name] = (3 * rng.normal(size=shape)).astype("float32")
    return x


def tiny_y(head: Head, n: int = 48) -> np.ndarray:
    rng = np.random.default_rng(1)
    if head.task == "regression":
        return rng.normal(size=n).astype("float32")
    return rng.integers(0, max(2, head.n_classes), size=n).astype("int32")


@pytest.fixture(scope="module")
def fam():
    import search_spaces.families as families

    return families


@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize(
    "inputs,extra",
    [
        ("numeric", {"numeric_embedding": "periodic"}),
        ("both", {"numeric_embedding": "periodic", "residual": True, "cat_embed_dim": 4}),
        ("both", {"numeric_embedding": "none", "ensemble_size": 3}),
        ("categorical", {"numeric_embedding": "periodic"}),
    ],
)
def test_realmlp_builds_and_trains_for_every_task(fam, task, inputs, extra):
    outputs = OutputSpec(heads=(TASKS[task],))
    params = {**SMALL, **extra, "optimizer": "adamw", "label_smoothing": 0.1}
    model = fam.build_model("realmlp", params, SPECS[inputs], outputs)
    assert sorted(t.name for t in model.inputs) == sorted(SPECS[inputs].input_names())
    width = 3 if task == "multiclass" else 1
    assert tuple(model.output["output"].shape) == (None, width)
    names = [layer.name for layer in model.layers]
    has_numeric = SPECS[inputs].numeric > 0
    assert ("numeric_clip" in names) == has_numeric
    periodic = has_numeric and extra["numeric_embedding"] == "periodic"
    assert ("numeric_periodic" in names) == periodic
    assert ("ensemble_scale" in names) == (extra.get("ensemble_size", 1) > 1)
    assert ("block_0_res" in names) == bool(extra.get("residual"))
    fam.compile_model(model, params, outputs)
    model.run_eagerly = True
    hist = model.fit(tiny_x(model), {"output": tiny_y(TASKS[task])}, epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"][-1])
    pred = model.predict(tiny_x(model, 8), verbose=0)["output"]
    if task == "multiclass":  # members' probabilities averaged: still a distribution
        np.testing.assert_allclose(pred.sum(axis=1), 1.0, rtol=1e-5)


def test_realmlp_defaults_are_the_tuned_architecture(fam):
    model = fam.build_model("realmlp", {}, SPECS["both"], OutputSpec.single("binary"))
    assert [model.get_layer(f"block_{i}").units for i in range(3)] == [256] * 3
    assert model.get_layer("block_0_act").get_config()["activation"] == "selu"
    assert model.get_layer("numeric_periodic").n_frequencies == 16
    assert "block_3" not in [layer.name for layer in model.layers]


def test_robust_clip_scales_then_squashes(fam):
    from search_spaces.families.custom_layers import RobustClip

    spec = SPECS["both"]
    model = fam.build_model(
        "realmlp", {"numeric_embedding": "none"}, spec, OutputSpec.single("binary")
    )
    layer = model.get_layer("numeric_clip")
    assert layer.center == list(spec.numeric_center) and layer.scale == list(spec.numeric_scale)
    x = np.array([[0.0, 0.5, 1.0, 2.0, 300.0]], dtype="float32")
    z = (x - np.array(spec.numeric_center)) / np.array(spec.numeric_scale)
    want = z / np.sqrt(1 + (z / 3) ** 2)
    np.testing.assert_allclose(np.asarray(layer(x)), want, rtol=1e-5)
    assert abs(float(np.asarray(layer(x))[0, 4])) < 3.0  # an outlier lands just inside +-3
    # no statistics (runs made before they were recorded): the smooth clip alone
    plain = RobustClip(None, None, 3.0)
    np.testing.assert_allclose(np.asarray(plain(x)), x / np.sqrt(1 + (x / 3) ** 2), rtol=1e-5)


def test_multi_input_can_use_the_same_numeric_block(fam):
    inputs = SPECS["both"]
    outputs = OutputSpec.single("binary")
    plain = fam.build_model("multi_input", {}, inputs, outputs)
    assert "numeric_clip" not in [layer.name for layer in plain.layers]
    assert plain.get_layer("numeric_dense").input.shape[-1] == 5  # unchanged by default
    model = fam.build_model(
        "multi_input", {"numeric_embedding": "periodic", "plr_dim": 2}, inputs, outputs
    )
    assert model.get_layer("numeric_periodic").n_frequencies == 16
    assert model.get_layer("numeric_dense").input.shape[-1] == 5 + 5 * 2
    with pytest.raises(ValueError, match="numeric_embedding 'splines'"):
        fam.build_model("multi_input", {"numeric_embedding": "splines"}, inputs, outputs)


# --------------------------------------------------------------------------- save / load


LOAD_SCRIPT = """
import sys, numpy as np
from hpsearch.core.store import load_keras_model
model = load_keras_model(open(sys.argv[1], "rb").read())
x = dict(np.load(sys.argv[2]))
np.save(sys.argv[3], model.predict(x, verbose=0)["output"])
"""


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_saved_realmlp_loads_in_safe_mode_with_identical_predictions(fam, tmp_path, task):
    """In a fresh process: loading a model goes through ``load_keras_model``, which registers
    the custom layers itself (the process never imports the families)."""
    from hpsearch.search.training import _model_bytes

    outputs = OutputSpec(heads=(TASKS[task],))
    params = {**SMALL, "numeric_embedding": "periodic", "ensemble_size": 2, "label_smoothing": 0.1}
    model = fam.build_model("realmlp", params, SPECS["both"], outputs)
    fam.compile_model(model, params, outputs)
    model.fit(tiny_x(model), {"output": tiny_y(TASKS[task])}, epochs=1, verbose=0)
    x = tiny_x(model, 16, seed=5)
    want = model.predict(x, verbose=0)["output"]
    (tmp_path / "model.keras").write_bytes(_model_bytes(model))
    np.savez(tmp_path / "x.npz", **x)
    subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, str(tmp_path / "model.keras"),
         str(tmp_path / "x.npz"), str(tmp_path / "pred.npy")],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    np.testing.assert_allclose(np.load(tmp_path / "pred.npy"), want, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- compile


def test_adamw_with_weight_decay(fam):
    outputs = OutputSpec.single("binary")
    model = fam.build_model("realmlp", SMALL, SPECS["numeric"], outputs)
    fam.compile_model(
        model, {"optimizer": "adamw", "learning_rate": 0.003, "weight_decay": 0.05}, outputs
    )
    assert type(model.optimizer).__name__ == "AdamW"
    assert float(model.optimizer.weight_decay) == pytest.approx(0.05)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.003)
    with pytest.raises(ValueError, match="optimizer 'lion': expected one of adam, adamw"):
        fam.compile_model(model, {"optimizer": "lion"}, outputs)


def test_without_the_new_params_compile_is_as_before(fam):
    for task in ("binary", "multiclass"):
        outputs = OutputSpec(heads=(TASKS[task],))
        model = fam.build_model("dense", {"n_layers": 1}, InputSpec(numeric=3), outputs)
        fam.compile_model(model, {"optimizer": "adam"}, outputs)
        assert type(model.optimizer).__name__ == "Adam"
        assert model.optimizer.weight_decay is None
        want = "binary_crossentropy" if task == "binary" else "sparse_categorical_crossentropy"
        assert model.loss == {"output": want}
        fam.compile_model(model, {"label_smoothing": 0.0}, outputs)
        assert model.loss == {"output": want}


def test_label_smoothing_binary_and_multiclass(fam):
    import keras

    from search_spaces.families.custom_layers import SparseCategoricalCrossentropyLS

    outputs = OutputSpec.single("binary")
    model = fam.build_model("realmlp", SMALL, SPECS["numeric"], outputs)
    fam.compile_model(model, {"label_smoothing": 0.1}, outputs)
    loss = model.loss["output"]
    assert isinstance(loss, keras.losses.BinaryCrossentropy)
    assert loss.get_config()["label_smoothing"] == pytest.approx(0.1)

    outputs = OutputSpec.single("multiclass", 3)
    model = fam.build_model("realmlp", SMALL, SPECS["numeric"], outputs)
    fam.compile_model(model, {"label_smoothing": 0.2}, outputs)
    loss = model.loss["output"]
    assert isinstance(loss, SparseCategoricalCrossentropyLS)
    y = np.array([0, 2, 1, 2])
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3], [0.5, 0.25, 0.25]])
    reference = keras.losses.CategoricalCrossentropy(label_smoothing=0.2)
    want = float(reference(np.eye(3)[y], p))
    assert float(loss(y, p)) == pytest.approx(want, rel=1e-5)
    assert float(SparseCategoricalCrossentropyLS(0.0)(y, p)) == pytest.approx(
        float(keras.losses.SparseCategoricalCrossentropy()(y, p)), rel=1e-5
    )
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert restored.label_smoothing == pytest.approx(0.2)
    with pytest.raises(ValueError, match="label_smoothing 1.5"):
        fam.compile_model(model, {"label_smoothing": 1.5}, outputs)


def test_lr_schedule_is_checked_at_compile(fam):
    outputs = OutputSpec.single("regression")
    model = fam.build_model("realmlp", SMALL, SPECS["numeric"], outputs)
    fam.compile_model(model, {"lr_schedule": "cosine"}, outputs)
    with pytest.raises(
        ValueError, match="lr_schedule 'onecycle': expected one of constant, cosine"
    ):
        fam.compile_model(model, {"lr_schedule": "onecycle"}, outputs)


def test_cosine_rate():
    from hpsearch.search.training import cosine_rate

    assert cosine_rate(0.01, 0.0) == pytest.approx(0.01)
    assert cosine_rate(0.01, 0.5) == pytest.approx(0.005)
    assert cosine_rate(0.01, 1.0) == pytest.approx(0.0, abs=1e-12)
    assert cosine_rate(0.01, 2.0) == pytest.approx(0.0, abs=1e-12)


# --------------------------------------------------------------------------- trainer


def _payload(task: str, params: dict, max_epochs: int = 6):
    from hpsearch.search.trial import TrialPayload

    head = TASKS[task]
    return TrialPayload(
        number=0,
        params=params,
        family="realmlp",
        metric="log_loss" if task != "regression" else "rmse",
        task=task,
        seed=3,
        training={"max_epochs": max_epochs, "batch_size": 32, "patience": 50, "tensorboard": False},
        inputs=SPECS["both"].to_dict(),
        outputs=OutputSpec(heads=(head,)).to_dict(),
        splits=("valid", "holdout"),
    )


def _data(task: str, n: int = 120) -> dict:
    rng = np.random.default_rng(0)
    x = {
        "numeric": rng.normal(size=(n, 5)).astype("float32"),
        "cat_colour": rng.integers(0, 4, size=n).astype("int32"),
        "cat_city": rng.integers(0, 12, size=n).astype("int32"),
    }
    signal = x["numeric"][:, 0] + 0.5 * (x["cat_colour"] == 2)
    if task == "regression":
        y = signal + 0.1 * rng.normal(size=n)
    elif task == "binary":
        y = (signal > 0).astype(int)
    else:
        y = np.digitize(signal, [-0.5, 0.5])
    cut = {"train": slice(0, 80), "valid": slice(80, 100), "holdout": slice(100, 120)}
    return {
        "x": {s: {k: v[c] for k, v in x.items()} for s, c in cut.items()},
        "y": {s: y[c] for s, c in cut.items()},
    }


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_a_realmlp_trial_through_the_keras_trainer(task):
    from hpsearch.core.store import load_keras_model
    from hpsearch.search.runner import NullReporter
    from hpsearch.search.training import cosine_rate, train_trial

    params = {
        **SMALL,
        "optimizer": "adamw",
        "weight_decay": 0.01,
        "learning_rate": 0.004,
        "lr_schedule": "cosine",
        "label_smoothing": 0.1,
        "batch_size": 16,
        "epochs": 4,  # below training.max_epochs (6): the family's budget wins
    }
    data = _data(task)
    result = train_trial(_payload(task, params), data, NullReporter())
    assert result.state == "COMPLETE" and math.isfinite(result.value)
    assert result.epochs == 4 and result.extra["batch_size"] == 16
    rates = [row["learning_rate"] for row in result.history]
    # each epoch records its middle rate of the cosine over the 4 epochs
    assert rates == pytest.approx([cosine_rate(0.004, (e + 0.5) / 4) for e in range(4)])
    assert result.predictions["holdout"].shape[0] == 20
    model = load_keras_model(result.model_bytes)
    raw = model.predict(data["x"]["holdout"], verbose=0)["output"]
    if task == "binary":
        np.testing.assert_allclose(raw[:, 0], result.predictions["holdout"], rtol=1e-5)


def test_epochs_param_never_exceeds_training_max_epochs():
    from hpsearch.search.runner import NullReporter
    from hpsearch.search.training import train_trial

    params = {**SMALL, "epochs": 30, "lr_schedule": "constant"}
    result = train_trial(_payload("binary", params, max_epochs=2), _data("binary"), NullReporter())
    assert result.epochs == 2
    assert all(isinstance(row.get("learning_rate"), float) for row in result.history)


# --------------------------------------------------------------------------- preprocessing


def test_preprocessor_records_robust_statistics_and_old_runs_load(tmp_path):
    import pandas as pd

    from hpsearch.core.data import Preprocessor

    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "skewed": np.exp(rng.normal(size=200)),
            "mostly_zero": np.where(rng.random(200) < 0.9, 0.0, 5.0),
            "holes": np.where(rng.random(200) < 0.2, np.nan, rng.normal(size=200)),
        }
    )
    pre = Preprocessor().fit(df, {c: "numeric" for c in df.columns})
    spec = pre.input_spec()
    assert spec.numeric == 4  # three features and the missing indicator of `holes`
    assert len(spec.numeric_center) == len(spec.numeric_scale) == 4
    z = pre.transform(df)["numeric"][:, 0]
    assert spec.numeric_center[0] == pytest.approx(np.median(z), abs=1e-5)
    q25, q75 = np.quantile(z, [0.25, 0.75])
    assert spec.numeric_scale[0] == pytest.approx(q75 - q25, rel=1e-5)
    assert spec.numeric_scale[1] > 0  # zero interquartile range: half the range instead
    assert spec.numeric_center[3] == 0.0 and spec.numeric_scale[3] == 1.0  # the indicator
    assert InputSpec.from_dict(spec.to_dict()) == spec
    # a run made before the statistics were recorded: none, and the same spec dict as then
    old = pre.to_dict()
    for f in old["numeric"]:
        del f["robust_center"], f["robust_scale"]
    old_spec = Preprocessor.from_dict(old).input_spec()
    assert old_spec.numeric_center is None and old_spec.numeric_scale is None
    assert "numeric_center" not in old_spec.to_dict()
    assert InputSpec.from_dict(old_spec.to_dict()) == old_spec


# --------------------------------------------------------------------------- library space


def test_the_portfolio_starts_with_the_tuned_default_and_every_entry_builds(fam):
    from search_spaces import load_space
    from search_spaces.families.realmlp import DEFAULTS

    space = load_space("tabular_realmlp")
    assert space.family == "realmlp" and len(space.portfolio) >= 3
    first = space.portfolio[0]
    # the family's defaults are the first entry's architecture: empty params build it
    assert {k: first[k] for k in DEFAULTS if k in first} == {
        k: v for k, v in DEFAULTS.items() if k in first
    }
    assert first["optimizer"] == "adamw" and first["lr_schedule"] == "cosine"
    assert first["label_smoothing"] == 0.0  # log loss punishes capped probabilities
    assert 0.1 in {c["label_smoothing"] for c in space.portfolio}  # still tried
    for i, config in enumerate(space.portfolio):
        space.validate_config(config)
        outputs = OutputSpec(heads=(list(TASKS.values())[i % 3],))
        model = fam.build_model("realmlp", config, SPECS["both"], outputs)
        fam.compile_model(model, config, outputs)
        assert fam.count_params(model) < 2_000_000


def test_a_network_stops_training_at_the_deadline():
    """Past the deadline (the end of the search's time budget and its grace) a network
    stops at the next batch instead of training its remaining epochs."""
    import time

    import keras

    from hpsearch.search.training import deadline_callback

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(256, 3)).astype("float32"), rng.normal(size=256).astype("float32")

    def fit(callbacks):
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        model.compile("adam", "mse")
        return model.fit(X, y, batch_size=32, epochs=5, verbose=0, callbacks=callbacks)

    assert len(fit([]).history["loss"]) == 5
    stopped = fit([deadline_callback(time.time() - 1)])
    assert len(stopped.history["loss"]) == 1  # one batch, then the epoch ends
    assert len(fit([deadline_callback(time.time() + 3600)]).history["loss"]) == 5
