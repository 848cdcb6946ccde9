"""Build an ensemble from one or more run directories.

``build_ensemble(run_dirs, ...)`` (the Python side of ``ensembles build``; the public
``ensembles.build`` calls it) runs five steps, each a function below:

1. **read runs** (``_read_runs``): every run's ``run.json``; a run with a symbolic link
   out of it (or where ensembles writes) is refused, and so are runs that cannot be
   blended (different data fingerprint, split, task, metric or classes); then the
   options are checked and the target directory claimed, and runs with no complete
   trial are refused;
2. **candidates** (``_gather_candidates``): the first run's data
   (``hpsearch.core.data.load_prepared``) gives the targets of the *fit split*, the test
   ids and, when a tree must be fitted, the tree matrix; every complete trial of every run
   (kind ``network``) and the tree models of the first run (kind ``tree``, fitted or
   reused by ``ensembles.trees``) are candidates (``ensembles.candidates``);
3. **select** (``_select``): among the candidates within ``margin`` x the spread of the
   scores of the best (eligible), the best ``top_k`` by validation score whose fit-split
   errors correlate at most ``max_corr`` (``ensembles.selection``; trees skip ``top_k``);
4. **blend** (``_fit_blend``): ``AutoBlender`` fits EVERY blender on the members'
   fit-split predictions and scores it *fitted* (in-sample) and *cross-fitted*
   (``folds``-fold out-of-fold); ``auto`` keeps the best cross-fitted, a named
   ``method`` is kept as asked; with ``refit``, the members the blend uses are then
   trained again on every labelled row (``_refit``, ``ensembles.refit``) and the test
   blend reads their test predictions;
5. **write** (``_write``): ``ensemble.json`` (with the SHA-256 of the ensemble's own files
   and of each member's JSON and model(s), which ``ensembles.predict`` checks before
   loading anything), ``holdout_pred.npy`` (``oof_pred.npy``), ``test_pred.npy`` and
   ``submission.csv`` (with a test set), ``report.md`` and plots into a temporary
   sibling directory, then renamed into place. An existing target is never
   overwritten: of two builds with the same name one wins, the other gets a
   UserError, and no reader ever sees a half-written ensemble.

The fit split is the runs' ``holdout`` rows for train/valid/holdout runs. For
cross-validated runs (``split.folds``; ``"mode": "cv"`` in ``ensemble.json``) it is
``oof``: every labelled row, each predicted by the fold model that did not see it
(``oof_pred.npy`` of trials and trees, targets ``prepared.y["train"]``), and the test
blend uses the fold-averaged ``test_pred.npy``. Runs blended together must have the same
folds (``folds_fingerprint`` of ``data/split.json``); a cross-validated run and a holdout
run are never blended together.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import difflib
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
from ensembles.candidates import (
    FIT_SPLITS,
    Candidate,
    network_candidates,
    run_labels,
    tree_candidates,
)
from ensembles.ensemble import ENSEMBLE_JSON, FORMAT, Ensemble, EnsembleResult, load_ensemble
from hpsearch.core import atomic
from hpsearch.core import metrics as _metrics
from hpsearch.core.errors import RunDirError, UserError
from hpsearch.core.registry import BLENDERS as _BLENDERS
from hpsearch.core.store import RunDir, read_run_json

__all__ = [
    "AUTO",
    "ENSEMBLE_JSON",
    "Ensemble",
    "EnsembleResult",
    "build_ensemble",
    "load_ensemble",
]

AUTO = "auto"  # the method with the best cross-fitted score


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
        cv = _check_same_folds(first, rd)
        reasons = []
        if not cv and m.get("split") != m0.get("split"):
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


def _split_info(run: RunDir) -> dict[str, Any]:
    path = run.data_dir / "split.json"
    return read_run_json(path, "split.json") if path.exists() else {}


def _test_hash(run: RunDir) -> str | None:
    return _split_info(run).get("test_hash")


_SAME_FOLDS_FIX = (
    "Fix: blend only runs made from the same data with the same `split.folds` and "
    "`split.seed` (they then share their folds)."
)


def _check_same_folds(first: RunDir, other: RunDir) -> bool:
    """Whether both runs are cross-validated (with the same folds); RunDirError when only
    one is, or when their folds differ (``folds_fingerprint`` of ``data/split.json``)."""
    a, b = _split_info(first), _split_info(other)
    fa = a.get("folds_fingerprint") if a.get("folds") else None
    fb = b.get("folds_fingerprint") if b.get("folds") else None
    if fa is None and fb is None:
        return False
    if (fa is None) != (fb is None):
        cv, holdout = (first, other) if fa is not None else (other, first)
        k = (a if fa is not None else b).get("folds")
        raise RunDirError(
            f"runs {first.path} and {other.path} cannot be blended: {cv.path} is "
            f"cross-validated ({k} folds, out-of-fold predictions of every labelled row) and "
            f"{holdout.path} uses the train/valid/holdout split. {_SAME_FOLDS_FIX}"
        )
    if fa != fb:
        raise RunDirError(
            f"runs {first.path} and {other.path} cannot be blended: their cross-validation "
            f"folds differ ({a.get('folds')} folds, folds fingerprint {fa[:12]} vs "
            f"{b.get('folds')} folds, {fb[:12]}), so their out-of-fold predictions do not "
            f"come from comparable models. {_SAME_FOLDS_FIX}"
        )
    return True


@dataclass
class _Options:
    top_k: int | None
    max_corr: float | None  # None: no correlation filter
    trees: tuple[str, ...]
    method: str
    folds: int
    margin: float | None = None  # None: no eligibility cut
    refit: bool = False  # train the members again on every labelled row (ensembles.refit)


def _check_method(method: Any) -> str:
    """``auto``, a registered blend method or an importable ``module:Class`` blender."""
    from ensembles.blenders import blender_class

    if method == AUTO:
        return AUTO
    if not isinstance(method, str) or _BLENDERS.problem(method):
        valid = [AUTO, *_BLENDERS]
        close = difflib.get_close_matches(str(method), valid, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(
            f"unknown blend method {method!r}; valid methods: {', '.join(valid)}, or "
            f"'module:Class' for your own BaseBlender{hint}."
        )
    try:
        blender_class(method)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return method


OFF = "none"  # max_corr / margin: no correlation filter / no eligibility cut


def _off(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() in (OFF, "null", "off")


def _switchable(value: Any, ok: Callable[[float], bool], message: str) -> float | None:
    """A number option that ``none`` switches off (None); ``UserError(message)`` when it is
    not a number ``ok`` accepts."""
    if value is None or _off(value):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or math.isnan(number) or not ok(number):
        raise UserError(f"{message}; got {value!r}.")
    return number


def _check_max_corr(max_corr: Any) -> float | None:
    return _switchable(
        max_corr,
        lambda v: 0.0 < v <= 1.0,
        "max_corr must be in (0, 1], or 'none' for no correlation filter",
    )


def _check_margin(margin: Any) -> float | None:
    value = _switchable(
        margin, lambda v: v >= 0, "margin must be 0 or more, or 'none' for no eligibility cut"
    )
    return None if value is None or math.isinf(value) else value


def _options(ens: Any, top_k, max_corr, trees, method, folds, margin=None, refit=None) -> _Options:
    from ensembles.trees import check_tree_names

    top_k = ens.top_k if top_k is None else top_k
    max_corr = _check_max_corr(ens.max_corr if max_corr is None else max_corr)
    margin = _check_margin(getattr(ens, "margin", None) if margin is None else margin)
    trees = ens.trees if trees is None else trees
    method = _check_method(ens.method if method is None else method)
    folds = ens.folds if folds is None else folds
    if top_k is not None and (isinstance(top_k, bool) or int(top_k) < 1):
        raise UserError(f"top_k must be at least 1; got {top_k!r}.")
    if isinstance(folds, bool) or int(folds) < 2:
        raise UserError(f"folds must be at least 2; got {folds!r}.")
    refit = bool(getattr(ens, "refit", False)) if refit is None else refit
    if not isinstance(refit, bool):
        raise UserError(f"refit must be true or false; got {refit!r}.")
    return _Options(
        top_k=None if top_k is None else int(top_k),
        max_corr=max_corr,
        trees=check_tree_names(trees),
        method=method,
        folds=int(folds),
        margin=margin,
        refit=refit,
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
    short = method.rsplit(":", 1)[-1]  # a user's module:Class is named by its class
    return run.ensembles_dir / f"{short}-{stamp}", True


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


@dataclass
class _Runs:
    """The runs of a build: their directories, ``run.json`` contents and the first spec."""

    dirs: list[RunDir]
    metas: list[dict[str, Any]]
    spec: Any

    @property
    def first(self) -> RunDir:
        return self.dirs[0]


@dataclass
class _Data:
    """What the build reads from the first run's data. ``y`` holds the targets of the fit
    split: the holdout rows, or every labelled row of a cross-validated run (``mode``
    ``cv``), whose candidates give out-of-fold predictions of them."""

    prepared: Any
    task: str
    metric: str
    classes: list[Any] | None
    y: np.ndarray
    n_test: int | None
    mode: str = "holdout"  # "holdout" | "cv"

    @property
    def fit_split(self) -> str:
        """The prediction split blends are fitted on: ``holdout`` or ``oof``."""
        return FIT_SPLITS[self.mode]

    @property
    def n_fit(self) -> int:
        return len(self.y)

    @property
    def n_holdout(self) -> int:  # the fit rows under their holdout-mode name
        return self.n_fit

    @property
    def cv(self) -> dict[str, Any] | None:
        """``{folds, folds_fingerprint}`` of a cross-validated run; None otherwise."""
        if self.mode != "cv":
            return None
        split = self.prepared.split
        return {"folds": int(split["folds"]), "folds_fingerprint": split["folds_fingerprint"]}

    @property
    def has_test(self) -> bool:
        return self.n_test is not None


@dataclass
class _Blend:
    """The blend step's outcome: the chosen method, its fitted blender, every score."""

    method: str
    requested: str
    entry: dict[str, Any]  # the chosen blender's to_dict(): ensemble.json's `blend`
    blender: Any
    scores: dict[str, dict[str, Any]]


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
    max_corr: float | str | None = None,
    trees: Iterable[str] | str | None = None,
    method: str | None = None,
    folds: int | None = None,
    out: str | Path | None = None,
    name: str | None = None,
    progress: bool = False,
    seed: int = 0,
    run_names: Sequence[str] | None = None,
    margin: float | str | None = None,
    refit: bool | None = None,
) -> Ensemble:
    """Build an ensemble of the finished trials (and tree models) of ``run_dirs``.

    Args:
        run_dirs: one or more run directories made from the same data and split,
            paths or URIs (``s3://...``; see :func:`_build_at_uris`).
        top_k: at most this many networks (trees do not count); default from the
            first run's spec (``ensemble.top_k``), as for every option below.
        max_corr: drop a candidate whose holdout errors correlate above this with a
            better kept one; ``"none"`` (or the spec's ``max_corr: null``): no
            correlation filter.
        margin: a candidate worse than the best by more than ``margin`` x the robust
            spread of the candidates' validation scores is not eligible
            (``ensembles.selection``); ``"none"`` (or ``math.inf``, or the spec's
            ``margin: null``): every candidate is eligible.
        refit: after selection and blending, train the members the blend uses again on
            every labelled row and blend their test predictions with the same weights
            (``ensembles.refit``; holdout mode only).
        trees: tree models to fit (or reuse) and offer as candidates: rf, et, hgb
            (lgbm, xgb when installed); ``()`` for none.
        method: the blender that makes the ensemble: auto (the best cross-fitted), best,
            mean, greedy, nelder-mead, stack, or a ``"module:Class"`` BaseBlender. Every
            registered blender is fitted and scored anyway.
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
        The :class:`Ensemble` (``out_dir`` and ``info``, the ``ensemble.json`` content).
    """
    from hpsearch.core.remote import is_uri

    run_dirs = [run_dirs] if isinstance(run_dirs, str | Path) else list(run_dirs)
    options = dict(
        top_k=top_k,
        max_corr=max_corr,
        trees=trees,
        method=method,
        folds=folds,
        margin=margin,
        refit=refit,
    )
    if any(is_uri(str(r)) for r in run_dirs):
        return _build_at_uris(run_dirs, out=out, name=name, progress=progress, seed=seed, **options)
    log = _logger(progress)
    runs = _read_runs(run_dirs)
    opts = _options(runs.spec.ensemble, **options)
    if opts.refit:
        from ensembles.refit import check_refit_allowed

        check_refit_allowed([rd.path for rd in runs.dirs])
    target, auto = _claim_target(runs.first, out, name, opts.method)
    records = _complete_trials(runs)
    data = _load_data(runs, log)
    candidates = _gather_candidates(runs, records, data, opts, log)
    members, dropped = _select(candidates, data, opts, log)
    P = np.stack([c.fit for c in members])
    blend = _fit_blend(P, data, opts, seed, log)
    refits = _refit(runs, members, blend, data, log) if opts.refit else None
    info, fit_pred, test_pred = _ensemble_info(
        target, runs, data, opts, seed, run_names, members, dropped, blend, refits
    )
    info["eligibility"] = _eligibility(candidates, data, opts)
    layout, ids = (None, None)
    if data.has_test:
        layout, ids = _test_layout(runs.spec, data.prepared, _id_column(runs.first))
        info["submission"] = layout
    local = [str(rd.path.resolve()) for rd in runs.dirs]
    for path in (runs.first.ensembles_dir, target):
        runs.first.check_not_link(path)  # links appeared during the build
    out_dir = _write(target, auto, info, local, fit_pred, test_pred, layout, ids, log, refits)
    log(f"wrote {out_dir}")
    return Ensemble(out_dir, info)


