"""``hpsearch demo`` / ``make demo``: the whole pipeline on the shipped example competition.

The example (``examples/competition``: train.csv, test.csv,
sample_submission.csv, generated deterministically from scikit-learn's
breast-cancer table with categorical, text and date columns and missing
values) goes through ``hpsearch pipeline``: a TPE search of the
``tabular_multi_input`` space with two trials in flight on an embedded Ray,
each trial cross-validated with the example's 5 folds, an ensemble of the best
diverse networks and tree models blended on their out-of-fold predictions (the
blender with the best cross-fitted score among Nelder-Mead, greedy, mean,
stacking and the best single model), and a checked ``submission.csv``. A few
minutes on two CPUs.
"""

from __future__ import annotations

import datetime as _dt
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "competition"


def _example_dir(out: Path) -> Path:
    if (EXAMPLE / "spec.yaml").exists():
        return EXAMPLE
    # installed without the examples folder: generate the same files next to the run
    from hpsearch.pipeline.competition import write_competition

    return write_competition(out.parent / f"{out.name}-competition", "binary")


def run_demo(out: str | None = None, n_trials: int | None = None, quick: bool = False) -> int:
    from hpsearch.core.spec import load_spec
    from hpsearch.pipeline.run import run_pipeline

    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_path = Path(out or Path("runs") / f"demo-{stamp}").resolve()
    example = _example_dir(out_path)
    n = n_trials or (3 if quick else 10)
    overrides = {"output": str(out_path), "budget": {"n_trials": n}}
    if quick:
        overrides["training"] = {"max_epochs": 4, "patience": 2}
    spec = load_spec(example / "spec.yaml", overrides=overrides)
    print(
        f"demo: example competition {example}\n"
        f"      searching space {spec.space!r} ({spec.sampler.name}, {n} trials, "
        f"{spec.resources.max_concurrent} in flight) -> {out_path}",
        flush=True,
    )
    result = run_pipeline(spec, ensemble_name="demo")
    print()
    print(result.summary_text())
    print(
        f"\nlook further:  hpsearch trials {out_path} --top 5"
        f"  |  ensembles report {result.ensemble_dir}"
    )
    sys.stdout.flush()
    return 0
