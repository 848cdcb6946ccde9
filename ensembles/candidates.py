"""Candidates of an ensemble: every complete trial of the runs and the first run's trees.

Each candidate carries its predictions on the rows the blend is fitted on (the *fit
split*: ``holdout`` for a train/valid/holdout run, ``oof``, the out-of-fold predictions
of every labelled row, for a cross-validated run) and its test predictions, checked for
shape (rows, classes) and finiteness: a missing, truncated or unreadable file, a wrong row count, a
class-count mismatch or a NaN is a ``RunDirError`` naming the trial and the file, with
the fix. Nothing is skipped silently. Every file is loaded from bytes checked against the
SHA-256 its ``trial.json`` or ``tree.json`` recorded; ``files`` carries the hashes of what
a prediction of new rows will load (the member's JSON and its model, or its K fold models),
for ``ensemble.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpsearch.core import atomic
from hpsearch.core.errors import RunDirError
from hpsearch.core.store import RunDir, fold_model_name, model_name

__all__ = [
    "FIT_SPLITS",
    "Candidate",
    "checked_prediction",
    "network_candidates",
    "run_labels",
    "tree_candidates",
]


FIT_SPLITS = {"holdout": "holdout", "cv": "oof"}  # run mode -> the split blends are fitted on


@dataclass
class Candidate:
    label: str
    kind: str  # "network" | "tree"
    run: Path
    valid_score: float | None
    fit: np.ndarray  # predictions on the fit split (holdout rows, or out of fold)
    test: np.ndarray | None
    trial: int | None = None
    tree: str | None = None
    fit_id: str | None = None
    target_scaling: list[float] | None = None
    target_transform: str | None = None
    files: dict[str, str] | None = None  # name -> SHA-256 of the member's JSON and model(s)
    folds: int | None = None  # K of a cross-validated member (its K fold models)
    model_format: str = "keras"  # a trial's model files: model.keras, or model.joblib (trees)

    @property
    def holdout(self) -> np.ndarray:
        """The fit-split predictions under their holdout-mode name."""
        return self.fit

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "kind": self.kind, "run": str(self.run)}
        if self.kind == "network":
            out["trial"] = self.trial
            out["target_scaling"] = self.target_scaling
            out["target_transform"] = self.target_transform
            if self.model_format != "keras":  # a tree family's trial: its tree matrix
                out["model_format"] = self.model_format
        else:
            out["tree"] = self.tree
            out["fit_id"] = self.fit_id
        if self.folds:
            out["folds"] = self.folds
        return out


def _expected_shape(task: str, n_rows: int, k: int) -> tuple[int, ...]:
    return (n_rows, k) if task == "multiclass" else (n_rows,)


def checked_prediction(
    pred: np.ndarray,
    *,
    who: str,
    split: str,
    path: Path,
    task: str,
    n_rows: int,
    classes: list[Any] | None,
    fix: str,
) -> np.ndarray:
    arr = np.asarray(pred, dtype=np.float64)
    if task != "multiclass" and arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    k = len(classes or [])
    expected = _expected_shape(task, n_rows, k)
    if arr.shape != expected:
        if arr.ndim >= 1 and arr.shape[0] != n_rows:
            rows = "the run has labelled rows" if split == "oof" else f"the {split} split has"
            problem = f"{arr.shape[0]} rows but {rows} {n_rows}"
        elif task == "multiclass" and arr.ndim == 2:
            problem = (
                f"{arr.shape[1]} class columns but the run has {k} classes {classes} "
                "(class-count mismatch)"
            )
        elif task == "binary" and arr.ndim == 2:
            problem = (
                f"{arr.shape[1]} class columns; a binary prediction is one column, the "
                f"probability of class {classes[1]!r} (class-count mismatch)"
            )
        else:
            problem = f"{arr.ndim} dimensions"
        raise RunDirError(
            f"{who}: {split} predictions {path} have shape {tuple(arr.shape)}, expected "
            f"{expected}: {problem}. Fix: {fix}"
        )
    if not np.all(np.isfinite(arr)):
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise RunDirError(
            f"{who}: {split} predictions {path} hold {bad} NaN or infinite value(s). Fix: {fix}"
        )
    return arr


def _check_trial_folds(rec: Any, who: str, fix: str, cv: dict[str, Any] | None) -> int | None:
    """K of a cross-validated trial whose folds are the run's (``cv``: the run's ``folds``
    and ``folds_fingerprint``); None in a holdout run. RunDirError for a trial of another
    split."""
    if cv is None:
        return None
    got = rec.info.get("cv")
    got = got if isinstance(got, dict) else {}
    if got.get("folds_fingerprint") != cv["folds_fingerprint"] or got.get("folds") != cv["folds"]:
        raise RunDirError(
            f"{who}: trial.json records folds {got.get('folds')!r} (folds fingerprint "
            f"{str(got.get('folds_fingerprint'))[:12]}), but the run is cross-validated with "
            f"{cv['folds']} folds (fingerprint {str(cv['folds_fingerprint'])[:12]}). Fix: {fix}"
        )
    return int(cv["folds"])


def network_candidates(
    rd: RunDir,
    records: list[Any],
    prefix: str,
    task: str,
    classes: list[Any] | None,
    n_fit: int,
    n_test: int | None,
    *,
    fit_split: str = "holdout",
    cv: dict[str, Any] | None = None,
) -> list[Candidate]:
    """The complete trials of a run as candidates, with their ``fit_split`` (``holdout``,
    or ``oof`` in a cross-validated run, whose ``cv`` = ``{folds, folds_fingerprint}``
    every trial must share) and test predictions."""
    out = []
    for rec in records:
        who = f"run {rd.path}: trial {rec.number}"
        fix = (
            f"delete the trial directory {rec.path} (the ensemble then leaves the trial out), "
            "or rebuild the run."
        )
        folds = _check_trial_folds(rec, who, fix, cv)
        preds = {}
        for split, n_rows in ((fit_split, n_fit), ("test", n_test)):
            if n_rows is None:
                continue
            path = rec.path / f"{split}_pred.npy"
            data = None
            if path.exists():
                what = f"{split} prediction file"
                data = rec.file_bytes(path.name, who=who, what=what, fix=fix)
            if data is None:
                raise RunDirError(f"{who}: {split} prediction file {path} is missing. Fix: {fix}")
            try:
                raw = atomic.load_npy(data)
            except (ValueError, OSError, EOFError) as exc:
                raise RunDirError(
                    f"{who}: {split} prediction file {path} is truncated or unreadable "
                    f"({exc}). Fix: {fix}"
                ) from exc
            preds[split] = checked_prediction(
                raw,
                who=who,
                split=split,
                path=path,
                task=task,
                n_rows=n_rows,
                classes=classes,
                fix=fix,
            )
        value = rec.value
        fmt = rec.model_format
        models = [fold_model_name(k, fmt) for k in range(folds)] if folds else [model_name(fmt)]
        out.append(
            Candidate(
                label=f"{prefix}trial_{rec.number}",
                kind="network",
                run=rd.path.resolve(),
                valid_score=None if value is None else float(value),
                fit=preds[fit_split],
                test=preds.get("test"),
                trial=rec.number,
                target_scaling=rec.info.get("target_scaling"),
                target_transform=rec.info.get("target_transform"),
                files=_member_files(rec, "trial.json", *models),
                folds=folds,
                model_format=fmt,
            )
        )
    return out


def tree_candidates(
    records: list[Any],
    run: Path,
    task: str,
    classes: list[Any] | None,
    n_fit: int,
    n_test: int | None,
    *,
    fit_split: str = "holdout",
) -> list[Candidate]:
    """The run's fitted trees as candidates, with their ``fit_split`` and test predictions."""
    out = []
    for rec in records:
        who = f"tree {rec.name} of run {run}"
        fix = f"delete {rec.path}; the next build fits the tree again."
        preds = {}
        for split, n_rows in ((fit_split, n_fit), ("test", n_test)):
            if n_rows is None:
                continue
            preds[split] = checked_prediction(
                rec.predictions(split),
                who=who,
                split=split,
                path=rec.path / f"{split}_pred.npy",
                task=task,
                n_rows=n_rows,
                classes=classes,
                fix=fix,
            )
        out.append(
            Candidate(
                label=rec.name,
                kind="tree",
                run=run,
                valid_score=rec.value,
                fit=preds[fit_split],
                test=preds.get("test"),
                tree=rec.name,
                fit_id=rec.info.get("fit_id"),
                files=_member_files(rec, "tree.json", *rec.model_files),
                folds=rec.folds,
            )
        )
    return out


def _member_files(rec: Any, record: str, *models: str) -> dict[str, str]:
    """The SHA-256s a prediction of new rows checks: the record as read, and the model(s)
    as the record recorded them (those the member saved)."""
    out = {record: rec.sha256}
    for model in models:
        if rec.files.get(model):
            out[model] = rec.files[model]
    return out


def run_labels(runs: list[RunDir], metas: list[dict[str, Any]]) -> list[str]:
    """The label prefix of each run's trials: none for one run, else ``<run name>/`` (or the
    directory name, or ``run<i>/``, whichever tells the runs apart)."""
    if len(runs) == 1:
        return [""]
    names = [str(m.get("name")) for m in metas]
    if len(set(names)) == len(names):
        return [f"{n}/" for n in names]
    dirs = [rd.path.name for rd in runs]
    if len(set(dirs)) == len(dirs):
        return [f"{d}/" for d in dirs]
    return [f"run{i}/" for i in range(len(runs))]
