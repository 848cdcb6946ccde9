"""``hpsearch pipeline SPEC``: train.csv + test.csv in, submission.csv and a report out.

One command for a Kaggle-style competition: the search (``run_search``), the
ensemble of its best diverse networks and tree models (``build_ensemble``),
the checks a competition applies to a submission, and a copy of the checked
submission at ``OUTPUT/submission.csv`` beside the run.
"""

from __future__ import annotations

import datetime as _dt
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpsearch.core.errors import UserError


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
) -> PipelineResult:
    """Search, ensemble, check and write the submission for ``spec``."""
    from ensembles.builder import build_ensemble
    from ensembles.checks import check_submission_file
    from hpsearch.core import atomic
    from hpsearch.search.driver import run_search

    out = sys.stderr if stream is None else stream
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
