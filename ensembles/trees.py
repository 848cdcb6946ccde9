"""Tree models fitted on a run's labelled rows, stored in the run directory like trials.

Trees give an ensemble members whose errors differ from the networks'. Each is
fitted on the run's tree matrix (``PreparedData.tree_x``) with fixed defaults (no
tuning, seeded from the split seed) and predicts in the run's conventions:
classifiers learn the encoded target ``0..K-1``, so probability columns are in
class-index order (binary: the probability of class 1); regressors predict natural
units.

**Metric-aware** (both modes; ``target_transform`` and ``tree_loss``): under RMSLE a
regressor learns ``log1p(target)`` and predicts ``expm1`` of its output, clipped at 0;
under MAE the boosters use an absolute loss (``hgb``: ``loss="absolute_error"``,
``lgbm``: ``objective="l1"``, ``xgb``: ``objective="reg:absoluteerror"``), while the
forests keep the squared error (their absolute-error criterion is several times slower,
more so with more rows).
Classifiers' probabilities stay calibrated for log loss: the boosters fit the log loss,
and the forests' vote shares (often exactly 0 or 1) are shrunk towards the class
frequencies by the amount that scores best on the early-stopping rows
(:class:`SmoothedClassifier`).

**Holdout runs**: a tree is fitted on the TRAIN rows (the boosters early-stop, and the
forests are calibrated, on the VALID rows, as the networks early-stop there) and
predicts the valid, holdout and test rows. ``RUN_DIR/trees/<name>/`` holds ``valid_pred.npy``,
``holdout_pred.npy``, ``test_pred.npy`` (when the run has a test set) and
``model.joblib``.

**Cross-validated runs** (``split.folds`` = K): a tree is fitted once per fold on that
fold's training rows (``hpsearch.core.data.fold_rows`` with the split seed, as every
trainer of the run), the boosters early-stopping on the fold's inner ``valid`` slice
(never on its held rows), the forests calibrated on it; each fold model predicts its held rows, which together make
``oof_pred.npy`` (every labelled row, from the model that did not see it), and the test
rows, whose mean over the K models is ``test_pred.npy``. The K models are
``model_fold<k>.joblib``.

Either way ``tree.json`` (name, params, ``target_transform``, ``loss``, scores,
``data_fingerprint``, ``fit_id``, duration, the per-fold scores in CV mode, and
``files``: the SHA-256 of each other file) is written last, in a temporary sibling that
is renamed into place, so a directory with ``tree.json`` is complete. A later build
reuses a saved tree whose fingerprint, params, target transform and folds match and
whose files match their recorded SHA-256s (and are the only files there) instead of
fitting it again; any other tree is fitted again (a new ``fit_id``). Every prediction
file and model is loaded from bytes checked against ``files`` first
(``hpsearch.core.atomic.read_verified``): a changed or planted pickle is never
unpickled.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpsearch.core import atomic
from hpsearch.core import metrics as _metrics
from hpsearch.core.errors import RunDirError, UserError
from hpsearch.core.registry import TREE_INSTALL, missing_package
from hpsearch.core.registry import TREE_MODELS as _TREE_REGISTRY
from hpsearch.core.store import RunDir
from hpsearch.search.tree_models import (  # noqa: F401  (re-exported: old pickles, old imports)
    EARLY_STOPPING_ROUNDS,
    LOG1P,
    SHRINK_GRID,
    CatBoostModel,
    SmoothedClassifier,
    catboost,
    early_stopping_rounds,
    estimator_params,
    extra_trees,
    fit_estimator,
    hist_gradient_boosting,
    inverse_target,
    lightgbm,
    make_tree,
    predict_tree,
    random_forest,
    target_transform,
    tree_loss,
    tree_params,
    xgboost,
)
from hpsearch.search.tree_models import best_rounds as _best_iteration
from hpsearch.search.tree_models import forward_target as _forward_target  # noqa: F401

__all__ = [
    "EARLY_STOPPING_ROUNDS",
    "LOG1P",
    "MODEL_FILE",
    "TREES_DIR",
    "TREE_MODELS",
    "CatBoostModel",
    "SmoothedClassifier",
    "TreeRecord",
    "check_tree_names",
    "ensure_trees",
    "fit_estimator",
    "fit_tree",
    "fold_model_file",
    "inverse_target",
    "load_tree",
    "load_tree_model",
    "load_tree_models",
    "model_files_for",
    "target_transform",
    "tree_loss",
    "tree_model_from_bytes",
    "catboost",
    "early_stopping_rounds",
    "estimator_params",
    "extra_trees",
    "hist_gradient_boosting",
    "lightgbm",
    "make_tree",
    "missing_package",
    "predict_tree",
    "random_forest",
    "tree_params",
    "xgboost",
]

TREES_DIR = "trees"
TREE_JSON = "tree.json"
MODEL_FILE = "model.joblib"
TREE_MODELS = _TREE_REGISTRY.names()
_SPLITS = ("valid", "holdout", "test")
OOF = "oof"  # the prediction file of a cross-validated tree: every labelled row, out of fold
# how trees are fitted (recorded in tree.json; a saved fit of another version is fitted
# again): 2 = boosters early-stop on the valid split (holdout mode) or the fold's inner
# slice (CV mode), forests' probabilities are calibrated on those rows; 3 = the parameters
# are the tree family's first portfolio configuration (hpsearch.search.tree_models:
# estimator_params, scaled with the rows), categorical columns handled natively, threads
# limited, boosters early-stop after a number of rounds that falls with the rows; 4 =
# CatBoost's first configuration one-hot encodes small categories and combines none, and
# small integer categories reach the trees as numbers (runs prepared since)
FIT_VERSION = 4


def fold_model_file(fold: int) -> str:
    """The model file of fold ``fold`` of a cross-validated tree."""
    return f"model_fold{int(fold)}.joblib"


def model_files_for(folds: int | None) -> list[str]:
    """A tree's model files: ``model.joblib``, or one ``model_fold<k>.joblib`` per fold."""
    return [MODEL_FILE] if not folds else [fold_model_file(k) for k in range(int(folds))]


