"""``Run``: a finished or running search read from its run directory (a path or a URI).

``hpsearch.load_run(path)`` returns one; ``hpsearch.run(spec)`` returns one when the search
ends. Everything here only reads: nothing in the run directory is written, and a run at a
URI is read from a temporary local copy of the files a call needs.

    run = hpsearch.load_run("runs/breast-cancer-mlp")
    run.trials().head()                 # one row per trial: number, state, value, params, ...
    run.best()                          # {"number", "value", "metric", "params", "model"}
    run.predictions(3, "holdout")       # trial 3's saved holdout predictions (numpy)
    run.model(3)                        # trial 3's Keras model (safe mode), or a tree
                                        # trial's estimator (model.joblib, hash checked)

A cross-validated run (``split.folds``) has out-of-fold predictions (``run.predictions(3,
"oof")``, one per labelled row) and one model per fold (``run.model(3, fold=0)``).

Artifacts are loaded only once their bytes match the SHA-256 their ``trial.json``
recorded (``hpsearch.core.atomic.read_verified``); a run directory with a symbolic link
out of it is refused (``RunDir.check_links``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpsearch.core.errors import RunDirError, UserError
from hpsearch.core.remote import STATUS_FILES, is_uri, local_copy
from hpsearch.core.store import (
    PRED_SPLITS,
    RUN_JSON,
    SPEC_YAML,
    RunDir,
    fold_model_name,
    model_name,
    trial_dirname,
)

if TYPE_CHECKING:
    import numpy as np
    import optuna
    import pandas as pd

    from hpsearch.core.spec import Spec

__all__ = ["TRIAL_COLUMNS", "Run", "load_run", "read_trial_rows"]

TRIAL_COLUMNS = (
    "number",
    "state",
    "value",
    "params",
    "duration_s",
    "epochs",
    "n_params",
    "reason",
    "hostname",
    "node_id",
    "interrupted",
    "fold_values",  # cross-validated runs: the metric on each fold's held-out rows
)
STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
DAMAGED_REASON = "damaged, run again"  # the reason of a trial --resume moved aside and reran


def load_run(path: str | os.PathLike) -> Run:
    """The run at ``path`` (a run directory or a URI such as ``s3://bucket/runs/x``)."""
    return Run(path)


class Run:
    """A run directory made by ``hpsearch run``; read-only.

    Args:
        path: the run directory, or the URI of one (``s3://``, ``gs://``, ``file://``).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = str(path) if is_uri(str(path)) else str(Path(path))
        self.summary: Any = None  # the search's summary, when returned by ``hpsearch.run``
        with local_copy(self.path, include=(RUN_JSON,)) as (local, _):
            self.meta: dict[str, Any] = RunDir(local).read_meta()

    def __repr__(self) -> str:
        return f"Run({self.path!r}, name={self.name!r})"

    @property
    def name(self) -> str:
        return str(self.meta.get("name"))

    @property
    def metric(self) -> str:
        return str(self.meta.get("metric"))

    @property
    def direction(self) -> str:
        return str(self.meta.get("direction"))

    @property
    def folds(self) -> int | None:
        """The number of cross-validation folds (``split.folds``); None for a
        train/valid/holdout run."""
        k = (self.meta.get("split") or {}).get("folds")
        return int(k) if k else None

    @property
    def spec(self) -> Spec:
        """The frozen spec the run was made from (``spec.yaml``; paths relative to the run)."""
        from hpsearch.core.spec import load_spec

        with local_copy(self.path, include=(SPEC_YAML,)) as (local, _):
            return load_spec(Path(local) / SPEC_YAML, frozen=True)

    # -- trials -------------------------------------------------------------------------
    def trial_rows(self) -> list[dict[str, Any]]:
        """One dict per study trial (the columns of :data:`TRIAL_COLUMNS`)."""
        with local_copy(self.path, include=STATUS_FILES) as (local, _):
            return read_trial_rows(local)[1]

    def trials(self, state: str | None = None) -> pd.DataFrame:
        """One row per trial, in trial order; ``state`` keeps one state (``"COMPLETE"``,
        ``"FAIL"``, ``"PRUNED"``, ``"RUNNING"``)."""
        import pandas as pd

        if state is not None and str(state).upper() not in STATES:
            raise UserError(
                f"state {state!r} is not a trial state. Fix: use one of {', '.join(STATES)}, "
                "or leave it out for every trial."
            )
        rows = self.trial_rows()
        if state is not None:
            rows = [r for r in rows if r["state"] == str(state).upper()]
        return pd.DataFrame(rows, columns=list(TRIAL_COLUMNS))

    def ranked(self) -> list[dict[str, Any]]:
        """The COMPLETE trials, best first by the run's metric."""
        return sorted_complete(self.meta, self.trial_rows())

    def best(self) -> dict[str, Any]:
        """The best COMPLETE trial: number, value, metric, params, and its model's path (None
        when its trial function saved no model)."""
        ranked = self.ranked()
        if not ranked:
            raise UserError(
                f"{self.path}: no COMPLETE trial yet. Fix: run or resume the search first."
            )
        top = ranked[0]
        tdir = f"{self.path}/trials/{trial_dirname(top['number'])}"
        fmt = top.get("model_format") or "keras"
        names = (
            [fold_model_name(k, fmt) for k in range(self.folds)]
            if self.folds
            else [model_name(fmt)]
        )
        models = [f"{tdir}/{name}" for name in names]
        if not is_uri(self.path) and not all(Path(m).is_file() for m in models):
            models = []  # a trial function that saves no model
        best = {
            "number": top["number"],
            "value": top["value"],
            "metric": self.metric,
            "params": top["params"],
            "model": None if self.folds else (models[0] if models else None),
        }
        if self.folds:  # one model per fold; the value is the out-of-fold metric
            best.update(folds=self.folds, fold_values=top["fold_values"], fold_models=models)
        return best

    def status(self) -> dict[str, Any]:
        """Name, space, task, metric and direction, trial counts by state, and the best trial."""
        rows = self.trial_rows()
        counts: dict[str, int] = {}
        for r in rows:
            if r["reason"] == DAMAGED_REASON and r["interrupted"]:
                key = f"{r['state']} ({DAMAGED_REASON})"
            else:
                key = r["state"] + (" (interrupted, re-queued)" if r["interrupted"] else "")
            counts[key] = counts.get(key, 0) + 1
        ranked = sorted_complete(self.meta, rows)
        m = self.meta
        return {
            "name": m.get("name"),
            "path": self.path,
            "space": m.get("space"),
            "family": m.get("family"),
            "task": m.get("task"),
            "metric": m.get("metric"),
            "direction": m.get("direction"),
            "folds": self.folds,
            "trials": dict(sorted(counts.items())),
            "best": {"number": ranked[0]["number"], "value": ranked[0]["value"]}
            if ranked
            else None,
        }

    # -- artifacts ----------------------------------------------------------------------
    def predictions(self, trial: int, split: str) -> np.ndarray:
        """Trial ``trial``'s saved predictions on ``split`` (valid, holdout or test; oof and
        test for a cross-validated run): class probabilities for classification (binary: of
        class 1), values for regression. Loaded once the file's bytes match the SHA-256 its
        ``trial.json`` recorded."""
        if split not in PRED_SPLITS:
            raise UserError(
                f"split {split!r} has no predictions. Fix: use one of {', '.join(PRED_SPLITS)}."
            )
        rel = f"trials/{trial_dirname(int(trial))}"
        with local_copy(self.path, include=(f"{rel}/trial.json", f"{rel}/{split}_pred.npy")) as (
            local,
            _,
        ):
            return self._record(local, trial).predictions(split)

    def model(self, trial: int, fold: int | None = None) -> Any:
        """Trial ``trial``'s model once its bytes match the SHA-256 its ``trial.json``
        recorded: a Keras model loaded in safe mode (no code from the file runs), or for a
        tree family's trial (``model_format: joblib``) the fitted estimator, unpickled from
        those checked bytes only. A cross-validated trial has one model per fold: ``fold``
        picks it (0 .. K-1)."""
        from hpsearch.core.store import TRIAL_FIX, load_joblib_model, load_keras_model

        rel = f"trials/{trial_dirname(int(trial))}"
        stem = "model" if fold is None else f"model_fold{_fold_number(fold)}"
        include = (f"{rel}/trial.json", f"{rel}/{stem}.keras", f"{rel}/{stem}.joblib")
        with local_copy(self.path, include=include) as (local, _):
            rec = self._record(local, trial)
            self._check_fold(rec, trial, fold)
            data = rec.model_bytes() if fold is None else rec.fold_model_bytes(int(fold))
            if data is None:
                raise UserError(
                    f"trial {trial} of {self.path} has no saved model: its trial function did "
                    "not save one. Fix: pick a trial trained by the Keras or trees trainer."
                )
            if rec.model_format == "joblib":
                return load_joblib_model(data)
            name = f"{stem}.keras"
            tdir = f"{self.path}/{rel}" if is_uri(self.path) else str(Path(self.path, rel))
            return load_keras_model(
                data,
                path=f"{tdir}/{name}",
                who=f"trial {int(trial)}",
                fix=TRIAL_FIX.format(path=tdir),
            )

    def _check_fold(self, rec: Any, trial: int, fold: int | None) -> None:
        """``UserError`` when ``fold`` does not name one of the trial's fold models: missing
        for a cross-validated trial, given for another, or out of range."""
        k = rec.folds
        if k and fold is None:
            raise UserError(
                f"trial {trial} of {self.path} is cross-validated: it has one model per fold "
                f"({k} folds), no single model. Fix: pick one with fold=0 .. {k - 1}, for "
                f"example run.model({trial}, fold=0)."
            )
        if not k and fold is not None:
            raise UserError(
                f"fold={fold}: trial {trial} of {self.path} is not cross-validated; it has one "
                f"model. Fix: leave fold out (run.model({trial}))."
            )
        if k and not 0 <= int(fold) < k:
            raise UserError(
                f"fold={fold}: trial {trial} of {self.path} has {k} folds. Fix: pick a fold "
                f"from 0 to {k - 1}."
            )

    def _record(self, local: Path, trial: int) -> Any:
        rd = RunDir(local)
        rd.check_links()
        rec = rd.read_trial(int(trial))
        if rec is None:
            raise UserError(
                f"{self.path} has no finished trial {trial}. Fix: pick a number from "
                "`run.trials()` (or `hpsearch trials RUN_DIR`)."
            )
        return rec


def _fold_number(fold: Any) -> int:
    """``fold`` as an int; ``UserError`` for anything else."""
    if isinstance(fold, bool) or not isinstance(fold, int):
        try:
            import numpy as np

            if isinstance(fold, np.integer):
                return int(fold)
        except ImportError:  # pragma: no cover
            pass
        raise UserError(f"fold={fold!r}: not a fold number. Fix: give an int, e.g. fold=0.")
    return int(fold)


def read_trial_rows(run_dir: str | os.PathLike) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The run's metadata and one row per study trial, for a local run directory."""
    rd = RunDir(run_dir)
    meta = rd.read_meta()
    study = _load_study(rd, meta)
    trials = study.get_trials(deepcopy=False)
    # damaged trials that --resume moved aside and ran again (the new trial `replaces` them)
    replaced = {int(t.user_attrs["replaces"]) for t in trials if "replaces" in t.user_attrs}
    rows = []
    for t in trials:
        rec = rd.read_trial(t.number)
        row = _trial_row(t, rec.info if rec else {})
        if t.number in replaced:
            row["interrupted"], row["reason"] = True, DAMAGED_REASON
        rows.append(row)
    return meta, rows


def _load_study(rd: RunDir, meta: dict[str, Any]) -> optuna.Study:
    import optuna

    from hpsearch.core.spec import storage_url_to_open

    rd.check_storage()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        url = storage_url_to_open(rd.storage_url(), f"run directory {rd.path}")  # redacted?
        return optuna.load_study(study_name=meta["study_name"], storage=url)
    except KeyError:
        raise RunDirError(
            f"run directory {rd.path}: its study {meta['study_name']!r} is not in "
            f"{rd.storage_url()}. Fix: restore the run's study storage, or resume the run "
            "(`hpsearch run SPEC --resume`) if no trial was recorded yet."
        ) from None


def _trial_row(t: optuna.trial.FrozenTrial, info: dict[str, Any]) -> dict[str, Any]:
    duration = info.get("duration_s")
    if duration is None and t.datetime_start and t.datetime_complete:
        duration = (t.datetime_complete - t.datetime_start).total_seconds()
    return {
        "number": t.number,
        "state": t.state.name,
        "value": t.value,
        "params": t.user_attrs.get("config") or info.get("params") or dict(t.params),
        "duration_s": duration,
        "epochs": info.get("epochs"),
        "n_params": info.get("n_params"),
        "reason": info.get("reason") or t.user_attrs.get("reason"),
        "hostname": info.get("hostname"),
        "node_id": info.get("node_id"),
        "interrupted": bool(t.user_attrs.get("interrupted") or t.user_attrs.get("requeued")),
        "fold_values": _fold_values(info),
        "model_format": info.get("model_format") or "keras",  # not a column: best()'s files
    }


def _fold_values(info: dict[str, Any]) -> list[float | None] | None:
    """A cross-validated trial's metric on each fold's held-out rows (those done when it
    was pruned), from its ``trial.json``; None for other trials."""
    folds = info.get("folds")
    if not isinstance(info.get("cv"), dict) or not isinstance(folds, list):
        return None
    return [f.get("value") if isinstance(f, dict) else None for f in folds]


def sorted_complete(meta: dict[str, Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The COMPLETE rows, best first by the run's direction (not the damaged trials that
    ``--resume`` ran again)."""
    done = [
        r
        for r in rows
        if r["state"] == "COMPLETE" and r["value"] is not None and not r["interrupted"]
    ]
    return sorted(done, key=lambda r: r["value"], reverse=meta.get("direction") == "maximize")


def rows_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=2, default=str)
