"""Tree families searched like networks: the ``trees`` trainer (hpsearch/search/tree_trainer.py)
for every family and task, in holdout and cross-validated runs through the real driver; the
library's tree spaces and their portfolios, enqueued first; ``Run.model`` of a tree trial and
its hash check; an ensemble predicting new rows with a tree trial; the space CLI."""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

import hpsearch
from hpsearch.core import metrics
from hpsearch.core.data import prepare
from hpsearch.core.errors import RunDirError, UserError
from hpsearch.core.spec import load_spec
from hpsearch.search.driver import _trial_arrays, enqueue_portfolio, run_search
from hpsearch.search.folds import run_folds
from hpsearch.search.tree_models import estimator_params, tree_params
from hpsearch.search.tree_trainer import train_tree_trial
from hpsearch.search.trial import COMPLETE, TrialPayload, family_trainer, trainer_for
from search_spaces import load_space
from search_spaces.families import TREE_FAMILIES, is_tree_family
from tests.conftest import make_spec_dict

FAMILIES = tuple(TREE_FAMILIES)
TASK_METRIC = {"binary": "log_loss", "multiclass": "log_loss", "regression": "rmsle"}


class _Quiet:
    def report(self, step: int, value: float) -> bool:
        return False


def _table(tmp_path: Path, task: str, n: int = 160, test_rows: int = 0) -> dict[str, Any]:
    """A small table with a categorical column that matters; the spec's ``data`` section."""
    rng = np.random.default_rng(0)
    colour = rng.choice(["red", "green", "blue", "grey"], size=n)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    effect = pd.Series(colour).map({"red": 1.5, "green": -1.0, "blue": 0.5, "grey": 0.0})
    signal = x1 + 0.5 * x2 + effect.to_numpy() + 0.3 * rng.normal(size=n)
    if task == "binary":
        target = (signal > 0).astype(int)
    elif task == "multiclass":
        target = np.digitize(signal, [-0.7, 0.7])
    else:
        target = np.exp(signal / 2).round(3)  # positive: RMSLE
    frame = pd.DataFrame({"x1": x1, "x2": x2, "colour": colour, "target": target})
    path = tmp_path / f"{task}.csv"
    frame.to_csv(path, index=False)
    data = {"train": str(path), "target": "target", "task": task}
    if test_rows:
        test = frame.drop(columns="target").head(test_rows)
        test.to_csv(tmp_path / f"{task}_test.csv", index=False)
        data["test"] = str(tmp_path / f"{task}_test.csv")
    return data


def _spec(tmp_path: Path, family: str, task: str, folds: int = 0, **overrides: Any) -> dict:
    split = {"folds": folds, "seed": 0} if folds else {"valid": 0.2, "holdout": 0.2, "seed": 0}
    return make_spec_dict(
        tmp_path,
        data=overrides.pop("data", None) or _table(tmp_path, task),
        metric=TASK_METRIC[task],
        space=family,
        split=split,
        sampler={"name": "random", "seed": 0},
        **overrides,
    )


def _payload(prepared: Any, family: str, metric: str, params: dict, **kw: Any) -> TrialPayload:
    return TrialPayload(
        number=0,
        params=params,
        family=family,
        metric=metric,
        task=prepared.task,
        seed=7,
        training={"cpus_per_trial": 2},
        inputs=prepared.input_spec.to_dict(),
        outputs=prepared.output_spec.to_dict(),
        **kw,
    )


def _check_predictions(pred: np.ndarray, task: str, n: int, k: int) -> None:
    assert pred.shape == ((n, k) if task == "multiclass" else (n,))
    assert np.all(np.isfinite(pred))
    if task == "multiclass":
        np.testing.assert_allclose(pred.sum(axis=1), 1.0, atol=1e-6)
    elif task == "binary":
        assert np.all((pred >= 0) & (pred <= 1))
    else:
        assert np.all(pred >= 0)  # RMSLE: expm1 of the log1p scale, clipped at 0


