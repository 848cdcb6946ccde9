"""The default trial function: build, compile and train one Keras model.

``train_trial(payload, data, reporter)`` runs inside a Ray worker. ``data`` is
``{"x": {split: {input_name: array}}, "y": {split: array}}`` read from the
object store. It returns a ``TrialResult`` with the validation score, the
per-epoch history, predictions on the valid, holdout and test rows (in the
recorded class order), the saved model and the TensorBoard logs as bytes; the
driver writes them into the run directory.

The metric decides what a regression network learns (``hpsearch.core.targets``):
``log1p(target)`` under ``rmsle``, the target otherwise, standardized with the train
rows' statistics; the head's loss is absolute error under ``mae``, squared error
otherwise. Predictions are turned back into natural units; ``trial.json`` records
``target_scaling``, ``target_transform``, ``loss``, ``seed`` and ``best_epoch`` (what
``ensembles build --refit`` trains again with ``refit_trial``).
"""

from __future__ import annotations

import io
import math
import os
import tarfile
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from hpsearch.core import metrics, targets
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
    history = trial.fit(_callbacks(guard, payload.training, tb_dir, trial.schedule_params()))
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
    """One trial's model and data: regression targets transformed and standardized
    (``hpsearch.core.targets``), predictions back in natural units.

    ``data["y"]["valid"]`` may be absent (a refit on every labelled row: no validation)."""

    def __init__(self, payload: TrialPayload, data: dict[str, Any]) -> None:
        from search_spaces.families import build_model, compile_model
        from search_spaces.specs import InputSpec, OutputSpec

        self.payload, self.data, self.task = payload, data, payload.task
        self.params = dict(payload.params)
        self.outputs = OutputSpec.from_dict(payload.outputs)
        self.head = self.outputs.heads[0]
        inputs = InputSpec.from_dict(payload.inputs)
        self.model = build_model(payload.family, self.params, inputs, self.outputs)
        self.transform = targets.transform_for(payload.metric, self.task)
        losses = {"regression": targets.regression_loss(payload.metric)}
        compile_model(self.model, self.params, self.outputs, losses)
        self.loss = losses["regression"] if self.task == "regression" else None
        self.y_train = np.asarray(data["y"]["train"])
        valid = data["y"].get("valid")
        self.y_valid = None if valid is None else np.asarray(valid)
        self.scale = (0.0, 1.0)
        if self.task == "regression":
            self.scale = targets.fit_scaling(self.y_train, self.transform)
        self.batch_size = int(
            self.params.get("batch_size") or payload.training.get("batch_size", 64)
        )
        self.max_epochs = int(payload.training.get("max_epochs", 30))
        if self.params.get("epochs"):  # a family's own epoch budget, within the spec's
            self.max_epochs = max(1, min(self.max_epochs, int(self.params["epochs"])))

    def schedule_params(self) -> dict[str, Any]:
        """What the learning-rate schedule needs: ``lr_schedule``, ``learning_rate``, the
        number of epochs it spans."""
        from search_spaces.families._common import lr_schedule

        return {
            "lr_schedule": lr_schedule(self.params),
            "learning_rate": float(self.params.get("learning_rate") or 1e-3),
            "epochs": self.max_epochs,
        }

    def targets(self, y: np.ndarray) -> dict[str, np.ndarray]:
        from search_spaces.families import aux_targets

        if self.task == "regression":
            y = targets.to_network(y, self.scale, self.transform)
        else:
            y = np.asarray(y, dtype=np.int32)
        return aux_targets(self.model, {h.name: y for h in self.outputs.heads})

    def predict(self, split: str) -> np.ndarray:
        x = _model_inputs(self.model, self.data["x"][split])
        raw = self.model.predict(x, batch_size=1024, verbose=0)
        pred = _head_prediction(raw, self.head.name, self.task)
        return targets.from_network(pred, self.task, self.scale, self.transform)

    def fit(self, callbacks: list[Any], epochs: int | None = None) -> list[dict[str, float]]:
        """Train (on the valid rows too when there are any); the per-epoch history."""
        validation = None
        if self.y_valid is not None:
            validation = (
                _model_inputs(self.model, self.data["x"]["valid"]),
                self.targets(self.y_valid),
            )
        hist = self.model.fit(
            _model_inputs(self.model, self.data["x"]["train"]),
            self.targets(self.y_train),
            validation_data=validation,
            epochs=int(epochs or self.max_epochs),
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

    def target_extra(self) -> dict[str, Any]:
        """What turns the model's raw output into predictions (``trial.json``)."""
        regression = self.task == "regression"
        return {
            "target_scaling": list(self.scale) if regression else None,
            "target_transform": self.transform,
            "loss": self.loss,
        }

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
                **self.target_extra(),
                "batch_size": self.batch_size,
                "seed": int(payload.seed),
                "best_epoch": best_epoch(history),
            },
        )


