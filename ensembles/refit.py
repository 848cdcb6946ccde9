"""Refit the chosen members on every labelled row: ``ensembles build --refit``.

In holdout mode a trial's network learns from the train rows only (the valid rows
early-stop it, the holdout rows fit the blend), and so do the tree models. After
selection and blending, ``refit_members`` trains each member the blend uses again, in
the build process (no Ray), on train + valid + holdout rows:

- **networks** (``hpsearch.search.training.refit_trial``): the trial's family, params,
  batch size and seed (``trial.json``), for ``refit_epochs(best_epoch, n_train, n_all)
  = max(1, round_half_up(best_epoch * n_all / n_train))`` epochs, where ``best_epoch``
  is the number of epochs whose weights early stopping kept (``trial.json``'s
  ``best_epoch``, else read from ``history.csv``: the epoch of the lowest validation
  loss). With no validation rows there is no early stopping and no plateau schedule:
  epoch ``j`` of the refit uses the learning rate the trial had at epoch
  ``floor(j * best_epoch / epochs)`` (``history.csv``'s ``learning_rate``; the
  sampled rate when the history has none). The regression target is transformed and
  standardized as in the search, its statistics taken on every labelled row. A trial
  whose ``trial.json`` predates ``seed`` gets the search's formula,
  ``sampler.seed * 100003 + number``.
- **trees** (``kind == "tree"``), and the trials of a tree family (``model.joblib``): the
  estimator with the params of their ``tree.json`` (a trial's ``estimator_params``), fitted
  on every labelled row of the tree matrix; a booster for the rounds its early stopping kept
  scaled like a network's epochs (``refit_epochs(best_iteration, n_train, n_all)``).

The blend weights, fitted on the original members' holdout predictions, are applied to
the refit members' test predictions. A member the blend does not use (weight 0), a trial
that saved no Keras model (another trial function) and a network whose loss becomes NaN
are not refit (their reason is recorded); their own test predictions are blended.

Runs with cross-validated trials (``data/split.json`` with an integer ``folds``) are
refused (``check_refit_allowed``): their members already learned from every labelled row.
"""

from __future__ import annotations

import csv
import io
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpsearch.core import atomic
from hpsearch.core.errors import RunDirError, UserError
from hpsearch.core.store import RunDir

__all__ = [
    "REFIT_DIR",
    "Refit",
    "check_refit_allowed",
    "cv_folds",
    "labelled_rows",
    "refit_epochs",
    "refit_members",
    "stretched_rates",
]

REFIT_DIR = "refit"  # inside the ensemble directory: refit/<member>/model.keras|model.joblib
LABELLED = ("train", "valid", "holdout")


# --------------------------------------------------------------------------- checks


def cv_folds(run_dir: str | Path) -> int | None:
    """The number of folds of a run with cross-validated trials (``data/split.json``'s
    integer ``folds``), None for a run in holdout mode."""
    path = Path(run_dir) / "data" / "split.json"
    if not path.is_file():
        return None
    try:
        folds = atomic.read_json(path).get("folds")
    except (ValueError, OSError, AttributeError):
        return None
    return folds if isinstance(folds, int) and not isinstance(folds, bool) else None


def check_refit_allowed(run_dirs: Sequence[str | Path]) -> None:
    """UserError (exit 2) when a run has cross-validated trials: refit is for holdout mode."""
    for run in run_dirs:
        folds = cv_folds(run)
        if folds is not None:
            raise UserError(
                f"--refit: run {run} has cross-validated trials ({folds} folds): CV members "
                "already learned from every labelled row, so there is nothing to refit. "
                "Fix: build without --refit (ensemble.refit: false)."
            )


# --------------------------------------------------------------------------- epochs


def refit_epochs(best_epoch: int, n_train: int, n_all: int) -> int:
    """The epochs of a network's refit: the epochs early stopping kept, scaled by the
    larger data (``n_all / n_train``), rounded half up, at least 1."""
    if n_train < 1 or best_epoch < 1:
        return 1
    return max(1, int(math.floor(best_epoch * n_all / n_train + 0.5)))