def _read_runs(run_dirs: list[str | Path]) -> _Runs:
    """The runs, checked to be blendable together, and the first run's spec."""
    from hpsearch.core.spec import load_spec

    dirs = _as_runs(run_dirs)
    metas = [rd.read_meta() for rd in dirs]
    for rd in dirs:  # a build reads every run and writes into the first
        rd.check_links()
    _check_compatible(dirs, metas)
    return _Runs(dirs, metas, load_spec(dirs[0].path / "spec.yaml", frozen=True))


def _claim_target(run: RunDir, out, name, method: str) -> tuple[Path, bool]:
    """(the ensemble directory, whether its name is automatic); an existing named target
    is refused, a taken automatic name gets a free ``-2`` suffix."""
    target, auto = _target(run, out, name, method)
    if auto:
        target = _free_name(target)
    elif target.exists():
        raise _exists_error(target)
    return target, auto


def _complete_trials(runs: _Runs) -> list[list[Any]]:
    records = []
    for rd in runs.dirs:
        done = rd.trials("COMPLETE")
        if not done:
            raise RunDirError(
                f"run {rd.path} has no complete trials; run `hpsearch run SPEC` first "
                "(or `hpsearch run SPEC --resume` to continue it)."
            )
        records.append(done)
    return records


def _load_data(runs: _Runs, log: Callable[[str], None]) -> _Data:
    from hpsearch.core.data import load_prepared

    log(f"loading the data of {runs.first.path}...")
    prepared = load_prepared(runs.first.path, runs.spec)
    meta0 = runs.metas[0]
    has_test = "test" in prepared.x
    mode = "cv" if prepared.folds else "holdout"
    if mode == "cv":
        log(
            f"cross-validated run ({prepared.folds} folds): blends are fitted on the "
            "out-of-fold predictions of every labelled row"
        )
    return _Data(
        prepared=prepared,
        task=meta0["task"],
        metric=meta0["metric"],
        classes=meta0.get("classes"),
        y=np.asarray(prepared.y["train" if mode == "cv" else "holdout"]),
        n_test=len(prepared.ids["test"]) if has_test else None,
        mode=mode,
    )


