"""Diverse candidate selection: the best trials whose holdout errors are not too correlated.

Candidates are described by their predictions on the same holdout rows
(``P_holdout``, the layout of ``ensembles.blenders``). Errors are per-row
residuals:

- binary: ``p - y`` (``p`` the probability of class 1);
- multiclass: the one-hot residual ``p - onehot(y)``, flattened to ``n * K``
  values (it sees disagreements on every class, not only the true one);
- regression: ``pred - y``.

``correlation_matrix`` is the Pearson correlation of those errors. A candidate
whose errors are constant has no defined correlation: it is given 1 with itself
and 0 with the others, except that candidates with IDENTICAL error vectors
always get 1 (so exact duplicates are caught even when their errors are
constant, e.g. two perfect models).

Selection policy (``select_diverse``): candidates are ranked by validation score
(metric direction; a missing/NaN score ranks last and is dropped).

**Eligibility** (``eligibility_cut``): a candidate whose score is worse than the
best by more than ``margin x spread`` is not eligible, whatever its errors. The
spread is a robust spread of the candidates' validation scores: ``1.4826 x`` their
median absolute deviation from the median (the standard deviation for normal
scores, unmoved by a few very bad candidates), floored at 2 % of the best score's
magnitude (``1e-12`` when that is 0), so near-identical scores do not exclude
every candidate but the best. ``margin=None`` disables the cut.

**Diversity**: walking down the ranking of the eligible candidates, a candidate is
kept when its error correlation with EVERY candidate kept so far is
``<= max_corr`` (``max_corr=None``: no correlation filter). At most ``top_k`` candidates not named
in ``always`` are kept; once ``top_k`` are kept the rest are dropped as
"outside top K". Candidates named in ``always`` (e.g. tree models) bypass the
``top_k`` cap and do not count towards it, but still go through the
correlation check against the candidates kept before them, so an exact
duplicate of a kept candidate is dropped even when it is in ``always``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from hpsearch.core import metrics as _metrics

__all__ = [
    "Cut",
    "Selection",
    "correlation_matrix",
    "eligibility_cut",
    "error_matrix",
    "select_diverse",
]

# the spread of the scores is at least this share of the best score's magnitude
SPREAD_FLOOR = 0.02
_MAD_TO_SD = 1.4826

_TASKS = ("binary", "multiclass", "regression")


class Selection(NamedTuple):
    """The kept names (best first) and why each other name was dropped."""

    selected: list
    dropped: dict


def _members(P, task: str) -> np.ndarray:
    P = np.asarray(P, dtype=np.float64)
    if task not in _TASKS:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(_TASKS)}")
    if task == "binary":
        if P.ndim == 3 and P.shape[2] in (1, 2):
            P = P[:, :, -1]
        if P.ndim != 2:
            raise ValueError(f"binary P must be (n_members, n_rows); got shape {P.shape}")
    elif task == "multiclass":
        if P.ndim != 3:
            raise ValueError(f"multiclass P must be (n_members, n_rows, K); got shape {P.shape}")
    else:
        if P.ndim == 3 and P.shape[2] == 1:
            P = P[:, :, 0]
        if P.ndim != 2:
            raise ValueError(f"regression P must be (n_members, n_rows); got shape {P.shape}")
    if not np.all(np.isfinite(P)):
        raise ValueError("P contains NaN or infinite predictions")
    return P


def error_matrix(P, y, task: str) -> np.ndarray:
    """Per-row residuals, ``(n_members, n_rows)`` (multiclass: ``(n_members, n_rows * K)``)."""
    P = _members(P, task)
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.shape[0] != P.shape[1]:
        raise ValueError(f"y must be 1-D with {P.shape[1]} rows; got shape {y.shape}")
    if task == "regression":
        return P - y.astype(np.float64)[None, :]
    y = _metrics._class_labels(y)
    if task == "binary":
        return P - y[None, :].astype(np.float64)
    k = P.shape[2]
    if y.size and y.max() >= k:
        raise ValueError(f"y holds class {int(y.max())} but P covers only {k} classes")
    onehot = np.eye(k)[y]
    return (P - onehot[None, :, :]).reshape(P.shape[0], -1)


def correlation_matrix(P, y, task: str) -> np.ndarray:
    """Pearson correlation of the members' errors, ``(m, m)``, never NaN (see module doc)."""
    E = error_matrix(P, y, task)
    Ec = E - E.mean(axis=1, keepdims=True)
    norms = np.sqrt(np.einsum("ij,ij->i", Ec, Ec))
    scale = np.maximum(np.abs(E).max(axis=1), 1.0)
    constant = norms <= 1e-12 * scale * math.sqrt(max(E.shape[1], 1))
    safe = np.where(constant, 1.0, norms)
    Z = Ec / safe[:, None]
    C = Z @ Z.T
    C[constant, :] = 0.0
    C[:, constant] = 0.0
    np.clip(C, -1.0, 1.0, out=C)
    np.fill_diagonal(C, 1.0)
    # identical error vectors are duplicates whatever their variance
    if constant.any():
        idx = np.flatnonzero(constant)
        for a_i, a in enumerate(idx):
            for b in idx[a_i + 1 :]:
                if np.array_equal(E[a], E[b]):
                    C[a, b] = C[b, a] = 1.0
    return C


class Cut(NamedTuple):
    """The eligibility cut: the best candidate (its index and score), the robust spread of
    the candidates' scores, and ``allowed``: the largest gap to the best score that stays
    eligible (``margin x spread``; inf when ``margin`` is None)."""

    best: int | None
    best_score: float
    spread: float
    margin: float | None
    allowed: float

    def gap(self, score: float, greater_is_better: bool) -> float:
        """How much worse than the best ``score`` is (>= 0)."""
        diff = self.best_score - score if greater_is_better else score - self.best_score
        return max(0.0, float(diff))


