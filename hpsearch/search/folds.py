"""Cross-validated trials: any trainer, one model per fold, out-of-fold predictions for every
labelled row.

A run whose spec sets ``split.folds: K`` ships :func:`cv_data` to the workers, and each
trial's payload carries ``folds=K`` and the splits ``("oof", "test")``. The trial then runs
its trainer once per fold (:func:`run_folds`; or one Ray call per fold, combined on the
driver by :class:`FoldAccumulator`, when ``resources.parallel_folds`` lets folds run side by
side). Fold ``k`` gets, from :func:`hpsearch.core.data.fold_rows` with the run's split seed:

- ``x``: ``train`` (the fold's training rows), ``valid`` (the inner slice of its own training
  rows that early stopping and learning-rate schedules watch), ``oof`` (the fold's held-out
  rows) and ``test``;
- ``y``: ``train`` and ``valid`` only: the held-out rows' targets never reach the trainer;

and a copy of the payload with ``splits = ("valid", "oof", "test")``, ``pruning=False``, a
fold-specific seed (:func:`fold_seed`), ``fold=k`` and ``folds=K`` (TensorBoard logging only
in fold 0). Its ``oof`` predictions go to the held rows' positions, its ``test`` predictions
into the mean over the folds, and fold ``k`` is scored on its held rows. The trial's value is
the run's metric on the out-of-fold predictions of all labelled rows; pruning reports after
each fold the metric on the folds done so far; a fold that fails fails the trial, naming the
fold. ``trial.json`` gets the per-fold entries (``folds``) and, for a regression trainer that
scales its target, ``fold_target_scaling`` (docs/run-directory.md, "Cross-validated runs").
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from hpsearch.search.trial import COMPLETE, FAIL, PRUNED, TrialPayload, TrialResult, run_guarded

CV_SPLITS = ("oof", "test")  # the splits of a cross-validated trial's own predictions
FOLD_SPLITS = ("valid", "oof", "test")  # the splits each fold's trainer predicts
# extras of a fold's result that describe the call, not the model
_CALL_EXTRAS = ("started_at", "finished_at", "gpu_ids", "worker_trials", "worker_restarted")


def cv_data(
    x: dict[str, Any],
    y: dict[str, Any],
    split: dict[str, Any],
    tree_meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What a cross-validated run ships to its workers: the inputs of every labelled row
    (``x["train"]``) and of the test rows, the labelled rows' targets, each row's fold, the
    inner-slice fraction and the split's seed (``split``: ``data/split.json``); for a tree
    family, ``tree_meta`` (its categorical columns), passed on to every fold."""
    extra = {} if tree_meta is None else {"tree_meta": tree_meta}
    return {
        **extra,
        "x": {name: x[name] for name in ("train", "test") if name in x},
        "y": {"train": y["train"]},
        "folds": np.asarray(split["fold_of"], dtype=np.int64),
        "inner_valid": float(split["inner_valid"]),
        "split_seed": int(split["seed"]),
    }


def fold_seed(seed: int, fold: int) -> int:
    """The seed of fold ``fold`` of a trial whose seed is ``seed`` (distinct per fold and,
    for the driver's seeds, per trial)."""
    return int(seed) * 101 + int(fold)


