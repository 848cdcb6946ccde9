"""Cheap trial functions for tests, benchmarks and fault drills (no TensorFlow).

Each follows the trial-function contract ``fn(payload, data, reporter) ->
TrialResult``. Behaviour is steered by ``payload.training`` keys prefixed
``fake_`` (for example ``fake_sleep_s``), which a spec can set under
``training:``.

``fake_fail_plan`` maps trial numbers to the way they fail, one of
:data:`FAILURES` (``{"1": "nan", "3": "bad_graph"}``), for drills that need
each kind of failure in one study.

In a cross-validated run each fold's call (``payload.fold`` set) has no targets for the
``oof`` rows it predicts: ``oracle`` then fits a small linear model on the fold's training
rows and predicts every split from it (blurred by the trial's quality), and ``instant``
predicts the training rows' class frequencies or mean, moved by its objective.
"""

from __future__ import annotations

import math
import os
import time
import zlib
from typing import Any

import numpy as np

from hpsearch.search.trial import COMPLETE, PRUNED, NonFiniteLossError, TrialPayload, TrialResult


def _objective(params: dict[str, Any]) -> float:
    """A deterministic, smooth-ish function of any configuration, minimised near the middle."""
    total = 0.0
    for name, value in sorted(params.items()):
        values = value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int | float):
                h = zlib.crc32(f"{name}={v}".encode()) % 1000 / 1000.0
                total += 0.2 * h
            else:
                x = math.log10(v) if v > 0 and name in ("learning_rate", "lr") else float(v)
                total += (math.tanh(x / 100.0) - 0.3) ** 2 if abs(x) > 10 else (x - 0.3) ** 2 * 0.1
    return total


def _predictions(payload: TrialPayload, data: Any, quality: float) -> dict[str, np.ndarray]:
    """Predictions close to the truth (``quality`` in (0, 1]) with trial-specific noise."""
    rng = np.random.default_rng(payload.seed + 7919 * payload.number)
    out: dict[str, np.ndarray] = {}
    n_classes = int(payload.outputs["heads"][0].get("n_classes", 1))
    for split in payload.splits:
        if split not in data["x"]:
            continue
        first = next(iter(data["x"][split].values()))
        n = len(first)
        y = data["y"].get(split)
        if payload.task == "regression":
            base = np.asarray(y, dtype=float) if y is not None else np.zeros(n)
            scale = float(np.std(data["y"]["train"]) or 1.0)
            out[split] = base + rng.normal(0, scale * (1.2 - quality), n)
        elif payload.task == "binary":
            target = np.asarray(y, dtype=float) if y is not None else np.full(n, 0.5)
            logit = (target - 0.5) * 4 * quality + rng.normal(0, 1.5, n)
            out[split] = 1.0 / (1.0 + np.exp(-logit))
        else:
            logits = rng.normal(0, 1.5, (n, n_classes))
            if y is not None:
                logits[np.arange(n), np.asarray(y, dtype=int)] += 4 * quality
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            out[split] = e / e.sum(axis=1, keepdims=True)
    return out


def _matrix(x: dict[str, np.ndarray]) -> np.ndarray:
    """A split's model inputs side by side as one float matrix (category ids as numbers)."""
    n = len(next(iter(x.values())))
    return np.hstack([np.asarray(v, dtype=np.float64).reshape(n, -1) for _, v in sorted(x.items())])


def _learned(payload: TrialPayload, data: Any, quality: float) -> dict[str, np.ndarray]:
    """Predictions of a linear model fitted on the training rows, for splits whose targets
    the trial does not have (a cross-validated fold's ``oof`` rows): each split predicted by
    the same model, blurred by ``quality`` with trial- and fold-specific noise."""
    from sklearn.linear_model import LogisticRegression, Ridge

    rng = np.random.default_rng(payload.seed + 7919 * payload.number)
    x_train, y_train = _matrix(data["x"]["train"]), np.asarray(data["y"]["train"])
    n_classes = int(payload.outputs["heads"][0].get("n_classes", 1))
    out: dict[str, np.ndarray] = {}
    if payload.task == "regression":
        model = Ridge(alpha=1.0).fit(x_train, y_train)
        scale = float(np.std(y_train) or 1.0) * (1.0 - quality)
        for split in (s for s in payload.splits if s in data["x"]):
            pred = model.predict(_matrix(data["x"][split]))
            out[split] = pred + rng.normal(0, scale, len(pred))
        return out
    model = LogisticRegression(C=0.5, max_iter=300).fit(x_train, y_train.astype(int))
    for split in (s for s in payload.splits if s in data["x"]):
        raw = model.decision_function(_matrix(data["x"][split]))
        if payload.task == "binary":
            logit = raw * (0.3 + quality) + rng.normal(0, 1.5 * (1 - quality), len(raw))
            out[split] = 1.0 / (1.0 + np.exp(-logit))
            continue
        logits = np.full((len(raw), n_classes), -10.0)
        logits[:, model.classes_] = raw * (0.3 + quality)
        logits += rng.normal(0, 1.5 * (1 - quality), logits.shape)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        out[split] = e / e.sum(axis=1, keepdims=True)
    return out


