"""Trial functions that synchronise with the test instead of sleeping (run on Ray workers).

Workers import this module as ``tests.trial_fns`` (Ray puts the driver's working directory,
the repository root, on their path). Each waits for a condition with a generous deadline, so
a slow machine makes a test slower, never wrong; a deadline passed means the behaviour under
test is broken and the trial fails with a message saying so.

Options come through ``payload.training`` (``--trial-option`` or ``trial_options``):
``fake_dir`` is a directory shared by the test and the workers.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from hpsearch.search.testing import instant, oracle
from hpsearch.search.trial import PRUNED, TrialPayload, TrialResult

DEADLINE_S = 300.0


def _wait_for(condition: Any, what: str, timeout: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what}")
        time.sleep(0.02)


def _started(payload: TrialPayload) -> Path:
    marker = Path(payload.training["fake_dir"]) / f"started-{payload.number}"
    marker.write_text(str(os.getpid()))
    return marker


def barrier(payload: TrialPayload, data: Any, reporter: Any) -> TrialResult:
    """Marks itself started, then waits until ``fake_together`` trials have started: it
    finishes only if that many trials were in flight at once."""
    marker = _started(payload)
    n = int(payload.training["fake_together"])
    _wait_for(
        lambda: len(list(marker.parent.glob("started-*"))) >= n,
        f"{n} trials in flight at once",
    )
    return instant(payload, data, reporter)


def hold(payload: TrialPayload, data: Any, reporter: Any) -> TrialResult:
    """Trials numbered below ``fake_free`` run as the oracle; the others mark themselves
    started and wait for a ``release`` file (a test interrupts them before)."""
    if payload.number < int(payload.training["fake_free"]):
        return oracle(payload, data, reporter)
    marker = _started(payload)
    _wait_for(lambda: (marker.parent / "release").exists(), "the release file")
    return oracle(payload, data, reporter)


def lockstep(payload: TrialPayload, data: Any, reporter: Any) -> TrialResult:
    """The oracle, but after each epoch's report it waits for the driver's answer, so the
    pruner's decisions do not depend on how fast the machine is. ``fake_epochs`` epochs."""
    epochs = int(payload.training.get("fake_epochs", 3))
    options = {**payload.training, "fake_epochs": 1, "fake_sleep_s": 0.0}
    values = []
    for step in range(epochs):
        # a loss that falls each epoch, offset by a trial-specific quality
        values.append(_epoch_value(payload, step))
        stopped = reporter.report(step, values[-1])
        last = step == epochs - 1  # after the last epoch the trial completes whatever the answer
        if stopped or (not last and reporter.wait_for_answer(timeout=DEADLINE_S)):
            history = [{"epoch": i, "loss": 1.0 / (i + 1)} for i in range(step + 1)]
            return TrialResult(
                number=payload.number,
                state=PRUNED,
                value=values[-1],
                history=history,
                epochs=step + 1,
            )
    quiet = _SilentReporter()
    result = oracle(_with_training(payload, options), data, quiet)
    result.history = [{"epoch": i, "loss": 1.0 / (i + 1)} for i in range(epochs)]
    result.epochs = epochs
    return result


def _epoch_value(payload: TrialPayload, step: int) -> float:
    import zlib

    key = repr(sorted(payload.params.items())).encode()
    quality = 0.35 + 0.6 * (zlib.crc32(key) % 1000) / 1000
    return 1.0 / (step + 1) + (1 - quality)


def _with_training(payload: TrialPayload, training: dict[str, Any]) -> TrialPayload:
    import dataclasses

    return dataclasses.replace(payload, training=training)


class _SilentReporter:
    def report(self, step: int, value: float) -> bool:
        return False


# --------------------------------------------------------------------------- cross-validated runs


def fold_recorder(payload: TrialPayload, data: Any, reporter: Any) -> TrialResult:
    """One fold of a cross-validated trial that shows what it was given: it writes
    ``fold-<trial>-<fold>.json`` into ``fake_dir`` (its payload's fold fields, the keys of
    its data, the SHA-1 of the input row of every row it trained on, watched and predicted)
    and predicts ``(fold + 1) / (folds + 2)`` on every row of every split, so each
    out-of-fold prediction names the fold model that made it."""
    import hashlib
    import json

    import numpy as np

    def rows(split: str) -> list[str]:
        x = data["x"][split]
        n = len(next(iter(x.values())))
        flat = np.hstack([np.asarray(x[k], dtype=np.float64).reshape(n, -1) for k in sorted(x)])
        return [hashlib.sha1(row.tobytes()).hexdigest() for row in flat]

    record = {
        "fold": payload.fold,
        "folds": payload.folds,
        "seed": payload.seed,
        "splits": list(payload.splits),
        "pruning": payload.pruning,
        "tensorboard": payload.training.get("tensorboard", True),
        "x": sorted(data["x"]),
        "y": sorted(data["y"]),
        "y_train": np.asarray(data["y"]["train"], dtype=np.float64).tolist(),
        **{split: rows(split) for split in ("train", "valid", "oof")},
    }
    out = Path(payload.training["fake_dir"]) / f"fold-{payload.number}-{payload.fold}.json"
    out.write_text(json.dumps(record))
    v = (payload.fold + 1) / (payload.folds + 2)
    n_classes = int(payload.outputs["heads"][0].get("n_classes", 1))
    preds = {}
    for split in payload.splits:
        n = len(next(iter(data["x"][split].values())))
        if payload.task == "multiclass":
            p = np.full((n, n_classes), (1 - v) / (n_classes - 1))
            p[:, 0] = v
            preds[split] = p
        else:
            preds[split] = np.full(n, v)
    history = [
        {"epoch": 0, "loss": 1.0, "val_loss": 0.4},
        {"epoch": 1, "loss": 0.5, "val_loss": 0.6},
    ]
    extra = {"batch_size": 32}
    if payload.task == "regression":
        extra["target_scaling"] = [float(payload.fold), 1.0]
    return TrialResult(
        number=payload.number,
        state="COMPLETE",
        value=v,
        history=history,
        predictions=preds,
        model_bytes=f"model of fold {payload.fold}".encode(),
        tb_bytes=None,
        epochs=2,
        extra=extra,
    )


def fold_pause(payload: TrialPayload, data: Any, reporter: Any) -> TrialResult:
    """The oracle, except that fold ``fake_pause_fold`` of trial ``fake_pause_trial`` marks
    itself (``paused`` in ``fake_dir``, once per directory) and waits for a ``release`` file:
    the test kills the driver while that trial is in the middle of its folds."""
    tr = payload.training
    if payload.number == int(tr["fake_pause_trial"]) and payload.fold == int(tr["fake_pause_fold"]):
        marker = Path(tr["fake_dir"]) / "paused"
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return oracle(payload, data, reporter)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        _wait_for(lambda: (marker.parent / "release").exists(), "the release file")
    return oracle(payload, data, reporter)


def fold_barrier(payload: TrialPayload, data: Any, reporter: Any) -> TrialResult:
    """The oracle, once every fold of its trial has started: it finishes only if the
    trial's folds run side by side (``fake_dir`` shared with the test)."""
    folder = Path(payload.training["fake_dir"])
    (folder / f"fold-started-{payload.number}-{payload.fold}").write_text(str(os.getpid()))
    _wait_for(
        lambda: len(list(folder.glob(f"fold-started-{payload.number}-*"))) >= payload.folds,
        f"the {payload.folds} folds of trial {payload.number} running at once",
        timeout=float(payload.training.get("fake_timeout_s", DEADLINE_S)),
    )
    return oracle(payload, data, reporter)