def fold_positions(
    data: dict[str, Any], task: str, fold: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(train, valid, held)`` positions of fold ``fold`` (``hpsearch.core.data.fold_rows``
    with the run's inner fraction and split seed)."""
    from hpsearch.core.data import fold_rows

    return fold_rows(
        data["folds"], fold, data["y"]["train"], task, data["inner_valid"], data["split_seed"]
    )


def fold_data(
    data: dict[str, Any], task: str, fold: int
) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Fold ``fold``'s trainer data (``x``: train, valid, oof, test; ``y``: train, valid)
    and its ``(train, valid, held)`` positions."""
    rows = train, valid, held = fold_positions(data, task, fold)
    x_all, y_all = data["x"]["train"], np.asarray(data["y"]["train"])

    def take(positions: np.ndarray) -> dict[str, np.ndarray]:
        return {name: np.asarray(arr)[positions] for name, arr in x_all.items()}

    x = {"train": take(train), "valid": take(valid), "oof": take(held)}
    if "test" in data["x"]:
        x["test"] = data["x"]["test"]
    out = {"x": x, "y": {"train": y_all[train], "valid": y_all[valid]}}
    if "tree_meta" in data:  # a tree family's categorical columns
        out["tree_meta"] = data["tree_meta"]
    return out, rows


def fold_payload(payload: TrialPayload, fold: int, has_test: bool) -> TrialPayload:
    """The payload of fold ``fold``'s trainer call."""
    training = dict(payload.training)
    if fold > 0:  # TensorBoard logs of fold 0 only
        training["tensorboard"] = False
    return dataclasses.replace(
        payload,
        seed=fold_seed(payload.seed, fold),
        splits=FOLD_SPLITS if has_test else FOLD_SPLITS[:2],
        pruning=False,
        fold=int(fold),
        folds=int(payload.folds or 0),
        training=training,
    )


class _Quiet:
    """The reporter a fold's trainer gets: its epochs are not reported (pruning is per
    fold, by the fold runner) and it is never asked to stop."""

    def report(self, step: int, value: float) -> bool:
        return False

    def wait_for_answer(self, timeout: float = 300.0, poll: float = 0.02) -> bool:
        return False


def _clear_keras() -> None:
    """Free the previous fold's Keras models (as a warm worker does between trials)."""
    if "keras" in sys.modules:
        import keras

        keras.backend.clear_session()


def fold_deadline(deadline: float | None, unfinished: int, slots: int, now: float) -> float | None:
    """When a fold that starts ``now`` must stop: the time left to the trial's ``deadline``
    (``time.time()`` seconds) split evenly over the rounds of folds still to run
    (``unfinished`` folds, this one included, ``slots`` at a time). A trial that cannot
    finish its folds before the deadline then has every fold cut alike (each a model of
    about the same rounds or epochs) instead of its first folds whole and its last ones cut
    to their first round; a trial whose folds each fit their part is not affected."""
    if deadline is None:
        return None
    waves = max(1, math.ceil(max(1, int(unfinished)) / max(1, int(slots))))
    return now + max(0.0, float(deadline) - now) / waves


def with_fold_deadline(payload: TrialPayload, unfinished: int, slots: int) -> TrialPayload:
    """``payload`` with its deadline replaced by the fold's part (:func:`fold_deadline`)."""
    deadline = payload.training.get("deadline")
    if deadline is None:
        return payload
    training = {**payload.training}
    training["deadline"] = fold_deadline(deadline, unfinished, slots, time.time())
    return dataclasses.replace(payload, training=training)


def run_fold(
    fn: Callable[..., TrialResult],
    payload: TrialPayload,
    data: dict[str, Any],
    fold: int,
    *,
    share_deadline: bool = False,
) -> TrialResult:
    """Fold ``fold`` of the cross-validated trial ``payload``: the trainer's result, its
    predictions checked and reduced to ``oof`` and ``test``, its entry of ``trial.json``'s
    ``folds`` in ``extra["cv_fold"]``. Any failure is a FAIL result whose error names the
    fold."""
    k_folds = int(payload.folds or 0)
    where = f"fold {fold} of {k_folds}"
    start = time.perf_counter()
    fdata, (train, valid, held) = fold_data(data, payload.task, fold)
    if share_deadline:  # folds one after another: the time left split over those to run
        payload = with_fold_deadline(payload, k_folds - fold, 1)
    fpayload = fold_payload(payload, fold, "test" in fdata["x"])
    result = run_guarded(fn, fpayload, fdata, _Quiet())
    result.number = payload.number
    if result.state != COMPLETE:
        if result.state == PRUNED:  # never asked to stop: a trainer that gave up
            result.reason = result.reason or "exception"
            result.error = result.error or "the trainer ended the fold PRUNED, never asked to"
        result.state = FAIL
        result.error = f"{where}: {result.error or result.reason or 'failed'}"
        return result
    preds = result.predictions or {}
    problem = _prediction_problem(preds, fpayload.splits, len(held), len(valid), where)
    if problem:
        result.state, result.reason, result.error = FAIL, "exception", problem
        return result
    from hpsearch.core import metrics

    y = np.asarray(data["y"]["train"])
    try:
        value = float(metrics.score(payload.metric, y[held], preds["oof"]))
        valid_value = result.value
        if "valid" in preds:
            valid_value = float(metrics.score(payload.metric, y[valid], preds["valid"]))
    except Exception as exc:  # predictions the metric refuses (NaN, wrong shape)
        result.state, result.reason = FAIL, "exception"
        result.error = f"{where}: its predictions cannot be scored: {type(exc).__name__}: {exc}"
        return result
    result.extra["cv_fold"] = {
        "fold": int(fold),
        "value": value,
        "valid_value": None if valid_value is None else float(valid_value),
        "epochs": int(result.epochs or 0),
        "best_epoch": _best_epoch(result),
        "duration_s": round(time.perf_counter() - start, 4),
        "n_train": len(train),
        "n_valid": len(valid),
        "n_oof": len(held),
    }
    result.predictions = {s: preds[s] for s in CV_SPLITS if s in preds}
    return result


def _prediction_problem(
    preds: dict[str, Any], splits: tuple[str, ...], n_oof: int, n_valid: int, where: str
) -> str | None:
    """Why a fold's predictions cannot be used: a split of the payload missing, or a split
    whose row count is wrong; None when they can."""
    missing = [s for s in splits if s not in preds and s != "valid"]
    if missing:
        return (
            f"{where}: the trainer returned no {' and '.join(missing)} predictions; a trainer "
            "of a cross-validated run must predict every split of payload.splits "
            f"({', '.join(splits)})"
        )
    for split, n in (("oof", n_oof), ("valid", n_valid)):
        if split in preds and len(np.asarray(preds[split])) != n:
            return (
                f"{where}: the trainer's {split} predictions have {len(np.asarray(preds[split]))} "
                f"rows for the fold's {n} {split} rows"
            )
    return None


def _best_epoch(result: TrialResult) -> int | None:
    """The number of epochs whose model the fold kept (as ``trial.json``'s ``best_epoch``):
    the trainer's ``best_epoch`` extra, else the 1-based index of the lowest ``val_loss`` in
    its history, else all its epochs."""
    if result.extra.get("best_epoch") is not None:
        return int(result.extra["best_epoch"])
    losses = [
        (float(row["val_loss"]), i)
        for i, row in enumerate(result.history or [])
        if isinstance(row.get("val_loss"), int | float) and math.isfinite(row["val_loss"])
    ]
    if losses:
        return min(losses)[1] + 1
    return int(result.epochs) if result.epochs else None


class FoldAccumulator:
    """Puts the folds of one cross-validated trial together, in any order: out-of-fold
    predictions at the held rows' positions, the mean of the test predictions, the histories
    with a ``fold`` column, the fold models, the per-fold entries."""

    def __init__(self, payload: TrialPayload, y: np.ndarray, fold_of: np.ndarray) -> None:
        self.payload = payload
        self.k = int(payload.folds or 0)
        self.y = np.asarray(y)
        self.fold_of = np.asarray(fold_of)
        self.oof: np.ndarray | None = None
        self.test_sum: np.ndarray | None = None
        self.done: dict[int, TrialResult] = {}

    @property
    def n_done(self) -> int:
        return len(self.done)

    def add(self, fold: int, result: TrialResult) -> None:
        """Fold ``fold``'s COMPLETE result (from :func:`run_fold`)."""
        held = np.flatnonzero(self.fold_of == fold)
        oof = np.asarray(result.predictions["oof"], dtype=np.float64)
        if self.oof is None:
            self.oof = np.zeros((len(self.y), *oof.shape[1:]), dtype=np.float64)
        self.oof[held] = oof
        if "test" in result.predictions:
            test = np.asarray(result.predictions["test"], dtype=np.float64)
            self.test_sum = test.copy() if self.test_sum is None else self.test_sum + test
        self.done[int(fold)] = result

    def value(self) -> float:
        """The run's metric on the out-of-fold predictions of the folds done so far."""
        from hpsearch.core import metrics

        rows = np.flatnonzero(np.isin(self.fold_of, list(self.done)))
        assert self.oof is not None
        return float(metrics.score(self.payload.metric, self.y[rows], self.oof[rows]))

    def _common(self) -> dict[str, Any]:
        folds = [self.done[k] for k in sorted(self.done)]
        history = [{"fold": k, **row} for k in sorted(self.done) for row in self.done[k].history]
        extra: dict[str, Any] = {}
        if folds:
            first = folds[0].extra
            extra = {k: v for k, v in first.items() if k not in _CALL_EXTRAS and k != "cv_fold"}
            scaling = [r.extra.get("target_scaling") for r in folds]
            if any(s is not None for s in scaling):
                extra["fold_target_scaling"] = scaling
                extra["target_scaling"] = None
        extra["folds"] = [r.extra["cv_fold"] for r in folds]
        return {
            "number": self.payload.number,
            "history": history,
            "epochs": sum(int(r.epochs or 0) for r in folds),
            "n_params": folds[0].n_params if folds else None,
            "extra": extra,
        }

    def complete(self) -> TrialResult:
        """The trial once every fold is in: value on all out-of-fold rows, ``oof`` and the
        mean ``test`` predictions, the fold models, fold 0's TensorBoard logs."""
        folds = [self.done[k] for k in range(self.k)]
        predictions = {"oof": self.oof}
        if self.test_sum is not None:
            predictions["test"] = self.test_sum / self.k
        value = self.value()
        models = [r.model_bytes for r in folds]
        return TrialResult(
            model_format=folds[0].model_format,
            state=COMPLETE,
            value=value,
            metrics={self.payload.metric: value},
            predictions=predictions,
            fold_models=list(models) if all(models) else [],
            tb_bytes=folds[0].tb_bytes,
            **self._common(),
        )

    def pruned(self) -> TrialResult:
        """The trial stopped by the pruner after the folds done so far."""
        value = self.value() if self.done else None
        return TrialResult(state=PRUNED, value=value, **self._common())

    def failed(self, fold: int, result: TrialResult) -> TrialResult:
        """The trial failed by fold ``fold`` (a FAIL result from :func:`run_fold`)."""
        return TrialResult(
            state=FAIL,
            error=result.error,
            reason=result.reason,
            traceback=result.traceback,
            **self._common(),
        )


def run_folds(
    fn: Callable[..., TrialResult], payload: TrialPayload, data: dict[str, Any], reporter: Any
) -> TrialResult:
    """The cross-validated trial ``payload`` (``payload.folds`` = K), its folds one after
    another in this process: see the module's docstring."""
    acc = FoldAccumulator(payload, data["y"]["train"], data["folds"])
    k_folds = acc.k
    for fold in range(k_folds):
        if fold:
            _clear_keras()
        result = run_fold(fn, payload, data, fold, share_deadline=True)
        if result.state != COMPLETE:
            return acc.failed(fold, result)
        acc.add(fold, result)
        if payload.pruning:
            stop = reporter.report(fold, acc.value())
            if fold < k_folds - 1 and (stop or _answer(reporter)):
                return acc.pruned()
    return acc.complete()


def _answer(reporter: Any) -> bool:
    """Whether the driver asked the trial to stop after the report just made: a fold costs
    more than waiting for the answer (two reads of the mailbox, about a second), so the
    next fold starts only once the pruner has decided."""
    try:
        return bool(reporter.wait_for_answer(timeout=60.0, poll=0.05))
    except TimeoutError:  # a driver too busy to answer: go on, the next report asks again
        return False
