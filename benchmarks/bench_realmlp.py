"""The ``realmlp`` family's tuned default against LightGBM, 5-fold cross-validated.

For each table (a folder with ``train.csv`` and ``table.json``, as ``bench_quality.py``
exports them; or ``sklearn:<name>`` for a table that ships with scikit-learn), the rows are
prepared as a cross-validated run prepares them (``split.folds: 5``), then:

- each configuration of the library space ``tabular_realmlp``'s portfolio picked with
  ``--entries`` (default: the first, the tuned default) is trained through the Keras
  trainer fold by fold (``hpsearch.search.folds.run_folds``), early stopping on each fold's
  inner validation slice;
- LightGBM with its defaults, on each fold's training rows (inner slice included);
- LightGBM with learning rate 0.05 and early stopping on the inner slice (up to 2000 trees).

It prints one line per method: the out-of-fold score and the wall time of the five folds.

    python benchmarks/bench_realmlp.py /tmp/quality/data/wa_churn sklearn:breast_cancer
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _spec(table: str, tmp: Path) -> tuple[Any, str]:
    from hpsearch.core.spec import load_spec

    if table.startswith("sklearn:"):
        name = table.split(":", 1)[1]
        task = {"breast_cancer": "binary", "iris": "multiclass", "wine": "multiclass"}.get(
            name, "regression"
        )
        metric = {"binary": "log_loss", "multiclass": "log_loss"}.get(task, "rmse")
        data = {"train": table, "target": "target", "task": task}
    else:
        meta = json.loads((Path(table) / "table.json").read_text())
        name, task, metric = meta["name"], meta["task"], meta["metric"]
        data = {"train": str(Path(table) / "train.csv"), "target": meta["target"], "task": task}
        data["id"] = "id"
    spec = {
        "name": f"bench-{name}",
        "data": data,
        "split": {"folds": 5, "seed": 0},
        "metric": metric,
        "space": "tabular_realmlp",
        "output": str(tmp / name),
    }
    return load_spec(spec), name


def _oof_lightgbm(prepared: Any, data: dict[str, Any], metric: str, tuned: bool) -> np.ndarray:
    import lightgbm as lgb

    from hpsearch.core import targets
    from hpsearch.search.folds import fold_positions

    task = prepared.task
    x = prepared.tree_x["train"]
    if isinstance(x, dict):  # {"tree": matrix} where tree families ship their data so
        x = x["tree"]
    y = np.asarray(prepared.y["train"])
    n_num = len(prepared.preprocessor.numeric)
    cats = list(range(n_num, n_num + len(prepared.preprocessor.categorical)))
    transform = targets.transform_for(metric, task)
    oof = np.zeros((len(y), prepared.n_classes) if task == "multiclass" else len(y))
    for fold in range(5):
        train, valid, held = fold_positions(data, task, fold)
        params: dict[str, Any] = {"n_jobs": 2, "verbose": -1, "random_state": fold}
        if tuned:
            params.update(n_estimators=2000, learning_rate=0.05)
        model = (lgb.LGBMRegressor if task == "regression" else lgb.LGBMClassifier)(**params)
        fit_rows = train if tuned else np.concatenate([train, valid])
        yt = y.astype(float) if task == "regression" else y
        if transform == "log1p":
            yt = np.log1p(yt)
        kwargs: dict[str, Any] = {"categorical_feature": cats}
        if tuned:
            yv = np.log1p(y[valid].astype(float)) if transform == "log1p" else y[valid]
            kwargs["eval_X"], kwargs["eval_y"] = (x[valid],), (yv,)
            kwargs["callbacks"] = [lgb.early_stopping(50, verbose=False)]
        model.fit(x[fit_rows], yt[fit_rows], **kwargs)
        if task == "regression":
            pred = model.predict(x[held])
            oof[held] = np.expm1(pred) if transform == "log1p" else pred
        elif task == "binary":
            oof[held] = model.predict_proba(x[held])[:, 1]
        else:
            oof[held] = model.predict_proba(x[held])
    return oof


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tables", nargs="+")
    parser.add_argument("--entries", default="0", help="portfolio entries, e.g. 0,1,2")
    parser.add_argument("--max-epochs", type=int, default=30)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--set", action="append", default=[], help="param=value (JSON value)")
    args = parser.parse_args(argv)
    import tempfile

    from hpsearch.core import metrics
    from hpsearch.core.data import prepare
    from hpsearch.search.folds import cv_data, run_folds
    from hpsearch.search.training import train_trial
    from hpsearch.search.trial import TrialPayload
    from search_spaces import load_space

    space = load_space("tabular_realmlp")
    overrides = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    tmp = Path(tempfile.mkdtemp(prefix="bench-realmlp-"))
    for table in args.tables:
        spec, name = _spec(table, tmp)
        prepared = prepare(spec)
        data = cv_data(prepared.x, prepared.y, prepared.split)
        y = np.asarray(prepared.y["train"])
        for tuned in (False, True):
            start = time.perf_counter()
            oof = _oof_lightgbm(prepared, data, spec.metric, tuned)
            label = "lightgbm (lr 0.05, early stopping)" if tuned else "lightgbm (default)"
            value = metrics.score(spec.metric, y, oof)
            print(
                f"{name}\t{spec.metric}\t{label}\t{value:.5f}\t{time.perf_counter() - start:.1f}s"
            )
        for i in (int(e) for e in args.entries.split(",")):
            params = {**space.portfolio[i], **overrides}
            payload = TrialPayload(
                number=i,
                params=params,
                family=space.family,
                metric=spec.metric,
                task=prepared.task,
                seed=1,
                training={
                    "max_epochs": args.max_epochs,
                    "batch_size": 256,
                    "patience": args.patience,
                    "tensorboard": False,
                },
                inputs=prepared.input_spec.to_dict(),
                outputs=prepared.output_spec.to_dict(),
                splits=("oof",),
                folds=5,
            )
            start = time.perf_counter()
            result = run_folds(train_trial, payload, data, None)
            wall = time.perf_counter() - start
            epochs = [f.get("epochs") for f in result.extra.get("folds", [])]
            print(
                f"{name}\t{spec.metric}\trealmlp portfolio[{i}]\t{result.value:.5f}\t{wall:.1f}s"
                f"\tepochs {epochs} {overrides or ''} {result.error or ''}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    raise SystemExit(main())
