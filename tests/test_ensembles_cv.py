"""Ensembles of cross-validated runs (``split: {folds: K}``): candidates from out-of-fold
predictions, blends fitted on every labelled row, the folds check across runs, trees
fitted per fold, metric-aware trees, and predictions of new rows with the K fold models.

The runs are made here as the search side writes them (docs/run-directory.md): the data
prepared into a run directory, then trials with ``oof_pred.npy`` / ``test_pred.npy`` (and
``model_fold<k>.keras`` where a test predicts new rows), so no search runs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ensembles.blenders import BLENDERS, get_blender
from ensembles.builder import build_ensemble
from ensembles.cli import main as ensembles_main
from ensembles.ensemble import load_ensemble, restore_blender
from ensembles.trees import (
    ensure_trees,
    fit_estimator,
    load_tree,
    load_tree_models,
    make_tree,
    predict_tree,
    target_transform,
    tree_loss,
    tree_params,
)
from hpsearch.core import atomic, metrics
from hpsearch.core.data import fold_rows, load_table, prepare
from hpsearch.core.errors import RunDirError, UserError
from hpsearch.core.spec import load_spec
from hpsearch.core.store import RunDir
from hpsearch.search.trial import TrialResult
from tests.conftest import make_spec_dict

# --------------------------------------------------------------------------- fake runs


def _write_csvs(root: Path, source: str = "sklearn:breast_cancer", n_train: int = 300):
    """A bundled table as train.csv (with an id column) and test.csv (no target)."""
    df = load_table(source)
    df.insert(0, "id", np.arange(1000, 1000 + len(df)))
    root.mkdir(parents=True, exist_ok=True)
    train, test = root / "train.csv", root / "test.csv"
    df.iloc[:n_train].to_csv(train, index=False)
    df.iloc[n_train:].drop(columns=["target"]).to_csv(test, index=False)
    return train, test


def _skewed_csvs(root: Path, n: int = 600, seed: int = 0):
    """A regression table with a right-skewed positive target (prices-like)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n + 200, 4))
    y = np.exp(1.0 + 1.2 * X[:, 0] + 0.6 * X[:, 1] + 0.2 * rng.normal(size=n + 200))
    df = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    df.insert(0, "id", np.arange(len(df)))
    df["price"] = np.round(y, 4)
    root.mkdir(parents=True, exist_ok=True)
    train, test = root / "train.csv", root / "test.csv"
    df.iloc[:n].to_csv(train, index=False)
    df.iloc[n:].drop(columns=["price"]).to_csv(test, index=False)
    return train, test


def _make_run(root: Path, *, folds: int | None = 3, seed: int = 0, **over: Any):
    """(run directory, prepared data) of a run initialised as `hpsearch run` does, without
    trials."""
    from hpsearch.search.driver import _init_run_dir
    from search_spaces.space import load_space

    split = {"valid": 0.2, "holdout": 0.2, "seed": seed}
    if folds:
        split = {"folds": folds, "seed": seed}
    spec = load_spec(make_spec_dict(root, split=split, **over))
    prepared = prepare(spec)
    rd = RunDir(spec.output)
    _init_run_dir(rd, spec, load_space(spec.space), prepared)
    return Path(spec.output), prepared


def _noisy(y: np.ndarray, task: str, n_classes: int, rng, quality: float) -> np.ndarray:
    """Predictions near the truth (``y`` None: test rows, no signal)."""
    n = len(y)
    if task == "regression":
        return y + rng.normal(0, np.std(y) * (1.2 - quality), n)
    if task == "binary":
        logit = (y - 0.5) * 4 * quality + rng.normal(0, 1.5, n)
        return 1.0 / (1.0 + np.exp(-logit))
    logits = rng.normal(0, 1.5, (n, n_classes))
    logits[np.arange(n), y.astype(int)] += 4 * quality
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _cv_extra(prepared, oof: np.ndarray, metric: str) -> dict[str, Any]:
    """The cross-validation part of a trial.json (docs/run-directory.md)."""
    y, k = prepared.y["train"], prepared.folds
    split = prepared.split
    per_fold = []
    for fold in range(k):
        train, valid, held = fold_rows(
            prepared.fold_of, fold, y, prepared.task, split["inner_valid"], split["seed"]
        )
        per_fold.append(
            {
                "fold": fold,
                "value": float(metrics.score(metric, y[held], oof[held])),
                "valid_value": None,
                "epochs": 1,
                "best_epoch": 0,
                "duration_s": 0.0,
                "n_train": len(train),
                "n_valid": len(valid),
                "n_oof": len(held),
            }
        )
    return {
        "cv": {"folds": k, "folds_fingerprint": split["folds_fingerprint"]},
        "folds": per_fold,
        "target_scaling": None,
    }