# --------------------------------------------------------------------------- the trainer


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
@pytest.mark.parametrize("family", FAMILIES)
def test_trees_trainer_holdout_every_family_and_task(tmp_path, family, task):
    """The trainer alone (no Ray) on the arrays the driver ships: valid/holdout predictions in
    the run's conventions, value = metric on valid, model.joblib bytes that predict the same,
    threads = cpus_per_trial, rounds kept for a booster."""
    import joblib

    spec = load_spec(_spec(tmp_path, family, task))
    prepared = prepare(spec, run_dir=None)
    data = _trial_arrays(prepared, tree=True)
    assert set(data["x"]["train"]) == {"tree"} and data["tree_meta"]["categorical"]
    config = load_space(family).portfolio[0]
    payload = _payload(prepared, family, spec.metric, dict(config), splits=("valid", "holdout"))
    result = train_tree_trial(payload, data, _Quiet())
    assert result.state == COMPLETE and result.model_format == "joblib"
    k = prepared.n_classes
    for split in ("valid", "holdout"):
        _check_predictions(result.predictions[split], task, len(prepared.y[split]), k)
    assert result.value == pytest.approx(
        metrics.score(spec.metric, prepared.y["valid"], result.predictions["valid"])
    )
    model = joblib.load(__import__("io").BytesIO(result.model_bytes))
    from hpsearch.search.tree_models import predict_tree

    again = predict_tree(
        model, prepared.tree_x["holdout"], task, k, result.extra["target_transform"]
    )
    np.testing.assert_allclose(again, result.predictions["holdout"])
    assert result.extra["threads"] == 2
    assert result.extra["target_transform"] == ("log1p" if task == "regression" else None)
    name = TREE_FAMILIES[family]
    params = result.extra["estimator_params"]
    assert "n_jobs" not in params and "thread_count" not in params
    if name in ("lgbm", "xgb", "catboost", "hgb"):
        assert result.extra["best_epoch"] and result.epochs == result.extra["best_epoch"]
        assert result.extra["best_epoch"] < 10_000  # early-stopped on the valid rows
    else:
        assert result.extra["best_epoch"] is None


@pytest.mark.parametrize(
    "family,task",
    [
        ("lightgbm", "multiclass"),
        ("catboost", "binary"),
        ("xgboost", "regression"),
        ("hist_gbm", "regression"),
        ("random_forest", "multiclass"),
        ("extra_trees", "binary"),
    ],
)
def test_trees_trainer_per_fold(tmp_path, family, task):
    """Cross-validated (hpsearch.search.folds.run_folds): each fold early-stops on its inner
    slice, predicts its held rows; one joblib model per fold; out-of-fold value."""
    spec = load_spec(_spec(tmp_path, family, task, folds=3))
    prepared = prepare(spec, run_dir=None)
    data = _trial_arrays(prepared, tree=True)
    assert "tree_meta" in data and "folds" in data
    config = dict(load_space(family).portfolio[0])
    payload = _payload(prepared, family, spec.metric, config, splits=("oof",), folds=3)
    result = run_folds(train_tree_trial, payload, data, _Quiet())
    assert result.state == COMPLETE, result.error
    assert result.model_format == "joblib" and len(result.fold_models) == 3
    y = prepared.y["train"]
    _check_predictions(result.predictions["oof"], task, len(y), prepared.n_classes)
    assert result.value == pytest.approx(metrics.score(spec.metric, y, result.predictions["oof"]))
    folds = result.extra["folds"]
    assert [f["fold"] for f in folds] == [0, 1, 2]
    assert all(f["n_train"] + f["n_valid"] + f["n_oof"] == len(y) for f in folds)