def _pred_splits(folds: int | None, has_test: bool) -> tuple[str, ...]:
    if folds:
        return (OOF, "test") if has_test else (OOF,)
    return _SPLITS if has_test else _SPLITS[:2]


def check_tree_names(names: Iterable[str] | str | None) -> tuple[str, ...]:
    """Validated tree names (a comma-separated string is split; a tree family's name, such
    as ``lightgbm``, stands for its tree model, ``lgbm``); UserError on unknown or
    uninstalled ones."""
    if names is None:
        return ()
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    from search_spaces.families import TREE_FAMILIES

    out: list[str] = []
    for name in names:
        name = TREE_FAMILIES.get(name, name)  # a tree family's name: its tree model
        if name not in TREE_MODELS:
            raise UserError(
                f"unknown tree model {name!r}; valid tree models: {', '.join(TREE_MODELS)}."
            )
        package = missing_package(name)
        if package:
            raise UserError(
                f"tree model {name!r} needs the {package} package, which is not installed. "
                f"Fix: `pip install {TREE_INSTALL.get(package, package)}`, or leave {name} out "
                "of the tree models."
            )
        if name not in out:
            out.append(name)
    return tuple(out)


@dataclass
class TreeRecord:
    """A fitted tree model as stored in ``trees/<name>/``; ``sha256`` is the hash of its
    ``tree.json`` as read (an ensemble records it)."""

    path: Path
    info: dict[str, Any]
    sha256: str | None = None

    @property
    def name(self) -> str:
        return str(self.info["name"])

    @property
    def value(self) -> float | None:
        return self.info.get("value")

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def folds(self) -> int | None:
        """K for a tree fitted per fold of a cross-validated run; None for a holdout run."""
        cv = self.info.get("cv")
        k = cv.get("folds") if isinstance(cv, dict) else None
        return int(k) if isinstance(k, int) and not isinstance(k, bool) and k > 0 else None

    @property
    def model_files(self) -> list[str]:
        """The tree's model files: ``model.joblib``, or ``model_fold<k>.joblib`` per fold."""
        return model_files_for(self.folds)

    @property
    def transform(self) -> str | None:
        """The target transform the tree was fitted with (``log1p`` or None)."""
        return self.info.get("target_transform")

    @property
    def files(self) -> dict[str, Any]:
        """File name -> SHA-256 of each file of the tree (``tree.json``'s ``files``)."""
        files = self.info.get("files")
        return files if isinstance(files, dict) else {}

    def has_predictions(self, split: str) -> bool:
        return (self.path / f"{split}_pred.npy").exists()

    def file_bytes(self, name: str, what: str = "file") -> bytes | None:
        """The bytes of the tree's file ``name``, checked against ``tree.json``'s SHA-256."""
        fix = f"delete {self.path}; the next build fits the tree again."
        return atomic.read_verified(
            self.path / name,
            self.info.get("files"),
            record=str(self.path / TREE_JSON),
            who=f"tree {self.name}",
            what=what,
            fix=fix,
        )

    def predictions(self, split: str) -> np.ndarray:
        path = self.path / f"{split}_pred.npy"
        data = self.file_bytes(path.name, f"{split} prediction file")
        if data is None:
            raise RunDirError(f"tree {self.name}: no {split} predictions at {path}.")
        try:
            return atomic.load_npy(data)
        except (ValueError, OSError, EOFError) as exc:
            raise RunDirError(
                f"tree {self.name}: prediction file {path} is unreadable ({exc}). "
                f"Fix: delete {self.path}; the next build fits the tree again."
            ) from exc


