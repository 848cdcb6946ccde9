"""Example competitions: Kaggle-style train.csv / test.csv / sample_submission.csv.

Generated deterministically from scikit-learn's bundled datasets (nothing is
downloaded), with the mess real competition data has: an id column, string
labels, numeric columns with missing values, string and low-cardinality
integer categoricals (one category seen only in the test rows), a free-text
column that carries signal, a date column, a constant column.

    python -m hpsearch.pipeline.competition binary examples/competition
    hpsearch pipeline examples/competition/spec.yaml

``make demo`` runs the shipped binary competition in ``examples/competition``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

KINDS = {
    # kind: (sklearn loader, target name, class names or None, metric)
    "binary": ("load_breast_cancer", "diagnosis", ["malignant", "benign"], "log_loss"),
    "multiclass": ("load_wine", "cultivar", ["barolo", "grignolino", "barbera"], "log_loss"),
    "regression": ("load_diabetes", "progression", None, "rmse"),
}

_WORDS_HI = ["irregular", "dense", "large", "rough", "uneven", "dark", "bulky", "sharp"]
_WORDS_LO = ["smooth", "small", "regular", "even", "light", "round", "faint", "soft"]
_FILLER = ["sample", "noted", "observed", "review", "with", "and", "some", "area", "overall"]


def _text(score: np.ndarray, rng: np.random.Generator) -> list[str]:
    """Short notes whose words lean towards _WORDS_HI when ``score`` (0..1) is high."""
    out = []
    for s in score:
        n = int(rng.integers(5, 10))
        words = []
        for _ in range(n):
            r = rng.random()
            if r < 0.35:
                words.append(rng.choice(_FILLER))
            elif r < 0.35 + 0.65 * s:
                words.append(rng.choice(_WORDS_HI))
            else:
                words.append(rng.choice(_WORDS_LO))
        out.append(" ".join(words))
    return out


def make_competition(kind: str = "binary", seed: int = 0, test_fraction: float = 0.2):
    """(train, test, sample_submission, spec dict) for an example competition."""
    if kind not in KINDS:
        raise ValueError(f"unknown competition kind {kind!r}; use one of {sorted(KINDS)}")
    import sklearn.datasets as skd

    loader, target, class_names, metric = KINDS[kind]
    bunch = getattr(skd, loader)(as_frame=True)
    X = bunch.frame.drop(columns=["target"]).copy()
    y = bunch.frame["target"].to_numpy()
    rng = np.random.default_rng(seed)
    n = len(X)

    # numeric columns: the first eight features, renamed like a competition's headers
    num_cols = list(X.columns[:8])
    df = pd.DataFrame({c.replace(" ", "_"): X[c].to_numpy(dtype=float) for c in num_cols})
    for c in df.columns:
        df.loc[rng.random(n) < 0.05, c] = np.nan  # 5% missing

    # a signal score in [0, 1] from the two features (outside the numeric block) that
    # correlate most with the target, signed so that it rises with the target
    rest = [c for c in X.columns if c not in num_cols]
    corr = {c: float(np.corrcoef(X[c].to_numpy(dtype=float), y.astype(float))[0, 1]) for c in rest}
    top = sorted(rest, key=lambda c: -abs(corr[c]))[:2]
    other = sum(np.sign(corr[c]) * X[c].rank(pct=True).to_numpy() for c in top)
    score = (pd.Series(other).rank(pct=True).to_numpy() * 0.7 + rng.random(n) * 0.3).clip(0, 1)

    bands = np.array(["low", "mid", "high", "very high"])
    df["risk_band"] = bands[np.minimum((score * 4).astype(int), 3)]
    df.loc[rng.random(n) < 0.05, "risk_band"] = np.nan
    sites = np.array(["north", "south", "east", "west", "central"])
    df["site"] = sites[rng.integers(0, len(sites), n)]
    df["n_visits"] = 1 + np.minimum((score * 5).astype(int), 4)  # a low-cardinality integer
    df["notes"] = _text(score, rng)
    df.loc[rng.random(n) < 0.05, "notes"] = np.nan
    days = rng.integers(0, 3 * 365, n)
    df["exam_date"] = (pd.Timestamp("2021-01-01") + pd.to_timedelta(days, unit="D")).strftime(
        "%Y-%m-%d"
    )
    df["source"] = "registry"  # constant: dropped by column inference

    if class_names is not None:
        df[target] = np.asarray(class_names)[y.astype(int)]
    else:
        df[target] = np.round(y.astype(float), 1)

    order = rng.permutation(n)
    df = df.iloc[order].reset_index(drop=True)
    df.insert(0, "id", np.arange(10_001, 10_001 + n))
    n_test = int(round(n * test_fraction))
    test = df.iloc[:n_test].drop(columns=[target]).reset_index(drop=True)
    train = df.iloc[n_test:].reset_index(drop=True)
    test.loc[test.index[:3], "site"] = "island"  # a category never seen in training

    if kind == "binary":
        sample = pd.DataFrame({"id": test["id"], target: 0.5})
    elif kind == "multiclass":
        k = len(class_names)
        sample = pd.DataFrame({"id": test["id"], **{c: 1.0 / k for c in class_names}})
    else:
        sample = pd.DataFrame({"id": test["id"], target: float(np.mean(train[target]))})

    spec = {
        "name": f"example-{kind}",
        "data": {
            "train": "train.csv",
            "test": "test.csv",
            "sample_submission": "sample_submission.csv",
            "target": target,
            "id": "id",
            "task": kind,
        },
        "split": {"folds": 5, "seed": 0},  # cross-validated: every labelled row trains
        "metric": metric,
        "space": "tabular_multi_input",
        "sampler": {"name": "tpe", "seed": 0, "n_startup_trials": 4},
        "budget": {"n_trials": 10},
        "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent": 2},
        "training": {"max_epochs": 20, "batch_size": 64, "patience": 4},
        "ensemble": {"top_k": 5, "trees": ["rf", "et", "hgb", "lgbm"]},
        "output": f"../../runs/example-{kind}",
    }
    return train, test, sample, spec


def write_competition(out_dir: str | Path, kind: str = "binary", seed: int = 0, **spec_over: Any):
    """Write train.csv, test.csv, sample_submission.csv and spec.yaml into ``out_dir``."""
    import yaml

    from hpsearch.core import atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train, test, sample, spec = make_competition(kind, seed)
    for key, value in spec_over.items():
        spec[key] = {**spec[key], **value} if isinstance(value, dict) else value
    atomic.write_text(out / "train.csv", train.to_csv(index=False))
    atomic.write_text(out / "test.csv", test.to_csv(index=False))
    atomic.write_text(out / "sample_submission.csv", sample.to_csv(index=False))
    header = (
        f"# Example {kind} competition generated by `python -m hpsearch.pipeline.competition {kind} DIR`.\n"
        "# Run it with: hpsearch pipeline spec.yaml  (paths are relative to this file)\n"
    )
    atomic.write_text(out / "spec.yaml", header + yaml.safe_dump(spec, sort_keys=False))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write an example competition (train/test CSVs).")
    ap.add_argument("kind", choices=sorted(KINDS))
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = write_competition(args.out_dir, args.kind, args.seed)
    print(f"wrote {out}/train.csv, test.csv, sample_submission.csv, spec.yaml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