def test_a_network_family_is_refused_by_the_trees_trainer(tmp_path):
    spec = load_spec(_spec(tmp_path, "lightgbm", "binary"))
    prepared = prepare(spec, run_dir=None)
    payload = _payload(prepared, "dense", spec.metric, {})
    with pytest.raises(ValueError, match="the trees trainer trains tree families"):
        train_tree_trial(payload, _trial_arrays(prepared, tree=True), _Quiet())


# --------------------------------------------------------------------------- through the driver


@pytest.mark.slow
@pytest.mark.parametrize(
    "family,task,folds",
    [
        ("lightgbm", "binary", 0),
        ("lightgbm", "regression", 3),
        ("catboost", "multiclass", 0),
        ("catboost", "regression", 3),
        ("xgboost", "binary", 3),
        ("xgboost", "multiclass", 0),
        ("hist_gbm", "multiclass", 3),
        ("hist_gbm", "regression", 0),
        ("random_forest", "regression", 0),
        ("random_forest", "binary", 3),
        ("extra_trees", "multiclass", 3),
        ("extra_trees", "binary", 0),
    ],
)
def test_tree_family_runs_through_the_driver(ray_session, tmp_path, family, task, folds):
    """A run whose space is a tree family: trial_fn auto -> trees, portfolio configurations
    first, model.joblib (per fold) recorded with its SHA-256, Run.model the estimator."""
    d = _spec(tmp_path, family, task, folds=folds, budget={"n_trials": 2})
    summary = run_search(load_spec(d), address=ray_session, progress=False)
    assert summary.n_complete == 2 and summary.n_failed == 0
    run = hpsearch.load_run(d["output"])
    portfolio = load_space(family).portfolio
    for number in (0, 1):
        info = json.loads(
            (Path(d["output"]) / "trials" / f"{number:05d}" / "trial.json").read_text()
        )
        assert info["model_format"] == "joblib" and info["portfolio"] == number
        assert info["params"] == dict(portfolio[number])
        models = [f"model_fold{k}.joblib" for k in range(folds)] if folds else ["model.joblib"]
        assert all(len(info["files"][m]) == 64 for m in models)
        assert "model.keras" not in info["files"]
        model = run.model(number, fold=0) if folds else run.model(number)
        assert hasattr(model, "predict")
    splits = ("oof",) if folds else ("valid", "holdout")
    for split in splits:
        assert run.predictions(0, split).shape[0] > 0
    if not folds:
        assert run.best()["model"].endswith("model.joblib")


# --------------------------------------------------------------------------- portfolio first


def test_portfolio_first_then_the_sampler_and_only_missing_ones_on_resume(ray_session, tmp_path):
    d = make_spec_dict(
        tmp_path,
        space="lightgbm",
        sampler={"name": "random", "seed": 0},
        budget={"n_trials": 2},
        training={"trial_fn": "hpsearch.search.testing:instant"},
        resources={"max_concurrent": 1},
    )
    run_search(load_spec(d), address=ray_session, progress=False)
    portfolio = load_space("lightgbm").portfolio
    assert len(portfolio) == 5
    run = hpsearch.load_run(d["output"])
    rows = run.trials(state="COMPLETE").sort_values("number")
    assert list(rows["params"]) == [dict(c) for c in portfolio[:2]]
    assert len(run.trials(state="WAITING")) == 3  # the rest of the portfolio, queued
    d["budget"] = {"n_trials": 7}
    run_search(load_spec(d), resume=True, address=ray_session, progress=False)
    rows = hpsearch.load_run(d["output"]).trials(state="COMPLETE").sort_values("number")
    params = list(rows["params"])
    assert len(params) == 7
    assert params[:5] == [dict(c) for c in portfolio]  # each portfolio entry once, in order
    assert all(p not in params[:5] for p in params[5:])  # then the sampler's own
    import optuna

    study = optuna.load_study(
        study_name="bc-test", storage=f"sqlite:///{Path(d['output']) / 'study.db'}"
    )
    attrs = [t.user_attrs.get("portfolio") for t in study.get_trials()]
    assert attrs == [0, 1, 2, 3, 4, None, None]
    assert enqueue_portfolio(study, load_space("lightgbm")) == []  # nothing left to queue