def trees_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / TREES_DIR


def load_tree(run_dir: str | Path, name: str) -> TreeRecord | None:
    """The saved tree ``name`` of a run, or None when it was never (completely) fitted;
    RunDirError when its ``tree.json`` is damaged."""
    from hpsearch.core.store import read_record

    path = trees_dir(run_dir) / name
    info_path = path / TREE_JSON
    if not info_path.exists():
        return None
    return TreeRecord(path, *read_record(info_path, TREE_JSON))


def tree_model_from_bytes(data: bytes) -> Any:
    """The estimator of a ``model.joblib``'s bytes, which the caller has checked against
    their recorded SHA-256 (unpickling runs whatever the file was made to run)."""
    import joblib

    return joblib.load(io.BytesIO(data))


def load_tree_models(run_dir: str | Path, name: str) -> list[Any]:
    """The fitted estimators of a run's tree: one for a holdout run, the K fold models of a
    cross-validated one (joblib, read only from the run's trees/ folder, and only once
    their bytes match the SHA-256s recorded in its ``tree.json``)."""
    if name not in TREE_MODELS:
        raise UserError(
            f"unknown tree model {name!r}; valid tree models: {', '.join(TREE_MODELS)}."
        )
    rec = load_tree(run_dir, name)
    files = [MODEL_FILE] if rec is None else rec.model_files
    out = []
    for file in files:
        data = None if rec is None else rec.file_bytes(file, "model")
        if data is None:
            raise RunDirError(
                f"tree {name}: no saved model at {trees_dir(run_dir) / name / file}. Fix: "
                "build the ensemble again (`ensembles build RUN_DIR`), which fits the missing "
                "tree."
            )
        out.append(tree_model_from_bytes(data))
    return out


def load_tree_model(run_dir: str | Path, name: str) -> Any:
    """The fitted estimator of a holdout run's tree (:func:`load_tree_models` gives the K
    fold models of a cross-validated run's)."""
    models = load_tree_models(run_dir, name)
    if len(models) != 1:
        raise UserError(
            f"tree {name} of run {run_dir} was fitted per fold ({len(models)} models). "
            "Fix: use ensembles.trees.load_tree_models, which returns them all."
        )
    return models[0]


