"""Candidates of an ensemble: every complete trial of the runs and the first run's trees.

Each candidate carries its holdout (and test) predictions, checked for shape (rows,
classes) and finiteness: a missing, truncated or unreadable file, a wrong row count, a
class-count mismatch or a NaN is a ``RunDirError`` naming the trial and the file, with
the fix. Nothing is skipped silently. Every file is loaded from bytes checked against the
SHA-256 its ``trial.json`` or ``tree.json`` recorded; ``files`` carries the hashes of what
a prediction of new rows will load (the member's JSON and model), for ``ensemble.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpsearch.core import atomic
from hpsearch.core.errors import RunDirError
from hpsearch.core.store import RunDir

__all__ = [
    "Candidate",
    "checked_prediction",
    "network_candidates",
    "run_labels",
    "tree_candidates",
]


@dataclass
class Candidate:
    label: str
    kind: str  # "network" | "tree"
    run: Path
    valid_score: float | None
    holdout: np.ndarray
    test: np.ndarray | None
    trial: int | None = None
    tree: str | None = None
    fit_id: str | None = None
    target_scaling: list[float] | None = None
    target_transform: str | None = None
    files: dict[str, str] | None = None  # name -> SHA-256 of the member's JSON and model

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "kind": self.kind, "run": str(self.run)}
        if self.kind == "network":
            out["trial"] = self.trial
            out["target_scaling"] = self.target_scaling
            out["target_transform"] = self.target_transform
        else:
            out["tree"] = self.tree
            out["fit_id"] = self.fit_id
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
            problem = f"{arr.shape[0]} rows but the {split} split has {n_rows}"
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


def network_candidates(
    rd: RunDir,
    records: list[Any],
    prefix: str,
    task: str,
    classes: list[Any] | None,
    n_holdout: int,
    n_test: int | None,
) -> list[Candidate]:
    out = []
    for rec in records:
        who = f"run {rd.path}: trial {rec.number}"
        fix = (
            f"delete the trial directory {rec.path} (the ensemble then leaves the trial out), "
            "or rebuild the run."
        )
        preds = {}
        for split, n_rows in (("holdout", n_holdout), ("test", n_test)):
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
        out.append(
            Candidate(
                label=f"{prefix}trial_{rec.number}",
                kind="network",
                run=rd.path.resolve(),
                valid_score=None if value is None else float(value),
                holdout=preds["holdout"],
                test=preds.get("test"),
                trial=rec.number,
                target_scaling=rec.info.get("target_scaling"),
                target_transform=rec.info.get("target_transform"),
                files=_member_files(rec, "trial.json", "model.keras"),
            )
        )
    return out


def tree_candidates(
    records: list[Any],
    run: Path,
    task: str,
    classes: list[Any] | None,
    n_holdout: int,
    n_test: int | None,
) -> list[Candidate]:
    out = []
    for rec in records:
        who = f"tree {rec.name} of run {run}"
        fix = f"delete {rec.path}; the next build fits the tree again."
        preds = {}
        for split, n_rows in (("holdout", n_holdout), ("test", n_test)):
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
                holdout=preds["holdout"],
                test=preds.get("test"),
                tree=rec.name,
                fit_id=rec.info.get("fit_id"),
                files=_member_files(rec, "tree.json", "model.joblib"),
            )
        )
    return out


def _member_files(rec: Any, record: str, model: str) -> dict[str, str]:
    """The SHA-256s a prediction of new rows checks: the record as read, and the model as
    the record recorded it (when the member saved one)."""
    out = {record: rec.sha256}
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