def _write_trial(
    run: Path,
    number: int,
    preds: dict[str, np.ndarray],
    value: float,
    extra: dict[str, Any],
    models: dict[str, bytes] | None = None,
) -> Path:
    """A COMPLETE trial as the driver writes it; ``models`` (file name -> bytes) are added
    with their SHA-256s recorded in trial.json, as a trainer that saved them would have."""
    result = TrialResult(number=number, state="COMPLETE", value=value, predictions=preds)
    tdir = RunDir(run).write_trial(result, {"units": 8 + number}, extra=extra)
    if models:
        info = json.loads((tdir / "trial.json").read_text())
        for name, data in models.items():
            info["files"][name] = atomic.write_hashed(tdir / name, data)
        atomic.write_json(tdir / "trial.json", info)
    return tdir


def _oracle_cv_trials(run: Path, prepared, n_trials: int = 4, seed: int = 0) -> None:
    """Trials with noisy out-of-fold predictions of every labelled row (and test rows)."""
    metric = load_spec(run / "spec.yaml").metric
    y = prepared.y["train"]
    k = prepared.n_classes
    for number in range(n_trials):
        rng = np.random.default_rng(seed + 101 * number)
        quality = 0.4 + 0.15 * number
        oof = _noisy(y, prepared.task, k, rng, quality)
        preds = {"oof": oof}
        if "test" in prepared.x:
            n_test = len(prepared.ids["test"])
            preds["test"] = _noisy(np.zeros(n_test), prepared.task, k, rng, 0.0)
        value = float(metrics.score(metric, y, oof))
        _write_trial(run, number, preds, value, _cv_extra(prepared, oof, metric))


def _holdout_trials(run: Path, prepared, n_trials: int = 2) -> None:
    metric = load_spec(run / "spec.yaml").metric
    for number in range(n_trials):
        rng = np.random.default_rng(number)
        preds = {
            s: _noisy(prepared.y[s], prepared.task, prepared.n_classes, rng, 0.6)
            for s in ("valid", "holdout")
        }
        value = float(metrics.score(metric, prepared.y["valid"], preds["valid"]))
        _write_trial(run, number, preds, value, {"target_scaling": None})


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory):
    """A 3-fold binary run with a test set and 4 oracle trials."""
    root = tmp_path_factory.mktemp("cv")
    train, test = _write_csvs(root / "data")
    data = {"train": str(train), "test": str(test), "target": "target", "id": "id"}
    run, prepared = _make_run(root, folds=3, name="bc-cv", data=data)
    _oracle_cv_trials(run, prepared)
    return run, prepared


# --------------------------------------------------------------------------- blends on oof