@dataclass(frozen=True)
class _FitKey:
    """What a saved tree must have been fitted with to be reused."""

    fingerprint: str
    params: dict[str, Any]
    transform: str | None
    folds: int | None
    splits: tuple[str, ...]


def _reuse_problem(rec: TreeRecord | None, key: _FitKey) -> str | None:
    """Why a saved tree cannot be reused (None when it can): not fitted, stale (other data,
    parameters, target transform or folds), or files that do not match what its
    ``tree.json`` recorded."""
    if rec is None:
        return "not fitted yet"
    if rec.info.get("data_fingerprint") != key.fingerprint or rec.info.get("params") != key.params:
        return "fitted on other data or with other parameters"
    if rec.info.get("fit_version") != FIT_VERSION:
        return f"fitted by an older version of the tree fitting (now {FIT_VERSION})"
    if rec.transform != key.transform:
        return (
            f"fitted with target transform {rec.transform or 'none'}, the metric asks for "
            f"{key.transform or 'none'}"
        )
    if rec.folds != key.folds:
        return "fitted for another split (holdout rows or cross-validation folds)"
    files = rec.files
    if not atomic.has_hashes(files):
        return f"its {TREE_JSON} records no SHA-256 for its files (an older fit)"
    for name in [f"{s}_pred.npy" for s in key.splits] + model_files_for(key.folds):
        try:
            data = (rec.path / name).read_bytes()
        except OSError:
            return f"{name} is missing"
        if files.get(name) != atomic.sha256(data):
            return f"{rec.path / name} does not match the SHA-256 recorded in its {TREE_JSON}"
    extra = sorted(set(os.listdir(rec.path)) - {TREE_JSON} - set(files))
    if extra:
        return f"{rec.path} holds file(s) its {TREE_JSON} never recorded: {', '.join(extra)}"
    return None


def _n_rows(prepared: Any) -> int:
    """The rows a run's trees are scaled with (``estimator_params``): its train split (every
    labelled row of a cross-validated run)."""
    return int(len(prepared.y["train"]))


def _categorical(prepared: Any) -> list[int]:
    """The tree matrix's columns of category ids (``Preprocessor.tree_meta``)."""
    return list(prepared.preprocessor.tree_meta()["categorical"])


def _fit_key(name: str, prepared: Any, metric: str, seed: int) -> _FitKey:
    task = prepared.task
    return _FitKey(
        fingerprint=prepared.fingerprint,
        params=tree_params(name, task, seed, metric, _n_rows(prepared)),
        transform=target_transform(task, metric),
        folds=prepared.folds,
        splits=_pred_splits(prepared.folds, "test" in prepared.tree_x),
    )


def _score(metric: str, y: np.ndarray, pred: np.ndarray) -> float | None:
    """The metric, or None where it is undefined on these rows (one class for ROC AUC)."""
    try:
        return float(_metrics.score(metric, y, pred))
    except ValueError:
        return None


def _fit_holdout(name: str, prepared: Any, metric: str, key: _FitKey):
    """(predictions by split, models, the scores part of ``tree.json``) of a holdout run's
    tree: fitted on the train rows, predicting every other split."""
    task, k = prepared.task, prepared.target.n_classes
    valid = {}
    if "valid" in prepared.tree_x and prepared.y.get("valid") is not None:
        # the valid split early-stops the boosters and calibrates the forests, as it
        # early-stops the networks; the holdout rows, which the blend is fitted on, never
        valid = {"X_val": prepared.tree_x["valid"], "y_val": prepared.y["valid"]}
    model = fit_estimator(
        name,
        task,
        key.params,
        prepared.tree_x["train"],
        prepared.y["train"],
        transform=key.transform,
        categorical=_categorical(prepared),
        **valid,
    )
    preds = {
        s: predict_tree(model, prepared.tree_x[s], task, k, key.transform)
        for s in _SPLITS
        if s in prepared.tree_x
    }
    info = {
        "value": _score(metric, prepared.y["valid"], preds["valid"]) if "valid" in preds else None,
        "holdout_value": (
            _score(metric, prepared.y["holdout"], preds["holdout"]) if "holdout" in preds else None
        ),
        "n_train": int(len(prepared.y["train"])),
        "best_iteration": _best_iteration(model),
        "shrink": getattr(model, "alpha", None),
    }
    return preds, {MODEL_FILE: model}, info


