"""The submission table: blended test predictions in the shape a competition expects.

A *layout* (a plain dict stored in ``ensemble.json``) fixes the columns once, at
build time, so ``ensembles predict`` writes exactly the same shape later:

- ``value``: regression, one column named after the target;
- ``probability``: binary, the probability of the positive class (``classes[1]``)
  under the target's name;
- ``class_probabilities``: one probability column per class; ``class_index``
  maps each column to its class index;
- ``label``: the decoded class label under the target's name.

Without a sample submission: regression -> ``value``, binary -> ``probability``,
multiclass -> ``class_probabilities`` in class order. With one, its columns are
followed: one column per class -> ``class_probabilities`` in the sample's order
(columns named by the classes, up to case and a prefix or suffix they all share:
``Class_1``, ``proba_cat``);
a single column -> ``value`` (regression), ``probability`` for a binary task
scored on probabilities (log_loss, roc_auc) whatever placeholder the sample
holds, else ``label`` when the sample's values are not floats, else
``probability`` (binary) or ``label`` (multiclass).

RMSLE cannot score a negative value: under ``metric: rmsle`` the layout carries
``clip_min: 0`` and regression values are clipped at 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from hpsearch.core.errors import UserError

__all__ = ["PROBABILITY_METRICS", "submission_frame", "submission_layout"]

PROBABILITY_METRICS = ("log_loss", "roc_auc")  # scored on probabilities, never on labels


def submission_layout(
    task: str,
    target: str,
    classes: list[Any] | None,
    id_column: str | None,
    sample: pd.DataFrame | None = None,
    metric: str | None = None,
) -> dict[str, Any]:
    """The columns of the submission table (see the module docstring)."""
    layout = _layout(task, target, classes, id_column, sample, metric)
    if metric == "rmsle" and layout["kind"] == "value":
        layout["clip_min"] = 0.0
    return layout


def _layout(task, target, classes, id_column, sample, metric) -> dict[str, Any]:
    if sample is None:
        id_col = id_column or "id"
        if task == "regression":
            return {"id_column": id_col, "kind": "value", "columns": [target]}
        if task == "binary":
            return {"id_column": id_col, "kind": "probability", "columns": [target]}
        return {
            "id_column": id_col,
            "kind": "class_probabilities",
            "columns": [str(c) for c in classes or []],
            "class_index": list(range(len(classes or []))),
        }
    sample_cols = [str(c) for c in sample.columns]
    id_col = id_column if id_column in sample_cols else sample_cols[0]
    rest = [c for c in sample_cols if c != id_col]
    names = [str(c) for c in classes or []]
    class_index = _class_columns(rest, names) if task != "regression" else None
    if class_index is not None:
        return {
            "id_column": id_col,
            "kind": "class_probabilities",
            "columns": rest,
            "class_index": class_index,
        }
    if len(rest) == 1:
        col = rest[0]
        if task == "regression":
            kind = "value"
        elif task == "binary" and metric in PROBABILITY_METRICS:
            kind = "probability"
        elif sample[sample.columns[sample_cols.index(col)]].dtype.kind != "f":
            kind = "label"
        else:
            kind = "probability" if task == "binary" else "label"
        return {"id_column": id_col, "kind": kind, "columns": [col]}
    expected = (
        f"one column per class named {names} (up to case and a prefix or suffix shared by "
        "all, such as Class_<name>)"
        if task != "regression"
        else "one value column"
    )
    raise UserError(
        f"sample submission columns {sample_cols} do not fit a {task} submission: after the id "
        f"column {id_col!r} expected {expected} or a single column. "
        "Fix: check `data.sample_submission` in the spec."
    )


def _class_columns(columns: list[str], names: list[str]) -> list[int] | None:
    """The class index of each column when the columns are the class names, up to case
    and a prefix or suffix they all share (``Class_1``.., ``proba_cat``..); else None."""
    if len(names) < 2 or len(columns) != len(names):
        return None
    lower = [n.lower() for n in names]
    if len(set(lower)) != len(lower):  # classes that differ only by case: exact names only
        return [names.index(c) for c in columns] if sorted(columns) == sorted(names) else None
    cols = [c.lower() for c in columns]
    # every way the first column splits into prefix + class name + suffix
    for name in lower:
        start = cols[0].find(name)
        while start >= 0:
            pre, suf = cols[0][:start], cols[0][start + len(name) :]
            cores = [
                c[len(pre) : len(c) - len(suf)]
                if c.startswith(pre) and c.endswith(suf) and len(c) >= len(pre) + len(suf)
                else None
                for c in cols
            ]
            if sorted(x for x in cores if x is not None) == sorted(lower) and None not in cores:
                return [lower.index(x) for x in cores]
            start = cols[0].find(name, start + 1)
    return None


def submission_frame(
    layout: dict[str, Any], ids: np.ndarray, pred: np.ndarray, classes: list[Any] | None
) -> pd.DataFrame:
    """The submission table for blended predictions ``pred`` (the run's conventions)."""
    pred = np.asarray(pred)
    kind = layout["kind"]
    cols = layout["columns"]
    out = pd.DataFrame({layout["id_column"]: np.asarray(ids)})
    if kind in ("value", "probability"):
        values = pred.reshape(len(pred), -1)[:, -1] if pred.ndim == 2 else pred
        if layout.get("clip_min") is not None:
            values = np.maximum(values, layout["clip_min"])
        out[cols[0]] = values
    elif kind == "label":
        labels = np.asarray(classes, dtype=object)
        idx = pred.argmax(axis=1) if pred.ndim == 2 else (pred > 0.5).astype(np.int64)
        out[cols[0]] = labels[idx]
    elif kind == "class_probabilities":
        full = pred if pred.ndim == 2 else np.column_stack([1.0 - pred, pred])
        for col, k in zip(cols, layout["class_index"], strict=True):
            out[col] = full[:, k]
    else:
        raise UserError(f"unknown submission layout {kind!r} in ensemble.json.")
    return out
