"""`hpsearch pipeline`: generated competitions in, a checked submission.csv out."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from ensembles.checks import check_submission_file
from hpsearch.core.spec import load_spec
from hpsearch.pipeline.competition import write_competition
from hpsearch.pipeline.run import run_pipeline
from tests.conftest import ROOT

ORACLE = "hpsearch.search.testing:oracle"


def competition(tmp_path, kind, **over):
    """The example competition with the train/valid/holdout split unless ``split`` is
    given (merged): the generated spec cross-validates."""
    comp = write_competition(tmp_path / "comp", kind)
    spec = yaml.safe_load((comp / "spec.yaml").read_text())
    spec["output"] = str(tmp_path / "run")
    spec["split"] = {"valid": 0.2, "holdout": 0.2, "seed": 0}
    spec["budget"] = {"n_trials": 4}
    spec["ensemble"] = {"top_k": 3, "trees": ["rf", "hgb"], "folds": 3}
    for key, value in over.items():
        spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
    path = comp / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return comp, path


def _check(result, comp, spec):
    """`ensembles.checks` on the pipeline's submission, as a competition would take it."""
    check_submission_file(
        str(result.submission),
        test=str(comp / "test.csv"),
        sample=str(comp / "sample_submission.csv"),
        id_col="id",
        task=spec.task,
        classes=result.ensemble.info.get("classes"),
        metric=spec.metric,
    )


@pytest.mark.parametrize("kind", ["binary", "multiclass", "regression"])
def test_pipeline_writes_a_valid_submission(ray_session, tmp_path, kind):
    comp, path = competition(tmp_path, kind)
    spec = load_spec(path)
    result = run_pipeline(spec, trial_fn=ORACLE, progress=False)

    assert result.submission == tmp_path / "run" / "submission.csv"
    sub = pd.read_csv(result.submission)
    test = pd.read_csv(comp / "test.csv")
    sample = pd.read_csv(comp / "sample_submission.csv")
    assert list(sub.columns) == list(sample.columns)
    assert sub["id"].tolist() == test["id"].tolist()
    assert not sub.isna().any().any()
    _check(result, comp, spec)
    if kind == "multiclass":
        np.testing.assert_allclose(sub.iloc[:, 1:].sum(axis=1), 1.0, atol=1e-6)
    # the submission is the ensemble's test prediction, and the report is there
    assert (result.ensemble_dir / "submission.csv").read_bytes() == result.submission.read_bytes()
    assert result.report is not None and result.report.exists()
    # `ensembles check` accepts it and rejects it with two rows swapped
    from ensembles.cli import main as ensembles_main

    assert ensembles_main(["check", str(result.submission), str(result.ensemble_dir)]) == 0
    broken = sub.copy()
    broken.iloc[[0, 1]] = broken.iloc[[1, 0]].to_numpy()
    broken.to_csv(tmp_path / "broken.csv", index=False)
    assert ensembles_main(["check", str(tmp_path / "broken.csv"), str(result.ensemble_dir)]) == 2


def _spec(tmp_path, split=None):
    d = {
        "name": "p",
        "data": {"train": "sklearn:breast_cancer", "target": "target"},
        "space": "tabular_mlp",
        "output": str(tmp_path / "run"),
    }
    if split is not None:
        d["split"] = split
    return load_spec(d)


