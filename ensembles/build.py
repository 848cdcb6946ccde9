"""Build an ensemble from one or more run directories.

``build_ensemble(run_dirs, ...)`` (the Python side of ``ensembles build``):

1. reads every run's ``run.json`` and refuses runs that cannot be blended
   (different data fingerprint, split, task, metric or classes), and runs with
   no complete trial;
2. loads the first run's data (``hpsearch.core.data.load_prepared``) for the
   holdout targets, the test ids and, when a tree must be fitted, the tree
   matrix;
3. gathers candidates: every complete trial of every run (kind ``network``)
   and the tree models of the first run (kind ``tree``, fitted or reused by
   ``ensembles.trees``), each checked for shape (rows, classes) and finiteness;
4. ranks them by validation score and keeps the best ``top_k`` whose holdout
   errors correlate at most ``max_corr`` (``ensembles.selection``; trees are
   always eligible);
5. fits EVERY blender on the members' holdout predictions and scores it twice:
   *fitted* (in-sample on the holdout rows) and *cross-fitted* (``folds``-fold
   out-of-fold); the blender named by ``method`` is the ensemble;
6. writes ``ensemble.json``, ``holdout_pred.npy``, ``test_pred.npy`` and
   ``submission.csv`` (with a test set), ``report.md`` and plots into a
   temporary sibling directory, then renames it into place. An existing
   target is never overwritten: of two builds with the same name one wins,
   the other gets a UserError, and no reader ever sees a half-written ensemble.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ensembles import report as _report
from hpsearch.core import atomic
from hpsearch.core import metrics as _metrics
from hpsearch.core.errors import RunDirError, UserError
from hpsearch.core.store import RunDir

__all__ = [
    "ENSEMBLE_JSON",
    "EnsembleResult",
    "apply_blend",
    "build_ensemble",
    "load_ensemble",
    "member_weights",
]

FORMAT = 1
ENSEMBLE_JSON = "ensemble.json"


# --------------------------------------------------------------------------- result


@dataclass
class EnsembleResult:
    """A built ensemble: its directory and the content of its ``ensemble.json``."""

    out_dir: Path
    info: dict[str, Any]
    uri: str | None = None  # where it was pushed, for a run at a URI (out_dir was a copy)

    @property
    def method(self) -> str:
        return str(self.info["method"])

    @property
    def scores(self) -> dict[str, dict[str, Any]]:
        return self.info["scores"]

    def summary_text(self) -> str:
        """Methods x fitted / cross-fitted (the chosen one marked) and the members."""
        return _report.summary_text({**self.info, "out_dir": self.uri or str(self.out_dir)})


def load_ensemble(path: str | Path) -> EnsembleResult:
    """The ensemble in directory ``path``; UserError when it holds none."""
    path = Path(path)
    info_path = path / ENSEMBLE_JSON
    if not info_path.is_file():
        raise UserError(
            f"{path} is not an ensemble directory (no {ENSEMBLE_JSON}). "
            "Fix: pass a directory made by `ensembles build`, e.g. RUN_DIR/ensembles/<name>; "
            "`ensembles list RUN_DIR` shows them."
        )
    try:
        info = atomic.read_json(info_path)
    except ValueError as exc:
        raise UserError(f"{info_path} is not valid JSON ({exc}).") from None
    if info.get("format") != FORMAT:
        raise UserError(
            f"{info_path} has format {info.get('format')!r}; this version reads format {FORMAT}. "
            "Fix: build the ensemble again."
        )
    return EnsembleResult(path, info)


# --------------------------------------------------------------------------- blends


def apply_blend(blend: dict[str, Any], P: np.ndarray) -> np.ndarray:
    """The blended prediction of member predictions ``P`` ((m, n) or (m, n, K)) from the
    ``blend`` entry of ``ensemble.json``."""
    P = np.asarray(P, dtype=np.float64)
    if blend["method"] != "stack":
        return np.tensordot(np.asarray(blend["weights"], dtype=np.float64), P, axes=1)
    from sklearn.linear_model import LogisticRegression, Ridge

    from ensembles.blenders import StackingBlender

    stack = StackingBlender()
    stack.task_ = blend["task"]
    stack.n_classes_ = int(blend["n_classes"])
    stack.n_members_ = P.shape[0]
    if stack.task_ == "regression":
        meta = Ridge()
        meta.coef_ = np.asarray(blend["coef"], dtype=np.float64)
        meta.intercept_ = float(blend["intercept"])
    else:
        meta = LogisticRegression()
        meta.coef_ = np.asarray(blend["coef"], dtype=np.float64)
        meta.intercept_ = np.asarray(blend["intercept"], dtype=np.float64)
        meta.classes_ = np.asarray(blend["classes"], dtype=np.int64)
    stack.meta_ = meta
    return stack._predict(P)


def _blend_entry(blender: Any, method: str, task: str, n_classes: int) -> dict[str, Any]:
    if method != "stack":
        entry: dict[str, Any] = {
            "method": method,
            "weights": [float(w) for w in np.asarray(blender.weights_)],
        }
        if method == "nelder-mead":
            entry["start"] = blender.start_
            entry["fell_back"] = bool(blender.fell_back_)
        return entry
    meta = blender.meta_
    entry = {"method": "stack", "task": task, "n_classes": int(n_classes)}
    if task == "regression":
        entry.update(
            {
                "coef": np.asarray(meta.coef_, dtype=float).ravel().tolist(),
                "intercept": float(meta.intercept_),
                "alpha": float(blender.alpha),
            }
        )
    else:
        entry.update(
            {
                "coef": np.asarray(meta.coef_, dtype=float).tolist(),
                "intercept": np.asarray(meta.intercept_, dtype=float).tolist(),
                "classes": [int(c) for c in meta.classes_],
                "C": float(blender.C),
            }
        )
    return entry


def member_weights(blend: dict[str, Any], n_members: int) -> list[float]:
    """One number per member: the blend weight, or for ``stack`` the meta-model coefficient
    (multiclass: the member's share of the absolute coefficients)."""
    if blend["method"] != "stack":
        return [float(w) for w in blend["weights"]]
    coef = np.asarray(blend["coef"], dtype=np.float64)
    if blend["task"] != "multiclass":
        return [float(c) for c in coef.ravel()]
    k = int(blend["n_classes"])
    per = np.array([np.abs(coef[:, j * k : (j + 1) * k]).sum() for j in range(n_members)])
    total = per.sum()
    return [float(v) for v in (per / total if total > 0 else per)]


# --------------------------------------------------------------------------- candidates


@dataclass
class _Candidate:
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

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "kind": self.kind, "run": str(self.run)}
        if self.kind == "network":
            out["trial"] = self.trial
            out["target_scaling"] = self.target_scaling
        else:
            out["tree"] = self.tree
            out["fit_id"] = self.fit_id
        return out