def _fit_folds(name: str, prepared: Any, metric: str, seed: int, key: _FitKey):
    """(predictions by split, models, the scores part of ``tree.json``) of a cross-validated
    run's tree: one model per fold (``fold_rows``: its training rows, the boosters
    early-stopping on its inner valid slice), out-of-fold predictions of every labelled row
    and the mean of the fold models' test predictions."""
    from hpsearch.core.data import fold_rows

    task, k = prepared.task, prepared.target.n_classes
    X, y = prepared.tree_x["train"], np.asarray(prepared.y["train"])
    X_test = prepared.tree_x.get("test")
    fold_of = prepared.fold_of
    inner = float(prepared.split.get("inner_valid") or 0.1)
    oof: np.ndarray | None = None
    test_sum: np.ndarray | None = None
    models: dict[str, Any] = {}
    folds = []
    for fold in range(int(key.folds)):
        t0 = time.time()
        train, valid, held = fold_rows(fold_of, fold, y, task, inner, seed)
        model = fit_estimator(
            name,
            task,
            key.params,
            X[train],
            y[train],
            transform=key.transform,
            X_val=X[valid],
            y_val=y[valid],
            categorical=_categorical(prepared),
        )
        p_held = predict_tree(model, X[held], task, k, key.transform)
        if oof is None:
            oof = np.zeros((len(y), *p_held.shape[1:]))
        oof[held] = p_held
        if X_test is not None:
            p_test = predict_tree(model, X_test, task, k, key.transform)
            test_sum = p_test if test_sum is None else test_sum + p_test
        p_valid = predict_tree(model, X[valid], task, k, key.transform) if len(valid) else None
        folds.append(
            {
                "fold": fold,
                "value": _score(metric, y[held], p_held),
                "valid_value": None if p_valid is None else _score(metric, y[valid], p_valid),
                "best_iteration": _best_iteration(model),
                "shrink": getattr(model, "alpha", None),
                "duration_s": round(time.time() - t0, 4),
                "n_train": int(len(train)),
                "n_valid": int(len(valid)),
                "n_oof": int(len(held)),
            }
        )
        models[fold_model_file(fold)] = model
    preds = {OOF: oof}
    if test_sum is not None:
        preds["test"] = test_sum / int(key.folds)
    info = {
        "value": _score(metric, y, oof),
        "cv": {
            "folds": int(key.folds),
            "folds_fingerprint": prepared.split.get("folds_fingerprint"),
            "inner_valid": inner,
        },
        "folds": folds,
        "n_oof": int(len(y)),  # every labelled row; each fold's own counts are in `folds`
    }
    return preds, models, info


def fit_tree(
    run_dir: str | Path,
    name: str,
    prepared: Any,
    metric: str,
    seed: int,
) -> TreeRecord:
    """Fit one tree (on the train rows of a holdout run, once per fold of a cross-validated
    one), predict and store it (atomically), with the SHA-256 of each file in
    ``tree.json``."""
    task = prepared.task
    key = _fit_key(name, prepared, metric, seed)
    t0 = time.time()
    if key.folds:
        preds, models, scores = _fit_folds(name, prepared, metric, seed, key)
    else:
        preds, models, scores = _fit_holdout(name, prepared, metric, key)
    duration = time.time() - t0
    root = trees_dir(run_dir)
    run = RunDir(run_dir)
    run.check_not_link(root)  # fitting replaces trees/<name>: never through a link
    root.mkdir(parents=True, exist_ok=True)
    run.check_not_link(root / name)
    tmp = root / f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        files = _write_files(tmp, preds, models)
        info = {
            "name": name,
            "kind": "tree",
            "estimator": type(next(iter(models.values()))).__name__,
            "params": key.params,
            "task": task,
            "metric": metric,
            "target_transform": key.transform,
            "loss": tree_loss(name, task, metric),
            **scores,
            "n_features": int(prepared.tree_x["train"].shape[1]),
            "data_fingerprint": prepared.fingerprint,
            "fit_id": uuid.uuid4().hex,
            "fit_version": FIT_VERSION,
            "duration_s": round(duration, 4),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "files": files,
        }
        atomic.write_json(tmp / TREE_JSON, info)  # last: marks a complete tree
        if _reuse_problem(_current(run_dir, name), key):
            _install(tmp, root / name)
        # else another build saved the same tree meanwhile: keep its copy
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    rec = load_tree(run_dir, name)
    if rec is None:  # pragma: no cover - removed by someone else in between
        raise RunDirError(f"tree {name}: {root / name} vanished while it was being saved.")
    return rec


