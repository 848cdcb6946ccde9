"""Predict new rows with a built ensemble: reload every member and blend as at build time.

Each member is rebuilt from its run directory only: networks from
``trials/<n>/model.keras`` (Keras ``safe_mode=True``) fed by the run's saved
preprocessor (``hpsearch.core.data.transform_new``), trees from
``trees/<name>/model.joblib`` fed by the run's tree matrix
(``hpsearch.core.data.tree_matrix_new``). Predictions follow the training
conventions (``hpsearch.search.training``): the head's output, binary as P(class 1),
regression in natural units (un-standardized with the trial's ``target_scaling`` and, under
``rmsle``, ``expm1``'d back and clipped at 0: ``hpsearch.core.targets.from_network`` with
its ``target_transform``; trees undo their ``target_transform`` the same way). A member of
a cross-validated run (``folds`` = K in its ``ensemble.json`` entry) is the mean of its K
fold models' predictions (``model_fold<k>.keras``, each un-scaled with its
``fold_target_scaling[k]``, or ``model_fold<k>.joblib``), as its ``test_pred.npy`` was. The blend is the blender restored from the ``blend``
entry of ``ensemble.json`` (``Ensemble.blender``), so the run's test file reproduces
``test_pred.npy``. Each function takes a loaded ``Ensemble`` (``ensembles.load(path)``), whose
``predict``/``predict_frame`` call them.

A refit member (``ensembles build --refit``; ``"refit": true`` in ``ensemble.json``) is
loaded from the ensemble's own ``refit/`` folder instead, with its ``refit_model``'s
target scaling.

Integrity: before any member is loaded, every member the blend uses is checked
(``_Members.verify``): its ``trial.json`` or ``tree.json`` and its model file(s) must match
the SHA-256s that ``ensemble.json`` recorded at build time, and the run directories may
hold no symbolic link out of them. The model is then loaded from those same bytes, so a
changed or planted ``model.joblib`` is never unpickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hpsearch.core import atomic, targets
from hpsearch.core.errors import RunDirError, UserError
from hpsearch.core.store import TRIAL_JSON, RunDir, read_record

if TYPE_CHECKING:
    from ensembles.ensemble import Ensemble

__all__ = ["predict_array", "predict_members", "predict_new"]


def _run_paths(ens: Ensemble) -> dict[str, Path]:
    """Recorded run path -> where it is now (the recorded path, else the same place
    relative to the ensemble directory, which survives moving both together)."""
    out = {}
    rel = ens.info.get("runs_relative") or [None] * len(ens.info["runs"])
    for recorded, relative in zip(ens.info["runs"], rel, strict=True):
        path = Path(recorded)
        if not (path / "run.json").exists() and relative is not None:
            moved = (ens.out_dir / relative).resolve()
            if (moved / "run.json").exists():
                path = moved
        if not (path / "run.json").exists():
            raise RunDirError(
                f"run directory {recorded} of ensemble {ens.out_dir} is gone. "
                "Fix: restore the run directory; an ensemble predicts with its runs' models."
            )
        meta = RunDir(path).read_meta()
        RunDir(path).check_links()
        if meta.get("data_fingerprint") != ens.info["data_fingerprint"]:
            raise RunDirError(
                f"run directory {path} no longer matches ensemble {ens.out_dir} (data "
                "fingerprint differs). Fix: build the ensemble again."
            )
        out[recorded] = path
    return out


def _as_frame(data: str | Path | pd.DataFrame) -> pd.DataFrame:
    from hpsearch.core.data import load_table

    if isinstance(data, pd.DataFrame):
        return data.reset_index(drop=True)
    return load_table(data)


class _Members:
    """Lazily transformed inputs per run, and the Keras/tree predictions of members."""

    def __init__(self, ens: Ensemble, df: pd.DataFrame):
        self.ens = ens
        self.df = df
        self.runs = _run_paths(ens)
        self._inputs: dict[Path, dict[str, np.ndarray]] = {}
        self._tree_x: dict[Path, np.ndarray] = {}
        self.task = ens.info["task"]
        self.k = len(ens.info.get("classes") or [])

    def inputs(self, run: Path) -> dict[str, np.ndarray]:
        from hpsearch.core.data import transform_new

        if run not in self._inputs:
            self._inputs[run] = transform_new(run, self.df)
        return self._inputs[run]

    def tree_x(self, run: Path) -> np.ndarray:
        from hpsearch.core.data import tree_matrix_new

        if run not in self._tree_x:
            self._tree_x[run] = tree_matrix_new(run, self.df)
        return self._tree_x[run]

    # -- checks before anything is loaded --------------------------------------------
    def verify(self, member: dict[str, Any]) -> tuple[dict[str, Any], list[bytes | None]]:
        """(the member's ``trial.json``/``tree.json`` content, the bytes (or None) of its
        model, or of its K fold models), all checked against the SHA-256s ``ensemble.json``
        recorded; RunDirError naming the file otherwise. Nothing is deserialized but the
        checked JSON."""
        files = member.get("files")
        if not atomic.has_hashes(files):
            raise RunDirError(
                f"ensemble {self.ens.out_dir}: member {member['label']} has no SHA-256 recorded "
                "for its files (built before ensembles recorded them), so it is not loaded. "
                "Fix: build the ensemble again (`ensembles build RUN_DIR`)."
            )
        if member.get("refit"):
            return self._verify_refit(member)
        if member["kind"] == "network":
            return self._verify_network(member)
        return self._verify_tree(member)

    def _verify_refit(self, member: dict[str, Any]) -> tuple[dict[str, Any], list[bytes | None]]:
        """(the member's ``refit_model`` entry, the bytes of the refit model saved in the
        ensemble directory), checked against the SHA-256 ``ensemble.json`` recorded."""
        from ensembles.trees import MODEL_FILE

        entry = member.get("refit_model") or {}
        root = self.ens.out_dir.resolve()
        folder = (root / str(entry.get("dir") or "")).resolve()
        keras = member["kind"] == "network" and not _is_tree_trial(member)
        name = "model.keras" if keras else MODEL_FILE
        fix = "build the ensemble again (`ensembles build RUN_DIR --refit`)."
        if folder == root or not folder.is_relative_to(root):
            raise RunDirError(
                f"ensemble {self.ens.out_dir}: member {member['label']}'s refit model "
                f"{entry.get('dir')!r} is not a folder inside the ensemble directory, so it is "
                f"not loaded. Fix: {fix}"
            )
        data = atomic.read_verified(
            folder / name,
            entry.get("files"),
            record=str(self.ens.out_dir / "ensemble.json"),
            who=f"member {member['label']}",
            what="refit model",
            fix=fix,
        )
        if data is None:
            raise RunDirError(
                f"member {member['label']}: refit model {folder / name} is missing. Fix: {fix}"
            )
        return entry, [data]

    def _read(self, member: dict[str, Any], path: Path, what: str, fix: str) -> bytes | None:
        return atomic.read_verified(
            path,
            member["files"],
            record=str(self.ens.out_dir / "ensemble.json"),
            who=f"member {member['label']}",
            what=what,
            fix=fix,
        )

    def _verify_network(self, member: dict[str, Any]) -> tuple[dict[str, Any], list[bytes | None]]:
        run = self.runs[member["run"]]
        tdir = RunDir(run).trial_path(int(member["trial"]))
        if not (tdir / TRIAL_JSON).is_file():
            raise RunDirError(
                f"trial {member['trial']} of run {run} is gone (no trial.json). "
                "Fix: restore it, or build the ensemble again."
            )
        fix = (
            f"restore {tdir} from a copy of the run, or build the ensemble again "
            "(`ensembles build RUN_DIR`) to leave a changed trial out."
        )
        data = self._read(member, tdir / TRIAL_JSON, "record", fix)
        info, _ = read_record(tdir / TRIAL_JSON, TRIAL_JSON, data)
        return info, [self._read(member, tdir / f, "model", fix) for f in _trial_models(member)]

    def _verify_tree(self, member: dict[str, Any]) -> tuple[dict[str, Any], list[bytes | None]]:
        from ensembles.trees import TREE_JSON, load_tree, model_files_for, trees_dir

        run = self.runs[member["run"]]
        folder = trees_dir(run) / member["tree"]
        fix = "build the ensemble again (`ensembles build RUN_DIR`), which fits the tree again."
        try:
            data = self._read(member, folder / TREE_JSON, "record", fix)
        except RunDirError as mismatch:
            # a refit (a new fit_id) says more than the hash; the JSON is only read for that
            try:
                rec = load_tree(run, member["tree"])
            except RunDirError:  # damaged: the mismatch says it
                raise mismatch from None
            if rec is not None and rec.info.get("fit_id") == member.get("fit_id"):
                raise mismatch from None
            raise RunDirError(
                f"tree {member['tree']} of run {run} was refitted or removed after ensemble "
                f"{self.ens.out_dir} was built. Fix: build the ensemble again."
            ) from None
        info, _ = read_record(folder / TREE_JSON, TREE_JSON, data)
        files = model_files_for(_folds(member))
        return info, [self._read(member, folder / f, "model", fix) for f in files]

    # -- predictions ----------------------------------------------------------------------
    def network(
        self, member: dict[str, Any], info: dict[str, Any], models: list[bytes | None]
    ) -> np.ndarray:
        """The member's prediction: its model's, the mean of its K fold models', or (a refit
        member; ``info`` is then its ``refit_model`` entry) its refit model's."""
        from hpsearch.core.store import load_keras_model
        from hpsearch.search.training import _head_prediction, _model_inputs

        run = self.runs[member["run"]]
        rd = RunDir(run)
        heads = rd.read_meta().get("output_spec", {}).get("heads") or [{"name": "output"}]
        if member.get("refit"):
            tdir = self.ens.out_dir / str(info["dir"])
            names = ["model.keras"]
            scalings = [info.get("target_scaling")]
            fix = "build the ensemble again (`ensembles build RUN_DIR --refit`)."
        else:
            tdir = rd.trial_path(int(member["trial"]))
            names = _network_models(member)
            scalings = _scalings(member, info, len(names))
            fix = (
                f"restore {tdir} from a copy of the run, or build the ensemble again "
                "(`ensembles build RUN_DIR`) without that trial (delete its trial directory)."
            )
        missing = [n for n, m in zip(names, models, strict=True) if m is None]
        if missing:
            raise UserError(
                f"trial {member['trial']} of run {run} has no saved model "
                f"({tdir / missing[0]}): its trial function did not save one, so this ensemble "
                "cannot predict new rows. Fix: build the ensemble from trials trained by the "
                "Keras trainer."
            )
        transform = member.get("target_transform", info.get("target_transform"))
        if member.get("refit"):
            transform = info.get("target_transform", transform)
        total = None
        for name, model, scaling in zip(names, models, scalings, strict=True):
            keras_model = load_keras_model(
                model, path=tdir / name, who=f"member {member['label']}", fix=fix
            )
            raw = keras_model.predict(
                _model_inputs(keras_model, self.inputs(run)), batch_size=1024, verbose=0
            )
            pred = _head_prediction(raw, heads[0]["name"], self.task)
            pred = targets.from_network(pred, self.task, scaling, transform)
            total = pred if total is None else total + pred
        return total / len(names)

    def tree(
        self, member: dict[str, Any], info: dict[str, Any], models: list[bytes | None]
    ) -> np.ndarray:
        """The tree's prediction (a fixed tree, or a tree family's trial): its model's, or
        the mean of its K fold models'."""
        from ensembles.trees import predict_tree, tree_model_from_bytes

        run = self.runs[member["run"]]
        if member["kind"] == "network" and not member.get("refit"):
            missing = [i for i, m in enumerate(models) if m is None]
            if missing:
                raise RunDirError(
                    f"trial {member['trial']} of run {run} has no saved model.joblib. Fix: "
                    "build the ensemble again without that trial (delete its trial directory)."
                )
        total = None
        for model in models:
            if model is None:  # pragma: no cover - a tree always records its models
                raise RunDirError(f"tree {member['tree']} of run {run} has no saved model.")
            estimator = tree_model_from_bytes(model)
            # a refit tree's transform is in its refit_model entry (``info`` then)
            pred = predict_tree(
                estimator, self.tree_x(run), self.task, self.k, info.get("target_transform")
            )
            total = pred if total is None else total + pred
        return total / len(models)

    def predict(
        self, member: dict[str, Any], checked: tuple[dict[str, Any], list[bytes | None]]
    ) -> np.ndarray:
        info, models = checked
        if _is_tree_trial(member):  # a tree family's trial: its tree matrix, like the trees
            pred = self.tree(member, info, models)
        elif member["kind"] == "network":
            pred = self.network(member, info, models)
        else:
            pred = self.tree(member, info, models)
        pred = np.asarray(pred, dtype=np.float64)
        expected = (len(self.df), self.k) if self.task == "multiclass" else (len(self.df),)
        if pred.shape != expected:
            raise RunDirError(
                f"member {member['label']} predicted shape {pred.shape} for {len(self.df)} "
                f"row(s), expected {expected}. Fix: build the ensemble again."
            )
        return pred