def _gather_candidates(
    runs: _Runs, records: list[list[Any]], data: _Data, opts: _Options, log
) -> list[Candidate]:
    """Every complete trial of every run, then the first run's trees (fitted if need be)."""
    from ensembles.trees import ensure_trees

    shape = (data.task, data.classes, data.n_fit, data.n_test)
    candidates: list[Candidate] = []
    for rd, recs, prefix in zip(runs.dirs, records, run_labels(runs.dirs, runs.metas), strict=True):
        log(f"reading {len(recs)} complete trial(s) of {rd.path}...")
        candidates += network_candidates(
            rd, recs, prefix, *shape, fit_split=data.fit_split, cv=data.cv
        )
    run0 = runs.first.path
    tree_recs = ensure_trees(
        run0,
        opts.trees,
        fingerprint=data.prepared.fingerprint,
        task=data.task,
        metric=data.metric,
        seed=int(data.prepared.split.get("seed", 0) or 0),
        has_test=data.has_test,
        load_prepared=lambda: data.prepared,
        log=log,
        folds=data.prepared.folds,
        n_rows=len(data.prepared.y["train"]),
    )
    return candidates + tree_candidates(tree_recs, run0.resolve(), *shape, fit_split=data.fit_split)


def _run_groups(candidates: list[Candidate]) -> dict[str, str] | None:
    """Candidates from several runs (a pipeline's families): label -> its run, so the
    ``top_k`` cap counts per run; one run: None (one cap for all)."""
    runs = {str(c.run) for c in candidates}
    return {c.label: str(c.run) for c in candidates} if len(runs) > 1 else None