def best_epoch(history: list[dict[str, Any]]) -> int | None:
    """The number of epochs whose weights a trial kept: early stopping restores the epoch
    with the lowest validation loss (the first of equals), so its 1-based index; the last
    epoch when the history has no finite ``val_loss``; None for an empty history."""
    losses = []
    for row in history:
        try:
            value = float(row.get("val_loss", math.nan))
        except (TypeError, ValueError):
            value = math.nan
        losses.append(value if math.isfinite(value) else math.inf)
    if not losses:
        return None
    if all(math.isinf(v) for v in losses):
        return len(losses)
    return int(np.argmin(losses)) + 1


@dataclass
class RefitResult:
    """A model trained afresh on every labelled row (``refit_trial``)."""

    model_bytes: bytes
    predictions: dict[str, np.ndarray]
    history: list[dict[str, float]]
    extra: dict[str, Any]


def refit_trial(
    payload: TrialPayload,
    data: dict[str, Any],
    epochs: int,
    learning_rates: list[float] | None = None,
) -> RefitResult:
    """Train the trial's model afresh, with its params and seed, on ``data["x"]["train"]``
    (every labelled row) for exactly ``epochs`` epochs: no validation rows, so no early
    stopping and no plateau schedule; ``learning_rates[i]`` (when given) is the learning
    rate of epoch ``i``. Predicts every other split in ``data["x"]``. ``ValueError`` when
    the loss becomes NaN or infinite."""
    import keras

    keras.utils.set_random_seed(int(payload.seed) % (2**31))
    data = {"x": data["x"], "y": {"train": data["y"]["train"]}}
    trial = _KerasTrial(payload, data)
    callbacks: list[Any] = [keras.callbacks.TerminateOnNaN()]
    if learning_rates:
        rates = [float(r) for r in learning_rates]
        callbacks.append(
            keras.callbacks.LearningRateScheduler(
                lambda epoch, lr: rates[min(epoch, len(rates) - 1)]
            )
        )
    history = trial.fit(callbacks, epochs=int(epochs))
    last = history[-1].get("loss") if history else None
    if last is None or not math.isfinite(float(last)) or len(history) < int(epochs):
        raise ValueError(f"the loss became {last} at epoch {len(history)} of {int(epochs)}")
    predictions = {split: trial.predict(split) for split in data["x"] if split != "train"}
    return RefitResult(
        model_bytes=_model_bytes(trial.model),
        predictions=predictions,
        history=history,
        extra={**trial.target_extra(), "batch_size": trial.batch_size, "epochs": len(history)},
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


def _callbacks(
    guard: Any, training: dict[str, Any], tb_dir: str | None, schedule: dict[str, Any] | None = None
) -> list[Any]:
    """The guard, early stopping (the weights of the epoch with the lowest validation loss
    are kept), the learning-rate schedule and TensorBoard when ``tb_dir``.

    Schedule: ``lr_schedule: cosine`` (``schedule``) decays the rate from ``learning_rate`` to
    0 along a half cosine over ``schedule["epochs"]``, step by step; otherwise the rate
    halves when the validation loss stops improving (ReduceLROnPlateau). With
    ``training["deadline"]`` (the end of the search's time budget and its grace) training
    stops at the first batch past it, keeping the best epoch's weights."""
    import keras

    patience = int(training.get("patience", 5))
    callbacks: list[Any] = [
        guard,
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=patience, restore_best_weights=True
        ),
    ]
    if schedule and schedule.get("lr_schedule") == "cosine":
        callbacks.append(cosine_schedule(schedule["learning_rate"], int(schedule["epochs"])))
    else:
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=0.5, patience=max(1, patience // 2), min_lr=1e-6
            )
        )
    if training.get("deadline") is not None:
        callbacks.append(deadline_callback(float(training["deadline"])))
    if tb_dir is not None:
        callbacks.append(
            keras.callbacks.TensorBoard(log_dir=tb_dir, write_graph=False, profile_batch=0)
        )
    return callbacks


def deadline_callback(deadline: float) -> Any:
    """A Keras callback that stops training at the first batch that ends after
    ``deadline`` (``time.time()`` seconds); early stopping then restores the best epoch's
    weights, as at any end of training."""
    import time

    import keras

    class StopAtDeadline(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if time.time() >= deadline:
                self.model.stop_training = True

    return StopAtDeadline()


def cosine_rate(base: float, progress: float) -> float:
    """The cosine schedule's rate at ``progress`` in [0, 1] of training: ``base`` at 0,
    0 at 1."""
    progress = min(1.0, max(0.0, float(progress)))
    return float(base) * 0.5 * (1.0 + math.cos(math.pi * progress))


def cosine_schedule(base: float, epochs: int) -> Any:
    """A Keras callback that sets the rate before each batch along :func:`cosine_rate`
    over ``epochs`` epochs, and records each epoch's middle rate as ``learning_rate`` in
    the history (what ``ensembles build --refit`` trains again with)."""
    import keras

    class CosineSchedule(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            self.steps = max(1, int(self.params.get("steps") or 1))

        def on_train_batch_begin(self, batch, logs=None):
            progress = (self.epoch + batch / self.steps) / max(1, epochs)
            self.model.optimizer.learning_rate.assign(cosine_rate(base, progress))

        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                logs["learning_rate"] = cosine_rate(base, (epoch + 0.5) / max(1, epochs))

    return CosineSchedule()


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
