"""Submission checks: a submission.csv a competition will accept, or a clear error.

``check_submission`` is run on every submission the project writes, and can be
run on any file (``ensembles check SUBMISSION --test test.csv
[--sample sample_submission.csv]``). It checks:

- the columns: the id column first, then the sample submission's columns (or,
  without one, the expected prediction columns), nothing missing or extra;
- the rows: the same ids in the same order as the test file (or the sample
  submission), no duplicates;
- the values: no NaN or infinity; probabilities within [0, 1]; multiclass
  probabilities summing to one per row; labels among the known classes, and
  no labels where the metric scores probabilities (log_loss, roc_auc); no
  negative values under RMSLE.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpsearch.core.errors import UserError
from hpsearch.core.submission import PROBABILITY_METRICS

PROB_SUM_TOL = 1e-4


class SubmissionError(UserError):
    """The submission would be rejected; the message names the problem and the fix."""


def _head(values: Sequence[Any], n: int = 5) -> str:
    values = list(values)
    more = f", ... ({len(values)} in all)" if len(values) > n else ""
    return ", ".join(repr(v) for v in values[:n]) + more


def check_submission(
    sub: pd.DataFrame,
    *,
    ids: Sequence[Any],
    id_col: str,
    columns: Sequence[str],
    task: str,
    classes: Sequence[Any] | None = None,
    where: str = "submission",
    metric: str | None = None,
) -> None:
    """Raise SubmissionError unless ``sub`` is a valid submission.

    ``ids``: the expected ids in order; ``columns``: the expected prediction
    columns after the id column. For classification, a prediction column is
    either probabilities (float) or labels (when ``columns`` is the target alone
    and the values are class labels).
    """
    _check_columns(sub, id_col, columns, where)
    sub_ids = _check_ids(sub, ids, id_col, where)
    pred = sub[list(columns)]
    numeric = _check_finite(pred, where)
    if task == "regression":
        _check_regression(pred, numeric, metric, where)
    elif len(columns) == 1 and not (numeric and pd.api.types.is_float_dtype(pred[columns[0]])):
        _check_labels(pred[columns[0]], classes, metric, where)
    else:
        _check_probabilities(pred, numeric, task, sub_ids, where)


def _check_columns(sub: pd.DataFrame, id_col: str, columns: Sequence[str], where: str) -> None:
    """The id column first, then exactly ``columns``, in order."""
    expected = [id_col, *columns]
    got = [str(c) for c in sub.columns]
    if got == expected:
        return
    missing = [c for c in expected if c not in got]
    extra = [c for c in got if c not in expected]
    detail = []
    if missing:
        detail.append(f"missing {_head(missing)}")
    if extra:
        detail.append(f"unexpected {_head(extra)}")
    if not detail:
        detail.append(f"order {_head(got)}")
    raise SubmissionError(
        f"{where}: columns {'; '.join(detail)}; expected {_head(expected, 12)}. "
        "Fix: write the columns of sample_submission.csv, in its order."
    )


def _check_ids(sub: pd.DataFrame, ids: Sequence[Any], id_col: str, where: str) -> list[Any]:
    """One row per expected id, in the expected order; the submission's ids."""
    ids = list(ids)
    if len(sub) != len(ids):
        raise SubmissionError(
            f"{where}: {len(sub)} rows, the test set has {len(ids)}. "
            "Fix: predict every test row exactly once."
        )
    sub_ids = sub[id_col].tolist()
    if pd.Series(sub_ids).duplicated().any():
        dup = pd.Series(sub_ids)[pd.Series(sub_ids).duplicated()].tolist()
        raise SubmissionError(f"{where}: duplicated ids {_head(dup)}. Fix: one row per test id.")
    norm = [str(v) for v in sub_ids]
    want = [str(v) for v in ids]
    if norm != want:
        if sorted(norm) == sorted(want):
            problem = "the ids are not in the test file's order"
        else:
            unknown = [v for v in norm if v not in set(want)]
            problem = f"ids not in the test file: {_head(unknown)}"
        raise SubmissionError(
            f"{where}: {problem}. Fix: keep the ids and row order of test.csv "
            "(or sample_submission.csv)."
        )
    return sub_ids


def _check_finite(pred: pd.DataFrame, where: str) -> bool:
    """No NaN, and no infinity in numeric predictions; whether every column is numeric."""
    if pred.isna().to_numpy().any():
        bad = pred.columns[pred.isna().any()].tolist()
        raise SubmissionError(
            f"{where}: missing values (NaN) in column(s) {_head(bad)}. Fix: every row needs a "
            "prediction; check the test rows the models could not score."
        )
    numeric = all(pd.api.types.is_numeric_dtype(pred[c]) for c in pred.columns)
    if numeric and not np.isfinite(pred.to_numpy(dtype=float)).all():
        raise SubmissionError(
            f"{where}: infinite values in the predictions. Fix: clip or replace them."
        )
    return numeric