def _select(
    candidates: list[Candidate], data: _Data, opts: _Options, log
) -> tuple[list[Candidate], list[dict[str, Any]]]:
    """(the members, best first; the records of the dropped candidates with their reason)."""
    from ensembles.selection import select_diverse

    selection = select_diverse(
        [c.label for c in candidates],
        [c.valid_score for c in candidates],
        np.stack([c.fit for c in candidates]),
        data.y,
        data.task,
        data.metric,
        opts.top_k,
        opts.max_corr,
        always=[c.label for c in candidates if c.kind == "tree"],
        margin=opts.margin,
        # several runs (a pipeline's families): each run brings its best top_k
        groups=_run_groups(candidates),
    )
    if not selection.selected:
        raise UserError(
            "no candidate is left after selection ("
            + "; ".join(f"{k}: {v}" for k, v in selection.dropped.items())
            + "). Fix: raise --top-k, --max-corr or --margin."
        )
    by_label = {c.label: c for c in candidates}
    members = [by_label[lb] for lb in selection.selected]
    n_ineligible = sum(r.startswith("not eligible") for r in selection.dropped.values())
    log(
        f"selected {len(members)} of {len(candidates)} candidate(s) "
        f"(top_k {opts.top_k}, max_corr {_setting(opts.max_corr)}, "
        f"margin {_setting(opts.margin)}: {n_ineligible} not eligible)"
    )
    dropped = [
        {
            **by_label[lb].record(),
            "valid_score": _nan_to_none(by_label[lb].valid_score),
            "reason": reason,
        }
        for lb, reason in selection.dropped.items()
    ]
    return members, dropped


