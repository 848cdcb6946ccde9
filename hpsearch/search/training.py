"""The default trial function: build, compile and train one Keras model.

``train_trial(payload, data, reporter)`` runs inside a Ray worker. ``data`` is
``{"x": {split: {input_name: array}}, "y": {split: array}}`` read from the
object store. It returns a ``TrialResult`` with the validation score, the
per-epoch history, predictions on the valid, holdout and test rows (in the
recorded class order), the saved model and the TensorBoard logs as bytes; the
driver writes them into the run directory.
"""

from __future__ import annotations

import io
import math
import os
import tarfile
import tempfile
from typing import Any

import numpy as np

from hpsearch.core import metrics
from hpsearch.search.trial import COMPLETE, PRUNED, NonFiniteLossError, TrialPayload, TrialResult


def _model_inputs(model: Any, x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = {getattr(t, "name", None) for t in model.inputs}
    picked = {k: v for k, v in x.items() if k in names}
    return picked or x


def _head_prediction(pred: Any, head: str, task: str) -> np.ndarray:
    if isinstance(pred, dict):
        pred = pred[head]
    elif isinstance(pred, list | tuple):
        pred = pred[0]
    pred = np.asarray(pred, dtype=np.float64)
    if task in ("binary", "regression"):
        pred = pred.reshape(len(pred), -1)[:, 0]
    return pred


def _flat_hparams(params: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in params.items():
        if isinstance(v, list):
            for i, item in enumerate(v):
                flat[f"{k}_{i}"] = item
        else:
            flat[k] = v
    return {k: (v if isinstance(v, int | float | str | bool) else str(v)) for k, v in flat.items()}


def _write_hparams(logdir: str, params: dict[str, Any], value: float | None, metric: str) -> None:
    """Record the trial's hyperparameters for TensorBoard's HParams dashboard (TensorFlow only)."""
    try:
        import tensorflow as tf
        from tensorboard.plugins.hparams import api as hp
    except Exception:  # pragma: no cover - other backends
        return
    with tf.summary.create_file_writer(os.path.join(logdir, "hparams")).as_default():
        hp.hparams(_flat_hparams(params))
        if value is not None and math.isfinite(value):
            tf.summary.scalar(metric, value, step=0)


def _has_tensorboard() -> bool:
    """TensorFlow 2.20+ no longer pulls TensorBoard in; without it, trials train unlogged."""
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def _tar_dir(path: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(path, arcname=".")
    return buf.getvalue()


def train_trial(payload: TrialPayload, data: dict[str, Any], reporter: Any) -> TrialResult:
    import keras

    from search_spaces.families import aux_targets, build_model, compile_model, count_params
    from search_spaces.specs import InputSpec, OutputSpec

    keras.utils.set_random_seed(int(payload.seed) % (2**31))
    params = dict(payload.params)
    training = payload.training
    inputs = InputSpec.from_dict(payload.inputs)
    outputs = OutputSpec.from_dict(payload.outputs)
    head = outputs.heads[0]
    task = payload.task

    model = build_model(payload.family, params, inputs, outputs)
    compile_model(model, params, outputs)

    y_train = np.asarray(data["y"]["train"])
    y_valid = np.asarray(data["y"]["valid"])
    scale = (0.0, 1.0)
    if task == "regression":
        mu, sd = float(np.mean(y_train)), float(np.std(y_train)) or 1.0
        scale = (mu, sd)

    def targets(y: np.ndarray) -> dict[str, np.ndarray]:
        y = np.asarray(y, dtype=np.float32 if task == "regression" else np.int32)
        if task == "regression":
            y = ((y - scale[0]) / scale[1]).astype(np.float32)
        return aux_targets(model, {h.name: y for h in outputs.heads})

    x_train = _model_inputs(model, data["x"]["train"])
    x_valid = _model_inputs(model, data["x"]["valid"])

    def predict(split: str) -> np.ndarray:
        raw = model.predict(_model_inputs(model, data["x"][split]), batch_size=1024, verbose=0)
        pred = _head_prediction(raw, head.name, task)
        if task == "regression":
            pred = pred * scale[1] + scale[0]
        return pred

    state = {"nonfinite": None, "pruned": False}

    class Guard(keras.callbacks.Callback):
        """Stops at the first NaN/inf loss; reports the validation metric for pruning."""

        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                state["nonfinite"] = float(loss)
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                state["nonfinite"] = float(loss)
                self.model.stop_training = True
                return
            if payload.pruning:
                value = metrics.score(payload.metric, y_valid, predict("valid"))
                if reporter.report(epoch, value):
                    state["pruned"] = True
                    state["pruned_value"] = value
                    self.model.stop_training = True

    patience = int(training.get("patience", 5))
    callbacks: list[Any] = [
        Guard(),
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=patience, restore_best_weights=True
        ),
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=0.5, patience=max(1, patience // 2), min_lr=1e-6
        ),
    ]
    tb_dir = None
    if training.get("tensorboard", True) and _has_tensorboard():
        tb_dir = tempfile.mkdtemp(prefix=f"tb-{payload.number}-")
        callbacks.append(
            keras.callbacks.TensorBoard(log_dir=tb_dir, write_graph=False, profile_batch=0)
        )

    batch_size = int(params.get("batch_size") or training.get("batch_size", 64))
    hist = model.fit(
        x_train,
        targets(y_train),
        validation_data=(x_valid, targets(y_valid)),
        epochs=int(training.get("max_epochs", 30)),
        batch_size=batch_size,
        callbacks=callbacks,
        verbose=0,
        shuffle=True,
    )
    history = [
        {"epoch": i, **{k: float(v[i]) for k, v in hist.history.items() if i < len(v)}}
        for i in range(len(hist.history.get("loss", [])))
    ]
    if state["nonfinite"] is not None:
        raise NonFiniteLossError(
            f"loss became {state['nonfinite']} at epoch {len(history)}; trial stopped"
        )
    n_params = count_params(model)
    if state["pruned"]:
        return TrialResult(
            number=payload.number,
            state=PRUNED,
            value=float(state["pruned_value"]),
            history=history,
            epochs=len(history),
            n_params=n_params,
        )

    predictions = {split: predict(split) for split in payload.splits if split in data["x"]}
    value = float(metrics.score(payload.metric, y_valid, predictions["valid"]))
    result_metrics = {payload.metric: value}
    if "holdout" in predictions:
        result_metrics[f"holdout_{payload.metric}"] = float(
            metrics.score(payload.metric, data["y"]["holdout"], predictions["holdout"])
        )

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        with open(path, "rb") as fh:
            model_bytes = fh.read()
    tb_bytes = None
    if tb_dir is not None:
        _write_hparams(tb_dir, params, value, payload.metric)
        tb_bytes = _tar_dir(tb_dir)
        import shutil

        shutil.rmtree(tb_dir, ignore_errors=True)

    return TrialResult(
        number=payload.number,
        state=COMPLETE,
        value=value,
        metrics=result_metrics,
        history=history,
        predictions=predictions,
        model_bytes=model_bytes,
        tb_bytes=tb_bytes,
        epochs=len(history),
        n_params=n_params,
        extra={
            "target_scaling": list(scale) if task == "regression" else None,
            "batch_size": batch_size,
        },
    )
