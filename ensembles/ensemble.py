"""A built ensemble: its directory, its ``ensemble.json``, its blender and its predictions.

``load_ensemble(path)`` reads ``ENS_DIR/ensemble.json`` (``ensembles.load``); the saved
blend is restored by the blender's own code,
``BLENDERS.resolve(blend["method"]).from_dict(blend)`` (``restore_blender``). Blend
entries written before the blender saved its metric, task and sizes (format 1 as first
released) are completed from the top of ``ensemble.json`` and load as well.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ensembles import report as _report
from hpsearch.core import atomic
from hpsearch.core.errors import UserError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from ensembles.blenders import BaseBlender

__all__ = [
    "ENSEMBLE_JSON",
    "FORMAT",
    "Ensemble",
    "list_ensembles",
    "load_ensemble",
    "restore_blender",
]

FORMAT = 1
ENSEMBLE_JSON = "ensemble.json"


def restore_blender(info: dict[str, Any]) -> BaseBlender:
    """The fitted blender of an ``ensemble.json`` content, restored by its own ``from_dict``."""
    from ensembles.blenders import blender_class

    entry = {
        "metric": info["metric"],
        "task": info["task"],
        "n_classes": len(info.get("classes") or []),
        "n_members": len(info["members"]),
        **info["blend"],
    }
    return blender_class(entry["method"]).from_dict(entry)


@dataclass
class Ensemble:
    """A built ensemble (``ensembles.build`` / ``ensembles.load``).

    ``out_dir`` is its local directory and ``info`` the content of its ``ensemble.json``;
    ``uri`` is where it was pushed when it was built from a run at a URI. ``predict``
    and ``predict_frame`` reload the members from the run directories (see
    ``ensembles.predict``).
    """

    out_dir: Path
    info: dict[str, Any]
    uri: str | None = None  # where it was pushed, for a run at a URI (out_dir was a copy)
    _blender: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def path(self) -> Path | str:
        """Where the ensemble is: its URI when it was pushed to one, else its directory."""
        return self.uri or self.out_dir

    @property
    def method(self) -> str:
        """The blend method that makes the ensemble (a BLENDERS name or ``module:Class``)."""
        return str(self.info["method"])

    @property
    def mode(self) -> str:
        """``cv`` for an ensemble of cross-validated runs (fitted on out-of-fold predictions),
        else ``holdout``."""
        return "cv" if self.info.get("mode") == "cv" else "holdout"

    @property
    def scores(self) -> dict[str, dict[str, Any]]:
        """Method -> ``{fitted, cross_fitted}`` on the fit rows: the holdout rows, or the
        out-of-fold rows of a cross-validated build (:attr:`mode`) (with ``error`` where a
        method could not be fitted; an ``auto`` build adds its nested ``auto`` row)."""
        return self.info["scores"]

    @property
    def members(self) -> list[dict[str, Any]]:
        """One dict per member, in blend order: ``label``, ``kind`` (network or tree),
        ``run``, ``trial`` (networks) or ``tree`` (tree models: its name), ``weight``,
        ``valid_score``, ``holdout_score`` (``oof_score`` in a cross-validated build; ``folds``:
        K of a member fitted per fold). Copies: changing them changes nothing."""
        return copy.deepcopy(self.info["members"])

    @property
    def weights(self) -> dict[str, float]:
        """Member label -> its weight (for ``stack``: its meta-model coefficient, or its
        share of the absolute coefficients for multiclass)."""
        return {m["label"]: float(m["weight"]) for m in self.info["members"]}

    @property
    def blender(self) -> BaseBlender:
        """The fitted blender, restored from ``ensemble.json`` by its own ``from_dict``."""
        if self._blender is None:
            try:
                self._blender = restore_blender(self.info)
            except (ValueError, KeyError) as exc:
                why = str(exc).rstrip(".") if isinstance(exc, ValueError) else f"no {exc} key"
                fix = "" if "Fix:" in why else ". Fix: build the ensemble again"
                raise UserError(
                    f"ensemble {self.path}: its {self.method} blend cannot be restored: {why}{fix}."
                ) from exc
        return self._blender

    def predict(self, data: str | Path | pd.DataFrame) -> np.ndarray:
        """The blended prediction for new rows (a CSV/Parquet path or a DataFrame), in the
        run's conventions: ``(n,)`` P(class 1) or values, ``(n, K)`` for multiclass."""
        from ensembles.predict import predict_array

        return predict_array(self, data)

    def predict_frame(self, data: str | Path | pd.DataFrame) -> pd.DataFrame:
        """The submission-shaped table for new rows (id column, then prediction columns)."""
        from ensembles.predict import predict_new

        return predict_new(self, data)

    def ensure_report(self) -> tuple[Path, bool]:
        """(the path of ``report.md``, whether it or a plot was missing and is now
        regenerated from ``ensemble.json``)."""
        path = self.out_dir / _report.REPORT_MD
        if all((self.out_dir / p).exists() for p in (_report.REPORT_MD, *_report.PLOTS)):
            return path, False
        return _report.write_report(self.out_dir, self.info), True

    def summary_text(self) -> str:
        """Methods x fitted / cross-fitted (the chosen one marked) and the members."""
        return _report.summary_text({**self.info, "out_dir": self.uri or str(self.out_dir)})


EnsembleResult = Ensemble  # the name build_ensemble's result had before the public API


def load_ensemble(path: str | Path) -> Ensemble:
    """The ensemble in directory ``path``; UserError when it holds none or its blend method
    cannot be imported here."""
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
    return Ensemble(path, info)


def list_ensembles(run_dir: str | Path) -> list[tuple[str, dict[str, Any] | UserError]]:
    """(name, ``ensemble.json`` content or the UserError that stops reading it) for each
    ensemble of a run (a path or URI; at a URI only the json files are fetched), by name.
    UserError when ``run_dir`` holds no run."""
    from hpsearch.core.remote import local_copy
    from hpsearch.core.store import RUN_JSON, RunDir

    with local_copy(run_dir, include=(RUN_JSON, f"ensembles/*/{ENSEMBLE_JSON}")) as (path, _):
        rd = RunDir(path)
        rd.read_meta()  # a clear error for a directory that holds no run
        root = rd.ensembles_dir
        dirs = (
            sorted(p for p in root.iterdir() if (p / ENSEMBLE_JSON).exists() and p.name[0] != ".")
            if root.exists()
            else []
        )
        out: list[tuple[str, dict[str, Any] | UserError]] = []
        for d in dirs:
            try:
                out.append((d.name, load_ensemble(d).info))
            except UserError as exc:
                out.append((d.name, exc))
        return out