def _setting(value: float | None) -> str:
    return "none" if value is None else f"{value:g}"


def _eligibility(candidates: list[Candidate], data: _Data, opts: _Options) -> dict[str, Any]:
    """The eligibility cut as ``ensemble.json`` records it."""
    from ensembles.selection import eligibility_cut

    cut = eligibility_cut([c.valid_score for c in candidates], data.metric, opts.margin)
    return {
        "margin": cut.margin,
        "best": None if cut.best is None else candidates[cut.best].label,
        "best_score": _nan_to_none(cut.best_score),
        "spread": _nan_to_none(cut.spread),
        "allowed_gap": None if math.isinf(cut.allowed) else cut.allowed,
    }


def _fit_blend(P: np.ndarray, data: _Data, opts: _Options, seed: int, log) -> _Blend:
    """Fit and cross-fit every registered blender (and a user's ``module:Class``); keep the
    best cross-fitted for ``auto``, else the method asked for."""
    from ensembles.auto import AutoBlender
    from ensembles.blenders import blender_class

    requested = opts.method
    methods = list(_BLENDERS)
    if requested != AUTO and requested not in methods:
        methods.append(requested)
    auto = AutoBlender(
        methods=methods, metric=data.metric, folds=opts.folds, seed=seed, nested=requested == AUTO
    )
    try:
        auto.fit(P, data.y, log=log)
    except ValueError as exc:
        raise UserError(f"no blend method can be fitted here: {exc}") from exc
    method = auto.method_ if requested == AUTO else requested
    if method not in auto.blenders_:
        error = auto.scores_[method]["error"]
        raise UserError(f"blend method {method!r} cannot be fitted here: {error}")
    scores = dict(auto.scores_)
    if requested == AUTO:
        scores[AUTO] = auto.auto_scores()
    entry = auto.blenders_[method].to_dict()
    # predict with the blend as saved: what a loaded ensemble predicts
    blender = blender_class(entry["method"]).from_dict(entry)
    return _Blend(method, requested, entry, blender, scores)


