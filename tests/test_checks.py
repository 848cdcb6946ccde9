"""Submission checks and the example competition generator."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ensembles.checks import SubmissionError, check_submission, check_submission_file
from hpsearch.core.data import infer_columns
from hpsearch.pipeline.competition import make_competition, write_competition
from tests.conftest import ROOT

IDS = [7, 3, 9, 1]


def binary_sub(**over) -> pd.DataFrame:
    d = {"id": IDS, "target": [0.1, 0.9, 0.5, 0.2]}
    d.update(over)
    return pd.DataFrame(d)


def multi_sub(p=None) -> pd.DataFrame:
    p = np.full((4, 3), 1 / 3) if p is None else p
    return pd.DataFrame({"id": IDS, "a": p[:, 0], "b": p[:, 1], "c": p[:, 2]})


def test_valid_submissions_pass():
    check_submission(binary_sub(), ids=IDS, id_col="id", columns=["target"], task="binary")
    check_submission(multi_sub(), ids=IDS, id_col="id", columns=["a", "b", "c"], task="multiclass")
    labels = pd.DataFrame({"id": IDS, "target": ["x", "y", "x", "x"]})
    check_submission(
        labels, ids=IDS, id_col="id", columns=["target"], task="binary", classes=["x", "y"]
    )
    reg = pd.DataFrame({"id": IDS, "y": [1.5, -2.0, 3.0, 0.0]})
    check_submission(reg, ids=IDS, id_col="id", columns=["y"], task="regression")


@pytest.mark.parametrize(
    "sub, kwargs, match",
    [
        (binary_sub().drop(columns=["target"]), {}, "missing 'target'"),
        (binary_sub(extra=1), {}, "unexpected 'extra'"),
        (binary_sub().iloc[:3], {}, "3 rows, the test set has 4"),
        (binary_sub(id=[3, 7, 9, 1]), {}, "not in the test file's order"),
        (binary_sub(id=[7, 3, 9, 99]), {}, "ids not in the test file: '99'"),
        (binary_sub(id=[7, 7, 9, 1]), {}, "duplicated ids 7"),
        (binary_sub(target=[0.1, np.nan, 0.5, 0.2]), {}, "missing values"),
        (binary_sub(target=[0.1, np.inf, 0.5, 0.2]), {}, "infinite"),
        (binary_sub(target=[0.1, 1.7, 0.5, -0.2]), {}, r"outside \[0, 1\]"),
        (
            pd.DataFrame({"id": IDS, "target": ["x", "z", "x", "x"]}),
            {"classes": ["x", "y"]},
            "labels 'z' are not classes",
        ),
    ],
)
def test_broken_binary_submissions_are_rejected(sub, kwargs, match):
    with pytest.raises(SubmissionError, match=match):
        check_submission(sub, ids=IDS, id_col="id", columns=["target"], task="binary", **kwargs)


def test_the_metric_decides_labels_and_negative_values():
    labels = pd.DataFrame({"id": IDS, "target": [0, 1, 0, 0]})
    check_submission(labels, ids=IDS, id_col="id", columns=["target"], task="binary",
                     classes=[0, 1], metric="accuracy")  # fmt: skip
    for metric in ("log_loss", "roc_auc"):
        with pytest.raises(
            SubmissionError, match=f"column 'target' holds labels, but {metric} scores probab"
        ):
            check_submission(labels, ids=IDS, id_col="id", columns=["target"], task="binary",
                             classes=[0, 1], metric=metric)  # fmt: skip
    reg = pd.DataFrame({"id": IDS, "y": [1.5, -2.0, 3.0, 0.0]})
    check_submission(reg, ids=IDS, id_col="id", columns=["y"], task="regression", metric="rmse")
    with pytest.raises(SubmissionError, match="1 negative value.*RMSLE cannot score them"):
        check_submission(reg, ids=IDS, id_col="id", columns=["y"], task="regression",
                         metric="rmsle")  # fmt: skip


def test_multiclass_rows_must_sum_to_one():
    p = np.full((4, 3), 1 / 3)
    p[2] = [0.5, 0.5, 0.5]
    with pytest.raises(SubmissionError, match=r"row 2 \(id 9\) sum to 1.500000"):
        check_submission(
            multi_sub(p), ids=IDS, id_col="id", columns=["a", "b", "c"], task="multiclass"
        )


def test_check_file_follows_the_sample_submission(tmp_path):
    sample = pd.DataFrame({"id": IDS, "b": 0.5, "a": 0.5})
    sample.to_csv(tmp_path / "sample.csv", index=False)
    pd.DataFrame({"id": IDS, "x": 0}).to_csv(tmp_path / "test.csv", index=False)
    good = pd.DataFrame({"id": IDS, "b": [0.2, 0.3, 0.4, 0.5], "a": [0.8, 0.7, 0.6, 0.5]})
    good.to_csv(tmp_path / "good.csv", index=False)
    check_submission_file(
        str(tmp_path / "good.csv"),
        test=str(tmp_path / "test.csv"),
        sample=str(tmp_path / "sample.csv"),
        id_col="id",
        task="multiclass",
    )
    good[["id", "a", "b"]].to_csv(tmp_path / "swapped.csv", index=False)
    with pytest.raises(SubmissionError, match="order"):
        check_submission_file(
            str(tmp_path / "swapped.csv"),
            test=str(tmp_path / "test.csv"),
            sample=str(tmp_path / "sample.csv"),
            id_col="id",
            task="multiclass",
        )


def test_shipped_example_competition_is_reproduced_by_the_generator(tmp_path):
    write_competition(tmp_path, "binary")
    shipped = ROOT / "examples" / "competition"
    for name in ("train.csv", "test.csv", "sample_submission.csv", "spec.yaml"):
        assert (tmp_path / name).read_bytes() == (shipped / name).read_bytes(), name


@pytest.mark.parametrize("kind", ["binary", "multiclass", "regression"])
def test_generated_competitions_have_every_column_kind(kind):
    train, test, sample, spec = make_competition(kind)
    target = spec["data"]["target"]
    assert target not in test.columns and list(sample["id"]) == list(test["id"])
    kinds = infer_columns(train, target, "id")
    assert kinds["notes"] == "text" and kinds["exam_date"] == "datetime"
    assert kinds["site"] == "categorical" and kinds["n_visits"] == "categorical"
    assert kinds["source"] == "drop"
    assert train.isna().any().any()  # missing values
    assert set(test["site"]) - set(train["site"]) == {"island"}  # an unseen category


def test_non_numeric_predictions_are_rejected():
    reg = pd.DataFrame({"id": IDS, "y": ["1.5", "x", "3", "0"]})
    with pytest.raises(SubmissionError, match="non-numeric predictions for a regression target"):
        check_submission(reg, ids=IDS, id_col="id", columns=["y"], task="regression")
    text = multi_sub().astype({"b": str})
    with pytest.raises(SubmissionError, match="non-numeric probabilities"):
        check_submission(text, ids=IDS, id_col="id", columns=["a", "b", "c"], task="multiclass")
    # an integer column in a multiclass layout is probabilities, not labels: 0/1 in range
    ints = multi_sub(np.eye(3)[[0, 1, 2, 0]].astype(int))
    check_submission(ints, ids=IDS, id_col="id", columns=["a", "b", "c"], task="multiclass")


def test_an_ensemble_without_a_test_set_has_no_layout_to_check(tmp_path):
    from types import SimpleNamespace

    from ensembles.checks import check_ensemble_submission
    from hpsearch.core.errors import UserError

    ens = SimpleNamespace(out_dir=tmp_path, info={"task": "binary", "runs": [str(tmp_path)]})
    with pytest.raises(UserError, match="was built from a run without a test set"):
        check_ensemble_submission(str(tmp_path / "sub.csv"), ens)
    ens.info.update(submission={"id_column": "id", "columns": ["target"]}, runs=["s3://b/run"])
    with pytest.raises(UserError, match="its test file path is not on this machine"):
        check_ensemble_submission(str(tmp_path / "sub.csv"), ens)
    binary_sub().to_csv(tmp_path / "sub.csv", index=False)
    pd.DataFrame({"id": IDS}).to_csv(tmp_path / "test.csv", index=False)
    sub, reference = check_ensemble_submission(
        str(tmp_path / "sub.csv"), ens, test=str(tmp_path / "test.csv")
    )
    assert reference == str(tmp_path / "test.csv") and sub["id"].tolist() == IDS
