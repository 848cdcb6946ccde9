"""``ensembles build --refit``: the chosen members trained again on every labelled row
(``ensembles.refit``), their test predictions blended with the holdout-fitted weights,
and ``ensembles predict`` with the refit models. Oracle runs (no TensorFlow) and one slow
test with real Keras trials."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ensembles.builder import build_ensemble
from ensembles.cli import main
from ensembles.refit import (
    check_refit_allowed,
    cv_folds,
    labelled_rows,
    refit_epochs,
    stretched_rates,
)
from hpsearch.core import atomic
from hpsearch.core.errors import RunDirError, UserError
from hpsearch.core.spec import load_spec
from hpsearch.core.store import RunDir
from tests.test_ensembles import _copy_run, _oracle_run, _write_csvs


@pytest.fixture(scope="module")
def oracle_test_run(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("refit")
    train, test = _write_csvs(root / "data")
    data = {"train": str(train), "test": str(test), "target": "target", "id": "id"}
    return _oracle_run(root, n_trials=4, name="bc-refit", data=data)


def test_refit_epochs_scale_with_the_rows_and_round_half_up():
    assert refit_epochs(8, 300, 500) == 13  # 13.33
    assert refit_epochs(3, 200, 300) == 5  # 4.5 rounds up
    assert refit_epochs(1, 1000, 1001) == 1
    assert refit_epochs(0, 10, 20) == 1  # at least one
    # refit epoch j takes the rate of epoch floor(j * 3 / 5)
    assert stretched_rates([0.1, 0.1, 0.05], 5) == [0.1, 0.1, 0.1, 0.1, 0.05]
    assert stretched_rates([0.1, 0.05], 2) == [0.1, 0.05]
    assert stretched_rates([], 4) == []


def test_refit_is_refused_for_runs_with_cross_validated_trials(oracle_test_run, tmp_path, capsys):
    run = _copy_run(oracle_test_run, tmp_path / "run")
    assert cv_folds(run) is None
    check_refit_allowed([run])  # holdout mode: allowed
    split = run / "data" / "split.json"
    atomic.write_json(split, {**json.loads(split.read_text()), "folds": 3})
    assert cv_folds(run) == 3
    message = (
        f"--refit: run {run} has cross-validated trials (3 folds): CV members already learned "
        "from every labelled row, so there is nothing to refit. Fix: build without --refit "
        "(ensemble.refit: false)."
    )
    with pytest.raises(UserError) as exc:
        check_refit_allowed([oracle_test_run, run])
    assert str(exc.value) == message
    assert main(["build", str(run), "--refit", "--trees", "none", "--quiet"]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    assert not (run / "ensembles").exists()  # refused before any work
    atomic.write_json(split, {**json.loads(split.read_text()), "folds": True})
    assert cv_folds(run) is None  # only an integer marks CV mode


def test_refit_trains_the_trees_again_and_records_which_members_were_refit(oracle_test_run):
    run = oracle_test_run
    ens = build_ensemble([run], trees=("rf",), method="mean", name="refit", refit=True)
    info = ens.info
    assert info["refit"] is True
    by_label = {m["label"]: m for m in info["members"]}
    rf = by_label["rf"]
    assert rf["refit"] is True and rf["refit_model"]["n_rows"] > 0
    model_path = ens.out_dir / rf["refit_model"]["dir"] / "model.joblib"
    assert rf["refit_model"]["files"] == {"model.joblib": atomic.sha256(model_path.read_bytes())}
    # oracle trials saved no Keras model: not refit, and they say why
    networks = [m for m in info["members"] if m["kind"] == "network"]
    assert networks and all(not m["refit"] for m in networks)
    assert all("saved no Keras model" in m["refit_reason"] for m in networks)
    # the refit forest learnt from train + valid + holdout rows
    from ensembles.trees import predict_tree, tree_model_from_bytes
    from hpsearch.core.data import load_prepared

    prepared = load_prepared(run, load_spec(run / "spec.yaml"))
    _, tree_x, y = labelled_rows(prepared)
    assert rf["refit_model"]["n_rows"] == len(y) == 400  # every row of train.csv
    forest = tree_model_from_bytes(model_path.read_bytes())
    assert forest.n_features_in_ == tree_x.shape[1]
    # a calibrated forest keeps the shrinkage its fit chose on the valid rows
    from ensembles.trees import SmoothedClassifier, load_tree

    shrink = load_tree(run, "rf").info["shrink"]
    assert shrink is not None and rf["refit_model"]["shrink"] == shrink
    assert isinstance(forest, SmoothedClassifier) and forest.alpha == shrink
    refit_test = predict_tree(forest, prepared.tree_x["test"], "binary", 2)
    original = np.load(run / "trees" / "rf" / "test_pred.npy")
    assert not np.allclose(refit_test, original)
    # the mean blend of the refit forest and the networks' own test predictions
    rd = RunDir(run)
    tests = [
        refit_test if m["kind"] == "tree" else rd.read_trial(m["trial"]).predictions("test")
        for m in info["members"]
    ]
    np.testing.assert_allclose(np.load(ens.out_dir / "test_pred.npy"), np.mean(tests, axis=0))
    # the holdout blend is the original members'
    plain = build_ensemble([run], trees=("rf",), method="mean", name="plain")
    np.testing.assert_allclose(
        np.load(ens.out_dir / "holdout_pred.npy"), np.load(plain.out_dir / "holdout_pred.npy")
    )
    assert all(m["refit"] is False and "refit_reason" not in m for m in plain.info["members"])
    report = (ens.out_dir / "report.md").read_text()
    assert "## Refit" in report and f"| rf | yes | `{rf['refit_model']['dir']}` |" in report
    assert "refit: 1 of" in ens.summary_text()


def test_the_spec_can_ask_for_a_refit(oracle_test_run, tmp_path):
    import yaml

    from hpsearch.core.spec import SpecError
    from tests.conftest import make_spec_dict

    with pytest.raises(SpecError, match="ensemble.refit"):
        load_spec(make_spec_dict(tmp_path, ensemble={"refit": "yes"}))
    assert load_spec(make_spec_dict(tmp_path, ensemble={"refit": True})).ensemble.refit is True
    with pytest.raises(SpecError, match=r"ensemble\.refit': true with split\.folds 5.*Fix: "):
        load_spec(make_spec_dict(tmp_path, ensemble={"refit": True}, split={"folds": 5}))
    run = _copy_run(oracle_test_run, tmp_path / "run")
    spec = yaml.safe_load((run / "spec.yaml").read_text())
    spec["ensemble"]["refit"] = True
    (run / "spec.yaml").write_text(yaml.safe_dump(spec))
    ens = build_ensemble([run], trees=("rf",), name="from-spec")
    assert ens.info["refit"] is True
    assert any(m["refit"] for m in ens.info["members"])
    ens = build_ensemble([run], trees=("rf",), name="not", refit=False)
    assert ens.info["refit"] is False and not (ens.out_dir / "refit").exists()


def test_a_changed_refit_model_is_never_loaded(oracle_test_run, tmp_path):
    run = _copy_run(oracle_test_run, tmp_path / "run")
    ens = build_ensemble([run], trees=("rf",), method="best", name="r", refit=True, margin=0)
    info = ens.info
    # margin 0: only the best validation score is eligible, here the forest
    assert [m["label"] for m in info["members"]] == ["rf"]
    rf = info["members"][0]
    test = pd.read_csv(Path(load_spec(run / "spec.yaml").data.test))
    # new rows are predicted by the refit forest, as the ensemble's test rows were
    np.testing.assert_allclose(ens.predict(test), np.load(ens.out_dir / "test_pred.npy"))
    assert not np.allclose(ens.predict(test), np.load(run / "trees" / "rf" / "test_pred.npy"))
    path = ens.out_dir / rf["refit_model"]["dir"] / "model.joblib"
    path.write_bytes(path.read_bytes() + b"\0")
    from ensembles.predict import _Members

    with pytest.raises(RunDirError, match="refit model .* does not match the SHA-256 recorded"):
        _Members(ens, test).verify(rf)
    bad = {**rf, "refit_model": {**rf["refit_model"], "dir": ".."}}
    with pytest.raises(RunDirError, match="is not a folder inside the ensemble directory"):
        _Members(ens, test).verify(bad)


# --------------------------------------------------------------------------- real models


@pytest.mark.slow
def test_refit_keras_members_predict_new_rows_as_the_ensemble_did(ray_session, tmp_path, capsys):
    from hpsearch.search.driver import run_search

    train, test = _write_csvs(tmp_path / "data", n_train=300, source="sklearn:diabetes")
    from tests.conftest import make_spec_dict

    spec = load_spec(
        make_spec_dict(
            tmp_path,
            name="diabetes-refit",
            data={
                "train": str(train),
                "test": str(test),
                "target": "target",
                "id": "id",
                "task": "regression",
            },
            metric="rmsle",
            budget={"n_trials": 2},
            sampler={"name": "random", "seed": 0},
            training={"max_epochs": 3, "batch_size": 64, "patience": 1},
        )
    )
    assert run_search(spec, progress=False, trial_options={"tensorboard": False}).n_complete == 2
    run = Path(spec.output)
    code = main(
        ["build", str(run), "--refit", "--trees", "rf", "--method", "mean", "--name", "refit"]
    )
    assert code == 0
    err = capsys.readouterr().err
    assert "refitting rf (" in err and "refitted rf (" in err
    import ensembles

    ens = ensembles.load(run / "ensembles" / "refit")
    info = ens.info
    assert info["refit"] and all(m["refit"] for m in info["members"])
    saved = np.load(ens.out_dir / "test_pred.npy")
    # new rows are predicted by the refit models, as the ensemble's test predictions were
    np.testing.assert_allclose(ens.predict(test), saved, rtol=1e-5, atol=1e-6)
    assert (saved >= 0).all()
    rd = RunDir(run)
    n_train = len(json.loads((run / "data" / "split.json").read_text())["ids"]["train"])
    for m in info["members"]:
        r = m["refit_model"]
        if m["kind"] == "tree":
            continue
        rec = rd.read_trial(m["trial"])
        # the epochs early stopping kept, scaled by the labelled rows over the train rows
        assert r["best_epoch"] == rec.info["best_epoch"] and r["n_train"] == n_train
        assert r["epochs"] == refit_epochs(rec.info["best_epoch"], n_train, r["n_rows"])
        assert r["epochs"] == int(np.floor(r["best_epoch"] * r["n_rows"] / n_train + 0.5))
        assert r["n_rows"] == 300 and r["target_transform"] == "log1p"
        assert r["seed"] == rec.info["seed"] and r["loss"] == "mse"
        assert r["learning_rates"] == "from the trial's history"
        assert r["target_scaling"] != rec.info["target_scaling"]  # every labelled row
        # the refit network's own test predictions differ from the trial's
        assert (ens.out_dir / r["dir"] / "model.keras").is_file()
    members = ensembles.load(ens.out_dir)
    from ensembles.predict import predict_members

    P = predict_members(members, test)
    originals = [
        rd.read_trial(m["trial"]).predictions("test")
        if m["kind"] == "network"
        else np.load(run / "trees" / "rf" / "test_pred.npy")
        for m in info["members"]
    ]
    for j in range(len(info["members"])):
        assert not np.allclose(P[j], originals[j])
    np.testing.assert_allclose(P.mean(axis=0), saved, rtol=1e-5, atol=1e-6)