def _write_files(
    folder: Path, preds: dict[str, np.ndarray], models: dict[str, Any]
) -> dict[str, str]:
    """Write a tree's prediction files and models (file name -> estimator); their SHA-256s
    by name."""
    import joblib

    files = {
        f"{split}_pred.npy": atomic.write_hashed(
            folder / f"{split}_pred.npy", atomic.npy_bytes(pred)
        )
        for split, pred in preds.items()
    }
    for file, model in models.items():
        buf = io.BytesIO()
        joblib.dump(model, buf)
        files[file] = atomic.write_hashed(folder / file, buf.getvalue())
    return files


def _current(run_dir: str | Path, name: str) -> TreeRecord | None:
    """The saved tree, or None when there is none or its ``tree.json`` is damaged."""
    try:
        return load_tree(run_dir, name)
    except RunDirError:
        return None


def _install(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``; a stale ``final`` is moved aside first. When another
    build installed the same tree meanwhile, its copy is kept and ``tmp`` discarded."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        with contextlib.suppress(FileNotFoundError):
            os.rename(final, old)
    try:
        os.rename(tmp, final)
    except OSError:
        if not (final / TREE_JSON).exists():
            raise
    finally:
        if old is not None and old.exists():
            shutil.rmtree(old, ignore_errors=True)


def ensure_trees(
    run_dir: str | Path,
    names: Iterable[str],
    *,
    fingerprint: str,
    task: str,
    metric: str,
    seed: int,
    has_test: bool,
    load_prepared: Callable[[], Any],
    log: Callable[[str], None] | None = None,
    folds: int | None = None,
    n_rows: int | None = None,
) -> list[TreeRecord]:
    """The saved trees of a run, fitting those missing or stale. ``folds``: K for a
    cross-validated run (each tree fitted per fold), None for a holdout run; ``n_rows``:
    the rows of the run's train split, which the trees' parameters scale with (None: read
    from the prepared data).
    ``load_prepared`` is called (once) only when some tree has to be fitted."""
    names = check_tree_names(list(names))
    out = []
    prepared = None
    if n_rows is None and names:
        prepared = load_prepared()
        n_rows = _n_rows(prepared)
    for i, name in enumerate(names, 1):
        key = _FitKey(
            fingerprint=fingerprint,
            params=tree_params(name, task, seed, metric, n_rows),
            transform=target_transform(task, metric),
            folds=int(folds) if folds else None,
            splits=_pred_splits(folds, has_test),
        )
        rec = _current(run_dir, name)
        problem = _reuse_problem(rec, key)
        if problem is None:
            if log:
                log(f"tree {name} ({i}/{len(names)}): reusing the saved fit")
            out.append(rec)
            continue
        if prepared is None:
            prepared = load_prepared()
        if log:
            why = "" if rec is None else f" ({problem})"
            per_fold = f" per fold ({key.folds} folds)" if key.folds else ""
            log(f"fitting {name}{per_fold} ({i}/{len(names)}){why}...")
        rec = fit_tree(run_dir, name, prepared, metric, seed)
        out.append(rec)
    return out
