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
    """The ``keras`` trainer: build, compile and fit the trial's model, then score it on the
    validation rows and predict every split (``hpsearch.core.registry.TRAINERS``)."""
    import keras

    keras.utils.set_random_seed(int(payload.seed) % (2**31))
    trial = _KerasTrial(payload, data)
    guard = _guard(trial, reporter)
    tb_dir = None
    if payload.training.get("tensorboard", True) and _has_tensorboard():
        tb_dir = tempfile.mkdtemp(prefix=f"tb-{payload.number}-")
    history = trial.fit(_callbacks(guard, payload.training, tb_dir))
    if guard.nonfinite is not None:
        raise NonFiniteLossError(
            f"loss became {guard.nonfinite} at epoch {len(history)}; trial stopped"
        )
    if guard.pruned:
        return TrialResult(
            number=payload.number,
            state=PRUNED,
            value=float(guard.pruned_value),
            history=history,
            epochs=len(history),
            n_params=trial.n_params(),
        )
    return trial.complete(history, tb_dir)


class _KerasTrial:
    """One trial's model and data: targets scaled for regression, predictions unscaled."""

    def __init__(self, payload: TrialPayload, data: dict[str, Any]) -> None:
        from search_spaces.families import build_model, compile_model
        from search_spaces.specs import InputSpec, OutputSpec

        self.payload, self.data, self.task = payload, data, payload.task
        self.params = dict(payload.params)
        self.outputs = OutputSpec.from_dict(payload.outputs)
        self.head = self.outputs.heads[0]
        inputs = InputSpec.from_dict(payload.inputs)
        self.model = build_model(payload.family, self.params, inputs, self.outputs)
        compile_model(self.model, self.params, self.outputs)
        self.y_train = np.asarray(data["y"]["train"])
        self.y_valid = np.asarray(data["y"]["valid"])
        self.scale = (0.0, 1.0)
        if self.task == "regression":
            mu, sd = float(np.mean(self.y_train)), float(np.std(self.y_train)) or 1.0
            self.scale = (mu, sd)
        self.batch_size = int(
            self.params.get("batch_size") or payload.training.get("batch_size", 64)
        )

    def targets(self, y: np.ndarray) -> dict[str, np.ndarray]:
        from search_spaces.families import aux_targets

        y = np.asarray(y, dtype=np.float32 if self.task == "regression" else np.int32)
        if self.task == "regression":
            y = ((y - self.scale[0]) / self.scale[1]).astype(np.float32)
        return aux_targets(self.model, {h.name: y for h in self.outputs.heads})

    def predict(self, split: str) -> np.ndarray:
        x = _model_inputs(self.model, self.data["x"][split])
        raw = self.model.predict(x, batch_size=1024, verbose=0)
        pred = _head_prediction(raw, self.head.name, self.task)
        if self.task == "regression":
            pred = pred * self.scale[1] + self.scale[0]
        return pred

    def fit(self, callbacks: list[Any]) -> list[dict[str, float]]:
        """Train; the per-epoch history."""
        hist = self.model.fit(
            _model_inputs(self.model, self.data["x"]["train"]),
            self.targets(self.y_train),
            validation_data=(
                _model_inputs(self.model, self.data["x"]["valid"]),
                self.targets(self.y_valid),
            ),
            epochs=int(self.payload.training.get("max_epochs", 30)),
            batch_size=self.batch_size,
            callbacks=callbacks,
            verbose=0,
            shuffle=True,
        )
        return [
            {"epoch": i, **{k: float(v[i]) for k, v in hist.history.items() if i < len(v)}}
            for i in range(len(hist.history.get("loss", [])))
        ]

    def n_params(self) -> int:
        from search_spaces.families import count_params

        return count_params(self.model)

    def complete(self, history: list[dict[str, float]], tb_dir: str | None) -> TrialResult:
        """Score, predict every split, pack the model and the TensorBoard logs."""
        payload, metric = self.payload, self.payload.metric
        n_params = self.n_params()
        splits = [split for split in payload.splits if split in self.data["x"]]
        predictions = {split: self.predict(split) for split in splits}
        value = float(metrics.score(metric, self.y_valid, predictions["valid"]))
        result_metrics = {metric: value}
        if "holdout" in predictions:
            result_metrics[f"holdout_{metric}"] = float(
                metrics.score(metric, self.data["y"]["holdout"], predictions["holdout"])
            )
        return TrialResult(
            number=payload.number,
            state=COMPLETE,
            value=value,
            metrics=result_metrics,
            history=history,
            predictions=predictions,
            model_bytes=_model_bytes(self.model),
            tb_bytes=_tensorboard_bytes(tb_dir, self.params, value, metric),
            epochs=len(history),
            n_params=n_params,
            extra={
                "target_scaling": list(self.scale) if self.task == "regression" else None,
                "batch_size": self.batch_size,
            },
        )


def _guard(trial: _KerasTrial, reporter: Any) -> Any:
    """A Keras callback that stops at the first NaN/inf loss and reports the validation
    metric each epoch for pruning; it keeps what stopped the training."""
    import keras

    payload = trial.payload

    class Guard(keras.callbacks.Callback):
        nonfinite: float | None = None
        pruned = False
        pruned_value: float | None = None

        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                self.nonfinite = float(loss)
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                self.nonfinite = float(loss)
                self.model.stop_training = True
                return
            if payload.pruning:
                value = metrics.score(payload.metric, trial.y_valid, trial.predict("valid"))
                if reporter.report(epoch, value):
                    self.pruned = True
                    self.pruned_value = value
                    self.model.stop_training = True

    return Guard()


def _callbacks(guard: Any, training: dict[str, Any], tb_dir: str | None) -> list[Any]:
    """The guard, early stopping, learning-rate decay and TensorBoard when ``tb_dir``."""
    import keras

    patience = int(training.get("patience", 5))
    callbacks: list[Any] = [
        guard,
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=patience, restore_best_weights=True
        ),
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=0.5, patience=max(1, patience // 2), min_lr=1e-6
        ),
    ]
    if tb_dir is not None:
        callbacks.append(
            keras.callbacks.TensorBoard(log_dir=tb_dir, write_graph=False, profile_batch=0)
        )
    return callbacks


def _model_bytes(model: Any) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        with open(path, "rb") as fh:
            return fh.read()


def _tensorboard_bytes(
    tb_dir: str | None, params: dict[str, Any], value: float, metric: str
) -> bytes | None:
    """The trial's TensorBoard logs with its hyperparameters, as a tar.gz; the directory
    is removed."""
    if tb_dir is None:
        return None
    import shutil

    _write_hparams(tb_dir, params, value, metric)
    tb_bytes = _tar_dir(tb_dir)
    shutil.rmtree(tb_dir, ignore_errors=True)
    return tb_bytes