def eligibility_cut(scores: Sequence[float | None], metric: str, margin: float | None) -> Cut:
    """The cut of ``select_diverse`` for these validation scores (None/NaN ignored): a
    candidate is eligible when ``cut.gap(score) <= cut.allowed``. See the module doc."""
    if margin is not None:
        margin = float(margin)
        if math.isnan(margin) or margin < 0:
            raise ValueError(f"margin must be >= 0 or None; got {margin}")
        if math.isinf(margin):
            margin = None
    metric_ = _metrics.get_metric(metric)
    values = [math.nan if s is None else float(s) for s in scores]
    values = [v if math.isfinite(v) else math.nan for v in values]
    finite = np.array([v for v in values if not math.isnan(v)], dtype=np.float64)
    if finite.size == 0:
        return Cut(None, math.nan, math.nan, margin, math.inf)
    best = int(np.nanargmax(values) if metric_.greater_is_better else np.nanargmin(values))
    best_score = values[best]
    mad = float(np.median(np.abs(finite - np.median(finite))))
    spread = max(_MAD_TO_SD * mad, SPREAD_FLOOR * abs(best_score), 1e-12)
    allowed = math.inf if margin is None else float(margin) * spread
    return Cut(best, best_score, spread, margin, allowed)


def _scores_list(names: Sequence, valid_scores) -> list[float]:
    if isinstance(valid_scores, Mapping):
        out = []
        for n in names:
            v = valid_scores.get(n)
            out.append(math.nan if v is None else float(v))
        return out
    scores = list(valid_scores)
    if len(scores) != len(names):
        raise ValueError(f"{len(names)} names but {len(scores)} validation scores")
    return [math.nan if s is None else float(s) for s in scores]


def select_diverse(
    names: Sequence[Any],
    valid_scores: Sequence[float | None] | Mapping[Any, float | None],
    P_holdout,
    y,
    task: str,
    metric: str,
    top_k: int | None,
    max_corr: float | None = 0.999,
    always: Iterable[Any] = (),
    margin: float | None = None,
    groups: Mapping[Any, Any] | None = None,
) -> Selection:
    """Rank by validation score and keep the best ``top_k`` mutually diverse candidates
    among the eligible ones.

    ``names[i]`` describes ``P_holdout[i]`` and ``valid_scores[i]`` (or
    ``valid_scores[name]`` when a mapping). Returns ``Selection(selected, dropped)``,
    unpackable as a tuple: ``selected`` the kept names, best first; ``dropped`` maps
    each other name to its reason, e.g. ``"not eligible: worse than the best (trial_2)
    by 0.53 > margin 0.044 (3 x spread 0.0148)"``, ``"correlated 0.991 with trial_3"``
    or ``"outside top K (K=5)"``. ``margin=None``: every candidate is eligible;
    ``max_corr=None``: no correlation filter. ``groups`` (name -> group, e.g. the run a
    candidate comes from): the ``top_k`` cap counts per group, so each group (each family
    of a pipeline's mix) may bring its best ``top_k``. See the module docstring for the
    policy.
    """
    names = list(names)
    if len(set(names)) != len(names):
        raise ValueError("candidate names must be unique")
    P = _members(P_holdout, task)
    if P.shape[0] != len(names):
        raise ValueError(f"{len(names)} names but P_holdout holds {P.shape[0]} members")
    if top_k is not None and int(top_k) < 0:
        raise ValueError(f"top_k must be >= 0 or None; got {top_k}")
    if max_corr is not None and not (-1.0 <= float(max_corr) <= 1.0):
        raise ValueError(f"max_corr must be in [-1, 1] or None; got {max_corr}")
    metric_ = _metrics.get_metric(metric)
    always_set = set(always)
    unknown = always_set - set(names)
    if unknown:
        raise ValueError(f"names in `always` that are not candidates: {sorted(map(str, unknown))}")
    scores = _scores_list(names, valid_scores)

    dropped: dict[Any, str] = {}
    ranked = []
    for i, s in enumerate(scores):
        if math.isnan(s):
            dropped[names[i]] = "no validation score"
        else:
            ranked.append(i)
    sign = -1.0 if metric_.greater_is_better else 1.0
    ranked.sort(key=lambda i: (sign * scores[i], i))

    cut = eligibility_cut(scores, metric_.name, margin)
    eligible = []
    for i in ranked:
        gap = cut.gap(scores[i], metric_.greater_is_better)
        if gap > cut.allowed:
            dropped[names[i]] = (
                f"not eligible: worse than the best ({names[cut.best]}) by {gap:.4g} > "
                f"margin {cut.allowed:.4g} ({cut.margin:g} x spread {cut.spread:.4g})"
            )
        else:
            eligible.append(i)

    C = None
    if max_corr is not None and P.shape[0]:
        C = correlation_matrix(P, y, task)
    kept: list[int] = []
    n_capped: dict[Any, int] = {}
    for i in eligible:
        is_always = names[i] in always_set
        group = None if groups is None else groups.get(names[i])
        if not is_always and top_k is not None and n_capped.get(group, 0) >= int(top_k):
            per = "" if groups is None else f" of {str(group).rstrip('/').rsplit('/', 1)[-1]}"
            dropped[names[i]] = f"outside top K{per} (K={int(top_k)})"
            continue
        too_close = [] if C is None else [(C[i, j], j) for j in kept if C[i, j] > max_corr]
        if too_close:
            c, j = max(too_close, key=lambda t: t[0])
            dropped[names[i]] = f"correlated {c:.3f} with {names[j]}"
            continue
        kept.append(i)
        if not is_always:
            n_capped[group] = n_capped.get(group, 0) + 1
    return Selection([names[i] for i in kept], dropped)