def test_every_tree_space_has_a_valid_portfolio_and_estimator_params():
    for family, name in TREE_FAMILIES.items():
        space = load_space(family)
        assert space.family == family and is_tree_family(family)
        assert 3 <= len(space.portfolio) <= 6
        assert space.description.strip() and "\n" not in space.description.strip()
        for task in ("binary", "multiclass", "regression"):
            for config in space.portfolio:
                params = estimator_params(family, dict(config), task, "rmse", 1, 1000, 2)
                from hpsearch.search.tree_models import make_tree

                make_tree(name, task, params)  # every configuration makes an estimator
    # the fixed tree of `ensembles build --trees` is the family's portfolio[0]
    lgbm = tree_params("lgbm", "binary", 3, "log_loss", 1000)
    assert lgbm["learning_rate"] == 0.05 and lgbm["num_leaves"] == 31 and "n_jobs" not in lgbm
    assert tree_params("catboost", "regression", 0, "mae")["loss_function"] == "MAE"
    assert not is_tree_family("dense")


def test_forests_scale_with_rows_and_boosters_stop_sooner():
    from hpsearch.search.tree_models import early_stopping_rounds

    small = estimator_params("random_forest", {}, "binary", "log_loss", 0, 1_000, 2)
    big = estimator_params("random_forest", {}, "binary", "log_loss", 0, 300_000, 2)
    assert small["n_estimators"] == 300 and "max_samples" not in small
    assert big["n_estimators"] == 100 and big["bootstrap"] is True
    assert big["max_samples"] == pytest.approx(50_000 / 300_000, rel=1e-4)
    assert big["min_samples_leaf"] >= 3
    et = estimator_params("extra_trees", {}, "regression", "rmse", 0, 300_000, 2)
    assert et["bootstrap"] is True and et["max_features"] == 1.0
    assert early_stopping_rounds(1_000) == 150
    assert early_stopping_rounds(300_000) == 10
    assert small["n_jobs"] == 2


def test_trainer_auto_is_the_familys_and_a_tree_family_is_no_keras_model():
    from search_spaces.families import build_model
    from search_spaces.specs import InputSpec, OutputSpec

    assert family_trainer("lightgbm") == "trees" and family_trainer("dense") == "keras"
    assert trainer_for("auto", "catboost") == "trees" and trainer_for(None, "dense") == "keras"
    assert trainer_for("keras", "catboost") == "keras"  # an explicit trainer wins
    with pytest.raises(ValueError, match="family 'lightgbm' is a tree family"):
        build_model("lightgbm", {}, InputSpec(numeric=3), OutputSpec.single("binary"))


def test_a_trainer_that_cannot_train_the_space_is_refused_before_any_work(tmp_path):
    from hpsearch.pipeline.run import run_mix

    d = _spec(tmp_path, "lightgbm", "binary", training={"trial_fn": "keras"})
    with pytest.raises(UserError) as e:  # before Ray starts: no address is reached for
        run_search(load_spec(d), address="ray://hpsearch-test-unreachable:1", progress=False)
    assert str(e.value).startswith(
        "spec field 'training.trial_fn': 'keras' cannot train space 'lightgbm' (family "
        "'lightgbm' is a tree family"
    )
    assert "Fix: leave training.trial_fn out (auto: the family's own trainer, 'trees')" in str(
        e.value
    )
    assert not Path(d["output"]).exists()
    # a pipeline's mix: every family is checked before the first one runs
    mix = {"tabular_mlp": 0.5, "lightgbm": 0.5}
    spec = load_spec({**_spec(tmp_path, "lightgbm", "binary"), "space": None})
    with pytest.raises(UserError, match="'trees' cannot train space 'tabular_mlp'"):
        run_mix(spec, mix, trial_fn="trees", address="ray://hpsearch-test-unreachable:1")
    assert not Path(d["output"]).exists()
    # the user's own trainer is not judged; auto and the family's own trainer pass
    from hpsearch.search.trial import check_trainer_fits

    for trial_fn in ("tests.trial_fns:lockstep", "auto", "trees"):
        check_trainer_fits(trial_fn, "lightgbm", "lightgbm")