def test_cv_build_fits_every_blender_on_the_out_of_fold_rows(cv_run):
    run, prepared = cv_run
    ens = build_ensemble([run], trees=(), top_k=4, max_corr=1.0, name="oof-mean", method="mean")
    info = ens.info
    y = prepared.y["train"]
    n = len(y)
    # every labelled row is a fit row: the run has no holdout rows at all
    assert "holdout" not in prepared.y and n == 300
    assert info["mode"] == "cv" and info["fit_split"] == "oof"
    assert info["cv"] == {"folds": 3, "folds_fingerprint": prepared.split["folds_fingerprint"]}
    assert info["n_oof"] == n and "n_holdout" not in info and "holdout_score" not in info
    assert not (ens.out_dir / "holdout_pred.npy").exists()
    assert set(info["files"]) == {"oof_pred.npy", "test_pred.npy", "submission.csv"}
    # candidates are the trials' oof predictions
    rd = RunDir(run)
    P = np.stack([rd.read_trial(m["trial"]).predictions("oof") for m in info["members"]])
    assert P.shape == (len(info["members"]), n)
    for m, p in zip(info["members"], P, strict=True):
        assert m["oof_score"] == pytest.approx(metrics.score("log_loss", y, p))
        assert "holdout_score" not in m
    # each method's fitted score is that blender fitted on all labelled rows (y["train"])
    for method in BLENDERS:
        if method == "stack":
            continue  # its fit is regularised; scored the same way, checked by the json below
        fitted = get_blender(method, metric="log_loss").fit(P, y)
        assert info["scores"][method]["fitted"] == pytest.approx(
            metrics.score("log_loss", y, fitted.predict(P)), rel=1e-9
        ), method
    oof = np.load(ens.out_dir / "oof_pred.npy")
    np.testing.assert_allclose(oof, P.mean(axis=0))
    assert info["oof_score"] == pytest.approx(metrics.score("log_loss", y, oof))
    # the test blend is the blend of the trials' (fold-averaged) test predictions
    T = np.stack([rd.read_trial(m["trial"]).predictions("test") for m in info["members"]])
    np.testing.assert_allclose(np.load(ens.out_dir / "test_pred.npy"), T.mean(axis=0))
    np.testing.assert_allclose(restore_blender(info).predict(P), oof)
    # the views say the scores are out of fold
    text = ens.summary_text()
    assert f"{n} out-of-fold rows" in text and "3 folds" in text
    report = (ens.out_dir / "report.md").read_text()
    assert "every score below is out of fold" in report and "| oof |" in report
    assert "holdout" not in report


def test_cv_auto_build_cross_fits_on_the_out_of_fold_rows(cv_run):
    run, prepared = cv_run
    ens = build_ensemble([run], trees=(), top_k=4, name="oof-auto", folds=4)
    info = ens.info
    assert info["requested_method"] == "auto" and set(info["scores"]) == {*BLENDERS, "auto"}
    assert len(info["scores"]["auto"]["chosen_per_fold"]) == 4
    # `ensembles list` and `report` read a cross-validated ensemble
    assert ensembles_main(["list", str(run)]) == 0
    assert load_ensemble(ens.out_dir).mode == "cv"


def test_a_cv_trial_without_out_of_fold_predictions_is_named(cv_run, tmp_path):
    import shutil

    run, prepared = cv_run
    copy = tmp_path / "copy"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("ensembles", "trees"))
    (RunDir(copy).trial_path(2) / "oof_pred.npy").unlink()
    with pytest.raises(RunDirError, match=r"trial 2: .*oof_pred\.npy is missing"):
        build_ensemble([copy], trees=())


def test_a_trial_of_other_folds_is_refused(cv_run, tmp_path):
    import shutil

    run, _ = cv_run
    copy = tmp_path / "copy"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("ensembles", "trees"))
    path = RunDir(copy).trial_path(1) / "trial.json"
    info = json.loads(path.read_text())
    info["cv"]["folds_fingerprint"] = "0" * 64
    path.write_text(json.dumps(info))
    with pytest.raises(RunDirError, match=r"trial 1: trial\.json records folds 3 .*Fix: delete"):
        build_ensemble([copy], trees=())


# --------------------------------------------------------------------------- the folds check


def test_runs_with_the_same_folds_are_blended(cv_run, tmp_path):
    run, _ = cv_run
    train_csv = load_spec(run / "spec.yaml").data.train
    test_csv = load_spec(run / "spec.yaml").data.test
    data = {"train": train_csv, "test": test_csv, "target": "target", "id": "id"}
    # another run of the same data, folds and seed: another space, other trials
    other, prepared = _make_run(tmp_path, folds=3, name="bc-cv-2", data=data, space="wide_deep")
    _oracle_cv_trials(other, prepared, n_trials=2, seed=7)
    ens = build_ensemble([run, other], trees=(), top_k=6, max_corr=1.0, method="mean")
    labels = [m["label"] for m in ens.info["members"]]
    assert any(lb.startswith("bc-cv/") for lb in labels)
    assert any(lb.startswith("bc-cv-2/") for lb in labels)
    assert ens.info["n_oof"] == 300


