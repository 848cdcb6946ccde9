"""How a network learns a regression target, and how its raw output becomes a prediction.

A regression network learns a *standardized* target: ``(t - mean) / std`` with the mean
and standard deviation of ``t`` on the rows it trains on (``target_scaling``). ``t`` is the
target itself, or under the ``rmsle`` metric its ``log1p`` (``target_transform:
"log1p"``): minimizing the squared error of ``log1p`` is minimizing RMSLE. Both are
recorded in ``trial.json`` (and, for a refit member, in ``ensemble.json``), and every
place that turns a saved network's raw output back into a prediction calls
:func:`from_network`: un-standardize, then ``expm1`` and clip at 0 under ``log1p``.
Classification targets are not transformed (probabilities, calibrated for log loss).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "LOG1P",
    "TRANSFORMS",
    "decode",
    "encode",
    "fit_scaling",
    "from_network",
    "regression_loss",
    "to_network",
    "transform_for",
]

LOG1P = "log1p"
TRANSFORMS = (LOG1P,)
# exp of more than this overflows float64: a diverged network still predicts finite values
_MAX_LOG = 700.0


def transform_for(metric: str, task: str) -> str | None:
    """The transform a network's regression target gets under ``metric``: ``"log1p"`` for
    ``rmsle``, None otherwise (and for classification)."""
    return LOG1P if task == "regression" and metric == "rmsle" else None


def regression_loss(metric: str) -> str:
    """The Keras loss of a regression head under ``metric``: absolute error for ``mae``,
    squared error otherwise (``rmse``; ``rmsle`` on the ``log1p`` scale)."""
    return "mean_absolute_error" if metric == "mae" else "mse"


def _check(transform: str | None) -> None:
    if transform is not None and transform not in TRANSFORMS:
        raise ValueError(
            f"unknown target transform {transform!r}; known: {', '.join(TRANSFORMS)} or none"
        )


def encode(y: Any, transform: str | None) -> np.ndarray:
    """The target on the scale the network learns (before standardizing)."""
    _check(transform)
    y = np.asarray(y, dtype=np.float64)
    if transform == LOG1P:
        return np.log1p(np.maximum(y, 0.0))
    return y


def decode(t: Any, transform: str | None) -> np.ndarray:
    """The inverse of :func:`encode`: predictions in the target's natural units
    (``expm1``, clipped at 0, under ``log1p``: RMSLE is defined)."""
    _check(transform)
    t = np.asarray(t, dtype=np.float64)
    if transform == LOG1P:
        return np.maximum(np.expm1(np.minimum(t, _MAX_LOG)), 0.0)
    return t


def fit_scaling(y: Any, transform: str | None) -> tuple[float, float]:
    """``(mean, std)`` of the encoded target (std 1 when the target is constant)."""
    t = encode(y, transform)
    return float(np.mean(t)), float(np.std(t)) or 1.0


def to_network(y: Any, scaling: Sequence[float], transform: str | None) -> np.ndarray:
    """The standardized target a regression network trains on (float32)."""
    t = encode(y, transform)
    return ((t - float(scaling[0])) / float(scaling[1])).astype(np.float32)


def from_network(
    pred: Any, task: str, scaling: Sequence[float] | None, transform: str | None
) -> np.ndarray:
    """A regression network's raw head output as a prediction in natural units:
    un-standardized with ``scaling`` (``trial.json``'s ``target_scaling``), then decoded
    (``target_transform``). Classification outputs are returned as they are."""
    pred = np.asarray(pred, dtype=np.float64)
    if task != "regression":
        return pred
    if scaling:
        pred = pred * float(scaling[1]) + float(scaling[0])
    return decode(pred, transform)