def _folds(member: dict[str, Any]) -> int | None:
    """K of a member of a cross-validated run (its K fold models); None otherwise."""
    k = member.get("folds")
    return int(k) if isinstance(k, int) and not isinstance(k, bool) and k > 0 else None


def _is_tree_trial(member: dict[str, Any]) -> bool:
    """Whether a trial member is a tree family's (``model_format: joblib``)."""
    return member["kind"] == "network" and member.get("model_format") == "joblib"


def _trial_models(member: dict[str, Any]) -> list[str]:
    """The model files of a trial member: ``model.keras`` (``model.joblib`` for a tree
    family's trial), or one ``model_fold<k>.keras`` (``.joblib``) per fold."""
    from hpsearch.core.store import fold_model_name, model_name

    fmt = member.get("model_format") or "keras"
    k = _folds(member)
    return [fold_model_name(i, fmt) for i in range(k)] if k else [model_name(fmt)]


def _network_models(member: dict[str, Any]) -> list[str]:
    """The model files of a network member: ``model.keras``, or ``model_fold<k>.keras``."""
    k = _folds(member)
    return [f"model_fold{i}.keras" for i in range(k)] if k else ["model.keras"]


def _scalings(member: dict[str, Any], info: dict[str, Any], n: int) -> list[Any]:
    """The target scaling ``[mu, sd]`` (or None) of each of a network's ``n`` models: the
    trial's ``target_scaling``, or one ``fold_target_scaling`` entry per fold model."""
    if _folds(member):
        per_fold = info.get("fold_target_scaling")
        if per_fold is None:
            return [None] * n
        if not isinstance(per_fold, list) or len(per_fold) != n:
            raise RunDirError(
                f"member {member['label']}: trial.json's fold_target_scaling holds "
                f"{len(per_fold) if isinstance(per_fold, list) else per_fold!r} entries for "
                f"{n} fold models. Fix: build the ensemble again without that trial (delete "
                "its trial directory)."
            )
        return per_fold
    return [member.get("target_scaling") or info.get("target_scaling")]