@pytest.mark.parametrize("change", ["folds", "seed"])
def test_runs_with_other_folds_are_refused(cv_run, tmp_path, capsys, change):
    run, _ = cv_run
    spec = load_spec(run / "spec.yaml")
    data = {"train": spec.data.train, "test": spec.data.test, "target": "target", "id": "id"}
    folds, seed = (4, 0) if change == "folds" else (3, 1)
    other, prepared = _make_run(tmp_path, folds=folds, seed=seed, name="bc-cv-x", data=data)
    _oracle_cv_trials(other, prepared, n_trials=1)
    with pytest.raises(RunDirError) as err:
        build_ensemble([run, other], trees=())
    msg = str(err.value)
    assert str(run) in msg and str(other) in msg
    assert "cross-validation folds differ" in msg and "`split.folds`" in msg
    assert "`split.seed`" in msg and "\n" not in msg
    # the command line: exit 2, one line
    assert ensembles_main(["build", str(run), str(other), "--trees", "none", "--quiet"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "cross-validation folds differ" in lines[0]


def test_a_cv_run_and_a_holdout_run_are_refused(cv_run, tmp_path):
    run, _ = cv_run
    spec = load_spec(run / "spec.yaml")
    data = {"train": spec.data.train, "test": spec.data.test, "target": "target", "id": "id"}
    holdout, prepared = _make_run(tmp_path, folds=None, name="bc-holdout", data=data)
    _holdout_trials(holdout, prepared)
    for pair in ([run, holdout], [holdout, run]):
        with pytest.raises(RunDirError) as err:
            build_ensemble(pair, trees=())
        msg = str(err.value)
        assert f"{run} is cross-validated (3 folds" in msg
        assert f"{holdout} uses the train/valid/holdout split" in msg
        assert "`split.folds`" in msg and "`split.seed`" in msg


# --------------------------------------------------------------------------- trees per fold


@pytest.fixture(scope="module")
def noise_run(tmp_path_factory):
    """A 3-fold regression run whose target is pure noise: a model that saw a row predicts
    it exactly (fully grown extra trees), one that did not cannot."""
    root = tmp_path_factory.mktemp("noise")
    rng = np.random.default_rng(0)
    n = 240
    df = pd.DataFrame(rng.normal(size=(n + 40, 3)), columns=["a", "b", "c"])
    df["y"] = rng.normal(size=n + 40) * 10
    root.mkdir(exist_ok=True)
    df.iloc[:n].to_csv(root / "train.csv", index=False)
    df.iloc[n:].drop(columns=["y"]).to_csv(root / "test.csv", index=False)
    data = {
        "train": str(root / "train.csv"),
        "test": str(root / "test.csv"),
        "target": "y",
        "task": "regression",
    }
    run, prepared = _make_run(root, folds=3, name="noise", data=data, metric="rmse")
    _oracle_cv_trials(run, prepared, n_trials=1)
    return run, prepared


def _ensure(run: Path, prepared, names, metric: str, log=None):
    return ensure_trees(
        run,
        names,
        fingerprint=prepared.fingerprint,
        task=prepared.task,
        metric=metric,
        seed=prepared.split["seed"],
        has_test="test" in prepared.x,
        load_prepared=lambda: prepared,
        log=log,
        folds=prepared.folds,
    )


def test_trees_are_fitted_per_fold_and_predict_out_of_fold(noise_run):
    run, prepared = noise_run
    X, y = prepared.tree_x["train"], prepared.y["train"]
    (rec,) = _ensure(run, prepared, ["et"], "rmse")
    info = rec.info
    assert info["cv"]["folds"] == 3 and rec.folds == 3
    assert info["cv"]["folds_fingerprint"] == prepared.split["folds_fingerprint"]
    assert set(info["files"]) == {
        "oof_pred.npy",
        "test_pred.npy",
        "model_fold0.joblib",
        "model_fold1.joblib",
        "model_fold2.joblib",
    }
    assert not (rec.path / "valid_pred.npy").exists() and not (rec.path / "model.joblib").exists()
    models = load_tree_models(run, "et")
    assert len(models) == 3
    oof = rec.predictions("oof")
    assert oof.shape == (len(y),)
    for k, model in enumerate(models):
        train, valid, held = fold_rows(prepared.fold_of, k, y, "regression", 0.1, 0)
        # the fold model memorises its training rows (so seeing a row would show)...
        np.testing.assert_allclose(model.predict(X[train]), y[train])
        # ...and each held row's out-of-fold prediction is that model's, which did not see it
        np.testing.assert_allclose(oof[held], model.predict(X[held]))
        assert np.all(np.abs(oof[held] - y[held]) > 1e-6)
        assert info["folds"][k]["n_oof"] == len(held)
        assert info["folds"][k]["n_train"] + info["folds"][k]["n_valid"] + len(held) == len(y)
    # the test predictions are the mean of the fold models'
    X_test = prepared.tree_x["test"]
    np.testing.assert_allclose(
        rec.predictions("test"), np.mean([m.predict(X_test) for m in models], axis=0)
    )
    assert info["value"] == pytest.approx(metrics.score("rmse", y, oof))


def test_boosters_early_stop_on_the_inner_slice_and_trees_are_reused(noise_run):
    run, prepared = noise_run
    lines: list[str] = []
    (rec,) = _ensure(run, prepared, ["hgb"], "rmse", log=lines.append)
    assert any("fitting hgb per fold (3 folds)" in line for line in lines)
    for fold in rec.info["folds"]:
        # pure noise: early stopping on the inner valid slice stops long before max_iter
        assert fold["best_iteration"] < 500 and fold["valid_value"] is not None
    lines.clear()
    (again,) = _ensure(run, prepared, ["hgb"], "rmse", log=lines.append)
    assert lines == ["tree hgb (1/1): reusing the saved fit"]
    assert again.info["fit_id"] == rec.info["fit_id"]


def test_cv_build_with_trees_blends_their_out_of_fold_predictions(noise_run):
    run, prepared = noise_run
    ens = build_ensemble(
        [run], trees=("et", "rf"), method="mean", max_corr=1.0, margin="none", name="trees"
    )
    members = {m["label"]: m for m in ens.info["members"]}
    assert members["et"]["folds"] == 3 and members["rf"]["folds"] == 3
    assert {f"model_fold{k}.joblib" for k in range(3)} <= set(members["rf"]["files"])
    et_oof = load_tree(run, "et").predictions("oof")
    assert members["et"]["oof_score"] == pytest.approx(
        metrics.score("rmse", prepared.y["train"], et_oof)
    )


# --------------------------------------------------------------------------- metric-aware trees


def test_tree_losses_follow_the_metric():
    assert target_transform("regression", "rmsle") == "log1p"
    assert target_transform("regression", "rmse") is None
    assert target_transform("binary", "log_loss") is None
    mae = {name: tree_params(name, "regression", 0, "mae") for name in ("rf", "et", "hgb")}
    assert mae["hgb"]["loss"] == "absolute_error"
    assert "loss" not in mae["rf"] and "criterion" not in mae["et"]  # forests: squared error
    assert tree_params("lgbm", "regression", 0, "mae")["objective"] == "l1"
    assert tree_params("xgb", "regression", 0, "mae")["objective"] == "reg:absoluteerror"
    for name in ("hgb", "lgbm", "xgb"):  # other metrics and tasks keep their defaults
        assert tree_params(name, "regression", 0, "rmse") == tree_params(name, "regression", 0)
        assert tree_params(name, "binary", 0, "mae") == tree_params(name, "binary", 0)
    assert make_tree("hgb", "regression", mae["hgb"]).loss == "absolute_error"
    assert make_tree("lgbm", "regression", tree_params("lgbm", "regression", 0, "mae")).objective
    assert tree_loss("hgb", "regression", "mae") == "absolute_error"
    assert tree_loss("rf", "regression", "mae") == "squared_error"
    assert tree_loss("hgb", "binary", "log_loss") == "log_loss"


def test_mae_run_records_the_absolute_loss(noise_run, tmp_path):
    run, prepared = noise_run
    (hgb, rf) = _ensure(run, prepared, ["hgb", "rf"], "mae")
    assert hgb.info["loss"] == "absolute_error" and hgb.info["params"]["loss"] == "absolute_error"
    assert rf.info["loss"] == "squared_error"
    assert hgb.info["target_transform"] is None
    model = load_tree_models(run, "hgb")[0]
    assert model.loss == "absolute_error"


@pytest.mark.parametrize("folds", [None, 3])
def test_rmsle_trees_learn_log1p_and_beat_the_raw_fit(tmp_path, folds):
    train, test = _skewed_csvs(tmp_path / "data")
    data = {
        "train": str(train),
        "test": str(test),
        "target": "price",
        "id": "id",
        "task": "regression",
    }
    run, prepared = _make_run(tmp_path, folds=folds, name="prices", data=data, metric="rmsle")
    if folds:
        _oracle_cv_trials(run, prepared, n_trials=1)
        fit, y_fit = "oof", prepared.y["train"]
    else:
        _holdout_trials(run, prepared, n_trials=1)
        fit, y_fit = "holdout", prepared.y["holdout"]
    (rec,) = _ensure(run, prepared, ["hgb"], "rmsle")
    assert rec.info["target_transform"] == "log1p"
    for split in (fit, "test"):
        assert (rec.predictions(split) >= 0).all()
    ours = metrics.score("rmsle", y_fit, rec.predictions(fit))
    # the same model on the raw target, fitted on the same rows
    params = tree_params("hgb", "regression", 0, "rmsle")
    X = prepared.tree_x
    if folds:
        raw = np.zeros(len(y_fit))
        for k in range(folds):
            tr, va, held = fold_rows(prepared.fold_of, k, y_fit, "regression", 0.1, 0)
            model = fit_estimator(
                "hgb", "regression", params, X["train"][tr], y_fit[tr],
                X_val=X["train"][va], y_val=y_fit[va],
            )  # fmt: skip
            raw[held] = predict_tree(model, X["train"][held], "regression", 1)
    else:
        model = fit_estimator("hgb", "regression", params, X["train"], prepared.y["train"])
        raw = predict_tree(model, X["holdout"], "regression", 1)
    assert ours < 0.85 * metrics.score("rmsle", y_fit, raw)
    # a tree fitted before trees were metric-aware (no transform recorded) is fitted again
    path = rec.path / "tree.json"
    old = json.loads(path.read_text())
    old.pop("target_transform")
    path.write_text(json.dumps(old))
    lines: list[str] = []
    (refit,) = _ensure(run, prepared, ["hgb"], "rmsle", log=lines.append)
    assert "target transform none, the metric asks for log1p" in lines[0]
    assert refit.info["fit_id"] != rec.info["fit_id"]
    assert refit.info["target_transform"] == "log1p"


# --------------------------------------------------------------------------- predict new rows


def test_predict_new_rows_with_cv_trees_reproduces_the_test_predictions(cv_run):
    run, prepared = cv_run
    # the trials are noisy; `best` takes the tree, whose K fold models are loaded
    ens = build_ensemble([run], trees=("hgb",), method="best", name="best-tree")
    (member,) = [m for m in ens.info["members"] if ens.weights[m["label"]] > 0]
    assert member["kind"] == "tree" and member["folds"] == 3
    test_csv = load_spec(run / "spec.yaml").data.test
    saved = np.load(ens.out_dir / "test_pred.npy")
    np.testing.assert_allclose(load_ensemble(ens.out_dir).predict(test_csv), saved, atol=1e-10)
    # a fold model changed after the build is refused before anything is unpickled
    model = run / "trees" / "hgb" / "model_fold1.joblib"
    model.write_bytes(model.read_bytes() + b"\0")
    with pytest.raises(RunDirError, match=r"model_fold1\.joblib does not match the SHA-256"):
        load_ensemble(ens.out_dir).predict(test_csv)


def _keras_fold_models(prepared, family: str, params: dict[str, Any]):
    """K tiny untrained Keras models (one per fold) as saved bytes, with their predictions
    (natural units) of every split: (bytes per fold, oof, test mean, scalings)."""
    import keras

    from hpsearch.search.training import _head_prediction, _model_bytes, _model_inputs
    from search_spaces.families import build_model

    y = prepared.y["train"]
    k = prepared.folds
    oof = np.zeros(len(y))
    test = np.zeros(len(prepared.ids["test"]))
    models, scalings = {}, []
    for fold in range(k):
        keras.utils.set_random_seed(fold)
        model = build_model(family, params, prepared.input_spec, prepared.output_spec)
        train, _, held = fold_rows(prepared.fold_of, fold, y, prepared.task, 0.1, 0)
        mu, sd = float(np.mean(y[train])), float(np.std(y[train]))
        scalings.append([mu, sd])

        def predict(x, model=model, mu=mu, sd=sd):
            raw = model.predict(_model_inputs(model, x), batch_size=1024, verbose=0)
            return _head_prediction(raw, "output", "regression") * sd + mu

        oof[held] = predict({n: a[held] for n, a in prepared.x["train"].items()})
        test += predict(prepared.x["test"]) / k
        models[f"model_fold{fold}.keras"] = _model_bytes(model)
    return models, oof, test, scalings


@pytest.mark.slow
def test_predict_new_rows_with_cv_networks_averages_the_fold_models(tmp_path):
    from search_spaces.space import load_space

    train, test = _write_csvs(tmp_path / "data", source="sklearn:diabetes", n_train=300)
    data = {"train": str(train), "test": str(test), "target": "target", "id": "id"}
    data["task"] = "regression"
    run, prepared = _make_run(tmp_path, folds=3, name="diabetes-cv", data=data, metric="rmse")
    space = load_space("tabular_mlp")
    rng = np.random.default_rng(0)
    for number in range(2):
        params = space.sample_random(rng)
        models, oof, test_mean, scalings = _keras_fold_models(prepared, space.family, params)
        extra = _cv_extra(prepared, oof, "rmse")
        extra.update(target_scaling=None, fold_target_scaling=scalings)
        value = float(metrics.score("rmse", prepared.y["train"], oof))
        preds = {"oof": oof, "test": test_mean}
        _write_trial(run, number, preds, value, extra, models=models)
    ens = build_ensemble(
        [run], trees=("hgb",), method="mean", max_corr=1.0, margin="none", name="mean"
    )
    networks = [m for m in ens.info["members"] if m["kind"] == "network"]
    assert len(networks) == 2 and all(m["folds"] == 3 for m in networks)
    assert {f"model_fold{k}.keras" for k in range(3)} <= set(networks[0]["files"])
    saved = np.load(ens.out_dir / "test_pred.npy")
    np.testing.assert_allclose(ens.predict(test), saved, rtol=1e-5, atol=1e-4)
    frame = load_ensemble(ens.out_dir).predict_frame(test)
    submission = pd.read_csv(ens.out_dir / "submission.csv")
    np.testing.assert_allclose(frame["target"], submission["target"], rtol=1e-5, atol=1e-4)
    # a fold model swapped after the build is refused, naming the file
    tdir = RunDir(run).trial_path(networks[0]["trial"])
    (tdir / "model_fold2.keras").write_bytes((tdir / "model_fold0.keras").read_bytes())
    with pytest.raises(RunDirError, match=r"model_fold2\.keras does not match the SHA-256"):
        ens.predict(test)


def test_cv_members_without_saved_models_cannot_predict(cv_run):
    run, _ = cv_run
    ens = build_ensemble([run], trees=(), method="mean", name="no-models", max_corr=1.0)
    test_csv = load_spec(run / "spec.yaml").data.test
    with pytest.raises(UserError, match=re.escape("model_fold0.keras): its trial function")):
        ens.predict(test_csv)


def test_multiclass_cv_trees_give_class_probabilities_out_of_fold(tmp_path):
    pytest.importorskip("lightgbm")
    data = {"train": "sklearn:wine", "target": "target", "task": "multiclass"}
    run, prepared = _make_run(tmp_path, folds=3, name="wine-cv", data=data)
    _oracle_cv_trials(run, prepared, n_trials=2)
    ens = build_ensemble([run], trees=("lgbm", "hgb"), method="mean", max_corr=1.0)
    y = prepared.y["train"]
    for name in ("lgbm", "hgb"):
        rec = load_tree(run, name)
        oof = rec.predictions("oof")
        assert oof.shape == (len(y), 3)
        np.testing.assert_allclose(oof.sum(axis=1), 1.0, atol=1e-9)
        assert metrics.score("accuracy", y, oof) > 0.85  # class columns in the run's order
        assert all(f["best_iteration"] for f in rec.info["folds"])  # early-stopped boosters
    assert np.load(ens.out_dir / "oof_pred.npy").shape == (len(y), 3)
