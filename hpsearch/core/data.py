"""Driver-side data preparation: load, type the columns, split, fit preprocessing on the
train rows only, and persist everything needed to rebuild the same arrays.

Pure numpy/pandas/scikit-learn (no TensorFlow, no Ray). Layout in ``RUN_DIR/data/``:

- ``split.json``: row ids per split, seed, fractions, row count, content hash of
  the data and the fingerprint of the prepared arrays;
- ``preprocessor.json``: the fitted :class:`Preprocessor` (plain JSON, no pickle);
- ``target.json``: the task and the class order (:class:`Target`);
- ``columns.json``: the column kinds and the table's columns.

Model inputs follow :class:`search_spaces.specs.InputSpec` names: ``numeric``
(float32 ``(n, d)``), ``cat_<column>`` (int32 ``(n,)``, 0 = unknown/missing/rare),
``text`` (int32 ``(n, seq_len)``, 0 = padding, 1 = out of vocabulary) and
``image`` (float32 ``(n, *image_shape)``, scaled to [0, 1] by the train maximum).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpsearch.core.errors import UserError
from search_spaces.specs import InputSpec, OutputSpec, TextInput

KINDS = ("numeric", "categorical", "text", "datetime", "drop")
# the numeric features of a datetime column: its calendar parts, the day of the year
# (seasons) and the days since 1970-01-01 (trends; the date as one number, as AutoGluon's
# datetime features keep it)
DATETIME_PARTS = ("year", "month", "day", "dayofweek", "hour", "dayofyear", "days")
# the parts of runs prepared before dayofyear and days: their saved preprocessor has no
# `datetime_parts` and keeps these
LEGACY_DATETIME_PARTS = ("year", "month", "day", "dayofweek", "hour")
# a categorical column of integers with at most this many values (a count, a level, a flag:
# what the kinds' inference makes categorical) reaches the tree models as its number, its
# order kept, as a user would give it to them; the networks still embed it
TREE_ORDINAL_MAX = 10
_EPOCH = pd.Timestamp("1970-01-01")
SPLITS = ("train", "valid", "holdout")
MAX_CLASSES = 100
CAT_MIN_COUNT = 2
CAT_MAX_CARD = 1000
TEXT_VOCAB = 5000
TEXT_MAX_LEN = 200
TREE_TOKENS = 50  # bag-of-words counts of the most frequent tokens, per text column, for trees
DATA_DIR = "data"

_SKLEARN = {
    "breast_cancer": "load_breast_cancer",
    "digits": "load_digits",
    "wine": "load_wine",
    "iris": "load_iris",
    "diabetes": "load_diabetes",
}
# letters and digits of any script (not only ASCII), with inner apostrophes
_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_DATE_RE = re.compile(
    r"^\s*\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}"
    r"(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?\s*(?:Z|[+-]\d{2}:?\d{2})?\s*$"
)


class DataError(UserError):
    """The data does not fit the spec; the message names the column/file, the value and the fix."""


def _fail(what: str, problem: str, fix: str) -> DataError:
    return DataError(f"{what}: {problem}. Fix: {fix}")


def _closest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(str(name), [str(o) for o in options], n=1, cutoff=0.5)
    return f" (closest: {close[0]!r})" if close else ""


def _short_list(items: list[Any], n: int = 10) -> str:
    shown = ", ".join(repr(i) for i in items[:n])
    return shown + (f", ... ({len(items)} in all)" if len(items) > n else "")


# --------------------------------------------------------------------------- loading


def load_table(source: str | Path) -> pd.DataFrame:
    """A table from ``sklearn:<name>`` (features + ``target``), a CSV or a Parquet file."""
    src = str(source)
    if src.startswith("sklearn:"):
        name = src.split(":", 1)[1]
        if name not in _SKLEARN:
            raise _fail(
                f"data source {src!r}",
                "unknown bundled dataset" + _closest(name, list(_SKLEARN)),
                "use one of: " + ", ".join(f"sklearn:{n}" for n in _SKLEARN),
            )
        import sklearn.datasets as skd

        bunch = getattr(skd, _SKLEARN[name])(as_frame=True)
        df = bunch.frame.copy()
        if "target" not in df.columns:
            df["target"] = np.asarray(bunch.target)
        return df.reset_index(drop=True)
    path = Path(src)
    if not path.is_file():
        raise _fail(f"data file {src!r}", "does not exist", "check the path in the spec")
    low = path.name.lower()
    try:
        if low.endswith((".parquet", ".pq")):
            df = pd.read_parquet(path)
        elif low.endswith((".csv", ".csv.gz")):
            df = pd.read_csv(path)
        else:
            raise _fail(
                f"data file {src!r}", "is neither CSV nor Parquet", "use a .csv or .parquet file"
            )
    except pd.errors.EmptyDataError:
        raise _fail(
            f"data file {src!r}",
            "is empty (no header, no rows)",
            "write a header line and at least one row",
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as e:
        if isinstance(e, DataError):
            raise
        raise _fail(
            f"data file {src!r}",
            f"cannot be parsed: {' '.join(str(e).split())}",
            "check that it is valid CSV/Parquet",
        ) from None
    if len(df) == 0:
        raise _fail(f"data file {src!r}", "has a header but no rows", "add data rows")
    if low.endswith((".csv", ".csv.gz")):
        _check_unique_header(path, src)
    return df.reset_index(drop=True)


def _check_unique_header(path: Path, src: str) -> None:
    """pandas renames a repeated column name (``a``, ``a.1``): refused from the header line."""
    header = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False)
    names = [str(v) for v in header.iloc[0].tolist()]
    counts = Counter(names)
    dups = [n for n in counts if counts[n] > 1]
    if dups:
        renamed = [f"{n}.{i}" for n in dups[:3] for i in range(1, counts[n])][:5]
        raise _fail(
            f"data file {src!r}",
            f"repeats the column name(s) {_short_list(dups)} in its header (pandas would "
            f"silently rename the repeats {_short_list(renamed)})",
            "give every column of the header line its own name",
        )


def data_hash(df: pd.DataFrame) -> str:
    """sha256 of a table's content (values, column names and order)."""
    h = hashlib.sha256()
    h.update(json.dumps([str(c) for c in df.columns]).encode())
    h.update(str(df.shape).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- target


def _is_integral(values: np.ndarray) -> bool:
    v = values[np.isfinite(values)]
    return bool(np.all(np.floor(v) == v))


def infer_task(y: pd.Series) -> str:
    """binary for 2 distinct values; regression for non-integral numbers or more than 100
    distinct integers; multiclass otherwise (non-numeric labels: up to 100 classes)."""
    values = y.dropna()
    n_unique = values.nunique()
    if n_unique == 2:
        return "binary"
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        arr = values.to_numpy(dtype=float)
        if not _is_integral(arr) or n_unique > MAX_CLASSES:
            return "regression"
    return "multiclass"


def _check_target_column(df: pd.DataFrame, target: str, where: str) -> None:
    if target not in df.columns:
        cols = [str(c) for c in df.columns]
        raise _fail(
            "spec field 'data.target'",
            f"column {target!r} is not in {where}{_closest(target, cols)}; its columns are "
            f"{_short_list(cols)}",
            "set `data.target` to the name of the column to predict",
        )


def peek_task(source: str, target: str) -> str:
    """The task inferred from the target column alone (reads only that column when possible)."""
    src = str(source)
    if src.startswith("sklearn:"):
        return {"breast_cancer": "binary", "diabetes": "regression"}.get(src[8:], "multiclass")
    try:
        if src.lower().endswith((".parquet", ".pq")):
            y = pd.read_parquet(src, columns=[target])[target]
        else:
            y = pd.read_csv(src, usecols=[target])[target]
    except (ValueError, KeyError, pd.errors.EmptyDataError):
        df = load_table(src)
        _check_target_column(df, target, f"the training data {src!r}")
        y = df[target]
    _check_target_values(y, target)
    return infer_task(y)


def _check_target_values(y: pd.Series, target: str) -> None:
    bad = y.isna().to_numpy().copy()
    if pd.api.types.is_numeric_dtype(y) and not pd.api.types.is_bool_dtype(y):
        bad |= ~np.isfinite(y.to_numpy(dtype=float, na_value=np.nan))
    if bad.any():
        rows = np.flatnonzero(bad)
        raise _fail(
            f"target column {target!r}",
            f"{len(rows)} row(s) have a missing (NaN) or infinite target, e.g. rows "
            f"{', '.join(str(int(r)) for r in rows[:5])}",
            "drop those rows or fill in their targets before the search",
        )


def _json_scalar(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v


class Target:
    """Task and class order of the target; encodes labels to 0..K-1 (floats for regression)."""

    def __init__(self, name: str, task: str, classes: list[Any] | None = None):
        self.name = name
        self.task = task
        self.classes = None if classes is None else [_json_scalar(c) for c in classes]
        self._index = None if self.classes is None else {c: i for i, c in enumerate(self.classes)}

    @classmethod
    def fit(cls, y: pd.Series, task: str | None = None, metric: str | None = None) -> Target:
        """Infer/check the task on the FULL training table and fix the class order (sorted labels)."""
        name = str(y.name)
        _check_target_values(y, name)
        task = task or infer_task(y)
        if task == "regression":
            if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
                example = y.iloc[0]
                raise _fail(
                    f"target column {name!r}",
                    f"a regression target must be numeric, found {example!r}",
                    "set `data.task` to binary or multiclass, or convert the target to numbers",
                )
            if metric == "rmsle" and (y.to_numpy(dtype=float) < 0).any():
                raise _fail(
                    "spec field 'metric'",
                    f"'rmsle' needs a non-negative target, but {name!r} has minimum "
                    f"{float(y.min()):g}",
                    "use rmse or mae",
                )
            return cls(name, task)
        labels = pd.unique(y)
        try:
            classes = sorted(_json_scalar(v) for v in labels)
        except TypeError:
            classes = sorted((_json_scalar(v) for v in labels), key=str)
        k = len(classes)
        if k < 2:
            raise _fail(
                f"target column {name!r}",
                f"has a single class ({classes[0]!r}) in all {len(y)} rows",
                "a classifier needs at least two classes; check the target column or the data file",
            )
        if task == "binary" and k != 2:
            raise _fail(
                "spec field 'data.task'",
                f"'binary' but target {name!r} has {k} classes ({_short_list(classes, 5)})",
                "set `task: multiclass` (or regression), or leave it out to infer it",
            )
        if task == "multiclass" and k > MAX_CLASSES:
            raise _fail(
                f"target column {name!r}",
                f"has {k} distinct values, more than {MAX_CLASSES} classes",
                "set `data.task: regression` if it is a number to predict",
            )
        return cls(name, task, classes)

    @property
    def n_classes(self) -> int:
        return 0 if self.classes is None else len(self.classes)

    @property
    def n_outputs(self) -> int:
        """Model output width: 1 for binary and regression, K for multiclass."""
        return self.n_classes if self.task == "multiclass" else 1

    def encode(self, y: pd.Series | np.ndarray) -> np.ndarray:
        values = pd.Series(y).reset_index(drop=True)
        if self.task == "regression":
            return values.to_numpy(dtype=np.float64)
        out = np.empty(len(values), dtype=np.int32)
        for i, v in enumerate(values.tolist()):
            v = _json_scalar(v)
            idx = self._index.get(v)
            if idx is None and isinstance(v, float) and v.is_integer():
                idx = self._index.get(int(v))
            if idx is None:
                raise _fail(
                    f"target column {self.name!r}",
                    f"label {v!r} (row {i}) is not one of the known classes {_short_list(self.classes, 5)}",
                    "use the same labels as the training data",
                )
            out[i] = idx
        return out

    def decode(self, encoded: np.ndarray) -> np.ndarray:
        """Class indices (or probabilities, argmax'd; binary: P(class 1) > 0.5) back to labels."""
        arr = np.asarray(encoded)
        if self.task == "regression":
            return arr.astype(float)
        if arr.ndim == 2 and arr.shape[1] > 1:
            arr = arr.argmax(axis=1)
        elif arr.dtype.kind == "f":
            arr = arr.reshape(-1)
            arr = (arr > 0.5).astype(int) if self.task == "binary" else arr.astype(int)
        return np.asarray(self.classes, dtype=object)[arr.astype(int)]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "task": self.task, "classes": self.classes}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Target:
        return cls(d["name"], d["task"], d.get("classes"))


# --------------------------------------------------------------------------- column typing


def _is_stringish(s: pd.Series) -> bool:
    return (pd.api.types.is_string_dtype(s) or pd.api.types.is_object_dtype(s)) and not (
        isinstance(s.dtype, pd.CategoricalDtype)
    )


def _looks_datetime(values: pd.Series) -> bool:
    sample = values.astype(str).head(200)
    if len(sample) == 0:
        return False
    matched = sample.map(lambda v: bool(_DATE_RE.match(v))).mean()
    if matched < 0.95:
        return False
    parsed = _parse_datetime(values.head(200))
    return bool(parsed.notna().mean() >= 0.95)


def _parse_datetime(s: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(s):
        out = s
        if getattr(out.dt, "tz", None) is not None:
            out = out.dt.tz_convert("UTC").dt.tz_localize(None)
        return out
    try:
        out = pd.to_datetime(s, errors="coerce", format="mixed", utc=True)
    except (ValueError, TypeError):
        out = pd.to_datetime(s.astype(str), errors="coerce", utc=True)
    return out.dt.tz_localize(None)


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


_ID_NAME = re.compile(r"(?:^|[_\s.-])id$|^(?:index|row|rowid|key|uuid|guid)$", re.IGNORECASE)


def _id_like_name(col: str) -> bool:
    """``id``, ``user_id``, ``PassengerId``, ``row``, ``uuid``; not ``paid`` or ``valid``."""
    name = str(col)
    return bool(_ID_NAME.search(name) or re.search(r"[a-z0-9](?:Id|ID)$", name))


def _looks_like_codes(values: pd.Series) -> bool:
    """Strings such as ``0001_01``, ``A-1932``, UUIDs: one word each, with digits."""
    return bool(
        not values.str.contains(r"\s", regex=True).any()
        and values.str.contains(r"\d", regex=True).mean() >= 0.95
    )


def infer_columns(
    df: pd.DataFrame,
    target: str,
    id_col: str | None = None,
    overrides: dict[str, str] | None = None,
    image_shape: tuple[int, ...] | None = None,
) -> dict[str, str]:
    """Column -> kind (numeric | categorical | text | datetime | drop) for every column but
    the target and the id. Overrides win. With ``image_shape`` every numeric column is a
    pixel: none is dropped or made categorical."""
    overrides = dict(overrides or {})
    cols = [c for c in df.columns if c != target and c != id_col]
    all_cols = [str(c) for c in df.columns]
    for col, kind in overrides.items():
        if col not in df.columns:
            raise _fail(
                f"spec field 'data.columns.{col}'",
                f"column {col!r} is not in the training data{_closest(col, all_cols)}",
                "name an existing column (the header of the training file)",
            )
        if col == target:
            raise _fail(
                f"spec field 'data.columns.{col}'",
                "is the target column",
                "remove the override; the target is never a feature",
            )
        if kind not in KINDS:
            raise _fail(
                f"spec field 'data.columns.{col}'", f"unknown kind {kind!r}", f"use one of {KINDS}"
            )
    kinds: dict[str, str] = {}
    for col in cols:
        if col in overrides:
            kinds[col] = overrides[col]
            continue
        s = df[col]
        values = s.dropna()
        n = len(values)
        n_unique = int(values.nunique())
        if pd.api.types.is_datetime64_any_dtype(s):
            kinds[col] = "datetime" if n_unique > 1 else "drop"
            continue
        if pd.api.types.is_bool_dtype(s) or isinstance(s.dtype, pd.CategoricalDtype):
            kinds[col] = "categorical" if n_unique > 1 else "drop"
            continue
        if pd.api.types.is_numeric_dtype(s):
            if image_shape is not None:
                kinds[col] = "numeric"
                continue
            if n_unique <= 1:
                kinds[col] = "drop"
                continue
            arr = values.to_numpy(dtype=float)
            integral = _is_integral(arr)
            if integral and n_unique <= 10 and n_unique <= 0.98 * n:
                kinds[col] = "categorical"
            elif (
                integral
                and n_unique == n == len(s)
                and n >= 20
                and (_id_like_name(col) or arr.max() - arr.min() + 1 == n)
            ):
                kinds[col] = "drop"  # an id: all-unique integers forming a range
            else:
                kinds[col] = "numeric"
            continue
        if _is_stringish(s):
            if n_unique <= 1:
                kinds[col] = "drop"
                continue
            text_values = values.astype(str)
            if _looks_datetime(text_values):
                kinds[col] = "datetime"
                continue
            if (
                n_unique == n == len(s)
                and n >= 20
                and (_id_like_name(col) or _looks_like_codes(text_values))
            ):
                kinds[col] = "drop"  # an id: all-unique codes (not free text)
                continue
            n_tok = text_values.head(2000).map(lambda v: len(_tokens(v)))
            mean_tok = float(n_tok.mean()) if len(n_tok) else 0.0
            uniq = n_unique / max(n, 1)
            if mean_tok >= 4 or (uniq > 0.5 and mean_tok >= 2):
                kinds[col] = "text"
            elif n_unique == n and n >= 20:
                kinds[col] = "drop"  # all-unique labels (names, uuids): id-like
            else:
                kinds[col] = "categorical"
            continue
        kinds[col] = "drop"
    return kinds


# --------------------------------------------------------------------------- split


def make_split(
    n_rows: int,
    y: np.ndarray | None,
    task: str,
    valid: float,
    holdout: float,
    seed: int,
) -> dict[str, np.ndarray]:
    """Disjoint, covering, seeded row ids for train/valid/holdout (sorted), stratified by the
    class for classification (falls back to a plain shuffle when a class is too small)."""
    from sklearn.model_selection import train_test_split

    if min(split_sizes(n_rows, valid, holdout).values()) < 1:
        raise _fail(
            "training data",
            f"{n_rows} row(s) are too few to split into train/valid/holdout "
            f"(valid {valid}, holdout {holdout})",
            "use a larger table (at least a few dozen rows)",
        )
    ids = np.arange(n_rows)
    classify = task in ("binary", "multiclass") and y is not None
    y = None if y is None else np.asarray(y)

    def _split(pool: np.ndarray, size: float) -> tuple[np.ndarray, np.ndarray]:
        strat = y[pool] if classify else None
        if strat is not None:
            try:
                return train_test_split(pool, test_size=size, random_state=seed, stratify=strat)
            except ValueError:
                pass  # a class with a single member, or fewer test rows than classes
        return train_test_split(pool, test_size=size, random_state=seed)

    rest, hold = _split(ids, holdout)
    train, val = _split(np.asarray(rest), valid / (1 - holdout))
    return {
        "train": np.sort(np.asarray(train, dtype=np.int64)),
        "valid": np.sort(np.asarray(val, dtype=np.int64)),
        "holdout": np.sort(np.asarray(hold, dtype=np.int64)),
    }


def make_folds(n_rows: int, y: np.ndarray | None, task: str, k: int, seed: int) -> np.ndarray:
    """The fold (0 .. k-1) of each of ``n_rows`` labelled rows: seeded and shuffled,
    stratified by the class for classification (a plain shuffle when a class has fewer than
    ``k`` rows). The same table, ``k`` and seed always give the same folds."""
    from sklearn.model_selection import KFold, StratifiedKFold

    if n_rows < k:
        raise _fail(
            "spec field 'split.folds'",
            f"{n_rows} row(s) are too few for {k} folds",
            "lower `split.folds` or use a larger table",
        )
    ids = np.arange(n_rows)
    fold_of = np.full(n_rows, -1, dtype=np.int64)
    splits = None
    if task in ("binary", "multiclass") and y is not None:
        counts = np.bincount(np.asarray(y, dtype=np.int64))
        if counts[counts > 0].min() >= k:
            splits = StratifiedKFold(k, shuffle=True, random_state=seed).split(ids, y)
    if splits is None:
        splits = KFold(k, shuffle=True, random_state=seed).split(ids)
    for fold, (_, held) in enumerate(splits):
        fold_of[held] = fold
    return fold_of


def fold_rows(
    fold_of: np.ndarray,
    fold: int,
    y: np.ndarray | None,
    task: str,
    inner_valid: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(train, valid, held)``: positions (into the labelled rows) that fold ``fold`` of a
    cross-validated run trains on, watches for early stopping (an ``inner_valid`` slice of
    its own training rows, stratified for classification) and predicts out of fold. Every
    trainer of the run (networks and trees) gets the same three sets."""
    from sklearn.model_selection import train_test_split

    fold_of = np.asarray(fold_of)
    held = np.flatnonzero(fold_of == fold)
    rest = np.flatnonzero(fold_of != fold)
    state = (int(seed) * 1_000_003 + int(fold)) % (2**32)
    strat = None
    if task in ("binary", "multiclass") and y is not None:
        strat = np.asarray(y)[rest]
    try:
        train, valid = train_test_split(
            rest, test_size=inner_valid, random_state=state, stratify=strat
        )
    except ValueError:  # a class too small to stratify
        train, valid = train_test_split(rest, test_size=inner_valid, random_state=state)
    return np.sort(train), np.sort(valid), held


def folds_fingerprint(split_info: dict[str, Any]) -> str | None:
    """What two cross-validated runs share when they split the same rows into the same folds
    (the table's content hash and every row's fold); None for a train/valid/holdout run."""
    if not split_info.get("folds"):
        return None
    payload = {"data_hash": split_info.get("data_hash"), "fold_of": split_info.get("fold_of")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


# --------------------------------------------------------------------------- preprocessing


def _cat_keys(s: pd.Series) -> list[str | None]:
    """Category keys as strings; integral floats written as ints (3.0 -> "3"); None = missing."""
    out: list[str | None] = []
    for v in s.tolist():
        if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA or v is pd.NaT:
            out.append(None)
        elif isinstance(v, bool | np.bool_):
            out.append(str(bool(v)))
        elif isinstance(v, float | np.floating) and float(v).is_integer():
            out.append(str(int(v)))
        else:
            out.append(str(v))
    return out


def _small_integers(s: pd.Series) -> bool:
    """Whether a column holds numbers (not booleans), all integers, with at most
    :data:`TREE_ORDINAL_MAX` distinct values."""
    if pd.api.types.is_bool_dtype(s) or not pd.api.types.is_numeric_dtype(s):
        return False
    values = s.dropna()
    if values.empty or values.nunique() > TREE_ORDINAL_MAX:
        return False
    return _is_integral(values.to_numpy(dtype=float))


def _as_numeric(s: pd.Series, col: str, where: str) -> np.ndarray:
    if pd.api.types.is_bool_dtype(s):
        return s.astype(float).to_numpy(dtype=float)
    if pd.api.types.is_numeric_dtype(s):
        return s.to_numpy(dtype=float, na_value=np.nan)
    conv = pd.to_numeric(s, errors="coerce")
    bad = conv.isna() & s.notna()
    if bad.any():
        pos = int(np.flatnonzero(bad.to_numpy())[0])
        row = s.index[pos]  # the table's row number: split subsets keep the file's index
        raise _fail(
            f"column {col!r} in {where}",
            f"expected numbers, found {s.iloc[pos]!r} (row {row})",
            "fix or remove the non-numeric values, or mark the column with "
            f"`data.columns: {{{col}: categorical}}`",
        )
    return conv.to_numpy(dtype=float, na_value=np.nan)


def _datetime_part(dt: pd.Series, part: str) -> np.ndarray:
    """One numeric feature of parsed datetimes (NaN where missing): a calendar part
    (``year`` .. ``dayofyear``) or ``days``, the days since 1970-01-01 (fractional)."""
    if part == "days":
        return ((dt - _EPOCH) / pd.Timedelta(days=1)).to_numpy(dtype=float, na_value=np.nan)
    return getattr(dt.dt, part).to_numpy(dtype=float, na_value=np.nan)


def _robust_stats(z: np.ndarray) -> dict[str, float]:
    """The median and robust spread of a standardized column: the interquartile range,
    else half the range where most values are equal, else 1 (the robust scaling of
    RealMLP, Holzmueller et al. 2024)."""
    if not len(z):
        return {"robust_center": 0.0, "robust_scale": 1.0}
    q25, median, q75 = (float(v) for v in np.quantile(z, [0.25, 0.5, 0.75]))
    spread = q75 - q25
    if spread <= 1e-9:
        spread = (float(z.max()) - float(z.min())) / 2
    return {"robust_center": median, "robust_scale": spread if spread > 1e-9 else 1.0}


class Preprocessor:
    """Fitted on the train rows only; JSON-serializable (``to_dict``/``from_dict``)."""

    def __init__(self) -> None:
        self.columns: dict[str, str] = {}
        self.image_shape: tuple[int, ...] | None = None
        # {name, median, mean, std, missing, robust_center, robust_scale} (no robust_* in older runs)
        self.numeric: list[dict[str, Any]] = []
        self.categorical: dict[str, list[str]] = {}  # column -> keys in id order (id = index + 1)
        self.datetime_parts: tuple[str, ...] = DATETIME_PARTS  # the features of a datetime column
        # categorical columns of integers the trees see as numbers (none in older runs)
        self.tree_ordinal: list[str] = []
        self.text_columns: list[str] = []
        self.vocab: list[str] = []
        self.seq_len: int = 0
        self.image_scale: float = 1.0

    # -- raw features ----------------------------------------------------------------

    def _required(self) -> list[str]:
        return [c for c, k in self.columns.items() if k != "drop"]

    def check_columns(self, df: pd.DataFrame, where: str) -> None:
        missing = [c for c in self._required() if c not in df.columns]
        if missing:
            raise _fail(
                where,
                f"missing column(s) {_short_list(missing)} used by the model",
                "give the same feature columns as the training data",
            )

    def _raw_numeric(self, df: pd.DataFrame, where: str) -> tuple[list[str], np.ndarray]:
        """Numeric features before imputation: numeric columns, then datetime parts (NaN kept)."""
        names: list[str] = []
        cols: list[np.ndarray] = []
        for col, kind in self.columns.items():
            if kind == "numeric":
                names.append(col)
                cols.append(_as_numeric(df[col], col, where))
        for col, kind in self.columns.items():
            if kind == "datetime":
                dt = _parse_datetime(df[col])
                for part in self.datetime_parts:
                    names.append(f"{col}_{part}")
                    cols.append(_datetime_part(dt, part))
        mat = np.column_stack(cols) if cols else np.zeros((len(df), 0))
        return names, mat.astype(np.float64)

    def _text(self, df: pd.DataFrame) -> list[str]:
        parts = [
            df[c].astype(object).where(df[c].notna(), "").astype(str) for c in self.text_columns
        ]
        if not parts:
            return []
        joined = parts[0]
        for p in parts[1:]:
            joined = joined + " " + p
        return joined.tolist()

    # -- fitting ---------------------------------------------------------------------

    def fit(
        self,
        df: pd.DataFrame,
        columns: dict[str, str],
        image_shape: tuple[int, ...] | None = None,
    ) -> Preprocessor:
        self.columns = dict(columns)
        self.image_shape = tuple(image_shape) if image_shape else None
        self.check_columns(df, "the training data")
        names, raw = self._raw_numeric(df, "the training data")
        if self.image_shape is not None:
            need = int(np.prod(self.image_shape))
            if need != len(names):
                raise _fail(
                    "spec field 'data.image_shape'",
                    f"{list(self.image_shape)} holds {need} values but the data has {len(names)} "
                    "numeric feature column(s)",
                    f"give a shape whose product is {len(names)} (channels last), or null",
                )
            finite = raw[np.isfinite(raw)]
            top = float(np.max(np.abs(finite))) if finite.size else 0.0
            self.image_scale = top if top > 0 else 1.0
        self.numeric = []
        for j, name in enumerate(names):
            col = raw[:, j]
            ok = np.isfinite(col)
            median = float(np.median(col[ok])) if ok.any() else 0.0
            filled = np.where(ok, col, median)
            std = float(filled.std())
            mean, std = float(filled.mean()), (std if std > 1e-12 else 1.0)
            self.numeric.append(
                {
                    "name": name,
                    "median": median,
                    "mean": mean,
                    "std": std,
                    "missing": bool((~ok).any()),
                    **_robust_stats((filled - mean) / std),
                }
            )
        self.categorical = {}
        for col, kind in self.columns.items():
            if kind != "categorical":
                continue
            counts = Counter(k for k in _cat_keys(df[col]) if k is not None)
            kept = [k for k, c in counts.items() if c >= CAT_MIN_COUNT]
            kept.sort(key=lambda k: (-counts[k], k))
            self.categorical[col] = kept[:CAT_MAX_CARD]
        self.tree_ordinal = [c for c in self.categorical if _small_integers(df[c])]
        self.text_columns = [c for c, k in self.columns.items() if k == "text"]
        if self.text_columns:
            docs = [_tokens(t) for t in self._text(df)]
            counts = Counter(tok for doc in docs for tok in doc)
            self.vocab = [t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))][
                :TEXT_VOCAB
            ]
            lengths = np.array([len(d) for d in docs] or [1])
            self.seq_len = int(min(TEXT_MAX_LEN, max(1, math.ceil(np.percentile(lengths, 95)))))
        else:
            self.vocab, self.seq_len = [], 0
        self._build_index()
        return self

    def _build_index(self) -> None:
        self._cat_index = {
            c: {k: i + 1 for i, k in enumerate(keys)} for c, keys in self.categorical.items()
        }
        self._vocab_index = {t: i + 2 for i, t in enumerate(self.vocab)}

    # -- outputs ---------------------------------------------------------------------

    @property
    def numeric_names(self) -> list[str]:
        """Columns of the ``numeric`` block: features, then missing indicators."""
        names = [f["name"] for f in self.numeric]
        return names + [f"{f['name']}_missing" for f in self.numeric if f["missing"]]

    def input_spec(self) -> InputSpec:
        text = (
            TextInput(vocab_size=len(self.vocab) + 2, seq_len=self.seq_len)
            if self.text_columns
            else None
        )
        center = scale = None
        robust = self.image_shape is None and self.numeric
        if robust and all("robust_scale" in f for f in self.numeric):
            flags = sum(1 for f in self.numeric if f["missing"])
            center = tuple(float(f["robust_center"]) for f in self.numeric) + (0.0,) * flags
            scale = tuple(float(f["robust_scale"]) for f in self.numeric) + (1.0,) * flags
        return InputSpec(
            numeric=0 if self.image_shape is not None else len(self.numeric_names),
            categorical={c: len(keys) + 1 for c, keys in self.categorical.items()},
            text=text,
            image_shape=self.image_shape,
            numeric_center=center,
            numeric_scale=scale,
        )

    def transform(self, df: pd.DataFrame, where: str = "the data") -> dict[str, np.ndarray]:
        self.check_columns(df, where)
        out: dict[str, np.ndarray] = {}
        _, raw = self._raw_numeric(df, where)
        n = len(df)
        if self.numeric:
            med = np.array([f["median"] for f in self.numeric])
            miss = ~np.isfinite(raw)
            filled = np.where(miss, med, raw)
            if self.image_shape is not None:
                out["image"] = (
                    (filled / self.image_scale).reshape((n, *self.image_shape)).astype(np.float32)
                )
            else:
                mean = np.array([f["mean"] for f in self.numeric])
                std = np.array([f["std"] for f in self.numeric])
                flags = [miss[:, j] for j, f in enumerate(self.numeric) if f["missing"]]
                blocks = [(filled - mean) / std] + ([np.column_stack(flags)] if flags else [])
                out["numeric"] = np.hstack(blocks).astype(np.float32)
        for col in self.categorical:
            index = self._cat_index[col]
            out[f"cat_{col}"] = np.array(
                [index.get(k, 0) for k in _cat_keys(df[col])], dtype=np.int32
            )
        if self.text_columns:
            ids = np.zeros((n, self.seq_len), dtype=np.int32)
            for i, t in enumerate(self._text(df)):
                toks = _tokens(t)[: self.seq_len]
                ids[i, : len(toks)] = [self._vocab_index.get(tok, 1) for tok in toks]
            out["text"] = ids
        return out

    @property
    def tree_names(self) -> list[str]:
        names = [f["name"] for f in self.numeric] + list(self.categorical)
        for col in self.text_columns:
            names += [f"{col}_n_chars", f"{col}_n_words"]
            names += [f"{col}_count_{tok}" for tok in self._tree_tokens()]
        return names

    def tree_meta(self) -> dict[str, list[int]]:
        """Which columns of :meth:`tree_matrix` hold category ids: ``categorical`` (column
        indices; ids ``1..n`` for the training categories, 0 for an unseen one) and
        ``cardinality`` (``n + 1`` per column), for the trees' native categorical handling."""
        start = len(self.numeric)
        at = {c: start + i for i, c in enumerate(self.categorical)}
        names = [c for c in self.categorical if c not in self.tree_ordinal]
        return {
            "categorical": [at[c] for c in names],
            "cardinality": [len(self.categorical[c]) + 1 for c in names],
        }

    def _tree_tokens(self) -> list[str]:
        """The most frequent training tokens; trees see their count per text column."""
        return self.vocab[:TREE_TOKENS]

    def tree_matrix(self, df: pd.DataFrame, where: str = "the data") -> np.ndarray:
        """Float features for tree models: raw numerics (NaN kept), datetime parts,
        categorical ids (the number itself, NaN when missing, for the integer columns of
        ``tree_ordinal``), and per text column its length in characters and words and the
        counts of the most frequent training tokens (a bag of words)."""
        self.check_columns(df, where)
        _, raw = self._raw_numeric(df, where)
        cols = [raw]
        for col in self.categorical:
            if col in self.tree_ordinal:
                values = pd.to_numeric(df[col], errors="coerce")
                cols.append(values.to_numpy(dtype=float, na_value=np.nan).reshape(-1, 1))
                continue
            index = self._cat_index[col]
            cols.append(
                np.array([[index.get(k, 0)] for k in _cat_keys(df[col])], dtype=float).reshape(
                    -1, 1
                )
            )
        tree_tokens = {t: j for j, t in enumerate(self._tree_tokens())}
        for col in self.text_columns:
            s = df[col].astype(object).where(df[col].notna(), "").astype(str)
            docs = [_tokens(v) for v in s]
            cols.append(s.str.len().to_numpy(dtype=float).reshape(-1, 1))
            cols.append(np.array([len(d) for d in docs], dtype=float).reshape(-1, 1))
            counts = np.zeros((len(docs), len(tree_tokens)), dtype=float)
            for i, doc in enumerate(docs):
                for tok in doc:
                    j = tree_tokens.get(tok)
                    if j is not None:
                        counts[i, j] += 1
            cols.append(counts)
        return np.hstack(cols).astype(np.float32) if cols else np.zeros((len(df), 0), np.float32)

    # -- serialization ---------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "columns": dict(self.columns),
            "image_shape": list(self.image_shape) if self.image_shape else None,
            "image_scale": self.image_scale,
            "numeric": [dict(f) for f in self.numeric],
            "categorical": {c: list(k) for c, k in self.categorical.items()},
            "text_columns": list(self.text_columns),
            "vocab": list(self.vocab),
            "seq_len": self.seq_len,
            # written only for the current parts: a run prepared before them keeps its
            # preprocessor's dict (and so its data fingerprint)
            **(
                {"datetime_parts": list(self.datetime_parts)}
                if tuple(self.datetime_parts) != LEGACY_DATETIME_PARTS
                else {}
            ),
            **({"tree_ordinal": list(self.tree_ordinal)} if self.tree_ordinal else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessor:
        p = cls()
        p.columns = dict(d["columns"])
        p.image_shape = tuple(d["image_shape"]) if d.get("image_shape") else None
        p.image_scale = float(d.get("image_scale", 1.0))
        p.numeric = [dict(f) for f in d["numeric"]]
        p.categorical = {c: list(k) for c, k in d["categorical"].items()}
        p.text_columns = list(d["text_columns"])
        p.vocab = list(d["vocab"])
        p.seq_len = int(d["seq_len"])
        p.datetime_parts = tuple(d.get("datetime_parts") or LEGACY_DATETIME_PARTS)
        p.tree_ordinal = [str(c) for c in d.get("tree_ordinal") or [] if c in p.categorical]
        p._build_index()
        return p


# --------------------------------------------------------------------------- test table


def check_test_columns(
    train: pd.DataFrame, test: pd.DataFrame, target: str, id_col: str | None
) -> None:
    """The test table must hold the training columns minus the target (the id is optional)."""
    expected = [c for c in train.columns if c != target and c != id_col]
    have = [c for c in test.columns if c != id_col]
    missing = [c for c in expected if c not in test.columns]
    extra = [c for c in have if c not in train.columns or c == target]
    problems = []
    if missing:
        problems.append(f"missing column(s) {_short_list(missing)}")
    if extra:
        problems.append(f"extra column(s) {_short_list(extra)}")
    if problems:
        raise _fail(
            "spec field 'data.test'",
            "the test table does not match the training columns: " + "; ".join(problems),
            "give the test rows the training table's columns, without the target",
        )


def _check_unique_ids(ids: pd.Series, id_col: str, source: str) -> None:
    """A submission holds one row per test id: repeated ids are refused before the search."""
    repeated = ids.duplicated(keep=False).to_numpy()
    if repeated.any():
        values = list(dict.fromkeys(_json_scalar(v) for v in ids[repeated]))
        rows = np.flatnonzero(repeated)
        raise _fail(
            "spec field 'data.test'",
            f"the id column {id_col!r} of {source!r} repeats {len(values)} id(s), e.g. "
            f"{_short_list(values, 5)} (rows {', '.join(str(int(r)) for r in rows[:6])})",
            "give every test row its own id: a submission holds one row per id",
        )


# --------------------------------------------------------------------------- checks before a run


def split_sizes(n_rows: int, valid: float, holdout: float) -> dict[str, int]:
    """The rows of train, valid and holdout that :func:`make_split` makes of ``n_rows``."""
    n_hold = math.ceil(holdout * n_rows)
    n_valid = math.ceil(valid / (1 - holdout) * (n_rows - n_hold))
    return {"train": n_rows - n_hold - n_valid, "valid": n_valid, "holdout": n_hold}


def check_split_sizes(n_rows: int, split: Any) -> None:
    """Every split holds at least ``split.min_rows`` rows (a score on 1 row is noise)."""
    least = int(getattr(split, "min_rows", 1))
    sizes = split_sizes(n_rows, split.valid, split.holdout)
    short = [k for k in SPLITS if sizes[k] < least]
    if not short:
        return
    fixes = []
    if short == ["train"]:
        fixes.append("lower `split.valid` or `split.holdout`")
    elif "train" not in short and (frac := _fraction_for(least, n_rows, split, short)):
        fixes.append(f"raise {_and([f'`split.{k}`' for k in short])} to {frac:g}")
    need = n_rows
    while min(split_sizes(need, split.valid, split.holdout).values()) < least:
        need += 1
    fixes += [f"use a table of at least {need} rows", "or lower `split.min_rows`"]
    raise _fail(
        "spec field 'split.min_rows'",
        f"{n_rows} rows split into train {sizes['train']}, valid {sizes['valid']}, holdout "
        f"{sizes['holdout']} (split.valid {split.valid:g}, split.holdout {split.holdout:g}): "
        f"{_and(short)} {'holds' if len(short) == 1 else 'hold'} fewer than "
        f"split.min_rows = {least} rows",
        ", ".join(fixes) + " (scores on fewer rows are noise)",
    )


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _fraction_for(least: int, n_rows: int, split: Any, short: list[str]) -> float | None:
    """The smallest 2-digit fraction that, given to the ``short`` splits, leaves every split
    ``least`` rows with valid + holdout below 0.9; None if none does."""
    for hundredths in range(1, 90):
        frac = hundredths / 100
        valid = max(split.valid, frac) if "valid" in short else split.valid
        holdout = max(split.holdout, frac) if "holdout" in short else split.holdout
        if valid + holdout >= 0.9:
            return None
        if min(split_sizes(n_rows, valid, holdout).values()) >= least:
            return frac
    return None


def check_class_rows(
    split_ids: dict[str, np.ndarray], y_codes: np.ndarray, target: Target, split: Any
) -> None:
    """Classification: every class holds at least ``split.min_class_rows`` rows in each split
    (a class missing from valid or holdout cannot be scored there)."""
    least = int(getattr(split, "min_class_rows", 0))
    if least < 1 or target.classes is None:
        return
    total = np.bincount(y_codes, minlength=target.n_classes)
    for name in SPLITS:
        counts = np.bincount(y_codes[split_ids[name]], minlength=target.n_classes)
        low = np.flatnonzero(counts < least)
        if low.size:
            k = int(low[0])
            raise _fail(
                "spec field 'split.min_class_rows'",
                f"class {target.classes[k]!r} of target {target.name!r} has {int(counts[k])} "
                f"row(s) in the {name} split ({int(total[k])} in all {len(y_codes)} rows), "
                f"fewer than split.min_class_rows = {least}",
                "add rows of that class, merge or drop the rare class(es), or set "
                "`split.min_class_rows: 0` to accept splits without it",
            )


def check_fold_sizes(
    fold_of: np.ndarray, y_codes: np.ndarray | None, target: Target, split: Any
) -> None:
    """Cross-validated: every fold holds out at least ``split.min_rows`` rows, and for
    classification at least ``split.min_class_rows`` rows of each class."""
    least = int(getattr(split, "min_rows", 1))
    k = int(fold_of.max()) + 1 if len(fold_of) else 0
    sizes = np.bincount(fold_of, minlength=k)
    if sizes.size and sizes.min() < least:
        raise _fail(
            "spec field 'split.folds'",
            f"{len(fold_of)} rows split into {k} folds hold out {int(sizes.min())} row(s) in "
            f"the smallest fold, fewer than split.min_rows = {least}",
            f"lower `split.folds`, use a table of at least {least * k} rows, or lower "
            "`split.min_rows` (scores on fewer rows are noise)",
        )
    least_class = int(getattr(split, "min_class_rows", 0))
    if y_codes is None or least_class < 1 or target.classes is None:
        return
    for fold in range(k):
        counts = np.bincount(y_codes[fold_of == fold], minlength=target.n_classes)
        low = np.flatnonzero(counts < least_class)
        if low.size:
            c = int(low[0])
            total = int(np.sum(y_codes == c))
            raise _fail(
                "spec field 'split.min_class_rows'",
                f"class {target.classes[c]!r} of target {target.name!r} has {int(counts[c])} "
                f"row(s) in fold {fold} of {k} ({total} in all {len(y_codes)} rows), fewer "
                f"than split.min_class_rows = {least_class}",
                "lower `split.folds`, add rows of that class, merge or drop the rare "
                "class(es), or set `split.min_class_rows: 0`",
            )


def check_features(columns: dict[str, str], spec_data: Any) -> None:
    """At least one column is a feature (not the target, the id, or dropped)."""
    if any(kind != "drop" for kind in columns.values()):
        return
    if not columns:
        others = [f"{spec_data.target!r} (data.target)"]
        if spec_data.id:
            others.insert(0, f"{spec_data.id!r} (data.id)")
        raise _fail(
            f"training data {spec_data.train!r}",
            f"has no feature column: its only columns are {' and '.join(others)}",
            "add the columns the model should learn from to the table",
        )
    overridden = [c for c in columns if (spec_data.columns or {}).get(c) == "drop"]
    inferred = [c for c in columns if c not in overridden]
    parts = [f"{_short_list(overridden)} by `data.columns`"] if overridden else []
    if inferred:
        parts.append(f"{_short_list(inferred)} as constant or id-like")
    example = (inferred or overridden)[0]
    raise _fail(
        "spec field 'data.columns'",
        f"every feature column of the training data is dropped: {'; '.join(parts)}",
        f"keep at least one: give it a kind in `data.columns`, e.g. `{{{example}: numeric}}`, "
        "or remove its `drop`",
    )


# --------------------------------------------------------------------------- prepare


@dataclass
class PreparedData:
    x: dict[str, dict[str, np.ndarray]]
    y: dict[str, np.ndarray | None]
    ids: dict[str, np.ndarray]
    input_spec: InputSpec
    output_spec: OutputSpec
    task: str
    classes: list[Any] | None
    preprocessor: Preprocessor
    target: Target
    tree_x: dict[str, np.ndarray]
    fingerprint: str
    columns: dict[str, str] = field(default_factory=dict)
    split: dict[str, Any] = field(default_factory=dict)  # the content of split.json

    @property
    def n_classes(self) -> int:
        return self.target.n_classes

    @property
    def folds(self) -> int | None:
        """The number of cross-validation folds; None for a train/valid/holdout split."""
        k = self.split.get("folds")
        return int(k) if k else None

    @property
    def fold_of(self) -> np.ndarray | None:
        """The fold of each labelled row (the rows of ``x["train"]``, in order); None for a
        train/valid/holdout split."""
        if not self.folds:
            return None
        return np.asarray(self.split["fold_of"], dtype=np.int64)


def _fingerprint(
    split_ids: dict[str, np.ndarray],
    shape: tuple[int, int],
    dhash: str,
    pre,
    target,
    fold_of: list[int] | None = None,
) -> str:
    payload = {
        "split": {k: [int(i) for i in v] for k, v in split_ids.items()},
        "shape": list(shape),
        "data_hash": dhash,
        "preprocessor": pre.to_dict(),
        "target": target.to_dict(),
    }
    if fold_of is not None:  # cross-validated runs only: earlier fingerprints stay as they were
        payload["fold_of"] = [int(f) for f in fold_of]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _load_test(spec: Any, train: pd.DataFrame, target: Target) -> pd.DataFrame | None:
    d = spec.data
    if not d.test:
        return None
    test = load_table(d.test)
    check_test_columns(train, test, d.target, d.id)
    if d.id and d.id in test.columns:
        _check_unique_ids(test[d.id], d.id, d.test)
    if d.sample_submission:
        sub = load_table(d.sample_submission)
        if len(sub) != len(test):
            raise _fail(
                "spec field 'data.sample_submission'",
                f"has {len(sub)} rows but the test table has {len(test)}",
                "use the sample submission that belongs to this test file",
            )
        # the submission's columns are fixed by the sample: refused now, not after the search
        from hpsearch.core.submission import submission_layout

        submission_layout(
            target.task, target.name, target.classes, d.id, sub, getattr(spec, "metric", None)
        )
    return test


def _assemble(
    train: pd.DataFrame,
    test: pd.DataFrame | None,
    split_ids: dict[str, np.ndarray],
    pre: Preprocessor,
    target: Target,
    id_col: str | None,
    split_info: dict[str, Any],
) -> PreparedData:
    y_all = target.encode(train[target.name])
    x, y, ids, tree_x = {}, {}, {}, {}
    for name in (k for k in SPLITS if k in split_ids):
        rows = split_ids[name]
        part = train.iloc[rows]
        x[name] = pre.transform(part, "the training data")
        tree_x[name] = pre.tree_matrix(part, "the training data")
        y[name] = y_all[rows]
        ids[name] = np.asarray(rows, dtype=np.int64)
    if test is not None:
        x["test"] = pre.transform(test, "the test data")
        tree_x["test"] = pre.tree_matrix(test, "the test data")
        y["test"] = None
        ids["test"] = (
            test[id_col].to_numpy() if id_col and id_col in test.columns else np.arange(len(test))
        )
    fp = _fingerprint(
        split_ids, train.shape, split_info["data_hash"], pre, target, split_info.get("fold_of")
    )
    return PreparedData(
        x=x,
        y=y,
        ids=ids,
        input_spec=pre.input_spec(),
        output_spec=OutputSpec.single(target.task, target.n_outputs),
        task=target.task,
        classes=target.classes,
        preprocessor=pre,
        target=target,
        tree_x=tree_x,
        fingerprint=fp,
        columns=dict(pre.columns),
        split={**split_info, "fingerprint": fp},
    )


def prepare(spec: Any, run_dir: str | Path | None = None) -> PreparedData:
    """Load, type, split, fit on train rows and transform every split (and the test table).

    Everything a new run can check before it starts is checked here, before anything is
    written: the data against the spec, at least one feature column, ``split.min_rows``
    rows per split and ``split.min_class_rows`` rows of each class per split, unique test
    ids, and last that ``output`` and an SQLite ``storage`` can be created
    (:meth:`hpsearch.core.spec.Spec.check_run_paths`).
    """
    d = spec.data
    train = load_table(d.train)
    _check_target_column(train, d.target, f"the training data {d.train!r}")
    if d.id and d.id not in train.columns:
        raise _fail(
            "spec field 'data.id'",
            f"column {d.id!r} is not in the training data{_closest(d.id, [str(c) for c in train.columns])}",
            "set `data.id` to an existing column or null",
        )
    target = Target.fit(train[d.target], task=d.task, metric=getattr(spec, "metric", None))
    test = _load_test(spec, train, target)
    columns = infer_columns(train, d.target, d.id, d.columns, d.image_shape)
    check_features(columns, d)
    y_codes = target.encode(train[d.target]) if target.task != "regression" else None
    s = spec.split
    k_folds = getattr(s, "folds", None)
    cv: dict[str, Any] = {}
    if k_folds:
        fold_of = make_folds(len(train), y_codes, target.task, int(k_folds), s.seed)
        check_fold_sizes(fold_of, y_codes, target, s)
        split_ids = {"train": np.arange(len(train), dtype=np.int64)}
        cv = {
            "folds": int(k_folds),
            "inner_valid": float(s.inner_valid),
            "fold_of": [int(f) for f in fold_of],
        }
    else:
        check_split_sizes(len(train), s)
        split_ids = make_split(len(train), y_codes, target.task, s.valid, s.holdout, s.seed)
        if y_codes is not None:
            check_class_rows(split_ids, y_codes, target, s)
    # cross-validated: the preprocessor (scaling, vocabularies: no target) sees every
    # labelled row, as every fold model shares it
    pre = Preprocessor().fit(train.iloc[split_ids["train"]], columns, d.image_shape)
    split_info = {
        "n_rows": len(train),
        "seed": s.seed,
        "valid": None if cv else s.valid,
        "holdout": None if cv else s.holdout,
        **cv,
        "data_hash": data_hash(train),
        "test_hash": data_hash(test) if test is not None else None,
        "ids": {k: [int(i) for i in v] for k, v in split_ids.items()},
    }
    if cv:
        split_info["folds_fingerprint"] = folds_fingerprint(split_info)
    prepared = _assemble(train, test, split_ids, pre, target, d.id, split_info)
    if hasattr(spec, "check_run_paths"):  # last, once the data passed: it probes a folder
        spec.check_run_paths()
    if run_dir is not None:
        save_prepared(prepared, run_dir, spec)
    return prepared


def save_prepared(prepared: PreparedData, run_dir: str | Path, spec: Any = None) -> Path:
    """Write ``split.json``, ``preprocessor.json``, ``target.json``, ``columns.json`` atomically."""
    from hpsearch.core import atomic

    out = Path(run_dir) / DATA_DIR
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_json(out / "preprocessor.json", prepared.preprocessor.to_dict())
    atomic.write_json(out / "target.json", prepared.target.to_dict())
    cols = {
        "columns": dict(prepared.columns),
        "target": prepared.target.name,
        "input_spec": prepared.input_spec.to_dict(),
        "numeric_names": prepared.preprocessor.numeric_names,
        "tree_names": prepared.preprocessor.tree_names,
    }
    if spec is not None:
        cols["id"] = spec.data.id
    atomic.write_json(out / "columns.json", cols)
    atomic.write_json(out / "split.json", prepared.split)  # last: its presence marks a complete set
    return out


def _read(run_dir: Path, name: str) -> Any:
    """A JSON object of the run's ``data/``; a damaged one (not JSON, not an object) is a
    RunDirError naming the file."""
    from hpsearch.core.store import read_run_json

    path = run_dir / DATA_DIR / name
    try:
        return read_run_json(path, name)
    except FileNotFoundError:
        raise _fail(
            f"run directory {str(run_dir)!r}",
            f"{DATA_DIR}/{name} is missing",
            "the run was not initialised completely; start a new run with a different `output`",
        ) from None


def _damaged(run_dir: Path, name: str, exc: BaseException) -> Exception:
    """The RunDirError of a ``data/`` file that parses but lacks what a run writes there."""
    from hpsearch.core.errors import RunDirError

    what = f"{type(exc).__name__}: {str(exc)[:120]}"
    return RunDirError(
        f"{run_dir / DATA_DIR / name} is damaged ({name} does not hold what a run writes "
        f"there: {what}). Fix: restore it from a copy of the run."
    )


def load_prepared(run_dir: str | Path, spec: Any) -> PreparedData:
    """Rebuild the PreparedData of a run from its saved split/preprocessor/target and the
    original data source; DataError when the data changed since the run was created."""
    run_dir = Path(run_dir)
    split_info = _read(run_dir, "split.json")
    missing = [k for k in ("data_hash", "n_rows", "ids") if k not in split_info]
    if missing or not isinstance(split_info["ids"], dict):
        raise _damaged(run_dir, "split.json", KeyError(", ".join(missing) or "ids"))
    pre, target = load_preprocessor(run_dir)
    d = spec.data
    train = load_table(d.train)
    if data_hash(train) != split_info["data_hash"]:
        raise _fail(
            f"training data {d.train!r}",
            f"changed since the run in {str(run_dir)!r} was created ({len(train)} rows now, "
            f"{split_info['n_rows']} then; content hash differs)",
            "restore the original file, or start a new run with a different `output`",
        )
    test = _load_test(spec, train, target)
    test_hash = data_hash(test) if test is not None else None
    if test_hash != split_info.get("test_hash"):
        raise _fail(
            "spec field 'data.test'",
            f"the test data changed since the run in {str(run_dir)!r} was created",
            "restore the original test file, or start a new run with a different `output`",
        )
    split_ids = {k: np.asarray(v, dtype=np.int64) for k, v in split_info["ids"].items()}
    info = {k: v for k, v in split_info.items() if k != "fingerprint"}
    prepared = _assemble(train, test, split_ids, pre, target, d.id, info)
    if prepared.fingerprint != split_info.get("fingerprint"):
        raise _fail(
            f"run directory {str(run_dir)!r}",
            "the rebuilt data does not match the saved fingerprint",
            "restore the original data and run files, or start a new run with a different `output`",
        )
    return prepared


def load_preprocessor(run_dir: str | Path) -> tuple[Preprocessor, Target]:
    run_dir = Path(run_dir)
    parts = []
    for name, cls in (("preprocessor.json", Preprocessor), ("target.json", Target)):
        info = _read(run_dir, name)
        try:
            parts.append(cls.from_dict(info))
        except (KeyError, TypeError, AttributeError, IndexError) as exc:
            raise _damaged(run_dir, name, exc) from None
    return parts[0], parts[1]


def transform_new(run_dir: str | Path, df: pd.DataFrame) -> dict[str, np.ndarray]:
    """Model inputs for new rows with a run's saved preprocessor (extra columns are ignored)."""
    pre, _ = load_preprocessor(run_dir)
    return pre.transform(df.reset_index(drop=True), "the new data")


def tree_matrix_new(run_dir: str | Path, df: pd.DataFrame) -> np.ndarray:
    """Tree-model features for new rows with a run's saved preprocessor."""
    pre, _ = load_preprocessor(run_dir)
    return pre.tree_matrix(df.reset_index(drop=True), "the new data")
