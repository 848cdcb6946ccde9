"""``hpsearch demo`` / ``make demo``: a search and an ensemble on bundled data, end to end.

Runs the Kaggle-style example competition shipped with the project
(``examples/``) when it is present, else scikit-learn's breast-cancer table,
with small budgets so it finishes in a few minutes on two CPUs.
"""

from __future__ import annotations

import datetime as _dt
import sys
from pathlib import Path


def demo_spec(out: str, n_trials: int, quick: bool) -> dict:
    return {
        "name": "demo-breast-cancer",
        "data": {"train": "sklearn:breast_cancer", "target": "target", "task": "binary"},
        "split": {"valid": 0.2, "holdout": 0.2, "seed": 0},
        "metric": "log_loss",
        "space": "tabular_mlp",
        "sampler": {"name": "tpe", "seed": 0, "n_startup_trials": max(2, n_trials // 3)},
        "budget": {"n_trials": n_trials},
        "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent": 2},
        "training": {"max_epochs": 8 if quick else 25, "batch_size": 64, "patience": 3},
        "output": out,
    }


def run_demo(out: str | None = None, n_trials: int | None = None, quick: bool = False) -> int:
    from hpsearch.driver import run_search
    from hpsearch.spec import load_spec

    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = out or str(Path("runs") / f"demo-{stamp}")
    n = n_trials or (4 if quick else 12)
    spec = load_spec(demo_spec(out, n, quick))
    print(
        f"demo: searching space {spec.space!r} on {spec.data.train} with {n} trials, 2 in flight -> {out}"
    )
    summary = run_search(spec)
    print(
        f"search: {summary.n_complete} complete, {summary.n_failed} failed in {summary.elapsed_s:.0f} s; "
        f"best trial {summary.best_number} {spec.metric} {summary.best_value:.4f}"
    )
    try:
        from ensembles.build import build_ensemble
    except ImportError:
        print("(ensembles not installed: skipping the ensemble step)")
        return 0
    result = build_ensemble(
        [out], top_k=5, trees=("rf", "et", "hgb"), method="nelder-mead", progress=True
    )
    print(result.summary_text())
    print(f"\nlook further: hpsearch trials {out} --top 5   |   ensembles report {result.out_dir}")
    sys.stdout.flush()
    return 0