def _prior(payload: TrialPayload, data: Any, shift: float) -> dict[str, np.ndarray]:
    """The training rows' class frequencies (mean for regression) on every split, moved away
    from them by ``shift`` (0 keeps them): no fitting at all."""
    y = np.asarray(data["y"]["train"])
    move = math.tanh(abs(shift))
    n_classes = int(payload.outputs["heads"][0].get("n_classes", 1))
    out: dict[str, np.ndarray] = {}
    for split in (s for s in payload.splits if s in data["x"]):
        n = len(next(iter(data["x"][split].values())))
        if payload.task == "regression":
            out[split] = np.full(n, float(np.mean(y)) + move * float(np.std(y) or 1.0))
        elif payload.task == "binary":
            p = float(np.mean(y))
            out[split] = np.full(n, p + (0.5 - p) * move)
        else:
            freq = np.bincount(y.astype(int), minlength=n_classes) / max(1, len(y))
            p = freq + (1.0 / n_classes - freq) * move
            out[split] = np.tile(p, (n, 1))
    return out


FAILURES = ("exception", "nan", "oom", "bad_graph", "nan_value")


def _planned_failure(kind: str, number: int) -> None:
    """Raise the failure ``kind``; for ``nan_value`` the caller returns a NaN objective."""
    if kind == "exception":
        raise RuntimeError(f"planned failure in trial {number}")
    if kind == "nan":
        raise NonFiniteLossError("loss became nan at epoch 1")
    if kind == "oom":
        raise _resource_exhausted()
    if kind == "bad_graph":  # Keras' message for an Add of mismatched inputs
        raise ValueError("Inputs have incompatible shapes. Received shapes (3,) and (4,)")
    if kind == "nan_value":
        return None
    raise ValueError(f"fake_fail_plan: unknown failure {kind!r}; use one of {FAILURES}")


def instant(payload: TrialPayload, data: Any, reporter: Any) -> TrialResult:
    """Returns at once: the objective is a fixed function of the parameters."""
    tr = payload.training
    if tr.get("fake_sleep_s"):
        time.sleep(float(tr["fake_sleep_s"]))
    plan = tr.get("fake_fail_plan") or {}
    kind = plan.get(str(payload.number))
    if kind is not None:
        _planned_failure(kind, payload.number)
        return TrialResult(number=payload.number, state=COMPLETE, value=float("nan"))
    fail_every = int(tr.get("fake_fail_every", 0) or 0)
    if fail_every and payload.number % fail_every == fail_every - 1:
        raise RuntimeError(f"planned failure in trial {payload.number}")
    if tr.get("fake_fail_all"):
        raise RuntimeError("every trial fails")
    if tr.get("fake_nan_every") and payload.number % int(tr["fake_nan_every"]) == 0:
        raise NonFiniteLossError("loss became nan at epoch 1")
    if tr.get("fake_oom_every") and payload.number % int(tr["fake_oom_every"]) == 0:
        raise _resource_exhausted()
    value = _objective(payload.params)
    # a cross-validated fold: its out-of-fold predictions make the trial's value
    preds = _prior(payload, data, value) if payload.fold is not None else {}
    return TrialResult(
        number=payload.number,
        state=COMPLETE,
        value=value,
        metrics={payload.metric: value},
        predictions=preds,
    )


def oracle(payload: TrialPayload, data: Any, reporter: Any) -> TrialResult:
    """Noisy predictions of the true target on every split, scored with the run's metric.

    Stands in for a trained network wherever a test needs realistic prediction
    files (ensembles, resume, pipeline) without paying for TensorFlow.
    """
    from hpsearch.core import metrics

    tr = payload.training
    steps = int(tr.get("fake_epochs", 3))
    sleep = float(tr.get("fake_sleep_s", 0.0))
    quality = 0.35 + 0.6 * (zlib.crc32(repr(sorted(payload.params.items())).encode()) % 1000) / 1000
    history = []
    for step in range(steps):
        if sleep:
            time.sleep(sleep / steps)
        history.append({"epoch": step, "loss": 1.0 / (step + 1)})
        if reporter.report(step, 1.0 / (step + 1) + (1 - quality)):
            return TrialResult(
                number=payload.number,
                state=PRUNED,
                value=1 - quality,
                history=history,
                epochs=step + 1,
            )
    if payload.fold is not None:  # a cross-validated fold: no targets for its oof rows
        preds = _learned(payload, data, quality)
    else:
        preds = _predictions(payload, data, quality)
    value = metrics.score(payload.metric, data["y"]["valid"], preds["valid"])
    scores = {payload.metric: float(value)}
    if "holdout" in preds:
        hold = metrics.score(payload.metric, data["y"]["holdout"], preds["holdout"])
        scores[f"holdout_{payload.metric}"] = float(hold)
    return TrialResult(
        number=payload.number,
        state=COMPLETE,
        value=float(value),
        metrics=scores,
        history=history,
        predictions=preds,
        epochs=steps,
        extra={"pid_env": os.getpid()},
    )


def crash_worker(payload: TrialPayload, data: Any, reporter: Any) -> TrialResult:
    """Kills its own worker process the first time an even-numbered trial runs (a marker
    file in ``fake_dir`` remembers it), and every time a trial listed in
    ``fake_crash_always`` runs."""
    tr = payload.training
    marker = os.path.join(tr["fake_dir"], f"crashed-{payload.number}")
    always = payload.number in (tr.get("fake_crash_always") or ())
    if always or (payload.number % 2 == 0 and not os.path.exists(marker)):
        with open(marker, "a") as fh:  # one line per death
            fh.write("died\n")
        os._exit(1)
    return instant(payload, data, reporter)


class ResourceExhaustedError(RuntimeError):
    """Stands in for ``tf.errors.ResourceExhaustedError`` (recognised by its name)."""


def _resource_exhausted() -> Exception:
    return ResourceExhaustedError("OOM when allocating tensor with shape [4096, 4096]")