def _expected_shape(task: str, n_rows: int, k: int) -> tuple[int, ...]:
    return (n_rows, k) if task == "multiclass" else (n_rows,)


def _checked_prediction(
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


def _network_candidates(
    rd: RunDir,
    records: list[Any],
    prefix: str,
    task: str,
    classes: list[Any] | None,
    n_holdout: int,
    n_test: int | None,
) -> list[_Candidate]:
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
            if not path.exists():
                raise RunDirError(f"{who}: {split} prediction file {path} is missing. Fix: {fix}")
            try:
                raw = rec.predictions(split)
            except RunDirError as exc:
                raise RunDirError(
                    f"{who}: {split} prediction file {path} is truncated or unreadable "
                    f"({exc.__cause__ or exc}). Fix: {fix}"
                ) from exc
            preds[split] = _checked_prediction(
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
            _Candidate(
                label=f"{prefix}trial_{rec.number}",
                kind="network",
                run=rd.path.resolve(),
                valid_score=None if value is None else float(value),
                holdout=preds["holdout"],
                test=preds.get("test"),
                trial=rec.number,
                target_scaling=rec.info.get("target_scaling"),
            )
        )
    return out


def _tree_candidates(
    records: list[Any],
    run: Path,
    task: str,
    classes: list[Any] | None,
    n_holdout: int,
    n_test: int | None,
) -> list[_Candidate]:
    out = []
    for rec in records:
        who = f"tree {rec.name} of run {run}"
        fix = f"delete {rec.path}; the next build fits the tree again."
        preds = {}
        for split, n_rows in (("holdout", n_holdout), ("test", n_test)):
            if n_rows is None:
                continue
            preds[split] = _checked_prediction(
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
            _Candidate(
                label=rec.name,
                kind="tree",
                run=run,
                valid_score=rec.value,
                holdout=preds["holdout"],
                test=preds.get("test"),
                tree=rec.name,
                fit_id=rec.info.get("fit_id"),
            )
        )
    return out


# --------------------------------------------------------------------------- checks


def _as_runs(run_dirs: str | Path | Iterable[str | Path]) -> list[RunDir]:
    if isinstance(run_dirs, str | Path):
        run_dirs = [run_dirs]
    runs = [RunDir(Path(p)) for p in run_dirs]
    if not runs:
        raise UserError("no run directory given. Fix: pass at least one RUN_DIR.")
    seen: dict[Path, Path] = {}
    for rd in runs:
        key = rd.path.resolve()
        if key in seen:
            raise UserError(f"run directory {rd.path} is given twice. Fix: name each run once.")
        seen[key] = rd.path
    return runs


def _check_compatible(runs: list[RunDir], metas: list[dict[str, Any]]) -> None:
    first, m0 = runs[0], metas[0]
    for rd, m in zip(runs[1:], metas[1:], strict=True):
        reasons = []
        if m.get("split") != m0.get("split"):
            reasons.append(f"their splits differ ({m0.get('split')} vs {m.get('split')})")
        elif m.get("data_fingerprint") != m0.get("data_fingerprint"):
            reasons.append(
                "their data fingerprints differ (different data, target or preprocessing)"
            )
        for key in ("task", "metric", "classes"):
            if m.get(key) != m0.get(key):
                reasons.append(f"their {key} differs ({m0.get(key)!r} vs {m.get(key)!r})")
        if bool(m.get("has_test")) != bool(m0.get("has_test")):
            reasons.append("one has a test set (`data.test`) and the other not")
        elif _test_hash(rd) != _test_hash(first):
            reasons.append("their test sets differ")
        if reasons:
            raise RunDirError(
                f"runs {first.path} and {rd.path} cannot be blended: {'; '.join(reasons)}. "
                "Fix: ensemble only runs made from the same data, split, task and metric."
            )


def _test_hash(run: RunDir) -> str | None:
    path = run.data_dir / "split.json"
    return atomic.read_json(path).get("test_hash") if path.exists() else None


@dataclass
class _Options:
    top_k: int | None
    max_corr: float
    trees: tuple[str, ...]
    method: str
    folds: int


AUTO = "auto"  # the method with the best cross-fitted score


def _pick_auto(scores: dict[str, dict[str, Any]], direction: str) -> str:
    """The blender whose cross-fitted score is best; ties go to the simpler method
    (BLENDERS order: best, mean, greedy, nelder-mead, stack)."""
    from ensembles.blenders import best_method

    cross = {m: e.get("cross_fitted") for m, e in scores.items()}
    return best_method(cross, direction) or "nelder-mead"


def _options(ens: Any, top_k, max_corr, trees, method, folds) -> _Options:
    from ensembles.blenders import BLENDERS
    from ensembles.trees import check_tree_names

    top_k = ens.top_k if top_k is None else top_k
    max_corr = ens.max_corr if max_corr is None else max_corr
    trees = ens.trees if trees is None else trees
    method = ens.method if method is None else method
    folds = ens.folds if folds is None else folds
    if method != AUTO and method not in BLENDERS:
        raise UserError(
            f"unknown blend method {method!r}; valid methods: {AUTO}, {', '.join(BLENDERS)}."
        )
    if top_k is not None and (isinstance(top_k, bool) or int(top_k) < 1):
        raise UserError(f"top_k must be at least 1; got {top_k!r}.")
    if not (0.0 < float(max_corr) <= 1.0):
        raise UserError(f"max_corr must be in (0, 1]; got {max_corr!r}.")
    if isinstance(folds, bool) or int(folds) < 2:
        raise UserError(f"folds must be at least 2; got {folds!r}.")
    return _Options(
        top_k=None if top_k is None else int(top_k),
        max_corr=float(max_corr),
        trees=check_tree_names(trees),
        method=method,
        folds=int(folds),
    )


def _check_name(name: str) -> str:
    if not name or name.startswith(".") or "/" in name or os.sep in name or name in ("..",):
        raise UserError(
            f"ensemble name {name!r} is not a plain directory name. "
            "Fix: use letters, digits, '-' or '_', e.g. --name nm-top5."
        )
    return name


def _target(run: RunDir, out: str | Path | None, name: str | None, method: str):
    """(directory, automatic name?)."""
    if out is not None and name is not None:
        raise UserError("give an output directory or a name, not both.")
    if out is not None:
        return Path(out), False
    if name is not None:
        return run.ensembles_dir / _check_name(name), False
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return run.ensembles_dir / f"{method}-{stamp}", True


def _exists_error(path: Path) -> UserError:
    return UserError(
        f"ensemble directory {path} already exists; ensembles are never overwritten. "
        "Fix: choose another --name or --out, or remove that directory."
    )


def _free_name(path: Path) -> Path:
    if not path.exists():
        return path
    for i in range(2, 1000):
        cand = path.with_name(f"{path.name}-{i}")
        if not cand.exists():
            return cand
    raise _exists_error(path)


# --------------------------------------------------------------------------- build


def _labeller(runs: list[RunDir], metas: list[dict[str, Any]]) -> list[str]:
    if len(runs) == 1:
        return [""]
    names = [str(m.get("name")) for m in metas]
    if len(set(names)) == len(names):
        return [f"{n}/" for n in names]
    dirs = [rd.path.name for rd in runs]
    if len(set(dirs)) == len(dirs):
        return [f"{d}/" for d in dirs]
    return [f"run{i}/" for i in range(len(runs))]


def _test_layout(spec: Any, prepared: Any, id_column: str | None):
    from hpsearch.core.data import load_table
    from hpsearch.core.submission import submission_layout

    sample = None
    if spec.data.sample_submission:
        sample = load_table(spec.data.sample_submission)
    layout = submission_layout(
        prepared.task, prepared.target.name, prepared.classes, id_column, sample, spec.metric
    )
    ids = np.asarray(prepared.ids["test"])
    if (
        sample is not None
        and not (spec.data.id and spec.data.id == layout["id_column"])
        and layout["id_column"] in sample.columns
    ):
        ids = sample[layout["id_column"]].to_numpy()
    return layout, ids


def build_ensemble(
    run_dirs: str | Path | Sequence[str | Path],
    top_k: int | None = None,
    max_corr: float | None = None,
    trees: Iterable[str] | str | None = None,
    method: str | None = None,
    folds: int | None = None,
    out: str | Path | None = None,
    name: str | None = None,
    progress: bool = False,
    seed: int = 0,
    run_names: Sequence[str] | None = None,
) -> EnsembleResult:
    """Build an ensemble of the finished trials (and tree models) of ``run_dirs``.

    Args:
        run_dirs: one or more run directories made from the same data and split,
            paths or URIs (``s3://...``; see :func:`_build_at_uris`).
        top_k: at most this many networks (trees do not count); default from the
            first run's spec (``ensemble.top_k``), as for every option below.
        max_corr: drop a candidate whose holdout errors correlate above this with a
            better kept one.
        trees: tree models to fit (or reuse) and offer as candidates: rf, et, hgb
            (lgbm, xgb when installed); ``()`` for none.
        method: the blender that makes the ensemble: best, mean, greedy,
            nelder-mead or stack. Every blender is fitted and scored anyway.
        folds: folds for the cross-fitted scores.
        out: the ensemble directory (default ``RUN_DIR/ensembles/<name>`` of the
            first run); it must not exist.
        name: the ensemble's name under ``RUN_DIR/ensembles/`` (default
            ``<method>-<timestamp>``).
        progress: progress lines on stderr.
        seed: seed of the cross-fitting folds.
        run_names: how ``ensemble.json`` and the report name the runs (default:
            their absolute paths).

    Returns:
        EnsembleResult with ``out_dir`` and ``info`` (the ``ensemble.json`` content).
    """
    from ensembles.blenders import BLENDERS, cross_fit_score, get_blender, nested_auto_score
    from ensembles.selection import correlation_matrix, select_diverse
    from ensembles.trees import ensure_trees
    from hpsearch.core.data import load_prepared
    from hpsearch.core.remote import is_uri
    from hpsearch.core.spec import load_spec

    if isinstance(run_dirs, str | Path):
        run_dirs = [run_dirs]
    run_dirs = list(run_dirs)
    options = dict(top_k=top_k, max_corr=max_corr, trees=trees, method=method, folds=folds)
    if any(is_uri(str(r)) for r in run_dirs):
        return _build_at_uris(run_dirs, out=out, name=name, progress=progress, seed=seed, **options)
    log = _logger(progress)
    runs = _as_runs(run_dirs)
    metas = [rd.read_meta() for rd in runs]
    _check_compatible(runs, metas)
    meta0, run0 = metas[0], runs[0]
    spec = load_spec(run0.path / "spec.yaml")
    opts = _options(spec.ensemble, top_k, max_corr, trees, method, folds)
    target, auto = _target(run0, out, name, opts.method)
    if auto:
        target = _free_name(target)
    elif target.exists():
        raise _exists_error(target)

    records = []
    for rd in runs:
        done = rd.trials("COMPLETE")
        if not done:
            raise RunDirError(
                f"run {rd.path} has no complete trials; run `hpsearch run SPEC` first "
                "(or `hpsearch run SPEC --resume` to continue it)."
            )
        records.append(done)

    log(f"loading the data of {run0.path}...")
    prepared = load_prepared(run0.path, spec)
    task, metric, classes = meta0["task"], meta0["metric"], meta0.get("classes")
    y = np.asarray(prepared.y["holdout"])
    n_holdout = len(y)
    has_test = "test" in prepared.x
    n_test = len(prepared.ids["test"]) if has_test else None

    candidates: list[_Candidate] = []
    for rd, recs, prefix in zip(runs, records, _labeller(runs, metas), strict=True):
        log(f"reading {len(recs)} complete trial(s) of {rd.path}...")
        candidates += _network_candidates(rd, recs, prefix, task, classes, n_holdout, n_test)
    tree_recs = ensure_trees(
        run0.path,
        opts.trees,
        fingerprint=prepared.fingerprint,
        task=task,
        metric=metric,
        seed=int(prepared.split.get("seed", 0) or 0),
        has_test=has_test,
        load_prepared=lambda: prepared,
        log=log,
    )
    candidates += _tree_candidates(tree_recs, run0.path.resolve(), task, classes, n_holdout, n_test)

    labels = [c.label for c in candidates]
    P_all = np.stack([c.holdout for c in candidates])
    selection = select_diverse(
        labels,
        [c.valid_score for c in candidates],
        P_all,
        y,
        task,
        metric,
        opts.top_k,
        opts.max_corr,
        always=[c.label for c in candidates if c.kind == "tree"],
    )
    if not selection.selected:
        raise UserError(
            "no candidate is left after selection ("
            + "; ".join(f"{k}: {v}" for k, v in selection.dropped.items())
            + "). Fix: raise --top-k or --max-corr."
        )
    by_label = {c.label: c for c in candidates}
    members = [by_label[lb] for lb in selection.selected]
    log(
        f"selected {len(members)} of {len(candidates)} candidate(s) "
        f"(top_k {opts.top_k}, max_corr {opts.max_corr})"
    )
    P = np.stack([c.holdout for c in members])

    scores: dict[str, dict[str, Any]] = {}
    fitted: dict[str, Any] = {}
    for m in BLENDERS:
        log(f"blending: {m}...")
        blender = get_blender(m, metric=metric)
        try:
            blender.fit(P, y)
        except ValueError as exc:
            if m == opts.method:
                raise UserError(f"blend method {m!r} cannot be fitted here: {exc}") from exc
            scores[m] = {"fitted": None, "cross_fitted": None, "error": str(exc)}
            continue
        entry: dict[str, Any] = {"fitted": float(blender.fitted_score_), "cross_fitted": None}
        try:
            entry["cross_fitted"] = cross_fit_score(
                get_blender(m, metric=metric), P, y, metric, folds=opts.folds, seed=seed
            )
        except ValueError as exc:
            entry["error"] = f"cross-fitting failed: {exc}"
        scores[m] = entry
        fitted[m] = blender
    requested = opts.method
    method = (
        _pick_auto(scores, _metrics.get_metric(metric).direction)
        if requested == AUTO
        else requested
    )
    if method not in fitted:  # every blender but a few failed to fit: take one that did
        method = next(iter(fitted))
    if requested == AUTO:
        log(f"auto: {method} has the best cross-fitted {metric}; nested cross-fitting...")
        auto_entry: dict[str, Any] = {"fitted": scores[method]["fitted"], "cross_fitted": None}
        try:
            nested, per_fold = nested_auto_score(
                P, y, metric, [m for m in BLENDERS if m in fitted], folds=opts.folds, seed=seed
            )
        except ValueError as exc:
            auto_entry["error"] = f"nested cross-fitting failed: {exc}"
        else:
            auto_entry.update(cross_fitted=nested, chosen=method, chosen_per_fold=per_fold)
        scores[AUTO] = auto_entry
    chosen = fitted[method]
    n_classes = len(classes or [])
    blend = _blend_entry(chosen, method, task, n_classes)
    weights = member_weights(blend, len(members))
    holdout_pred = apply_blend(blend, P)
    test_pred = apply_blend(blend, np.stack([c.test for c in members])) if has_test else None

    def _score(pred):
        return float(_metrics.score(metric, y, pred))

    member_info = [
        {
            **c.record(),
            "weight": w,
            "valid_score": _nan_to_none(c.valid_score),
            "holdout_score": _score(c.holdout),
        }
        for c, w in zip(members, weights, strict=True)
    ]
    dropped = [
        {
            **by_label[lb].record(),
            "valid_score": _nan_to_none(by_label[lb].valid_score),
            "reason": reason,
        }
        for lb, reason in selection.dropped.items()
    ]
    C = correlation_matrix(P, y, task)
    info: dict[str, Any] = {
        "format": FORMAT,
        "name": target.name,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "method": method,
        "requested_method": requested,
        "metric": metric,
        "direction": _metrics.get_metric(metric).direction,
        "task": task,
        "classes": classes,
        "target": prepared.target.name,
        "id_column": _id_column(run0),
        "runs": list(run_names) if run_names else [str(rd.path.resolve()) for rd in runs],
        "data_fingerprint": prepared.fingerprint,
        "n_holdout": n_holdout,
        "n_test": n_test,
        "top_k": opts.top_k,
        "max_corr": opts.max_corr,
        "trees": list(opts.trees),
        "folds": opts.folds,
        "seed": seed,
        "members": member_info,
        "dropped": dropped,
        "scores": scores,
        "holdout_score": _score(holdout_pred),
        "blend": blend,
        "correlation": {"labels": [c.label for c in members], "matrix": C.tolist()},
    }
    layout, ids = (None, None)
    if has_test:
        layout, ids = _test_layout(spec, prepared, _id_column(run0))
        info["submission"] = layout
    local = [str(rd.path.resolve()) for rd in runs]
    out_dir = _write(target, auto, info, local, holdout_pred, test_pred, layout, ids, log)
    log(f"wrote {out_dir}")
    return EnsembleResult(out_dir, info)


def _build_at_uris(
    run_dirs: list[str | Path], *, out: str | Path | None, **options: Any
) -> EnsembleResult:
    """:func:`build_ensemble` on temporary local copies of the runs at URIs (without their
    trained networks, which a build does not read). The trees fitted in the first run and
    an ensemble written into it are pushed back to its URI (``ensemble.json`` last);
    ``ensemble.json`` names each run by its URI."""
    from ensembles.trees import TREE_JSON, TREES_DIR
    from hpsearch.core.remote import HEAVY, is_uri, local_copy

    if out is not None and is_uri(str(out)):
        raise UserError(
            f"--out {out}: the ensemble directory must be a local path. Fix: leave --out out "
            "(give --name instead) to write the ensemble into the run at its URI."
        )

    def stamps(run: Path) -> dict[str, bytes]:
        return {p.parent.name: p.read_bytes() for p in (run / TREES_DIR).glob(f"*/{TREE_JSON}")}

    log = _logger(bool(options.get("progress")))
    with contextlib.ExitStack() as stack:
        log("copying the runs at URIs to a temporary directory...")
        copies = [stack.enter_context(local_copy(r, exclude=HEAVY)) for r in run_dirs]
        run0, remote0 = copies[0]
        before = stamps(run0)
        names = [r.uri if r is not None else str(p.resolve()) for p, r in copies]
        result = build_ensemble([p for p, _ in copies], out=out, run_names=names, **options)
        if remote0 is None:
            return result
        for tree, stamp in stamps(run0).items():
            if before.get(tree) != stamp:
                remote0.push_tree(f"{TREES_DIR}/{tree}")
        try:
            rel = result.out_dir.resolve().relative_to(run0.resolve()).as_posix()
        except ValueError:  # --out: the ensemble stays where it was asked to be
            return result
        remote0.push_tree(rel)
        result.uri = f"{remote0.uri}/{rel}"
        log(f"pushed {result.uri}")
        return result


def _id_column(run: RunDir) -> str | None:
    path = run.data_dir / "columns.json"
    if not path.exists():
        return None
    return atomic.read_json(path).get("id")


def _logger(progress: bool) -> Callable[[str], None]:
    def log(msg: str) -> None:
        if progress:
            print(msg, file=sys.stderr, flush=True)

    return log


def _write(
    target: Path,
    auto: bool,
    info: dict[str, Any],
    run_paths: list[str],
    holdout_pred: np.ndarray,
    test_pred: np.ndarray | None,
    layout: dict[str, Any] | None,
    ids: np.ndarray | None,
    log: Callable[[str], None],
) -> Path:
    from hpsearch.core.submission import submission_frame

    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        atomic.write_npy(tmp / "holdout_pred.npy", holdout_pred)
        if test_pred is not None:
            atomic.write_npy(tmp / "test_pred.npy", test_pred)
            frame = submission_frame(layout, ids, test_pred, info["classes"])
            atomic.write_text(tmp / "submission.csv", frame.to_csv(index=False))
        log("writing the report and plots...")
        while True:
            info["runs_relative"] = [os.path.relpath(r, target.resolve()) for r in run_paths]
            _report.write_report(tmp, info)
            atomic.write_json(tmp / ENSEMBLE_JSON, info)
            try:
                os.rename(tmp, target)
                return target
            except OSError:
                if not target.exists():
                    raise
                if not auto:
                    raise _exists_error(target) from None
                target = _free_name(target)  # a build in the same second took the name
                info["name"] = target.name
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _nan_to_none(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value
