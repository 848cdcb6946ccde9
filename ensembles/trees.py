"""Tree models fitted on a run's train rows, stored in the run directory like trials.

Trees give an ensemble members whose errors differ from the networks'. Each is
fitted on the TRAIN rows of the run's tree matrix (``PreparedData.tree_x``)
with fixed defaults (no tuning, seeded from the split seed) and predicts the
valid, holdout and test rows in the run's conventions: classifiers learn the
encoded target ``0..K-1``, so probability columns are in class-index order
(binary: the probability of class 1); regressors predict natural units.

Layout of ``RUN_DIR/trees/<name>/`` (built in a temporary sibling, then
renamed into place, so a directory with ``tree.json`` is complete):
``valid_pred.npy``, ``holdout_pred.npy``, ``test_pred.npy`` (when the run has a
test set), ``model.joblib`` and ``tree.json`` (name, params, scores,
``data_fingerprint``, ``fit_id``, duration, and ``files``: the SHA-256 of each
other file). A later build reuses a saved tree whose fingerprint and params match
and whose files match their recorded SHA-256s (and are the only files there)
instead of fitting it again; any other tree is fitted again. Every prediction file
and ``model.joblib`` is loaded from bytes checked against ``files`` first
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
from hpsearch.core.registry import TREE_MODELS as _TREE_REGISTRY
from hpsearch.core.registry import missing_package
from hpsearch.core.store import RunDir

__all__ = [
    "MODEL_FILE",
    "TREES_DIR",
    "TREE_MODELS",
    "TreeRecord",
    "check_tree_names",
    "ensure_trees",
    "fit_tree",
    "load_tree",
    "load_tree_model",
    "tree_model_from_bytes",
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


def _n_jobs() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def check_tree_names(names: Iterable[str] | str | None) -> tuple[str, ...]:
    """Validated tree names (a comma-separated string is split); UserError on unknown or
    uninstalled ones."""
    if names is None:
        return ()
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    out: list[str] = []
    for name in names:
        if name not in TREE_MODELS:
            raise UserError(
                f"unknown tree model {name!r}; valid tree models: {', '.join(TREE_MODELS)}."
            )
        package = missing_package(name)
        if package:
            raise UserError(
                f"tree model {name!r} needs the {package} package, which is not installed. "
                f"Fix: `pip install {package}`, or leave {name} out of the tree models."
            )
        if name not in out:
            out.append(name)
    return tuple(out)


def tree_params(name: str, task: str, seed: int) -> dict[str, Any]:
    """The fixed constructor parameters of a tree model (``n_jobs`` aside)."""
    seed = int(seed) % (2**31)
    if name in ("rf", "et"):
        return {"n_estimators": 300, "random_state": seed}
    if name == "hgb":
        return {
            "max_iter": 500,
            "learning_rate": 0.05,
            "early_stopping": True,
            "validation_fraction": 0.1,
            "n_iter_no_change": 20,
            "random_state": seed,
        }
    if name == "lgbm":
        return {
            "n_estimators": 300,
            "learning_rate": 0.05,
            "num_leaves": 31,
            "random_state": seed,
            "verbose": -1,
        }
    if name == "xgb":
        return {"n_estimators": 300, "learning_rate": 0.05, "max_depth": 6, "random_state": seed}
    raise UserError(f"unknown tree model {name!r}; valid tree models: {', '.join(TREE_MODELS)}.")


def random_forest(task: str, params: dict[str, Any]) -> Any:
    """``rf``: scikit-learn's random forest (classifier or regressor)."""
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    cls = RandomForestRegressor if task == "regression" else RandomForestClassifier
    return cls(n_jobs=_n_jobs(), **params)


def extra_trees(task: str, params: dict[str, Any]) -> Any:
    """``et``: scikit-learn's extremely randomized trees."""
    from sklearn.ensemble import ExtraTreesClassifier, ExtraTreesRegressor

    cls = ExtraTreesRegressor if task == "regression" else ExtraTreesClassifier
    return cls(n_jobs=_n_jobs(), **params)


def hist_gradient_boosting(task: str, params: dict[str, Any]) -> Any:
    """``hgb``: scikit-learn's histogram gradient boosting."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    cls = HistGradientBoostingRegressor if task == "regression" else HistGradientBoostingClassifier
    return cls(**params)


def lightgbm(task: str, params: dict[str, Any]) -> Any:
    """``lgbm``: LightGBM's scikit-learn estimator (needs the lightgbm package)."""
    import lightgbm as lgb

    cls = lgb.LGBMRegressor if task == "regression" else lgb.LGBMClassifier
    return cls(n_jobs=_n_jobs(), **params)


def xgboost(task: str, params: dict[str, Any]) -> Any:
    """``xgb``: XGBoost's scikit-learn estimator (needs the xgboost package)."""
    import xgboost as xgb

    cls = xgb.XGBRegressor if task == "regression" else xgb.XGBClassifier
    return cls(n_jobs=_n_jobs(), **params)


def make_tree(name: str, task: str, params: dict[str, Any]) -> Any:
    """An unfitted estimator: classifier for binary/multiclass, regressor for regression,
    made by the factory ``hpsearch.core.registry.TREE_MODELS`` names."""
    if name not in TREE_MODELS:
        raise UserError(
            f"unknown tree model {name!r}; valid tree models: {', '.join(TREE_MODELS)}."
        )
    return _TREE_REGISTRY.resolve(name)(task, params)