def test_the_pipeline_cross_validates_with_5_folds_unless_told_otherwise(tmp_path):
    """`hpsearch pipeline`'s split: --folds, else the spec's when it names one, else the
    resumed run's, else 5 folds (`hpsearch run` keeps the spec's: the holdout split)."""
    from hpsearch.core.errors import UserError
    from hpsearch.pipeline.run import DEFAULT_FOLDS, pipeline_spec

    bare = _spec(tmp_path)
    assert bare.split.folds is None  # what `hpsearch run` uses
    assert DEFAULT_FOLDS == 5 and pipeline_spec(bare).split.folds == 5
    assert pipeline_spec(bare, folds=3).split.folds == 3
    assert pipeline_spec(bare, folds=0).split.folds is None  # the holdout split
    assert pipeline_spec(_spec(tmp_path, {"seed": 4})).split == bare.split.model_copy(
        update={"folds": 5, "seed": 4}
    )
    # a spec that names its split keeps it, unless --folds says otherwise
    for split, folds in (({"folds": 4}, 4), ({"folds": None}, None), ({"valid": 0.3}, None)):
        spec = _spec(tmp_path, split)
        assert pipeline_spec(spec) is spec and spec.split.folds == folds
        assert pipeline_spec(spec, folds=2).split.folds == 2
    assert pipeline_spec(_spec(tmp_path, {"folds": 4}), folds=0).split.folds is None
    # --resume continues the run as it was made
    from hpsearch.core.store import RunDir

    RunDir(bare.output).path.mkdir(parents=True)
    RunDir(bare.output).write_meta({"split": {"valid": 0.2, "holdout": 0.2, "seed": 0}})
    assert pipeline_spec(bare, resume=True).split.folds is None
    assert pipeline_spec(bare, resume=False).split.folds == 5
    RunDir(bare.output).write_meta({"split": {"folds": 3, "seed": 0}})
    assert pipeline_spec(bare, resume=True).split.folds == 3
    for bad in (1, -1, 21):
        with pytest.raises(UserError, match=rf"--folds {bad}: must be 0 or from 2 to 20"):
            pipeline_spec(bare, folds=bad)


