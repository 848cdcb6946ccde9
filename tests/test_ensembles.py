"""ensembles.build / trees / predict / cli on real run directories made by oracle trials
(no TensorFlow), and one slow end-to-end test with real Keras trials."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ensembles.blenders import BLENDERS, StackingBlender
from ensembles.builder import build_ensemble
from ensembles.cli import main
from ensembles.ensemble import ENSEMBLE_JSON, Ensemble, load_ensemble, restore_blender
from hpsearch.core import metrics
from hpsearch.core.data import load_table
from hpsearch.core.errors import RunDirError, UserError
from hpsearch.core.spec import load_spec
from hpsearch.core.store import RunDir
from hpsearch.core.submission import submission_frame, submission_layout
from hpsearch.search.driver import run_search
from tests.conftest import ROOT, make_spec_dict

ORACLE = "hpsearch.search.testing:oracle"
FILES = ("ensemble.json", "holdout_pred.npy", "report.md", "weights.png", "correlation.png")


def _oracle_run(root: Path, n_trials: int = 6, **overrides) -> Path:
    spec = load_spec(
        make_spec_dict(
            root, budget={"n_trials": n_trials}, sampler={"name": "random", "seed": 0}, **overrides
        )
    )
    summary = run_search(spec, trial_fn=ORACLE, progress=False)
    assert summary.n_complete == n_trials
    return Path(spec.output)


def _write_csvs(
    root: Path, n_train: int = 400, source: str = "sklearn:breast_cancer"
) -> tuple[Path, Path]:
    """A bundled table as train.csv (with an id column) and test.csv (no target)."""
    df = load_table(source)
    df.insert(0, "id", np.arange(1000, 1000 + len(df)))
    root.mkdir(parents=True, exist_ok=True)
    train, test = root / "train.csv", root / "test.csv"
    df.iloc[:n_train].to_csv(train, index=False)
    df.iloc[n_train:].drop(columns=["target"]).to_csv(test, index=False)
    return train, test


def _copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("ensembles", "trees", "study.db", "tb"))
    return dst


@pytest.fixture(scope="module")
def binary_run(ray_session, tmp_path_factory):
    return _oracle_run(tmp_path_factory.mktemp("binary"), n_trials=8)


@pytest.fixture(scope="module")
def multiclass_run(ray_session, tmp_path_factory):
    return _oracle_run(
        tmp_path_factory.mktemp("multiclass"),
        n_trials=5,
        name="wine",
        data={"train": "sklearn:wine", "target": "target", "task": "multiclass"},
    )


@pytest.fixture(scope="module")
def regression_run(ray_session, tmp_path_factory):
    return _oracle_run(
        tmp_path_factory.mktemp("regression"),
        n_trials=5,
        name="diabetes",
        data={"train": "sklearn:diabetes", "target": "target", "task": "regression"},
        metric="rmse",
    )


@pytest.fixture(scope="module")
def test_set_run(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("withtest")
    train, test = _write_csvs(root / "data")
    data = {"train": str(train), "test": str(test), "target": "target", "id": "id"}
    return _oracle_run(root, n_trials=4, name="bc-csv", data=data)


@pytest.fixture(scope="module")
def binary_ensemble(binary_run):
    return build_ensemble(
        [binary_run], trees=("rf", "hgb"), top_k=5, name="nm", method="nelder-mead"
    )


# --------------------------------------------------------------------------- building


def test_build_writes_every_file_and_score(binary_run, binary_ensemble):
    ens = binary_ensemble
    assert ens.out_dir == binary_run / "ensembles" / "nm"
    for name in (*FILES, "scores.png"):
        assert (ens.out_dir / name).is_file(), name
    assert not (ens.out_dir / "test_pred.npy").exists()  # the run has no test set
    info = json.loads((ens.out_dir / ENSEMBLE_JSON).read_text())
    assert info == ens.info
    assert info["method"] == "nelder-mead" and info["metric"] == "log_loss"
    assert info["direction"] == "minimize" and info["classes"] == [0, 1]
    assert info["runs"] == [str(binary_run.resolve())]
    assert set(info["scores"]) == set(BLENDERS)
    for s in info["scores"].values():
        assert math.isfinite(s["fitted"]) and math.isfinite(s["cross_fitted"])
    assert {m["kind"] for m in info["members"]} == {"network", "tree"}
    assert sum(m["weight"] for m in info["members"]) == pytest.approx(1.0)
    networks = [m for m in info["members"] if m["kind"] == "network"]
    assert len(networks) <= 5
    assert all(d["reason"] for d in info["dropped"])
    assert len(info["members"]) + len(info["dropped"]) == 8 + 2
    # the holdout prediction is the json blend of the members' holdout predictions
    rd = RunDir(binary_run)
    P = np.stack(
        [
            rd.read_trial(m["trial"]).predictions("holdout")
            if m["kind"] == "network"
            else np.load(binary_run / "trees" / m["tree"] / "holdout_pred.npy")
            for m in info["members"]
        ]
    )
    hold = np.load(ens.out_dir / "holdout_pred.npy")
    assert hold.shape == (info["n_holdout"],)
    np.testing.assert_allclose(restore_blender(info).predict(P), hold)
    C = np.asarray(info["correlation"]["matrix"])
    assert info["correlation"]["labels"] == [m["label"] for m in info["members"]]
    assert C.shape == (len(info["members"]),) * 2 and np.allclose(np.diag(C), 1.0)
    text = ens.summary_text()
    assert "* nelder-mead" in text and "cross-fitted" in text and "trial_" in text
    report = (ens.out_dir / "report.md").read_text()
    assert "| **nelder-mead** (chosen) |" in report and "![weights](weights.png)" in report


def test_auto_method_picks_the_best_cross_fitted_score(binary_run, binary_ensemble):
    ens = build_ensemble([binary_run], trees=("rf", "hgb"), top_k=5, name="auto")  # spec default
    info = ens.info
    assert info["requested_method"] == "auto"
    methods = {m: s for m, s in info["scores"].items() if m != "auto"}
    cross = {m: s["cross_fitted"] for m, s in methods.items() if s["cross_fitted"] is not None}
    assert info["method"] == min(cross, key=cross.get)  # log loss: lower is better
    # the saved blend is the chosen method's, and the report says why it was chosen
    assert info["blend"]["method"] == info["method"]
    assert "auto: the best cross-fitted score" in ens.summary_text()
    # same members and scores as the explicit build: only the choice differs
    assert methods == binary_ensemble.info["scores"]
    # the honest score of choosing: nested cross-fitting, never the winner's own score
    auto = info["scores"]["auto"]
    assert auto["chosen"] == info["method"] and len(auto["chosen_per_fold"]) == info["folds"]
    assert auto["fitted"] == methods[info["method"]]["fitted"]
    assert math.isfinite(auto["cross_fitted"])
    assert "| auto |" in (ens.out_dir / "report.md").read_text()


def test_auto_build_never_takes_the_best_fitted_blend_over_the_best_cross_fitted(binary_run):
    """A registered blender that memorizes the holdout rows has by far the best fitted score
    and a poor cross-fitted one: an auto build must choose by the cross-fitted score."""
    from hpsearch.core.registry import BLENDERS as REGISTRY
    from tests.blender_plugins import Memorizer

    REGISTRY.register("memorize", Memorizer)
    try:
        info = build_ensemble([binary_run], trees=(), top_k=5, name="auto-memo").info
    finally:
        REGISTRY.unregister("memorize")
    scores = {m: s for m, s in info["scores"].items() if m != "auto"}
    assert list(scores) == [*BLENDERS, "memorize"]
    fitted = {m: s["fitted"] for m, s in scores.items()}
    cross = {m: s["cross_fitted"] for m, s in scores.items()}
    assert min(fitted, key=fitted.get) == "memorize"  # the premise
    assert max(cross, key=cross.get) == "memorize"
    assert info["method"] == min(cross, key=cross.get) != "memorize"
    assert info["blend"]["method"] == info["method"]


def test_a_user_blender_given_as_module_and_class_builds_and_restores(binary_run):
    from tests.blender_plugins import TopTwoMean

    path = "tests.blender_plugins:TopTwoMean"
    ens = build_ensemble([binary_run], trees=(), top_k=4, method=path)
    assert ens.out_dir.name.startswith("TopTwoMean-")  # a default name from the class name
    info = ens.info
    assert info["method"] == path == info["blend"]["method"]
    assert list(info["scores"]) == [*BLENDERS, path]
    assert math.isfinite(info["scores"][path]["cross_fitted"])
    weights = sorted(m["weight"] for m in info["members"])
    assert len(weights) > 2 and weights[-2:] == [0.5, 0.5] and not any(weights[:-2])
    loaded = load_ensemble(ens.out_dir)
    assert type(loaded.blender) is TopTwoMean and loaded.method == path
    P = np.stack([_member_holdout(binary_run, m) for m in info["members"]])
    np.testing.assert_array_equal(
        loaded.blender.predict(P), np.load(ens.out_dir / "holdout_pred.npy")
    )
    # a module that is gone where the ensemble is read: a clear error, not a traceback
    info["blend"]["method"] = info["method"] = "tests.gone_plugins:TopTwoMean"
    with pytest.raises(UserError, match=r"its tests.gone_plugins:TopTwoMean blend cannot be "
                       r"restored: .*cannot import module 'tests.gone_plugins'"):  # fmt: skip
        _ = Ensemble(ens.out_dir, info).blender


def test_cross_fitted_scores_differ_from_fitted(binary_ensemble):
    scores = binary_ensemble.info["scores"]
    for method in ("greedy", "nelder-mead", "stack"):
        assert scores[method]["cross_fitted"] != pytest.approx(scores[method]["fitted"]), method
    # fitted on the rows it is scored on: optimistic for the blend that learns most
    assert scores["stack"]["cross_fitted"] > scores["stack"]["fitted"]


def test_nelder_mead_fitted_never_worse_than_best_single(binary_ensemble):
    info = binary_ensemble.info
    nm, best = info["scores"]["nelder-mead"]["fitted"], info["scores"]["best"]["fitted"]
    assert not metrics.is_better("log_loss", best, nm)
    assert nm <= min(m["holdout_score"] for m in info["members"]) + 1e-12


def test_multiclass_build_and_tree_class_order(multiclass_run):
    ens = build_ensemble(multiclass_run, trees=("rf", "hgb"), method="stack", name="stack")
    info = ens.info
    k = len(info["classes"])
    assert k == 3 and info["task"] == "multiclass"
    hold = np.load(ens.out_dir / "holdout_pred.npy")
    assert hold.shape == (info["n_holdout"], 3)
    np.testing.assert_allclose(hold.sum(axis=1), 1.0)
    # columns in class-index order: trees score far better than chance (log 3) and agree
    # with the networks' argmax, which the oracle built in class-index order
    y = _holdout_y(multiclass_run)
    net = RunDir(multiclass_run).read_trial(0).predictions("holdout")
    for tree in ("rf", "hgb"):
        p = np.load(multiclass_run / "trees" / tree / "holdout_pred.npy")
        assert p.shape == (len(y), 3)
        assert metrics.log_loss(y, p) < 0.5 * math.log(3), tree
        assert np.mean(p.argmax(axis=1) == y) > 0.85
        assert np.mean(p.argmax(axis=1) == net.argmax(axis=1)) > 0.6
    # the stack blend persisted in ensemble.json predicts what the fitted blender predicts
    P = np.stack(
        [
            _member_holdout(multiclass_run, m)
            for m in info["members"]  # members in ensemble.json order
        ]
    )
    fresh = StackingBlender(metric="log_loss").fit(P, y)
    np.testing.assert_allclose(restore_blender(info).predict(P), fresh.predict(P), atol=1e-10)
    np.testing.assert_allclose(hold, fresh.predict(P), atol=1e-10)
    assert sum(m["weight"] for m in info["members"]) == pytest.approx(1.0)  # coefficient shares


def test_binary_tree_probabilities_are_for_class_one(binary_ensemble, binary_run):
    y = _holdout_y(binary_run)
    for tree in ("rf", "hgb"):
        p = np.load(binary_run / "trees" / tree / "holdout_pred.npy")
        assert p.shape == (len(y),)
        assert metrics.log_loss(y, p) < 0.5 * math.log(2), tree
        assert metrics.roc_auc(y, p) > 0.9


def test_regression_build(regression_run):
    ens = build_ensemble([regression_run], trees=("hgb",), method="stack", name="reg")
    info = ens.info
    assert info["metric"] == "rmse"
    assert info["direction"] == "minimize"
    y = _holdout_y(regression_run)
    hold = np.load(ens.out_dir / "holdout_pred.npy")
    assert hold.shape == (len(y),)
    assert metrics.rmse(y, hold) == pytest.approx(info["scores"]["stack"]["fitted"])
    assert metrics.rmse(y, hold) < np.std(y)  # better than predicting the mean
    P = np.stack([_member_holdout(regression_run, m) for m in info["members"]])
    np.testing.assert_allclose(restore_blender(info).predict(P), hold)
    nm = build_ensemble([regression_run], trees=("hgb",), name="reg-nm")
    s = nm.info["scores"]
    assert s["nelder-mead"]["fitted"] <= s["best"]["fitted"] + 1e-12


def test_identical_candidates_keep_one(binary_run, tmp_path):
    run = _copy_run(binary_run, tmp_path / "run")
    src, dst = run / "trials" / "00000", run / "trials" / "00099"
    shutil.copytree(src, dst)
    info = json.loads((dst / "trial.json").read_text())
    info["number"] = 99
    (dst / "trial.json").write_text(json.dumps(info))
    ens = build_ensemble([run], trees=(), top_k=20, max_corr=0.999, name="dup")
    labels = [m["label"] for m in ens.info["members"]]
    assert ("trial_0" in labels) != ("trial_99" in labels)
    dropped = {d["label"]: d["reason"] for d in ens.info["dropped"]}
    other = "trial_99" if "trial_0" in labels else "trial_0"
    kept = "trial_0" if other == "trial_99" else "trial_99"
    assert dropped[other] == f"correlated 1.000 with {kept}"


def test_two_compatible_runs_are_blended(binary_run, tmp_path):
    second = _copy_run(binary_run, tmp_path / "second")
    ens = build_ensemble([binary_run, second], trees=(), top_k=20, name="two", out=None)
    labels = [m["label"] for m in ens.info["members"]] + [d["label"] for d in ens.info["dropped"]]
    assert len(labels) == 16 and all("/trial_" in lb for lb in labels)
    # every trial of the copy duplicates one of the original: one of each pair is kept
    assert len(ens.info["members"]) == 8
    assert all(d["reason"].startswith("correlated 1.000") for d in ens.info["dropped"])
    assert ens.info["runs"] == [str(binary_run.resolve()), str(second.resolve())]


def test_margin_cut_and_no_correlation_filter_are_recorded(binary_run, tmp_path, capsys):
    run = _copy_run(binary_run, tmp_path / "run")
    # margin 0: only the best validation score is eligible; the others say by how much
    ens = build_ensemble([run], trees=("rf",), top_k=20, margin=0, name="only-best")
    info = ens.info
    assert info["margin"] == 0 and info["max_corr"] == 0.999
    cut = info["eligibility"]
    assert [m["label"] for m in info["members"]] == [cut["best"]]
    assert cut["allowed_gap"] == 0 and cut["spread"] > 0
    best = cut["best_score"]
    for d in info["dropped"]:
        gap = d["valid_score"] - best  # log loss: lower is better
        assert d["reason"] == (
            f"not eligible: worse than the best ({cut['best']}) by {gap:.4g} > margin 0 "
            f"(0 x spread {cut['spread']:.4g})"
        )
    report = (ens.out_dir / "report.md").read_text()
    assert "margin: 0" in report and "| not eligible: worse than the best" in report
    # both switched off from the command line: every candidate is kept (top_k allowing)
    argv = ["build", str(run), "--trees", "rf", "--top-k", "20", "--name", "all", "--quiet"]
    assert main([*argv, "--max-corr", "none", "--margin", "none"]) == 0
    info = load_ensemble(run / "ensembles" / "all").info
    assert info["max_corr"] is None and info["margin"] is None
    assert len(info["members"]) == 8 + 1 and info["dropped"] == []
    assert info["eligibility"]["allowed_gap"] is None
    assert "max_corr: none; margin: none" in (run / "ensembles" / "all" / "report.md").read_text()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([*argv[:-3], "--margin", "-1"])
    assert exc.value.code == 2
    assert "--margin: must be in [0, inf] or none" in capsys.readouterr().err
    with pytest.raises(UserError, match="margin must be 0 or more, or 'none'"):
        build_ensemble([run], margin="lots")


# --------------------------------------------------------------------------- refusals


def test_runs_with_different_splits_are_refused(binary_run, ray_session, tmp_path):
    other = _oracle_run(tmp_path, n_trials=2, split={"valid": 0.2, "holdout": 0.2, "seed": 1})
    with pytest.raises(RunDirError) as err:
        build_ensemble([binary_run, other], trees=())
    msg = str(err.value)
    assert msg.startswith(f"runs {binary_run} and {other} cannot be blended: their splits differ")
    assert "'seed': 0" in msg and "'seed': 1" in msg and "Fix:" in msg
    assert not (binary_run / "ensembles" / "other").exists()


def test_runs_with_different_test_sets_are_refused(test_set_run, tmp_path):
    other = _copy_run(test_set_run, tmp_path / "other")
    meta = json.loads((other / "run.json").read_text())
    meta["has_test"] = False
    (other / "run.json").write_text(json.dumps(meta))
    with pytest.raises(RunDirError) as err:
        build_ensemble([test_set_run, other], trees=())
    assert str(err.value) == (
        f"runs {test_set_run} and {other} cannot be blended: one has a test set (`data.test`) "
        "and the other not. Fix: ensemble only runs made from the same data, split, task and "
        "metric."
    )


def test_run_without_complete_trials_is_refused(binary_run, tmp_path):
    run = _copy_run(binary_run, tmp_path / "run")
    shutil.rmtree(run / "trials")
    with pytest.raises(RunDirError) as err:
        build_ensemble([run], trees=())
    assert str(err.value) == (
        f"run {run} has no complete trials; run `hpsearch run SPEC` first "
        "(or `hpsearch run SPEC --resume` to continue it)."
    )
    assert not (run / "ensembles").exists()


def test_truncated_prediction_file_names_trial_and_file(binary_run, tmp_path):
    run = _copy_run(binary_run, tmp_path / "run")
    path = run / "trials" / "00002" / "holdout_pred.npy"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RunDirError) as err:
        build_ensemble([run], trees=())
    msg = str(err.value)
    assert msg.startswith(
        f"run {run}: trial 2: holdout prediction file {path} does not match the SHA-256 "
        f"recorded in {path.parent / 'trial.json'}: it was changed or truncated after it was "
        "written, so it is not loaded."
    )
    assert msg.endswith(
        f"Fix: delete the trial directory {path.parent} (the ensemble then leaves the trial "
        "out), or rebuild the run."
    )
    path.unlink()
    with pytest.raises(RunDirError) as err:
        build_ensemble([run], trees=())
    assert str(err.value).startswith(
        f"run {run}: trial 2: holdout prediction file {path} is missing. Fix: delete"
    )


def test_class_count_mismatch_names_the_trial(multiclass_run, tmp_path):
    run = _copy_run(multiclass_run, tmp_path / "run")
    path = run / "trials" / "00001" / "holdout_pred.npy"
    n = np.load(path).shape[0]
    _replace_recorded(path, np.full((n, 2), 0.5))
    with pytest.raises(RunDirError) as err:
        build_ensemble([run], trees=())
    assert str(err.value) == (
        f"run {run}: trial 1: holdout predictions {path} have shape ({n}, 2), expected ({n}, 3): "
        "2 class columns but the run has 3 classes [0, 1, 2] (class-count mismatch). "
        f"Fix: delete the trial directory {path.parent} (the ensemble then leaves the trial "
        "out), or rebuild the run."
    )


def test_bad_options_are_refused_before_any_work(binary_run):
    with pytest.raises(
        UserError, match="unknown blend method 'nm'; valid methods: auto, best, mean"
    ):
        build_ensemble([binary_run], method="nm")
    with pytest.raises(UserError, match=r"'module:Class' for your own BaseBlender \(did you mean "
                       r"'nelder-mead'\?\)\.$"):  # fmt: skip
        build_ensemble([binary_run], method="nelder_mead")
    with pytest.raises(UserError, match="not a BaseBlender subclass"):
        build_ensemble([binary_run], method="tests.blender_plugins:NotABlender")
    with pytest.raises(UserError, match="unknown tree model 'gbm'; valid tree models: rf, et"):
        build_ensemble([binary_run], trees=("gbm",))
    with pytest.raises(UserError, match="folds must be at least 2; got 1"):
        build_ensemble([binary_run], folds=1)
    with pytest.raises(UserError, match=r"ensemble name '\.\./x' is not a plain directory name"):
        build_ensemble([binary_run], name="../x")
    with pytest.raises(RunDirError, match="is not a run directory"):
        build_ensemble([binary_run.parent])


def test_existing_ensemble_is_never_overwritten(binary_ensemble, binary_run):
    before = (binary_ensemble.out_dir / ENSEMBLE_JSON).read_bytes()
    with pytest.raises(UserError) as err:
        build_ensemble([binary_run], trees=("rf", "hgb"), name="nm")
    assert str(err.value) == (
        f"ensemble directory {binary_ensemble.out_dir} already exists; ensembles are never "
        "overwritten. Fix: choose another --name or --out, or remove that directory."
    )
    assert (binary_ensemble.out_dir / ENSEMBLE_JSON).read_bytes() == before


# --------------------------------------------------------------------------- trees


def test_trees_are_reused_on_a_second_build(binary_ensemble, binary_run):
    trees = binary_run / "trees"
    mtimes = {t: (trees / t / "tree.json").stat().st_mtime_ns for t in ("rf", "hgb")}
    again = build_ensemble([binary_run], trees=("rf", "hgb"), name="again")
    assert {t: (trees / t / "tree.json").stat().st_mtime_ns for t in mtimes} == mtimes
    ids = {m["tree"]: m["fit_id"] for m in binary_ensemble.info["members"] if m["kind"] == "tree"}
    ids2 = {m["tree"]: m["fit_id"] for m in again.info["members"] if m["kind"] == "tree"}
    assert ids == ids2
    # the same candidates: every method scores the same (an auto build adds its `auto` row)
    assert {m: v for m, v in again.info["scores"].items() if m != "auto"} == (
        binary_ensemble.info["scores"]
    )


def test_stale_tree_is_fitted_again(binary_run, tmp_path):
    run = _copy_run(binary_run, tmp_path / "run")
    build_ensemble([run], trees=("hgb",), name="a")
    info_path = run / "trees" / "hgb" / "tree.json"
    info = json.loads(info_path.read_text())
    info["data_fingerprint"] = "stale"
    info_path.write_text(json.dumps(info))
    b = build_ensemble([run], trees=("hgb",), name="b")
    fresh = json.loads(info_path.read_text())
    assert fresh["data_fingerprint"] == b.info["data_fingerprint"] != "stale"
    assert fresh["fit_id"] != info["fit_id"]
    assert sorted(p.name for p in (run / "trees").iterdir()) == ["hgb"]  # no leftovers


def test_tree_models_are_made_by_the_registered_factories():
    from ensembles.trees import make_tree, tree_params
    from hpsearch.core.registry import TREE_MODELS

    for name, task, expected in (
        ("rf", "binary", "RandomForestClassifier"),
        ("et", "regression", "ExtraTreesRegressor"),
        ("hgb", "multiclass", "HistGradientBoostingClassifier"),
    ):
        est = make_tree(name, task, tree_params(name, task, 3))
        assert type(est).__name__ == expected and est.get_params()["random_state"] == 3
    original = TREE_MODELS.target("rf")
    calls = []
    TREE_MODELS.register(
        "rf", lambda task, params: calls.append((task, params)) or "made", replace=True
    )
    try:
        assert make_tree("rf", "binary", {"n_estimators": 7}) == "made"
    finally:
        TREE_MODELS.register("rf", original, replace=True)
    assert calls == [("binary", {"n_estimators": 7})]
    with pytest.raises(UserError, match="unknown tree model 'gbm'; valid tree models: rf, et"):
        make_tree("gbm", "binary", {})


def test_uninstalled_tree_library_is_a_clear_error(binary_run):
    import importlib.util

    if importlib.util.find_spec("xgboost") is not None:
        pytest.skip("xgboost is installed")
    with pytest.raises(UserError) as err:
        build_ensemble([binary_run], trees=("rf", "xgb"))
    assert str(err.value) == (
        "tree model 'xgb' needs the xgboost package, which is not installed. "
        "Fix: `pip install xgboost-cpu`, or leave xgb out of the tree models."
    )


# --------------------------------------------------------------------------- concurrency


def test_concurrent_builds_with_the_same_name(binary_run, tmp_path):
    run = _copy_run(binary_run, tmp_path / "run")
    outcomes: list[object] = [None, None]

    def build(i):
        try:
            outcomes[i] = build_ensemble([run], trees=("hgb",), name="same")
        except UserError as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=build, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wins = [o for o in outcomes if not isinstance(o, Exception)]
    losses = [o for o in outcomes if isinstance(o, Exception)]
    assert len(wins) == 1, outcomes
    assert "already exists" in str(losses[0])
    ens = load_ensemble(run / "ensembles" / "same")
    assert ens.info == wins[0].info
    assert np.load(ens.out_dir / "holdout_pred.npy").shape == (ens.info["n_holdout"],)
    for name in FILES:
        assert (ens.out_dir / name).is_file()
    leftovers = [p.name for p in (run / "ensembles").iterdir() if p.name != "same"]
    assert leftovers == []
    assert sorted(p.name for p in (run / "trees").iterdir()) == ["hgb"]


# --------------------------------------------------------------------------- test set


def test_test_set_gives_test_predictions_and_submission(test_set_run):
    ens = build_ensemble([test_set_run], trees=("rf",), name="sub")
    test = pd.read_csv(test_set_run.parent / "data" / "test.csv")
    pred = np.load(ens.out_dir / "test_pred.npy")
    assert pred.shape == (len(test),) and ens.info["n_test"] == len(test)
    sub = pd.read_csv(ens.out_dir / "submission.csv")
    assert list(sub.columns) == ["id", "target"]
    np.testing.assert_array_equal(sub["id"], test["id"])
    np.testing.assert_allclose(sub["target"], pred)
    assert ens.info["submission"] == {
        "id_column": "id",
        "kind": "probability",
        "columns": ["target"],
    }
    # trees predict the test rows from the tree matrix of the test table
    assert np.load(test_set_run / "trees" / "rf" / "test_pred.npy").shape == (len(test),)


def test_submission_layouts_follow_the_sample():
    classes = ["cat", "dog", "eel"]
    pred = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    ids = np.array([5, 6])
    default = submission_layout("multiclass", "animal", classes, None)
    frame = submission_frame(default, ids, pred, classes)
    assert list(frame.columns) == ["id", "cat", "dog", "eel"]
    sample = pd.DataFrame({"key": [5, 6], "eel": [0.0, 0.0], "cat": [0.0, 0.0], "dog": [0.0, 0.0]})
    layout = submission_layout("multiclass", "animal", classes, None, sample)
    frame = submission_frame(layout, ids, pred, classes)
    assert list(frame.columns) == ["key", "eel", "cat", "dog"]
    np.testing.assert_allclose(frame["eel"], [0.1, 0.6])
    labels = pd.DataFrame({"key": [5, 6], "animal": ["cat", "cat"]})
    frame = submission_frame(
        submission_layout("multiclass", "animal", classes, None, labels), ids, pred, classes
    )
    assert frame["animal"].tolist() == ["cat", "eel"]
    binary = pd.DataFrame({"id": [1, 2], "y": [0.5, 0.5]})
    layout = submission_layout("binary", "y", ["no", "yes"], "id", binary)
    assert layout["kind"] == "probability"
    frame = submission_frame(layout, ids, np.array([0.2, 0.9]), ["no", "yes"])
    np.testing.assert_allclose(frame["y"], [0.2, 0.9])
    named = pd.DataFrame({"id": [1, 2], "no": [0.5, 0.5], "yes": [0.5, 0.5]})
    frame = submission_frame(
        submission_layout("binary", "y", ["no", "yes"], "id", named),
        ids,
        np.array([0.2, 0.9]),
        ["no", "yes"],
    )
    np.testing.assert_allclose(frame[["no", "yes"]].to_numpy(), [[0.8, 0.2], [0.1, 0.9]])
    # a 0 placeholder in the sample: labels for accuracy, probabilities for log_loss/roc_auc
    zeros = pd.DataFrame({"id": [1, 2], "y": [0, 0]})
    assert submission_layout("binary", "y", ["no", "yes"], "id", zeros)["kind"] == "label"
    for metric in ("log_loss", "roc_auc"):
        layout = submission_layout("binary", "y", ["no", "yes"], "id", zeros, metric)
        assert layout["kind"] == "probability"
    assert submission_layout("binary", "y", [0, 1], "id", zeros, "accuracy")["kind"] == "label"
    # RMSLE: values clipped at 0; RMSE: kept
    reg = pd.DataFrame({"id": [1, 2], "y": [0.0, 0.0]})
    rmsle = submission_layout("regression", "y", None, "id", reg, "rmsle")
    assert submission_frame(rmsle, ids, np.array([-0.3, 2.0]), None)["y"].tolist() == [0.0, 2.0]
    rmse = submission_layout("regression", "y", None, "id", reg, "rmse")
    assert submission_frame(rmse, ids, np.array([-0.3, 2.0]), None)["y"].tolist() == [-0.3, 2.0]
    with pytest.raises(UserError, match=r"sample submission columns \['id', 'a', 'b'\]"):
        submission_layout(
            "binary", "y", ["no", "yes"], "id", pd.DataFrame(columns=["id", "a", "b"])
        )


def test_class_columns_match_up_to_case_and_a_shared_prefix_or_suffix():
    pred = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    ids = np.array([5, 6])
    # integer labels under "Class_<label>" (the Otto layout), in the sample's own order
    classes = [1, 2, 10]
    sample = pd.DataFrame(columns=["id", "Class_10", "Class_1", "Class_2"])
    layout = submission_layout("multiclass", "y", classes, "id", sample)
    assert layout["kind"] == "class_probabilities" and layout["class_index"] == [2, 0, 1]
    frame = submission_frame(layout, ids, pred, classes)
    np.testing.assert_allclose(frame["Class_10"], [0.1, 0.6])
    # a suffix and another case
    sample = pd.DataFrame(columns=["id", "No_prob", "Yes_prob"])
    layout = submission_layout("binary", "y", ["no", "yes"], "id", sample)
    frame = submission_frame(layout, ids, np.array([0.2, 0.9]), ["no", "yes"])
    np.testing.assert_allclose(frame["Yes_prob"], [0.2, 0.9])
    # columns that are not the classes under one shared affix are refused, naming the fix
    for cols in (["id", "Class_1", "Class_2", "Type_10"], ["id", "p_1", "p_2", "p_3"]):
        with pytest.raises(UserError, match="prefix or suffix"):
            submission_layout("multiclass", "y", classes, "id", pd.DataFrame(columns=cols))


def test_a_sample_submission_that_fits_no_layout_is_refused_before_the_search(tmp_path):
    from hpsearch.cli.app import main as hp_main

    rng = np.random.default_rng(0)
    train = pd.DataFrame({"id": range(60), "x": rng.normal(size=60), "y": [1, 2, 3] * 20})
    test = pd.DataFrame({"id": range(60, 70), "x": rng.normal(size=10)})
    train.to_csv(tmp_path / "train.csv", index=False)
    test.to_csv(tmp_path / "test.csv", index=False)
    sample = pd.DataFrame({"id": test["id"], "a": 0.0, "b": 0.0, "c": 0.0})
    sample.to_csv(tmp_path / "sample.csv", index=False)
    spec = {
        "name": "bad-sample",
        "data": {
            "train": "train.csv",
            "test": "test.csv",
            "sample_submission": "sample.csv",
            "target": "y",
            "id": "id",
        },
        "space": "tabular_mlp",
        "budget": {"n_trials": 1},
        "output": "run",
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert hp_main(["run", str(tmp_path / "spec.yaml"), "--quiet"]) == 2
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- python api


def test_python_api_builds_from_run_objects_and_loads(binary_run, binary_ensemble):
    import types

    import ensembles

    run = types.SimpleNamespace(path=binary_run)  # what hpsearch.load_run gives: a .path
    ens = ensembles.build(run, name="api", trees=("rf", "hgb"), top_k=5, method="nelder-mead")
    assert isinstance(ens, ensembles.Ensemble) and ens.path == binary_run / "ensembles" / "api"
    assert ens.method == "nelder-mead" and ens.scores == binary_ensemble.info["scores"]
    assert ens.members == ens.info["members"] and ens.members is not ens.info["members"]
    assert {m["kind"] for m in ens.members} == {"network", "tree"}
    assert all(("trial" in m) == (m["kind"] == "network") for m in ens.members)
    assert all(("tree" in m) == (m["kind"] == "tree") for m in ens.members)
    assert ens.weights == {m["label"]: m["weight"] for m in ens.info["members"]}
    assert sum(ens.weights.values()) == pytest.approx(1.0)
    assert isinstance(ens.blender, ensembles.NelderMeadBlender)
    loaded = ensembles.load(ens.path)
    assert loaded.info == ens.info and loaded.weights == ens.weights
    # several runs as a list of paths and objects; a thing that is neither is refused
    with pytest.raises(UserError, match=r"is not a run directory path, URI or run object"):
        ensembles.build([run, 42])
    with pytest.raises(UserError, match="is not an ensemble directory"):
        ensembles.load(binary_run)


def test_import_ensembles_is_light():
    code = (
        "import sys, ensembles\n"
        "assert callable(ensembles.build) and callable(ensembles.load)\n"
        "heavy = [m for m in ('sklearn', 'scipy', 'tensorflow', 'keras', 'ray') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
        "ensembles.AutoBlender\n"
        "print('AFTER', 'sklearn' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert out.split("\n")[:2] == ["HEAVY []", "AFTER True"]


# --------------------------------------------------------------------------- cli


def test_cli_build_on_a_non_run_dir_exits_2(tmp_path, capsys):
    assert main(["build", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path} is not a run directory (no run.json).")
    assert "Traceback" not in err


def test_cli_build_with_defaults_blends_networks_and_trees_with_report_and_submission(
    test_set_run, tmp_path, capsys
):
    """The ensembles issue's done-when: `ensembles build` on a finished run with a test set
    and default options blends at least three networks and one tree model, and writes its
    report and submission."""
    run = _copy_run(test_set_run, tmp_path / "run")
    assert main(["build", str(run), "--name", "defaults", "--quiet"]) == 0
    out = run / "ensembles" / "defaults"
    info = json.loads((out / ENSEMBLE_JSON).read_text())
    kinds = [m["kind"] for m in info["members"] if m["weight"] != 0]  # in the blend
    assert kinds.count("network") >= 3 and kinds.count("tree") >= 1, info["members"]
    assert info["method"] in BLENDERS and info["scores"][info["method"]]["cross_fitted"] == min(
        s["cross_fitted"] for m, s in info["scores"].items() if m in BLENDERS
    )  # auto kept the best cross-fitted log loss
    report = (out / "report.md").read_text()
    assert all(f"({name})" in report for name in ("weights.png", "correlation.png"))
    sub = pd.read_csv(out / "submission.csv")
    test = pd.read_csv(test_set_run.parent / "data" / "test.csv")
    assert sub["id"].tolist() == test["id"].tolist() and not sub.isna().any().any()


def test_cli_build_list_and_report(binary_run, binary_ensemble, tmp_path, capsys):
    run = _copy_run(binary_run, tmp_path / "run")
    assert main(["list", str(run)]) == 0
    assert "no ensembles in" in capsys.readouterr().out
    code = main(["build", str(run), "--trees", "none", "--method", "greedy", "--name", "g"])
    assert code == 0
    captured = capsys.readouterr()
    assert "* greedy" in captured.out and "blending: nelder-mead..." in captured.err
    assert main(["list", str(run)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["name", "method", "members", "fitted", "cross-fitted"]
    info = load_ensemble(run / "ensembles" / "g").info
    row = out[1].split()
    assert row[:3] == ["g", "greedy", str(len(info["members"]))]
    assert float(row[3]) == pytest.approx(info["scores"]["greedy"]["fitted"], rel=1e-4)
    # a lost report is regenerated from ensemble.json
    ens_dir = run / "ensembles" / "g"
    (ens_dir / "report.md").unlink()
    (ens_dir / "scores.png").unlink()
    assert main(["report", str(ens_dir)]) == 0
    assert "report regenerated" in capsys.readouterr().out
    assert (ens_dir / "report.md").is_file() and (ens_dir / "scores.png").is_file()
    assert main(["report", str(run)]) == 2
    assert "is not an ensemble directory" in capsys.readouterr().err
    assert main(["list", str(tmp_path)]) == 2


def test_cli_predict_without_saved_models_exits_2(binary_ensemble, tmp_path, capsys):
    data = load_table("sklearn:breast_cancer").drop(columns=["target"]).head(5)
    data.to_csv(tmp_path / "new.csv", index=False)
    out = tmp_path / "out.csv"
    code = main(
        ["predict", str(binary_ensemble.out_dir), str(tmp_path / "new.csv"), "-o", str(out)]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: trial ") and "has no saved model" in err
    assert not out.exists()


def test_cli_help_imports_no_heavy_library():
    code = (
        "import sys\n"
        "from ensembles.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'ray', 'sklearn', 'optuna') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert "usage: ensembles" in out
    assert out.strip().endswith("HEAVY []")


# --------------------------------------------------------------------------- helpers


def _holdout_y(run: Path) -> np.ndarray:
    from hpsearch.core.data import load_prepared

    return load_prepared(run, load_spec(run / "spec.yaml")).y["holdout"]


def _replace_recorded(path: Path, array: np.ndarray) -> None:
    """Replace a trial's prediction file and record its new SHA-256 in trial.json, as a
    trial function that wrote that array would have."""
    import hashlib

    np.save(path, array)
    info_path = path.parent / "trial.json"
    info = json.loads(info_path.read_text())
    info["files"][path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    info_path.write_text(json.dumps(info))


def _member_holdout(run: Path, member: dict) -> np.ndarray:
    if member["kind"] == "tree":
        return np.load(run / "trees" / member["tree"] / "holdout_pred.npy")
    return RunDir(run).read_trial(member["trial"]).predictions("holdout")


# --------------------------------------------------------------------------- real models


@pytest.mark.slow
@pytest.mark.parametrize(
    ("source", "task", "metric"),
    [
        ("breast_cancer", "binary", "log_loss"),
        ("diabetes", "regression", "rmse"),
        ("diabetes", "regression", "rmsle"),
    ],
)
def test_predict_reproduces_test_predictions_with_keras_models(
    ray_session, tmp_path, source, task, metric
):

    train, test = _write_csvs(tmp_path / "data", n_train=300, source=f"sklearn:{source}")
    spec = load_spec(
        make_spec_dict(
            tmp_path,
            name=f"{source}-keras",
            data={
                "train": str(train),
                "test": str(test),
                "target": "target",
                "id": "id",
                "task": task,
            },
            metric=metric,
            budget={"n_trials": 2},
            sampler={"name": "random", "seed": 0},
            training={"max_epochs": 2, "batch_size": 64, "patience": 1},
        )
    )
    summary = run_search(spec, progress=False, trial_options={"tensorboard": False})
    assert summary.n_complete == 2
    run = Path(spec.output)
    records = RunDir(run).trials("COMPLETE")
    assert all(r.model_path.exists() for r in records)
    if task == "regression":  # networks learn a standardized target; predictions are not
        assert all(r.info["target_scaling"] for r in records)
    # under rmsle they learn log1p(target) and predict it back (expm1, non-negative)
    transform = "log1p" if metric == "rmsle" else None
    assert all(r.info["target_transform"] == transform for r in records)
    if metric == "rmsle":
        assert all((r.predictions("test") >= 0).all() for r in records)
    import ensembles

    ens = ensembles.build([run], trees=("rf",), method="mean", name="keras")
    saved = np.load(ens.out_dir / "test_pred.npy")
    np.testing.assert_allclose(ens.predict(test), saved, atol=1e-5)
    loaded = ensembles.load(ens.path)
    np.testing.assert_allclose(loaded.predict(pd.read_csv(test)), saved, atol=1e-5)
    frame = ens.predict_frame(test)
    pd.testing.assert_frame_equal(frame, ensembles.load(ens.out_dir).predict_frame(test))
    submission = pd.read_csv(ens.out_dir / "submission.csv")
    assert list(frame.columns) == list(submission.columns) == ["id", "target"]
    np.testing.assert_array_equal(frame["id"], submission["id"])
    np.testing.assert_allclose(frame["target"], submission["target"], atol=1e-5)
    out = tmp_path / "pred.csv"
    assert main(["predict", str(ens.out_dir), str(test), "-o", str(out)]) == 0
    np.testing.assert_allclose(pd.read_csv(out)["target"], saved, atol=1e-5)