def stretched_rates(rates: Sequence[float], epochs: int) -> list[float]:
    """The learning rate of each refit epoch: the trial's rate of epoch
    ``floor(j * len(rates) / epochs)``, the schedule stretched over ``epochs``."""
    if not rates:
        return []
    n = len(rates)
    return [float(rates[min(n - 1, (j * n) // epochs)]) for j in range(epochs)]


def _history(rec: Any) -> list[dict[str, Any]]:
    """The trial's ``history.csv`` rows (checked against ``trial.json``), [] without one."""
    data = rec.file_bytes("history.csv", what="history")
    if data is None:
        return []
    rows = []
    for row in csv.DictReader(io.StringIO(data.decode("utf-8"))):
        parsed: dict[str, Any] = {}
        for key, value in row.items():
            try:
                parsed[key] = float(value)
            except (TypeError, ValueError):
                parsed[key] = value
        rows.append(parsed)
    return rows


# --------------------------------------------------------------------------- data


def labelled_rows(prepared: Any) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """(network inputs, tree matrix, targets) of every labelled row: train, valid and
    holdout, in that order."""
    splits = [s for s in LABELLED if s in prepared.x]
    names = list(prepared.x[splits[0]])
    x = {name: np.concatenate([prepared.x[s][name] for s in splits]) for name in names}
    tree_x = np.concatenate([prepared.tree_x[s] for s in splits])
    y = np.concatenate([np.asarray(prepared.y[s]) for s in splits])
    return x, tree_x, y


# --------------------------------------------------------------------------- refit


@dataclass
class Refit:
    """A member trained again on every labelled row: the files to save under
    ``folder`` (``refit/<member>`` in the ensemble directory), its test predictions and
    what ``ensemble.json`` records about it (``detail``)."""

    label: str
    folder: str
    files: dict[str, bytes]
    test: np.ndarray | None
    detail: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """``ensemble.json``'s ``refit_model`` of the member: where its files are, their
        SHA-256s, and how it was trained."""
        return {
            "dir": self.folder,
            "files": {name: atomic.sha256(data) for name, data in self.files.items()},
            **self.detail,
        }


def _folder(j: int, label: str) -> str:
    return f"{REFIT_DIR}/{j}-{re.sub(r'[^A-Za-z0-9._-]', '_', label)}"


def refit_members(
    members: Sequence[Any],
    used: Sequence[bool],
    prepared: Any,
    metric: str,
    specs: dict[Path, Any],
    log: Callable[[str], None],
) -> list[Refit | str]:
    """Each member (``ensembles.candidates.Candidate``) trained again on every labelled
    row, or the reason it is not (a string). ``used[j]``: the blend reads member ``j``;
    ``specs``: each run's spec by its resolved path."""
    x, tree_x, y = labelled_rows(prepared)
    todo = [j for j, member in enumerate(members) if used[j]]
    out: list[Refit | str] = []
    for j, member in enumerate(members):
        if not used[j]:
            out.append("not used by the blend (weight 0)")
            continue
        step = f"({todo.index(j) + 1}/{len(todo)})"
        t0 = time.time()
        if member.kind == "tree":
            log(f"refitting {member.label} {step} on {len(y)} labelled rows...")
            result: Refit | str = _refit_tree(member, j, prepared, tree_x, y)
        else:
            result = _refit_network(member, j, prepared, metric, specs, x, y, step, log)
        if isinstance(result, Refit):
            result.detail["duration_s"] = round(time.time() - t0, 3)
            log(f"refitted {member.label} {step} in {time.time() - t0:.1f} s")
        else:
            log(f"not refitting {member.label} {step}: {result}")
        out.append(result)
    return out


def _refit_tree(member: Any, j: int, prepared: Any, tree_x: np.ndarray, y: np.ndarray) -> Refit:
    from ensembles.trees import load_tree

    rec = load_tree(member.run, member.tree)
    if rec is None or rec.info.get("fit_id") != member.fit_id:
        raise RunDirError(
            f"tree {member.tree} of run {member.run} was refitted or removed during the build. "
            "Fix: build the ensemble again."
        )
    info = rec.info
    n_train = info.get("n_train") or len(prepared.y["train"])
    return _fit_all_rows(
        member, j, prepared, tree_x, y, member.tree, info["params"], info, int(n_train)
    )


def _fit_all_rows(
    member: Any,
    j: int,
    prepared: Any,
    tree_x: np.ndarray,
    y: np.ndarray,
    name: str,
    params: dict[str, Any],
    info: dict[str, Any],
    n_train: int,
) -> Refit:
    """Tree model ``name`` fitted with ``params`` on every labelled row: a booster for the
    rounds its early stopping kept (``best_iteration`` or ``best_epoch`` of ``info``) scaled
    by the larger data (as a network's epochs: :func:`refit_epochs`); a forest classifier
    keeps the calibration its fit found (``shrink``)."""
    from hpsearch.search.tree_models import (
        SmoothedClassifier,
        fit_estimator,
        predict_tree,
        rounds_param,
    )

    task, k = prepared.task, prepared.target.n_classes
    transform = info.get("target_transform")  # a metric-aware tree records how it learnt
    params = dict(params)
    kept = info.get("best_iteration") or info.get("best_epoch")
    key = rounds_param(name)
    rounds = None
    if key and isinstance(kept, int) and kept > 0:
        rounds = refit_epochs(int(kept), int(n_train), len(y))
        params[key] = rounds
        if name == "hgb":
            params["early_stopping"] = False  # exactly these rounds, no internal slice
    categorical = prepared.preprocessor.tree_meta()["categorical"]
    model = fit_estimator(
        name, task, params, tree_x, y, transform=transform, categorical=categorical
    )
    shrink = info.get("shrink")
    if shrink is not None and task != "regression":  # a forest keeps the calibration its fit found
        classes = np.asarray(model.classes_)
        prior = np.array([np.mean(np.asarray(y) == c) for c in classes], dtype=np.float64)
        model = SmoothedClassifier(model, float(shrink), prior)
    test = None
    if "test" in prepared.tree_x:
        test = predict_tree(model, prepared.tree_x["test"], task, k, transform)
    buf = io.BytesIO()
    import joblib

    joblib.dump(model, buf)
    detail = {
        "params": params,
        "n_rows": int(len(y)),
        "target_transform": transform,
        "shrink": shrink,
        "rounds": rounds,
    }
    return Refit(
        member.label, _folder(j, member.label), {"model.joblib": buf.getvalue()}, test, detail
    )


def _refit_tree_trial(
    member: Any, j: int, prepared: Any, rec: Any, step: str, log: Callable[[str], None]
) -> Refit | str:
    """A tree family's trial (``model.joblib``) fitted again on every labelled row, with the
    estimator arguments its ``trial.json`` recorded (``estimator_params``)."""
    info = rec.info
    name, params = info.get("tree_model"), info.get("estimator_params")
    if not name or not isinstance(params, dict):
        return "its trial.json records no tree_model and estimator_params"
    x, tree_x, y = labelled_rows(prepared)
    log(f"refitting {member.label} {step} ({name}) on {len(y)} labelled rows...")
    n_train = info.get("n_train") or len(prepared.y["train"])
    return _fit_all_rows(member, j, prepared, tree_x, y, name, params, info, int(n_train))


def _trial_record(member: Any) -> Any:
    """The member's trial record, as it was when the candidates were read."""
    rec = RunDir(member.run).read_trial(int(member.trial))
    expected = (member.files or {}).get("trial.json")
    if rec is None or (expected is not None and rec.sha256 != expected):
        raise RunDirError(
            f"trial {member.trial} of run {member.run} changed or vanished during the build. "
            "Fix: build the ensemble again."
        )
    return rec


def _refit_network(
    member: Any,
    j: int,
    prepared: Any,
    metric: str,
    specs: dict[Path, Any],
    x: dict[str, np.ndarray],
    y: np.ndarray,
    step: str,
    log: Callable[[str], None],
) -> Refit | str:
    from hpsearch.search.training import best_epoch, refit_trial
    from hpsearch.search.trial import TrialPayload, is_keras_trainer, trainer_for

    rec = _trial_record(member)
    spec = specs[Path(member.run).resolve()]
    if rec.model_format == "joblib":  # a tree family's trial
        return _refit_tree_trial(member, j, prepared, rec, step, log)
    trial_fn = trainer_for(spec.training.trial_fn, rec.info.get("family") or "")
    if not is_keras_trainer(trial_fn):
        return f"trained by trial function {trial_fn!r}, which ensembles cannot train again"
    if "model.keras" not in rec.files or not rec.info.get("family"):
        return "its trial saved no Keras model (trained by another trial function)"
    history = _history(rec)
    kept = rec.info.get("best_epoch") or best_epoch(history) or rec.info.get("epochs") or 1
    n_train = len(prepared.y["train"])
    epochs = refit_epochs(int(kept), n_train, len(y))
    rates = [r.get("learning_rate") for r in history[: int(kept)]]
    rates = (
        stretched_rates(rates, epochs)
        if rates and all(isinstance(r, float) and math.isfinite(r) for r in rates)
        else None
    )
    seed = rec.info.get("seed")
    if seed is None:  # trials written before trial.json recorded it: the search's formula
        seed = int(spec.sampler.seed or 0) * 100_003 + rec.number
    batch_size = rec.info.get("batch_size") or spec.training.batch_size
    payload = TrialPayload(
        number=rec.number,
        params=dict(rec.params),
        family=rec.info["family"],
        metric=metric,
        task=prepared.task,
        seed=int(seed),
        training={"batch_size": int(batch_size), "max_epochs": epochs},
        inputs=prepared.input_spec.to_dict(),
        outputs=prepared.output_spec.to_dict(),
    )
    data_x = {"train": x, **({"test": prepared.x["test"]} if "test" in prepared.x else {})}
    log(
        f"refitting {member.label} {step}: {epochs} epoch(s) on {len(y)} labelled rows "
        f"(early stopping kept {kept} on {n_train} train rows)..."
    )
    try:
        result = refit_trial(payload, {"x": data_x, "y": {"train": y}}, epochs, rates)
    except ValueError as exc:  # the loss became NaN or infinite
        return f"its refit failed: {exc}"
    detail = {
        **result.extra,
        "best_epoch": int(kept),
        "n_train": int(n_train),
        "n_rows": int(len(y)),
        "seed": int(seed),
        "learning_rates": "from the trial's history" if rates else "the sampled rate",
    }
    return Refit(
        member.label,
        _folder(j, member.label),
        {"model.keras": result.model_bytes},
        result.predictions.get("test"),
        detail,
    )