def test_pipeline_cli_refuses_a_bad_folds_option(tmp_path, capsys):
    from hpsearch.cli.app import main

    comp, path = competition(tmp_path, "binary")
    assert main(["pipeline", str(path), "--folds", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--folds 1: must be 0 or from 2 to 20" in err and "--folds 0" in err
    assert not (tmp_path / "run").exists()


def test_pipeline_cross_validates_by_default_and_submits_the_cv_ensemble(ray_session, tmp_path):
    """The generated competition's spec cross-validates: each trial's out-of-fold
    predictions of every labelled row, trees fitted per fold, the blend fitted on the
    out-of-fold rows and the submission made from the fold-averaged test predictions."""
    comp = write_competition(tmp_path / "comp", "binary")
    spec = yaml.safe_load((comp / "spec.yaml").read_text())
    assert spec["split"] == {"folds": 5, "seed": 0}
    spec["output"] = str(tmp_path / "run")
    spec["budget"] = {"n_trials": 3}
    spec["split"] = {"seed": 0}  # no split chosen: the pipeline's default
    spec["ensemble"] = {"top_k": 3, "trees": ["hgb"], "folds": 3}
    path = comp / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = run_pipeline(load_spec(path), trial_fn=ORACLE, progress=False)
    info = result.ensemble.info
    assert info["mode"] == "cv" and info["cv"]["folds"] == 5
    n_labelled = len(pd.read_csv(comp / "train.csv"))
    assert info["n_oof"] == n_labelled
    assert {m["kind"] for m in info["members"]} <= {"network", "tree"}
    tree = [m for m in info["members"] if m["kind"] == "tree"]
    assert all(m["folds"] == 5 for m in tree)
    assert (result.ensemble_dir / "oof_pred.npy").exists()
    _check(result, comp, load_spec(path))
    sub = pd.read_csv(result.submission)
    np.testing.assert_allclose(
        sub.iloc[:, 1], np.load(result.ensemble_dir / "test_pred.npy"), rtol=1e-6
    )
    # --folds 0 on a new output: the holdout split
    spec["output"] = str(tmp_path / "run-holdout")
    path.write_text(yaml.safe_dump(spec))
    holdout = run_pipeline(load_spec(path), trial_fn=ORACLE, progress=False, folds=0)
    assert "mode" not in holdout.ensemble.info and holdout.ensemble.info["n_holdout"] > 0


def test_pipeline_refuses_a_submission_that_fails_its_checks(ray_session, tmp_path, monkeypatch):
    """The pipeline checks the ensemble's submission itself: a file with a missing row is
    refused and never copied to OUTPUT/submission.csv."""
    import ensembles.builder
    from hpsearch.core.errors import UserError

    real = ensembles.builder.build_ensemble

    def drops_a_row(*args, **kwargs):
        result = real(*args, **kwargs)
        produced = result.out_dir / "submission.csv"
        lines = produced.read_text().splitlines()
        produced.write_text("\n".join(lines[:-1]) + "\n")
        return result

    monkeypatch.setattr(ensembles.builder, "build_ensemble", drops_a_row)
    comp, path = competition(tmp_path, "binary")
    spec = load_spec(path)
    with pytest.raises(UserError, match=r"rows, the test set has"):
        run_pipeline(spec, trial_fn=ORACLE, progress=False)
    assert not (tmp_path / "run" / "submission.csv").exists()


def test_pipeline_cli_user_error_exits_2(tmp_path):
    comp, path = competition(tmp_path, "binary")
    spec = yaml.safe_load(path.read_text())
    spec["data"]["target"] = "diagnosys"
    path.write_text(yaml.safe_dump(spec))
    proc = subprocess.run(
        [sys.executable, "-m", "hpsearch.cli.app", "pipeline", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 2, proc.stderr
    assert "diagnosys" in proc.stderr and "diagnosis" in proc.stderr  # names the closest column
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "metric"), [("binary", None), ("multiclass", None), ("regression", "rmsle")]
)
def test_pipeline_with_real_multi_input_networks(ray_session, tmp_path, kind, metric):
    """Real Keras trials on every column kind (numeric, categorical embeddings, text, dates)
    for each task; the ensemble is networks only, so the submission is theirs. Reloading the
    saved models and preprocessing (`ensembles predict`) on test.csv gives the submission
    back, class columns and all, and the rows with an unseen category are encoded as index 0
    and predicted like any other."""
    import ensembles
    from hpsearch.core.data import transform_new

    over = {"metric": metric} if metric else {}
    comp, path = competition(
        tmp_path,
        kind,
        budget={"n_trials": 2},
        training={"max_epochs": 2, "patience": 2},
        ensemble={"top_k": 2, "trees": [], "folds": 3, "method": "mean"},
        **over,
    )
    spec = load_spec(path)
    result = run_pipeline(spec, progress=False)
    assert result.search.n_complete == 2
    info = result.ensemble.info
    assert [m["kind"] for m in info["members"]] == ["network"] * len(info["members"])
    assert len(info["members"]) >= 1
    _check(result, comp, spec)
    sub = pd.read_csv(result.submission)
    test = pd.read_csv(comp / "test.csv")
    again = ensembles.load(result.ensemble_dir).predict_frame(comp / "test.csv")
    assert list(again.columns) == list(sub.columns)
    np.testing.assert_allclose(again.iloc[:, 1:].to_numpy(float), sub.iloc[:, 1:].to_numpy(float),
                               rtol=1e-4, atol=1e-5)  # fmt: skip
    unseen = (test["site"] == "island").to_numpy()
    assert unseen.sum() == 3
    assert (transform_new(result.run_dir, test)["cat_site"][unseen] == 0).all()
    assert np.isfinite(sub.iloc[:, 1:].to_numpy(float)[unseen]).all()
    if kind == "multiclass":  # the sample's column order; each column its own class
        sample = pd.read_csv(comp / "sample_submission.csv")
        assert list(sub.columns) == list(sample.columns)
        pred = np.load(result.ensemble_dir / "test_pred.npy")
        for col in sub.columns[1:]:
            k = [str(c) for c in info["classes"]].index(col)
            np.testing.assert_allclose(sub[col], pred[:, k], rtol=1e-5, atol=1e-7)
    if metric == "rmsle":
        assert (sub.iloc[:, 1] >= 0).all()


@pytest.mark.slow
def test_demo_command_runs_the_shipped_competition(tmp_path):
    """`make demo` runs `hpsearch demo`: the README's first command, end to end (quick mode)."""
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "hpsearch.cli.app", "demo", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "submission:" in proc.stdout and "cross-fitted" in proc.stdout
    sub = pd.read_csv(out / "submission.csv")
    test = pd.read_csv(ROOT / "examples" / "competition" / "test.csv")
    assert sub["id"].tolist() == test["id"].tolist()
    assert (out / "ensembles" / "demo" / "report.md").exists()