def predict_tree(model: Any, X: np.ndarray, task: str, n_classes: int) -> np.ndarray:
    """Predictions in the run's conventions: ``(n,)`` P(class 1) for binary, ``(n, K)``
    class-index-ordered probabilities for multiclass, ``(n,)`` values for regression."""
    if task == "regression":
        return np.asarray(model.predict(X), dtype=np.float64).reshape(-1)
    proba = np.asarray(model.predict_proba(X), dtype=np.float64)
    full = np.zeros((proba.shape[0], n_classes))
    # a class absent from the train rows has no column: place the others by their index
    full[:, np.asarray(model.classes_, dtype=np.int64)] = proba
    return full[:, 1] if task == "binary" else full


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


def load_tree_model(run_dir: str | Path, name: str) -> Any:
    """The fitted estimator of a run's tree (joblib, read only from the run's trees/ folder,
    and only once its bytes match the SHA-256 recorded in its ``tree.json``)."""
    if name not in TREE_MODELS:
        raise UserError(
            f"unknown tree model {name!r}; valid tree models: {', '.join(TREE_MODELS)}."
        )
    rec = load_tree(run_dir, name)
    data = None if rec is None else rec.file_bytes(MODEL_FILE, "model")
    if data is None:
        raise RunDirError(
            f"tree {name}: no saved model at {trees_dir(run_dir) / name / MODEL_FILE}. Fix: "
            "build the ensemble again (`ensembles build RUN_DIR`), which fits the missing tree."
        )
    return tree_model_from_bytes(data)


def _reuse_problem(
    rec: TreeRecord | None, fingerprint: str, params: dict[str, Any], splits
) -> str | None:
    """Why a saved tree cannot be reused (None when it can): not fitted, stale, or files
    that do not match what its ``tree.json`` recorded."""
    if rec is None:
        return "not fitted yet"
    if rec.info.get("data_fingerprint") != fingerprint or rec.info.get("params") != params:
        return "fitted on other data or with other parameters"
    files = rec.files
    if not atomic.has_hashes(files):
        return f"its {TREE_JSON} records no SHA-256 for its files (an older fit)"
    for name in [f"{s}_pred.npy" for s in splits] + [MODEL_FILE]:
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


def fit_tree(
    run_dir: str | Path,
    name: str,
    prepared: Any,
    metric: str,
    seed: int,
) -> TreeRecord:
    """Fit one tree on the train rows, predict every other split and store it (atomically),
    with the SHA-256 of each file in ``tree.json``."""
    task = prepared.task
    params = tree_params(name, task, seed)
    model = make_tree(name, task, params)
    t0 = time.time()
    model.fit(prepared.tree_x["train"], prepared.y["train"])
    k = prepared.target.n_classes
    preds = {
        s: predict_tree(model, prepared.tree_x[s], task, k) for s in _SPLITS if s in prepared.tree_x
    }
    duration = time.time() - t0
    scores = {
        s: float(_metrics.score(metric, prepared.y[s], preds[s]))
        for s in ("valid", "holdout")
        if s in preds
    }
    root = trees_dir(run_dir)
    run = RunDir(run_dir)
    run.check_not_link(root)  # fitting replaces trees/<name>: never through a link
    root.mkdir(parents=True, exist_ok=True)
    run.check_not_link(root / name)
    tmp = root / f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        files = _write_files(tmp, preds, model)
        info = {
            "name": name,
            "kind": "tree",
            "estimator": type(model).__name__,
            "params": params,
            "task": task,
            "metric": metric,
            "value": scores.get("valid"),
            "holdout_value": scores.get("holdout"),
            "n_train": int(len(prepared.y["train"])),
            "n_features": int(prepared.tree_x["train"].shape[1]),
            "data_fingerprint": prepared.fingerprint,
            "fit_id": uuid.uuid4().hex,
            "duration_s": round(duration, 4),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "files": files,
        }
        atomic.write_json(tmp / TREE_JSON, info)  # last: marks a complete tree
        if _reuse_problem(_current(run_dir, name), prepared.fingerprint, params, tuple(preds)):
            _install(tmp, root / name)
        # else another build saved the same tree meanwhile: keep its copy
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    rec = load_tree(run_dir, name)
    if rec is None:  # pragma: no cover - removed by someone else in between
        raise RunDirError(f"tree {name}: {root / name} vanished while it was being saved.")
    return rec


def _write_files(folder: Path, preds: dict[str, np.ndarray], model: Any) -> dict[str, str]:
    """Write a tree's prediction files and ``model.joblib``; their SHA-256s by name."""
    import joblib

    files = {
        f"{split}_pred.npy": atomic.write_hashed(
            folder / f"{split}_pred.npy", atomic.npy_bytes(pred)
        )
        for split, pred in preds.items()
    }
    buf = io.BytesIO()
    joblib.dump(model, buf)
    files[MODEL_FILE] = atomic.write_hashed(folder / MODEL_FILE, buf.getvalue())
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
) -> list[TreeRecord]:
    """The saved trees of a run, fitting those missing or stale. ``load_prepared`` is
    called (once) only when some tree has to be fitted."""
    names = check_tree_names(list(names))
    splits = ("valid", "holdout", "test") if has_test else ("valid", "holdout")
    out = []
    prepared = None
    for i, name in enumerate(names, 1):
        params = tree_params(name, task, seed)
        rec = _current(run_dir, name)
        problem = _reuse_problem(rec, fingerprint, params, splits)
        if problem is None:
            if log:
                log(f"tree {name} ({i}/{len(names)}): reusing the saved fit")
            out.append(rec)
            continue
        if prepared is None:
            prepared = load_prepared()
        if log:
            why = "" if rec is None else f" ({problem})"
            log(f"fitting {name} ({i}/{len(names)}){why}...")
        rec = fit_tree(run_dir, name, prepared, metric, seed)
        out.append(rec)
    return out
