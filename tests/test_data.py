"""Data preparation: typing, split, train-only fitting, persistence, and DataError messages."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hpsearch.core.data import (
    DATETIME_PARTS,
    LEGACY_DATETIME_PARTS,
    DataError,
    Preprocessor,
    Target,
    infer_columns,
    load_prepared,
    load_table,
    make_split,
    prepare,
    split_sizes,
    transform_new,
)
from hpsearch.core.spec import load_spec


def make_frame(n: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    words = ["good", "bad", "great", "fine", "awful", "nice", "meh", "superb"]
    return pd.DataFrame(
        {
            "x1": rng.normal(size=n),
            "x2": np.where(rng.random(n) < 0.2, np.nan, rng.normal(5, 2, size=n)),
            "city": rng.choice(["paris", "rome", "oslo", None], size=n),
            "level": rng.integers(0, 3, size=n),
            "review": [" ".join(rng.choice(words, size=6)) for _ in range(n)],
            "when": pd.date_range("2020-01-01", periods=n, freq="37h").strftime("%Y-%m-%d %H:%M"),
            "const": 1,
            "row_id": np.arange(n),
            "label": rng.choice(["no", "yes"], size=n),
        }
    )


def csv_spec(tmp_path, df, test=None, **data):
    train = tmp_path / "train.csv"
    df.to_csv(train, index=False)
    d = {"train": str(train), "target": "label", **data}
    if test is not None:
        test_path = tmp_path / "test.csv"
        test.to_csv(test_path, index=False)
        d["test"] = str(test_path)
    return load_spec(
        {"name": "t", "data": d, "space": "multi_input", "output": str(tmp_path / "run")}
    )


def test_infer_columns_kinds():
    df = make_frame()
    kinds = infer_columns(df, "label")
    assert kinds == {
        "x1": "numeric",
        "x2": "numeric",
        "city": "categorical",
        "level": "categorical",
        "review": "text",
        "when": "datetime",
        "const": "drop",
        "row_id": "drop",
    }
    assert infer_columns(df, "label", overrides={"level": "numeric"})["level"] == "numeric"


def test_id_like_columns_are_dropped_but_lookalike_names_are_not():
    import uuid

    rng = np.random.default_rng(0)
    n = 60
    first = ["Ann", "Bob", "Cy", "Di", "Ed", "Flo"]
    df = pd.DataFrame(
        {
            "PassengerId": [f"{i:04d}_{1 + i % 3:02d}" for i in range(n)],  # codes
            "token": [str(uuid.UUID(int=int(rng.integers(1 << 62)) + i)) for i in range(n)],
            "amount_paid": rng.permutation(n) * 3 + 1,  # unique integers, not a range
            "name": [f"{first[i % 6]} Smith{i}" for i in range(n)],  # unique words: text
            "label": rng.integers(0, 2, n),
        }
    )
    kinds = infer_columns(df, "label")
    assert kinds["PassengerId"] == "drop" and kinds["token"] == "drop"
    assert kinds["amount_paid"] == "numeric"  # before: dropped for a name ending in "id"
    assert kinds["name"] == "text"


def test_digits_pixels_stay_numeric_with_image_shape():
    df = load_table("sklearn:digits")
    assert df.shape == (1797, 65)
    kinds = infer_columns(df, "target", image_shape=(8, 8, 1))
    assert set(kinds.values()) == {"numeric"} and len(kinds) == 64


@pytest.mark.parametrize("n", [5, 31, 120, 569, 1001])
@pytest.mark.parametrize(("valid", "holdout"), [(0.2, 0.2), (0.001, 0.001), (0.15, 0.35)])
def test_split_sizes_are_the_sizes_make_split_makes(n, valid, holdout):
    # the split_sizes refusal (split.min_rows) is told before the split: it must agree
    y = np.arange(n) % 2
    for task, labels in (("regression", None), ("binary", y)):
        s = make_split(n, labels, task, valid, holdout, seed=0)
        assert {k: len(v) for k, v in s.items()} == split_sizes(n, valid, holdout)


def test_split_stratified_seeded_disjoint_covering():
    rng = np.random.default_rng(0)
    y = (rng.random(1000) < 0.3).astype(int)
    s = make_split(1000, y, "binary", 0.2, 0.2, seed=7)
    allids = np.concatenate([s["train"], s["valid"], s["holdout"]])
    assert len(allids) == 1000 and len(np.unique(allids)) == 1000
    assert len(s["holdout"]) == 200 and len(s["valid"]) == 200
    for part in s.values():
        assert abs(y[part].mean() - y.mean()) < 0.01
    again = make_split(1000, y, "binary", 0.2, 0.2, seed=7)
    assert all(np.array_equal(again[k], s[k]) for k in s)
    other = make_split(1000, y, "binary", 0.2, 0.2, seed=8)
    assert not np.array_equal(other["holdout"], s["holdout"])


def test_preprocessing_fitted_on_train_rows_only(tmp_path):
    df = make_frame(200)
    spec = csv_spec(tmp_path, df)
    p = prepare(spec)
    train_rows = df.iloc[p.ids["train"]]
    f = {f["name"]: f for f in p.preprocessor.numeric}
    assert f["x1"]["mean"] == pytest.approx(train_rows["x1"].mean())
    assert f["x1"]["mean"] != pytest.approx(df["x1"].mean())
    assert f["x2"]["median"] == pytest.approx(train_rows["x2"].median())
    assert p.x["train"]["numeric"][:, 0].mean() == pytest.approx(0, abs=1e-5)
    # holdout shifted: the scaler still uses the train statistics
    shifted = df.copy()
    shifted.loc[p.ids["holdout"], "x1"] += 100
    p2 = prepare(csv_spec(tmp_path, shifted))
    f2 = {f["name"]: f for f in p2.preprocessor.numeric}
    assert f2["x1"]["mean"] == pytest.approx(f["x1"]["mean"])


def test_arrays_and_input_spec(tmp_path):
    df = make_frame(200)
    p = prepare(csv_spec(tmp_path, df))
    spec = p.input_spec
    assert set(p.x["train"]) == set(spec.input_names())
    assert spec.categorical == {"city": 4, "level": 4}
    # numeric: x1, x2, 7 datetime parts, then x2's missing indicator
    assert p.preprocessor.numeric_names == [
        "x1", "x2", "when_year", "when_month", "when_day", "when_dayofweek", "when_hour",
        "when_dayofyear", "when_days", "x2_missing",
    ]  # fmt: skip
    assert spec.numeric == 10
    x = p.x["valid"]
    assert x["numeric"].dtype == np.float32 and not np.isnan(x["numeric"]).any()
    miss = df["x2"].isna().to_numpy()[p.ids["valid"]]
    assert np.array_equal(x["numeric"][:, -1], miss.astype(np.float32))
    city = df["city"].to_numpy()[p.ids["valid"]]
    assert np.all(x["cat_city"][pd.isna(city)] == 0) and np.all(x["cat_city"][~pd.isna(city)] > 0)
    assert x["text"].dtype == np.int32 and x["text"].shape[1] == spec.text.seq_len == 6
    assert spec.text.vocab_size == 8 + 2
    assert p.output_spec.heads[0].task == "binary" and p.classes == ["no", "yes"]
    # numerics + datetime parts, categorical codes, per text column 2 lengths + token counts
    assert p.tree_x["train"].shape == (len(p.ids["train"]), 2 + 7 + 2 + 2 + 8)
    assert np.isnan(p.tree_x["train"][:, 1]).any()  # raw NaN kept for trees


def test_unseen_and_rare_category_map_to_zero():
    df = pd.DataFrame({"c": ["a", "a", "b", "b", "rare", None], "v": [1.0, 2, 3, 4, 5, 6]})
    pre = Preprocessor().fit(df, {"c": "categorical", "v": "numeric"})
    assert pre.categorical["c"] == ["a", "b"]
    out = pre.transform(pd.DataFrame({"c": ["b", "new", "rare", None, "a"], "v": [1.0] * 5}))
    assert out["cat_c"].tolist() == [2, 0, 0, 0, 1]


def test_text_tokenization_oov_and_padding():
    df = pd.DataFrame({"t": ["Hello, World! hello", "world of Tests", "hello"]})
    pre = Preprocessor().fit(df, {"t": "text"})
    assert pre.vocab[:2] == ["hello", "world"]
    out = pre.transform(pd.DataFrame({"t": ["HELLO unknown world", None]}))["text"]
    assert out.shape == (2, pre.seq_len)
    assert out[0, :3].tolist() == [2, 1, 3] and out[1].tolist() == [0] * pre.seq_len


def test_text_tokens_in_any_script():
    df = pd.DataFrame({"t": ["Café crème, s'il vous plaît", "Привет мир привет", "日本 東京 日本"]})
    pre = Preprocessor().fit(df, {"t": "text"})
    assert {"café", "crème", "s'il", "plaît", "привет", "мир", "日本", "東京"} <= set(pre.vocab)
    out = pre.transform(pd.DataFrame({"t": ["ПРИВЕТ мир"]}))["text"]
    ids = {tok: i + 2 for i, tok in enumerate(pre.vocab)}  # 0 padding, 1 out of vocabulary
    assert out[0, :2].tolist() == [ids["привет"], ids["мир"]]


def test_trees_see_text_as_lengths_and_token_counts():
    df = pd.DataFrame({"t": ["good good film", "bad film", "good", None]})
    pre = Preprocessor().fit(df, {"t": "text"})
    names = pre.tree_names
    assert names[:2] == ["t_n_chars", "t_n_words"]
    assert names[2:] == [f"t_count_{tok}" for tok in pre.vocab]
    tree = pre.tree_matrix(pd.DataFrame({"t": ["Good, GOOD and bad!", None]}))
    counts = dict(zip(names, tree[0], strict=True))
    assert counts["t_count_good"] == 2 and counts["t_count_bad"] == 1
    assert counts["t_count_film"] == 0 and counts["t_n_words"] == 4
    assert tree[1].tolist() == [0.0] * len(names)


def test_datetime_expansion():
    df = pd.DataFrame({"d": ["2021-03-04 05:06", "2022-12-25 23:00", None]})
    pre = Preprocessor().fit(df, {"d": "datetime"})
    tree = pre.tree_matrix(df)
    days = (pd.Timestamp("2021-03-04 05:06") - pd.Timestamp("1970-01-01")) / pd.Timedelta(days=1)
    assert tree[0].tolist() == pytest.approx([2021, 3, 4, 3, 5, 63, days])
    assert tree[1, 5] == 359 and tree[1, 6] - tree[0, 6] == pytest.approx(661 + 17.9 / 24)
    assert np.isnan(tree[2]).all()
    assert pre.numeric_names[-1] == "d_days_missing"


def test_a_run_prepared_before_the_day_features_keeps_its_datetime_parts():
    """A saved preprocessor without ``datetime_parts`` (a run prepared before dayofyear and
    days) makes the features it was fitted with, and its dict (the data fingerprint's
    part) is unchanged."""
    df = pd.DataFrame({"d": ["2021-03-04 05:06", "2022-12-25 23:00", None]})
    saved = Preprocessor().fit(df, {"d": "datetime"}).to_dict()
    assert saved["datetime_parts"] == list(DATETIME_PARTS)
    old = {k: v for k, v in saved.items() if k != "datetime_parts"}
    old["numeric"] = [
        f for f in saved["numeric"] if not f["name"].startswith(("d_dayofyear", "d_days"))
    ]
    pre = Preprocessor.from_dict(old)
    assert pre.datetime_parts == LEGACY_DATETIME_PARTS and pre.to_dict() == old
    assert pre.tree_matrix(df)[0].tolist() == [2021, 3, 4, 3, 5]


def test_class_order_sorted_and_stable():
    t = Target.fit(pd.Series(["dog", "cat", "emu", "cat"], name="y"))
    assert t.task == "multiclass" and t.classes == ["cat", "dog", "emu"]
    assert t.encode(pd.Series(["emu", "cat"])).tolist() == [2, 0]
    assert Target.from_dict(t.to_dict()).classes == t.classes
    assert t.decode(np.array([[0.1, 0.7, 0.2]])).tolist() == ["dog"]


def test_save_load_round_trip_identical(tmp_path):
    df = make_frame(150)
    spec = csv_spec(tmp_path, df)
    p = prepare(spec, run_dir=tmp_path / "run")
    for name in ("split.json", "preprocessor.json", "target.json", "columns.json"):
        assert (tmp_path / "run" / "data" / name).is_file()
    q = load_prepared(tmp_path / "run", spec)
    assert q.fingerprint == p.fingerprint
    for split in p.x:
        for k in p.x[split]:
            assert np.array_equal(q.x[split][k], p.x[split][k])
        assert np.array_equal(q.y[split], p.y[split])
        np.testing.assert_array_equal(q.tree_x[split], p.tree_x[split])
    new = transform_new(tmp_path / "run", df.iloc[p.ids["holdout"]])
    assert np.array_equal(new["numeric"], p.x["holdout"]["numeric"])


def test_load_prepared_detects_changed_data(tmp_path):
    df = make_frame(150)
    spec = csv_spec(tmp_path, df)
    prepare(spec, run_dir=tmp_path / "run")
    df.loc[3, "x1"] = 99.0
    df.to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(DataError, match=r"training data '.*train.csv': changed since the run"):
        load_prepared(tmp_path / "run", spec)


def test_test_table_and_ids(tmp_path):
    df = make_frame(150)
    test = make_frame(30, seed=1).drop(columns=["label"])
    p = prepare(csv_spec(tmp_path, df, test=test, id="row_id"))
    assert p.x["test"]["numeric"].shape == (30, 10) and p.y["test"] is None
    assert p.ids["test"].tolist() == list(range(30))


def test_error_missing_target(tmp_path):
    df = make_frame(50).rename(columns={"label": "labels"})
    with pytest.raises(DataError) as exc:
        prepare(_spec_with_target(tmp_path, df))
    msg = str(exc.value)
    assert msg.startswith("spec field 'data.target': column 'label' is not in the training data")
    assert "(closest: 'labels')" in msg and "Fix: set `data.target`" in msg


def _spec_with_target(tmp_path, df):
    train = tmp_path / "train2.csv"
    df.to_csv(train, index=False)
    return load_spec(
        {
            "name": "t",
            "data": {"train": str(train), "target": "label", "task": "binary"},
            "space": "s",
        }
    )


def test_error_single_class(tmp_path):
    df = make_frame(50).assign(label="yes")
    with pytest.raises(
        DataError,
        match=r"target column 'label': has a single class \('yes'\) in all 50 rows\. Fix: ",
    ):
        prepare(_spec_with_target(tmp_path, df))


def test_error_nan_target(tmp_path):
    df = make_frame(50)
    df.loc[[4, 9], "label"] = None
    with pytest.raises(
        DataError,
        match=r"target column 'label': 2 row\(s\) have a missing \(NaN\) or infinite target, e.g\. rows 4, 9\. Fix: drop",
    ):
        prepare(_spec_with_target(tmp_path, df))


def test_error_test_column_mismatch(tmp_path):
    df = make_frame(80)
    test = make_frame(10).drop(columns=["label", "x2"]).assign(extra=1)
    with pytest.raises(DataError) as exc:
        prepare(csv_spec(tmp_path, df, test=test))
    assert str(exc.value) == (
        "spec field 'data.test': the test table does not match the training columns: "
        "missing column(s) 'x2'; extra column(s) 'extra'. "
        "Fix: give the test rows the training table's columns, without the target"
    )


def test_error_test_wrong_type(tmp_path):
    df = make_frame(80)
    test = make_frame(10).drop(columns=["label"]).astype({"x1": object})
    test.loc[2, "x1"] = "abc"
    with pytest.raises(
        DataError, match=r"column 'x1' in the test data: expected numbers, found 'abc' \(row 2\)"
    ):
        prepare(csv_spec(tmp_path, df, test=test))


def test_error_image_shape_mismatch():
    spec = load_spec(
        {
            "name": "b",
            "data": {"train": "sklearn:breast_cancer", "image_shape": [8, 8, 1]},
            "space": "cnn",
        }
    )
    with pytest.raises(DataError) as exc:
        prepare(spec)
    assert str(exc.value) == (
        "spec field 'data.image_shape': [8, 8, 1] holds 64 values but the data has 30 numeric "
        "feature column(s). Fix: give a shape whose product is 30 (channels last), or null"
    )


def test_error_empty_csv(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(DataError, match=r"data file '.*empty.csv': is empty"):
        load_table(path)


def test_digits_image(tmp_path):
    spec = load_spec(
        {"name": "d", "data": {"train": "sklearn:digits", "image_shape": [8, 8, 1]}, "space": "cnn"}
    )
    p = prepare(spec, run_dir=tmp_path)
    img = p.x["train"]["image"]
    assert img.shape == (len(p.ids["train"]), 8, 8, 1) and img.dtype == np.float32
    assert img.min() == 0.0 and img.max() == 1.0
    assert p.input_spec.image_shape == (8, 8, 1) and p.input_spec.numeric == 0
    assert p.output_spec.heads[0].n_classes == 10 and p.classes == list(range(10))
    assert load_prepared(tmp_path, spec).fingerprint == p.fingerprint


def test_trees_see_small_integer_categories_as_numbers_and_strings_as_categories():
    """An integer column the kinds' inference makes categorical (a count with a few values)
    reaches the trees as its number, order kept and NaN when missing, not as a category id;
    a string column stays a category for them; the networks embed both."""
    df = pd.DataFrame(
        {
            "x": [0.5, 1.5, 2.5, 3.5, 4.5, 5.5] * 2,
            "adults": [2, 1, 2, 3, None, 2] * 2,
            "meal": ["bb", "hb", "bb", "fb", "bb", None] * 2,
        }
    )
    kinds = {"x": "numeric", "adults": "categorical", "meal": "categorical"}
    pre = Preprocessor().fit(df, kinds)
    assert pre.tree_ordinal == ["adults"]
    tree = pre.tree_matrix(df)
    at = {name: j for j, name in enumerate(pre.tree_names)}
    adults = tree[:, at["adults"]]
    assert adults[:4].tolist() == [2, 1, 2, 3] and np.isnan(adults[4])
    assert tree[:6, at["meal"]].tolist() == [1, 3, 1, 2, 1, 0]  # ids by count, then key
    assert pre.tree_meta() == {"categorical": [at["meal"]], "cardinality": [4]}
    assert "cat_adults" in pre.transform(df)  # an embedded input for the networks
    again = Preprocessor.from_dict(pre.to_dict())
    assert again.tree_ordinal == ["adults"] and np.array_equal(
        again.tree_matrix(df), tree, equal_nan=True
    )


def test_a_run_prepared_before_ordinal_trees_keeps_its_category_ids():
    """A saved preprocessor without ``tree_ordinal`` (a run prepared before it) gives the
    trees category ids for every categorical column, and its dict is unchanged."""
    df = pd.DataFrame({"adults": [2, 1, 2, 3] * 2, "meal": ["bb", "hb", "bb", "fb"] * 2})
    saved = Preprocessor().fit(df, {"adults": "categorical", "meal": "categorical"}).to_dict()
    old = {k: v for k, v in saved.items() if k != "tree_ordinal"}
    pre = Preprocessor.from_dict(old)
    assert pre.tree_ordinal == [] and pre.to_dict() == old
    assert pre.tree_matrix(df)[:4, 0].tolist() == [1, 2, 1, 3]  # ids by count, then key
    assert pre.tree_meta()["categorical"] == [0, 1]
    # a column with more than TREE_ORDINAL_MAX integers, or floats, stays a category
    wide = pd.DataFrame({"c": list(range(12)) * 2, "f": [0.5, 1.5] * 12})
    assert Preprocessor().fit(wide, {"c": "categorical", "f": "categorical"}).tree_ordinal == []