def _refit(runs: _Runs, members: list[Candidate], blend: _Blend, data: _Data, log) -> list:
    """Each member trained again on every labelled row, or why not (``ensembles.refit``)."""
    from ensembles.refit import refit_members
    from hpsearch.core.spec import load_spec

    specs = {runs.first.path.resolve(): runs.spec}
    for rd in runs.dirs[1:]:
        specs[rd.path.resolve()] = load_spec(rd.path / "spec.yaml", frozen=True)
    used = list(blend.blender.members_used())
    return refit_members(members, used, data.prepared, data.metric, specs, log)


def _ensemble_info(
    target: Path,
    runs: _Runs,
    data: _Data,
    opts: _Options,
    seed: int,
    run_names: Sequence[str] | None,
    members: list[Candidate],
    dropped: list[dict[str, Any]],
    blend: _Blend,
    refits: list | None = None,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray | None]:
    """(the content of ``ensemble.json``, the fit-split and the test blend). A
    cross-validated build names the fit split ``oof`` (``n_oof``, ``oof_score``, members'
    ``oof_score``) and records ``mode`` and ``cv``; a holdout build's keys are unchanged.
    With ``refits``, the test blend reads the refit members' test predictions."""
    from ensembles.refit import Refit
    from ensembles.selection import correlation_matrix

    P = np.stack([c.fit for c in members])
    fit_pred = blend.blender.predict(P)
    fit = data.fit_split
    refits = refits or [None] * len(members)
    tests = [
        r.test if isinstance(r, Refit) else c.test for c, r in zip(members, refits, strict=True)
    ]
    test_pred = blend.blender.predict(np.stack(tests)) if data.has_test else None

    def score(pred: np.ndarray) -> float:
        return float(_metrics.score(data.metric, data.y, pred))

    weights = blend.blender.member_weights()
    member_info = [
        {
            **c.record(),
            "weight": w,
            "valid_score": _nan_to_none(c.valid_score),
            f"{fit}_score": score(c.fit),
            "files": c.files,
            **_refit_record(r),
        }
        for c, w, r in zip(members, weights, refits, strict=True)
    ]
    run0 = runs.first
    info: dict[str, Any] = {
        "format": FORMAT,
        "name": target.name,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "method": blend.method,
        "requested_method": blend.requested,
        "metric": data.metric,
        "direction": _metrics.get_metric(data.metric).direction,
        "task": data.task,
        "classes": data.classes,
        "target": data.prepared.target.name,
        "id_column": _id_column(run0),
        "runs": list(run_names) if run_names else [str(rd.path.resolve()) for rd in runs.dirs],
        "data_fingerprint": data.prepared.fingerprint,
        **({"mode": "cv", "cv": data.cv, "fit_split": fit} if data.cv else {}),
        f"n_{fit}": data.n_fit,
        "n_test": data.n_test,
        "top_k": opts.top_k,
        "max_corr": opts.max_corr,
        "margin": opts.margin,
        "refit": opts.refit,
        "trees": list(opts.trees),
        "folds": opts.folds,
        "seed": seed,
        "members": member_info,
        "dropped": dropped,
        "scores": blend.scores,
        f"{fit}_score": score(fit_pred),
        "blend": blend.entry,
        "correlation": {
            "labels": [c.label for c in members],
            "matrix": correlation_matrix(P, data.y, data.task).tolist(),
        },
    }
    return info, fit_pred, test_pred


