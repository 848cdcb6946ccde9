"""Small user blenders for the tests: plugged in as ``tests.blender_plugins:Name``."""

from __future__ import annotations

from typing import Any

import numpy as np

from ensembles.blenders import BaseBlender


class TopTwoMean(BaseBlender):
    """Equal weights on the ``k`` members with the best metric; the default to_dict/from_dict
    (weights only) restores it."""

    def __init__(self, metric: str | None = None, k: int = 2):
        self.metric = metric
        self.k = k

    def _fit(self, P, y):
        scores = self._single_scores(P, y)
        order = sorted(range(len(scores)), key=lambda j: scores[j])
        if self.metric_ in ("roc_auc", "accuracy", "f1_macro"):
            order.reverse()
        keep = order[: max(1, min(int(self.k), P.shape[0]))]
        self.weights_ = np.zeros(P.shape[0])
        self.weights_[keep] = 1.0 / len(keep)


class Memorizer(BaseBlender):
    """Remembers the target of every row it was fitted on and predicts it back; other rows
    get the mean target. The best *fitted* score there is, and a poor cross-fitted one:
    the blender ``auto`` must never choose. Binary and regression only.

    Its learned state beyond the weights (``table_``, ``prior_``) shows how a blender
    extends ``to_dict`` / ``from_dict``."""

    def __init__(self, metric: str | None = None):
        self.metric = metric

    @staticmethod
    def _key(column: np.ndarray) -> str:
        return ",".join(f"{v:.12g}" for v in column)

    def _fit(self, P, y):
        self.table_ = {self._key(P[:, i]): float(y[i]) for i in range(P.shape[1])}
        self.prior_ = float(np.mean(y))
        self.weights_ = np.full(P.shape[0], 1.0 / P.shape[0])

    def _predict(self, P):
        return np.array(
            [self.table_.get(self._key(P[:, i]), self.prior_) for i in range(P.shape[1])]
        )

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "table": self.table_, "prior": self.prior_}

    @classmethod
    def from_dict(cls, d):
        blender = super().from_dict(d)
        blender.table_ = {str(k): float(v) for k, v in d["table"].items()}
        blender.prior_ = float(d["prior"])
        return blender


class NotABlender:
    """Anything that is not a BaseBlender subclass."""

    def __init__(self, metric: str | None = None):
        self.metric = metric