def predict_members(ens: Ensemble, data: str | Path | pd.DataFrame) -> np.ndarray:
    """Every member's predictions for new rows: ``(m, n)`` or ``(m, n, K)``, member order of
    ``ensemble.json``. Members the blend does not read (zero weight) are not loaded (zeros)."""
    df = _as_frame(data)
    members = _Members(ens, df)
    used = ens.blender.members_used()
    # every member used is checked before any is loaded
    checked = [members.verify(m) if used[j] else None for j, m in enumerate(ens.info["members"])]
    out = []
    for j, member in enumerate(ens.info["members"]):
        if checked[j] is None:
            shape = (len(df), members.k) if members.task == "multiclass" else (len(df),)
            out.append(np.zeros(shape))
            continue
        out.append(members.predict(member, checked[j]))
        checked[j] = None  # the model's bytes are no longer needed
    return np.stack(out)


def predict_array(ens: Ensemble, data: str | Path | pd.DataFrame) -> np.ndarray:
    """The blended prediction for new rows, in the run's conventions (as ``test_pred.npy``)."""
    return ens.blender.predict(predict_members(ens, data))


def predict_new(ens: Ensemble, data: str | Path | pd.DataFrame) -> pd.DataFrame:
    """The submission-shaped table for new rows (a CSV/Parquet path or a DataFrame)."""
    from hpsearch.core.submission import submission_frame, submission_layout

    info = ens.info
    df = _as_frame(data)
    pred = predict_array(ens, df)
    layout = info.get("submission")
    if layout is None:
        layout = submission_layout(
            info["task"], info["target"], info.get("classes"), info.get("id_column"),
            metric=info.get("metric"),
        )  # fmt: skip
    id_col = layout["id_column"]
    ids = df[id_col].to_numpy() if id_col in df.columns else np.arange(len(df))
    return submission_frame(layout, ids, pred, info.get("classes"))
