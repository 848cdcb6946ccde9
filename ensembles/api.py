"""The public Python API of ``ensembles``: ``build`` and ``load`` (exported by the package).

import ensembles

ens = ensembles.build(["runs/bc"], top_k=5, trees=("rf", "hgb"))
ens.scores          # method -> {fitted, cross_fitted}
ens.predict(frame)  # blended predictions for new rows
ens = ensembles.load(ens.path)
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ensembles.ensemble import Ensemble

__all__ = ["build", "load"]


def _location(run: Any) -> str | Path:
    """A run given as a path, a URI, or an object with a ``.path`` (``hpsearch.Run``)."""
    if isinstance(run, str | os.PathLike):
        return run if isinstance(run, str) else Path(run)
    path = getattr(run, "path", None)
    if path is None:
        from hpsearch.core.errors import UserError

        raise UserError(
            f"run {run!r} is not a run directory path, URI or run object (no .path). "
            "Fix: pass RUN_DIR paths or the runs hpsearch.load_run returns."
        )
    return path if isinstance(path, str) else Path(path)


def build(
    runs: Any,
    *,
    name: str | None = None,
    top_k: int | None = None,
    max_corr: float | str | None = None,
    margin: float | str | None = None,
    trees: Iterable[str] | str | None = None,
    method: str | None = None,
    folds: int | None = None,
    out: str | Path | None = None,
    progress: bool = False,
    seed: int = 0,
    refit: bool | None = None,
) -> Ensemble:
    """Build an ensemble of the finished trials (and tree models) of ``runs``.

    ``runs``: one run or a list of runs, each a run directory path, a URI (``s3://...``)
    or an object with a ``.path`` (the ``Run`` of ``hpsearch.load_run``). The options are
    those of ``ensembles build`` (defaults from the first run's spec ``ensemble:``
    section): ``name`` (under ``RUN_DIR/ensembles/``) or ``out`` (a directory),
    ``top_k``, ``max_corr`` (``"none"``: no correlation filter), ``margin`` (``"none"``
    or ``math.inf``: no eligibility cut), ``trees``, ``method`` (auto, best, mean, greedy,
    nelder-mead, stack or ``"module:Class"``), ``folds``; ``None`` takes the spec's value;
    ``progress`` prints progress lines on stderr; ``seed`` seeds the cross-fitting folds;
    ``refit=True`` trains the members the blend uses again on every labelled row (train,
    valid and holdout) and blends their test predictions with the same weights
    (``ensembles.refit``; refused for runs with cross-validated trials).
    Raises ``hpsearch.core.errors.UserError`` (or its ``RunDirError``) for input a user
    can fix.
    """
    from ensembles.builder import build_ensemble

    if isinstance(runs, str | os.PathLike) or hasattr(runs, "path"):
        runs = [runs]
    return build_ensemble(
        [_location(r) for r in runs],
        top_k=top_k,
        max_corr=max_corr,
        margin=margin,
        trees=trees,
        method=method,
        folds=folds,
        out=out,
        name=name,
        progress=progress,
        seed=seed,
        refit=refit,
    )


def load(path: str | Path) -> Ensemble:
    """The ensemble in directory ``path`` (``RUN_DIR/ensembles/<name>``); UserError when it
    holds none."""
    from ensembles.ensemble import load_ensemble

    return load_ensemble(path)