# --------------------------------------------------------------------------- stored models


@pytest.fixture(scope="module")
def tree_run(ray_session, tmp_path_factory):
    """A holdout run of the lightgbm family with a test table (2 trials)."""
    tmp = tmp_path_factory.mktemp("tree_run")
    d = _spec(
        tmp,
        "lightgbm",
        "binary",
        data=_table(tmp, "binary", test_rows=20),
        budget={"n_trials": 2},
    )
    run_search(load_spec(d), address=ray_session, progress=False)
    return Path(d["output"])


def test_run_model_unpickles_only_checked_bytes(tree_run, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(tree_run, run_dir)
    model = hpsearch.load_run(run_dir).model(0)
    assert type(model).__name__ == "LGBMClassifier"
    # a planted pickle that would run code when loaded: refused by its hash, never loaded
    planted = run_dir / "trials" / "00000" / "model.joblib"

    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled')",))

    planted.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(RunDirError, match="does not match the SHA-256"):
        hpsearch.load_run(run_dir).model(0)


def test_an_ensemble_with_tree_trial_members_predicts_new_rows(tree_run, tmp_path):
    import shutil

    from ensembles.builder import build_ensemble

    run_dir = tmp_path / "run"
    shutil.copytree(tree_run, run_dir)
    ens = build_ensemble([run_dir], trees=(), method="mean", name="t", margin="none")
    members = ens.info["members"]
    assert members and all(m.get("model_format") == "joblib" for m in members)
    test = pd.read_csv(load_spec(run_dir / "spec.yaml").data.test)
    np.testing.assert_allclose(ens.predict(test), np.load(ens.out_dir / "test_pred.npy"))
    refit = build_ensemble([run_dir], trees=(), method="mean", name="r", refit=True)
    assert all(m.get("refit") for m in refit.info["members"])
    np.testing.assert_allclose(refit.predict(test), np.load(refit.out_dir / "test_pred.npy"))


# --------------------------------------------------------------------------- space CLI


def test_space_cli_lists_and_samples_tree_families(capsys):
    from hpsearch.cli.app import main

    assert main(["space", "list"]) == 0
    out = capsys.readouterr().out
    for family in FAMILIES:
        assert any(line.startswith(family + " ") for line in out.splitlines()), family
    assert main(["space", "sample", "lightgbm", "-n", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("# space lightgbm (family lightgbm), 3 configuration(s)")
    configs = [json.loads(line.split(" ", 1)[1]) for line in lines[1:]]
    assert len(configs) == 3 and all("num_leaves" in c for c in configs)
    assert main(["space", "sample", "catboost", "--build"]) == 2
    err = capsys.readouterr().err
    assert "--build: space 'catboost' is of tree family 'catboost'" in err
    assert "Fix: leave --build out" in err


def test_spec_trial_fn_auto_and_yaml(tmp_path):
    d = _spec(tmp_path, "lightgbm", "binary")
    assert load_spec(d).training.trial_fn == "auto"
    doc = yaml.safe_load(yaml.safe_dump(load_spec(d).to_dict()))
    assert doc["training"]["trial_fn"] == "auto"
    with pytest.raises(UserError):
        load_spec({**d, "training": {"trial_fn": "tres"}})


def test_xgboost_learns_a_fold_that_lacks_a_class():
    """XGBoost refuses labels that are not 0..K-1: a fold whose training rows lack a rare
    class still fits, and its probabilities land in the right class columns."""
    pytest.importorskip("xgboost")
    from hpsearch.search.tree_models import fit_estimator, predict_tree, tree_params

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    y = np.where(X[:, 0] > 0, 2, 0)  # class 1 of three is missing from the training rows
    X_val, y_val = X[:40], np.r_[np.ones(5, dtype=int), y[5:40]]  # ... and early-stops on it
    params = {**tree_params("xgb", "multiclass", 0), "n_estimators": 30}
    model = fit_estimator("xgb", "multiclass", params, X, y, X_val=X_val, y_val=y_val)
    proba = predict_tree(model, X[:50], "multiclass", 3)
    assert proba.shape == (50, 3) and np.allclose(proba[:, 1], 0.0)
    assert np.mean(proba[:, 2][y[:50] == 2] > 0.5) > 0.9
    assert np.mean(proba[:, 0][y[:50] == 0] > 0.5) > 0.9
    # labels 0..K-1 already: the plain estimator, as before
    y3 = rng.integers(0, 3, 300)
    plain = fit_estimator("xgb", "multiclass", params, X, y3, X_val=X[:40], y_val=y3[:40])
    assert type(plain).__name__ == "XGBClassifier"


@pytest.mark.parametrize("name", ["lgbm", "catboost", "xgb"])
@pytest.mark.parametrize("task", ["binary", "regression"])
def test_a_booster_stops_adding_rounds_at_the_deadline(name, task):
    """Past the deadline (the end of the search's time budget and its grace) a booster
    keeps the rounds it has instead of running on: a few rounds, not hundreds, and a model
    that predicts and pickles."""
    if name == "xgb":
        pytest.importorskip("xgboost")
    from hpsearch.search.tree_models import fit_estimator, predict_tree, tree_params
    from hpsearch.search.tree_trainer import model_bytes

    def late_rounds(model):  # the rounds the model predicts with
        est = getattr(model, "estimator", model)
        if hasattr(est, "get_booster"):
            return est.get_booster().num_boosted_rounds()
        if hasattr(est, "booster_"):
            return est.booster_.current_iteration()
        return est.tree_count_

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 4))
    y = (X[:, 0] + 0.1 * rng.normal(size=400) > 0).astype(int) if task == "binary" else X[:, 0]
    params = {
        **tree_params(name, task, 0),
        ("iterations" if name == "catboost" else "n_estimators"): 300,
    }
    kw = {"X_val": X[:80], "y_val": y[:80]}
    free = fit_estimator(name, task, params, X, y, **kw)
    late = fit_estimator(name, task, params, X, y, deadline=time.time() - 1, **kw)
    assert late_rounds(late) <= 3 < late_rounds(free)
    assert predict_tree(late, X[:5], task, 2).shape == (5,)
    import io

    import joblib

    again = joblib.load(io.BytesIO(model_bytes(late)))  # saved like any trial model
    assert np.allclose(predict_tree(again, X[:5], task, 2), predict_tree(late, X[:5], task, 2))
    # without the early-stopping rows too
    bare = fit_estimator(name, task, params, X, y, deadline=time.time() - 1)
    assert predict_tree(bare, X[:5], task, 2).shape == (5,)


def test_the_search_gives_trials_a_deadline_after_its_time_budget():
    from types import SimpleNamespace

    from hpsearch.search import driver

    loop = object.__new__(driver.SearchLoop)
    loop.t0 = 1000.0
    loop.spec = SimpleNamespace(budget=SimpleNamespace(timeout_s=300.0))
    assert loop.deadline() == 1000.0 + 300.0 + 30.0  # 10% grace
    loop.spec.budget.timeout_s = 20.0
    assert loop.deadline() == 1000.0 + 20.0 + driver.MIN_DEADLINE_GRACE_S
    loop.spec.budget.timeout_s = None  # a budget in trials only: no deadline
    assert loop.deadline() is None