def _check_regression(pred: pd.DataFrame, numeric: bool, metric: str | None, where: str) -> None:
    if not numeric:
        raise SubmissionError(
            f"{where}: non-numeric predictions for a regression target. "
            "Fix: write one number per row."
        )
    n_neg = int((pred.to_numpy(dtype=float) < 0).sum()) if metric == "rmsle" else 0
    if n_neg:
        raise SubmissionError(
            f"{where}: {n_neg} negative value(s); RMSLE cannot score them. "
            "Fix: clip the predictions at 0."
        )


def _check_labels(
    column: pd.Series, classes: Sequence[Any] | None, metric: str | None, where: str
) -> None:
    """A single label column: allowed by the metric, every label a known class."""
    if metric in PROBABILITY_METRICS:
        raise SubmissionError(
            f"{where}: column {column.name!r} holds labels, but {metric} scores "
            "probabilities. Fix: write the probability of the positive class (a float in "
            "[0, 1]) per row."
        )
    label_classes = {str(c) for c in (classes or [])}
    unknown = sorted(set(column.astype(str)) - label_classes) if label_classes else []
    if unknown:
        raise SubmissionError(
            f"{where}: labels {_head(unknown)} are not classes of the target "
            f"({_head(sorted(label_classes))}). Fix: predict one of the training labels."
        )


def _check_probabilities(
    pred: pd.DataFrame, numeric: bool, task: str, sub_ids: list[Any], where: str
) -> None:
    """Numbers in [0, 1]; multiclass rows summing to one."""
    if not numeric:
        raise SubmissionError(
            f"{where}: non-numeric probabilities. Fix: write one probability per class column."
        )
    arr = pred.to_numpy(dtype=float)
    if (arr < 0).any() or (arr > 1).any():
        raise SubmissionError(
            f"{where}: probabilities outside [0, 1] (min {arr.min():.4g}, max {arr.max():.4g}). "
            "Fix: write probabilities, not scores or logits."
        )
    if task == "multiclass" and arr.shape[1] > 1:
        sums = arr.sum(axis=1)
        worst = int(np.argmax(np.abs(sums - 1)))
        if abs(sums[worst] - 1) > PROB_SUM_TOL:
            raise SubmissionError(
                f"{where}: class probabilities of row {worst} (id {sub_ids[worst]!r}) sum to "
                f"{sums[worst]:.6f}, not 1. Fix: normalise each row."
            )


def check_submission_file(
    path: str,
    *,
    test: str,
    id_col: str,
    task: str,
    columns: Sequence[str] | None = None,
    sample: str | None = None,
    classes: Sequence[Any] | None = None,
    metric: str | None = None,
) -> pd.DataFrame:
    """Load ``path`` and check it against the test file (and the sample submission)."""
    from hpsearch.core.data import load_table

    try:
        sub = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise SubmissionError(f"cannot read submission {path!r}: {exc}") from exc
    ref = load_table(sample) if sample else load_table(test)
    if id_col not in ref.columns:
        raise SubmissionError(
            f"id column {id_col!r} is not in {sample or test!r}. Fix: name the id column."
        )
    if sample:
        columns = [str(c) for c in ref.columns if str(c) != id_col]
    if not columns:
        raise SubmissionError(
            "the expected prediction columns are unknown. Fix: pass the sample submission."
        )
    check_submission(
        sub,
        ids=ref[id_col].tolist(),
        id_col=id_col,
        columns=columns,
        task=task,
        classes=classes,
        where=f"submission {path!r}",
        metric=metric,
    )
    return sub


def check_ensemble_submission(
    path: str, ens: Any, *, test: str | None = None, sample: str | None = None
) -> tuple[pd.DataFrame, str]:
    """Check the submission file ``path`` against the layout of ensemble ``ens`` (an
    ``Ensemble``) and the test file (default: the first run's ``data.test`` and
    ``data.sample_submission``). Returns the submission and the file whose ids it matched."""
    from hpsearch.core.remote import is_uri
    from hpsearch.core.spec import load_spec

    info = ens.info
    layout = info.get("submission")
    if not layout:
        raise UserError(
            f"ensemble {ens.out_dir} was built from a run without a test set, so it has no "
            "submission layout. Fix: check a submission of an ensemble whose run has `data.test`."
        )
    if not test:
        run = str(info["runs"][0])
        if is_uri(run):
            raise UserError(
                f"the ensemble's run is at {run}; its test file path is not on this machine. "
                "Fix: give the test file with --test (and --sample for sample_submission.csv)."
            )
        spec = load_spec(Path(run) / "spec.yaml", frozen=True)
        test = spec.data.test
        sample = sample or spec.data.sample_submission
    sub = check_submission_file(
        path,
        test=test,
        sample=sample,
        id_col=layout["id_column"],
        task=info["task"],
        columns=layout["columns"],
        classes=info.get("classes"),
        metric=info.get("metric"),
    )
    return sub, str(sample or test)
