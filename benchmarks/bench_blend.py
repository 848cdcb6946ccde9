"""Blend benchmark: fit time (Nelder-Mead against greedy) and quality on sklearn datasets.

    python benchmarks/bench_blend.py [--quick] [--out docs/benchmarks/blend.md]

Part 1 times ``NelderMeadBlender`` and ``GreedyBlender`` (default parameters,
log loss) on synthetic member probabilities: 10 and 30 members x 10k and 100k
rows x 2 and 10 classes, in the same run (the ratio is NM time / greedy time).

Part 2 builds cheap candidate members on the bundled scikit-learn datasets
(breast_cancer, wine, digits, diabetes) for 3 seeds: models with varied
hyperparameters fitted on a train split (50%) predict a holdout split (50%);
each blender is fitted on the holdout (fitted score) and cross-fitted on it
(5-fold, out-of-fold score). Metric: log loss (classification), RMSE
(regression); lower is better everywhere.

``--quick`` keeps 10k rows and one seed. Prints a Markdown report and writes it
to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ensembles.blenders import (  # noqa: E402
    BLENDERS,
    GreedyBlender,
    NelderMeadBlender,
    cross_fit_score,
)
from hpsearch.core import metrics  # noqa: E402

BLENDER_ORDER = ["best", "mean", "greedy", "nelder-mead", "stack"]


# --------------------------------------------------------------------------- part 1: timing


def synthetic_members(m: int, n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    onehot = np.eye(k, dtype=np.float32)[y]
    noise = np.linspace(0.8, 2.5, m)
    P = np.empty((m, n, k))
    for j in range(m):
        z = 1.5 * onehot + rng.normal(scale=noise[j], size=(n, k)).astype(np.float32)
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        P[j] = e / e.sum(axis=1, keepdims=True)
    if k == 2:
        P = P[:, :, 1]
    return P, y


def timing(quick: bool) -> list[dict]:
    rows = []
    sizes = [10_000] if quick else [10_000, 100_000]
    for m in (10, 30):
        for n in sizes:
            for k in (2, 10):
                P, y = synthetic_members(m, n, k, seed=0)
                t0 = time.perf_counter()
                g = GreedyBlender(metric="log_loss").fit(P, y)
                t_g = time.perf_counter() - t0
                t0 = time.perf_counter()
                nm = NelderMeadBlender(metric="log_loss").fit(P, y)
                t_nm = time.perf_counter() - t0
                rows.append(
                    dict(
                        members=m,
                        rows=n,
                        classes=k,
                        greedy_s=t_g,
                        nm_s=t_nm,
                        ratio=t_nm / t_g,
                        greedy_ll=g.fitted_score_,
                        nm_ll=nm.fitted_score_,
                        nm_fev=nm.n_fev_,
                        nm_start=nm.start_,
                    )
                )
                print(
                    f"  timing m={m} n={n} K={k}: greedy {t_g:.2f}s, NM {t_nm:.2f}s",
                    file=sys.stderr,
                )
                del P
    return rows


# --------------------------------------------------------------------------- part 2: quality


def candidate_models(task: str, seed: int) -> dict:
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    def scaled(est):
        return make_pipeline(StandardScaler(), est)

    if task == "regression":
        models = {f"ridge_a{a:g}": scaled(Ridge(alpha=a)) for a in (0.1, 1.0, 10.0, 100.0)}
        models.update({f"knn_{k}": scaled(KNeighborsRegressor(k)) for k in (5, 15, 40)})
        models.update(
            {
                f"tree_d{d}": DecisionTreeRegressor(
                    max_depth=d, min_samples_leaf=5, random_state=seed
                )
                for d in (2, 4, 6)
            }
        )
        return models
    models = {
        f"logreg_C{c:g}": scaled(LogisticRegression(C=c, max_iter=2000))
        for c in (0.01, 0.1, 1.0, 10.0)
    }
    models.update({f"knn_{k}": scaled(KNeighborsClassifier(k)) for k in (5, 15, 40)})
    models.update(
        {
            f"tree_d{d}": DecisionTreeClassifier(max_depth=d, min_samples_leaf=5, random_state=seed)
            for d in (2, 4, 6)
        }
    )
    models["naive_bayes"] = GaussianNB()
    return models


DATASETS = {
    "breast_cancer": ("load_breast_cancer", "binary"),
    "wine": ("load_wine", "multiclass"),
    "digits": ("load_digits", "multiclass"),
    "diabetes": ("load_diabetes", "regression"),
}


def members_for(dataset: str, seed: int) -> tuple[np.ndarray, np.ndarray, str, list[str]]:
    import sklearn.datasets as skd
    from sklearn.model_selection import train_test_split

    loader, task = DATASETS[dataset]
    X, y = getattr(skd, loader)(return_X_y=True)
    strat = None if task == "regression" else y
    X_tr, X_ho, y_tr, y_ho = train_test_split(
        X, y, test_size=0.5, random_state=seed, stratify=strat
    )
    preds, names = [], []
    for name, model in candidate_models(task, seed).items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(X_tr, y_tr)
        if task == "regression":
            p = model.predict(X_ho)
        else:
            p = model.predict_proba(X_ho)
            p = p[:, 1] if task == "binary" else p
        preds.append(p)
        names.append(name)
    return np.stack(preds), y_ho, task, names


def quality(quick: bool) -> list[dict]:
    rows = []
    seeds = [0] if quick else [0, 1, 2]
    for dataset in DATASETS:
        for seed in seeds:
            P, y, task, _ = members_for(dataset, seed)
            metric = metrics.default_metric(task)
            for name in BLENDER_ORDER:
                b = BLENDERS[name](metric=metric)
                t0 = time.perf_counter()
                b.fit(P, y)
                fit_s = time.perf_counter() - t0
                cf = cross_fit_score(b, P, y, metric, folds=5, seed=seed)
                rows.append(
                    dict(
                        dataset=dataset,
                        task=task,
                        metric=metric,
                        seed=seed,
                        blender=name,
                        fitted=b.fitted_score_,
                        cross=cf,
                        fit_s=fit_s,
                        members=P.shape[0],
                        rows=P.shape[1],
                    )
                )
            print(f"  quality {dataset} seed={seed} done", file=sys.stderr)
    return rows


# --------------------------------------------------------------------------- report


def render(t_rows: list[dict], q_rows: list[dict], quick: bool, elapsed: float) -> str:
    import sklearn

    out = ["# Blend benchmark", ""]
    out.append(
        f"`python benchmarks/bench_blend.py{' --quick' if quick else ''}` "
        f"({'quick' if quick else 'full'} run, {elapsed:.0f}s); Python {platform.python_version()}, "
        f"numpy {np.__version__}, scikit-learn {sklearn.__version__}, "
        f"{os.cpu_count()} CPUs, {platform.machine()}."
    )
    out += ["", "## Fit time: Nelder-Mead against greedy", ""]
    out.append(
        "Synthetic member probabilities, log loss, default parameters "
        "(greedy: 50 iterations; Nelder-Mead: greedy start + best single + uniform, "
        "budget 200 + 100 x members evaluations). Ratio = NM / greedy, same run."
    )
    out += [
        "",
        "| members | rows | classes | greedy s | NM s | NM / greedy | greedy log loss | NM log loss | NM evals | NM winner |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in t_rows:
        out.append(
            f"| {r['members']} | {r['rows']:,} | {r['classes']} | {r['greedy_s']:.2f} | "
            f"{r['nm_s']:.2f} | {r['ratio']:.1f}x | {r['greedy_ll']:.5f} | {r['nm_ll']:.5f} | "
            f"{r['nm_fev']} | {r['nm_start']} |"
        )
    out += ["", "## Quality on scikit-learn datasets", ""]
    n_seeds = len({r["seed"] for r in q_rows})
    out.append(
        "Members (logistic regression C in {0.01, 0.1, 1, 10} / ridge alpha in {0.1, 1, 10, 100}, "
        "kNN k in {5, 15, 40}, trees depth {2, 4, 6}, Gaussian naive Bayes for classification) "
        "are fitted on 50% of the rows and predict the other 50% (the holdout). Blenders are "
        "fitted on the holdout (**fitted**) and 5-fold cross-fitted on it (**cross-fit**, "
        f"out-of-fold). Mean (min-max) over {n_seeds} seed(s). Lower is better "
        "(log loss / RMSE)."
    )
    out += [
        "",
        "| dataset | metric | members x rows | blender | fitted | cross-fit | fit s |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for dataset in DATASETS:
        for name in BLENDER_ORDER:
            rs = [r for r in q_rows if r["dataset"] == dataset and r["blender"] == name]
            if not rs:
                continue
            f = np.array([r["fitted"] for r in rs])
            c = np.array([r["cross"] for r in rs])
            s = np.array([r["fit_s"] for r in rs])

            def cell(a):
                if len(a) == 1:
                    return f"{a[0]:.4f}"
                return f"{a.mean():.4f} ({a.min():.4f}-{a.max():.4f})"

            out.append(
                f"| {dataset} | {rs[0]['metric']} | {rs[0]['members']} x {rs[0]['rows']} | {name} | "
                f"{cell(f)} | {cell(c)} | {s.mean():.3f} |"
            )
    out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k rows only, one seed")
    parser.add_argument(
        "--out", default=str(ROOT / "docs" / "benchmarks" / "blend.md"), help="Markdown output"
    )
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    t_rows = timing(args.quick)
    q_rows = quality(args.quick)
    report = render(t_rows, q_rows, args.quick, time.perf_counter() - t0)
    print(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(f"written to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