def _refit_record(refit: Any) -> dict[str, Any]:
    """A member's ``refit`` entries in ``ensemble.json``."""
    from ensembles.refit import Refit

    if isinstance(refit, Refit):
        return {"refit": True, "refit_model": refit.record()}
    if refit is None:  # the build did not refit
        return {"refit": False}
    return {"refit": False, "refit_reason": refit}


def _build_at_uris(
    run_dirs: list[str | Path], *, out: str | Path | None, **options: Any
) -> Ensemble:
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
    return read_run_json(path, "columns.json").get("id")


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
    fit_pred: np.ndarray,
    test_pred: np.ndarray | None,
    layout: dict[str, Any] | None,
    ids: np.ndarray | None,
    log: Callable[[str], None],
    refits: list | None = None,
) -> Path:
    from hpsearch.core.submission import submission_frame

    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        fit_file = f"{_report.fit_split(info)}_pred.npy"  # holdout_pred.npy or oof_pred.npy
        files = {fit_file: atomic.write_hashed(tmp / fit_file, atomic.npy_bytes(fit_pred))}
        if test_pred is not None:
            files["test_pred.npy"] = atomic.write_hashed(
                tmp / "test_pred.npy", atomic.npy_bytes(test_pred)
            )
            frame = submission_frame(layout, ids, test_pred, info["classes"])
            csv = frame.to_csv(index=False).encode("utf-8")
            files["submission.csv"] = atomic.write_hashed(tmp / "submission.csv", csv)
        _write_refits(tmp, refits)
        info["files"] = files  # the SHA-256 of the ensemble's own outputs
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


def _write_refits(folder: Path, refits: list | None) -> None:
    """The refit members' models under ``folder/refit/``, each checked against the
    SHA-256 its ``ensemble.json`` entry records."""
    from ensembles.refit import Refit

    for refit in refits or []:
        if not isinstance(refit, Refit):
            continue
        where = folder / refit.folder
        where.mkdir(parents=True, exist_ok=True)
        recorded = refit.record()["files"]
        for name, data in refit.files.items():
            if atomic.write_hashed(where / name, data) != recorded[name]:  # pragma: no cover
                raise RunDirError(f"refit model {where / name} was not written as recorded.")


def _nan_to_none(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value
