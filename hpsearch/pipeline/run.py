"""``hpsearch pipeline SPEC``: train.csv + test.csv in, submission.csv and a report out.

One command for a Kaggle-style competition: the search (``run_search``), the
ensemble of its best diverse networks and tree models (``build_ensemble``),
the checks a competition applies to a submission, and a copy of the checked
submission at ``OUTPUT/submission.csv`` beside the run.

The pipeline cross-validates by default (``split: {folds: 5}``, :data:`DEFAULT_FOLDS`):
every labelled row trains the members and the blend is fitted on out-of-fold
predictions (docs/ensembles.md). :func:`pipeline_spec` decides the split: ``folds``
(``hpsearch pipeline --folds K``; 0 for the train/valid/holdout split), else the spec's
``split`` when it names ``folds``, ``valid`` or ``holdout``, else the split of the run
being resumed, else :data:`DEFAULT_FOLDS` folds. ``hpsearch run`` keeps the spec's
split as written (the holdout split by default).
"""

from __future__ import annotations

import datetime as _dt
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpsearch.core.errors import UserError

DEFAULT_FOLDS = 5  # the pipeline's split when neither the command nor the spec chooses one
_SPLIT_CHOICES = ("folds", "valid", "holdout")  # spec split keys that choose the split


@dataclass
class PipelineResult:
    run_dir: Path
    ensemble_dir: Path
    submission: Path | None
    report: Path | None
    search: Any
    ensemble: Any

    def summary_text(self) -> str:
        lines = [self.ensemble.summary_text(), ""]
        if self.submission is not None:
            lines.append(f"submission: {self.submission}  (checked: ids, columns, values)")
        else:
            lines.append("no test set in the spec (data.test): no submission written")
        if self.report is not None:
            lines.append(f"report:     {self.report}")
        return "\n".join(lines)


def _check_folds(folds: Any) -> int | None:
    """The ``folds`` option as a split: K, or None for the train/valid/holdout split (0)."""
    from hpsearch.core.spec import MAX_FOLDS

    if (
        isinstance(folds, bool)
        or not isinstance(folds, int)
        or not (folds == 0 or 2 <= folds <= MAX_FOLDS)
    ):
        raise UserError(
            f"--folds {folds!r}: must be 0 or from 2 to {MAX_FOLDS}. Fix: give the number of "
            f"cross-validation folds (e.g. --folds {DEFAULT_FOLDS}), or --folds 0 for the "
            "train/valid/holdout split."
        )
    return folds or None


def _resumed_folds(spec: Any) -> tuple[bool, int | None]:
    """(whether the spec's output holds a run, and that run's folds: K or None)."""
    from hpsearch.core.remote import is_uri
    from hpsearch.core.store import RunDir

    if is_uri(str(spec.output)):
        return False, None
    rd = RunDir(spec.output)
    if not rd.run_json.is_file():
        return False, None
    try:
        split = rd.read_meta().get("split") or {}
    except UserError:  # a damaged run.json: the search names it
        return False, None
    return True, split.get("folds") or None


def pipeline_spec(spec: Any, folds: int | None = None, resume: bool = False) -> Any:
    """The spec the pipeline runs: ``spec`` with its split decided. ``folds`` (the
    ``--folds`` option) wins: K folds, or 0 for the train/valid/holdout split. Else a spec
    whose ``split`` names ``folds``, ``valid`` or ``holdout`` is kept as written; else, on
    ``resume``, the split of the run in ``output``; else :data:`DEFAULT_FOLDS` folds."""
    split = spec.split
    if folds is not None:
        chosen = _check_folds(folds)
    elif set(_SPLIT_CHOICES) & set(split.model_fields_set):
        return spec
    else:
        found, run_folds = _resumed_folds(spec) if resume else (False, None)
        chosen = run_folds if found else DEFAULT_FOLDS
    if chosen == split.folds:
        return spec
    return spec.model_copy(update={"split": split.model_copy(update={"folds": chosen})})


def run_pipeline(
    spec: Any,
    *,
    resume: bool = False,
    address: str | None = None,
    n_trials: int | None = None,
    progress: bool = True,
    trial_fn: Any = None,
    trial_options: dict[str, Any] | None = None,
    ensemble_name: str | None = None,
    stream: Any = None,
    folds: int | None = None,
) -> PipelineResult:
    """Search, ensemble, check and write the submission for ``spec``. The split is the
    one :func:`pipeline_spec` decides: ``folds`` (0: the train/valid/holdout split), the
    spec's, the resumed run's, else :data:`DEFAULT_FOLDS`-fold cross-validation, whose
    ensemble is fitted on out-of-fold predictions."""
    from ensembles.builder import build_ensemble
    from ensembles.checks import check_submission_file
    from hpsearch.core import atomic
    from hpsearch.search.driver import run_search

    out = sys.stderr if stream is None else stream
    spec = pipeline_spec(spec, folds, resume)
    if progress:
        k = spec.split.folds
        how = f"{k}-fold cross-validation" if k else "the train/valid/holdout split"
        print(f"pipeline: {how}", file=out)
    summary = run_search(
        spec,
        resume=resume,
        address=address,
        n_trials=n_trials,
        trial_fn=trial_fn,
        progress=progress,
        stream=stream,
        trial_options=trial_options,
    )
    if progress:
        print(
            f"search: {summary.n_complete} complete, {summary.n_failed} failed, "
            f"{summary.n_pruned} pruned in {summary.elapsed_s:.0f} s; best trial "
            f"{summary.best_number} {spec.metric} {summary.best_value:.4f}",
            file=out,
        )
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    ens = build_ensemble(
        [spec.output], name=ensemble_name or f"pipeline-{stamp}", progress=progress
    )
    sub_path = None
    ens_dir = Path(ens.out_dir)
    produced = ens_dir / "submission.csv"
    if spec.data.test:
        if not produced.exists():
            raise UserError(
                f"the ensemble in {ens_dir} has no submission.csv although the spec has a test "
                "set. Fix: rebuild the ensemble (`ensembles build RUN_DIR`)."
            )
        layout = ens.info.get("submission", {}) or {}
        id_col = layout.get("id_column") or spec.data.id or "id"
        check_submission_file(
            str(produced),
            test=spec.data.test,
            sample=spec.data.sample_submission,
            id_col=id_col,
            task=spec.task,
            columns=layout.get("columns"),
            classes=ens.info.get("classes"),
            metric=spec.metric,
        )
        sub_path = Path(spec.output) / "submission.csv"
        atomic.write_bytes(sub_path, produced.read_bytes())
    report = ens_dir / "report.md"
    return PipelineResult(
        run_dir=Path(spec.output),
        ensemble_dir=ens_dir,
        submission=sub_path,
        report=report if report.exists() else None,
        search=summary,
        ensemble=ens,
    )
