"""Search benchmark: service overhead, worker start-up, throughput, TPE against random.

    python benchmarks/bench_search.py [--quick] [--out docs/benchmarks/search.md]

Every number is a ratio against a baseline measured in the same run:

1. **Overhead per trial** with instant trials (``hpsearch.search.testing:instant``) at
   100 and 1,000 trials, one in flight: ``run_search`` (Ray task per trial, run
   directory writes, progress bookkeeping) against a bare Optuna ask/tell loop
   with the same sampler and the same kind of storage (SQLite file).
2. **Trial start on a warm worker against a fresh worker process**: the real
   Keras trainer on breast_cancer for 1 epoch, one trial in flight, with
   ``resources.warm_workers`` true (pool of actors) and false (``max_calls=1``
   tasks, a new process per trial). Wall time per trial and time spent outside
   the trial function.
3. **Throughput with one and two concurrent trials** of fixed length (a 1 s
   sleep), and of the real trainer (CPU-bound, 5 epochs).
4. **TPE against random** on a fixed cheap objective over the ``tabular_mlp``
   space: the number of trials each sampler needs to reach random search's
   best-of-N (N = 64), with 1 and 4 trials in flight, with and without
   constant liar; median over seeds. Samplers are driven exactly as the
   driver drives them (ask k, then tell k).

``--quick`` runs smaller sizes. Writes a Markdown report to ``--out``.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hpsearch.core.spec import load_spec  # noqa: E402
from hpsearch.search.driver import run_search  # noqa: E402
from hpsearch.search.samplers import make_sampler  # noqa: E402
from hpsearch.search.testing import _objective  # noqa: E402
from hpsearch.search.trial import DEFAULT_TRIAL_FN  # noqa: E402
from search_spaces import load_space  # noqa: E402

warnings.filterwarnings("ignore")


def spec_dict(out: str, **over) -> dict:
    d = {
        "name": "bench",
        "data": {"train": "sklearn:breast_cancer", "target": "target", "task": "binary"},
        "split": {"valid": 0.2, "holdout": 0.2, "seed": 0},
        "metric": "log_loss",
        "space": "tabular_mlp",
        "sampler": {"name": "random", "seed": 0},
        "budget": {"n_trials": 10},
        "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent": 1},
        "training": {"max_epochs": 1, "batch_size": 64, "patience": 2},
        "output": out,
    }
    for key, value in over.items():
        if isinstance(value, dict):
            d[key] = {**d.get(key, {}), **value}
        else:
            d[key] = value
    return d


def run(tmp: Path, label: str, trial_fn: str | None, trial_options=None, **over):
    out = tmp / label
    spec = load_spec(spec_dict(str(out), **over))
    summary = run_search(spec, trial_fn=trial_fn, progress=False, trial_options=trial_options)
    return spec, summary


# --------------------------------------------------------------------------- 1. overhead
def bare_optuna(n: int, sampler_name: str, db: Path) -> float:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space("tabular_mlp")
    study = optuna.create_study(
        storage=f"sqlite:///{db}",
        sampler=make_sampler(sampler_name, space, seed=0, max_concurrent=1, n_startup_trials=None),
        direction="minimize",
    )
    t0 = time.perf_counter()
    for _ in range(n):
        trial = study.ask()
        config = space.sample_optuna(trial)
        trial.set_user_attr("config", config)
        study.tell(trial, _objective(config))
    return time.perf_counter() - t0


def overhead(tmp: Path, sizes: list[int], samplers: list[str]) -> list[dict]:
    rows = []
    for sampler in samplers:
        for n in sizes:
            bare = bare_optuna(n, sampler, tmp / f"bare-{sampler}-{n}.db")
            _, s = run(
                tmp,
                f"ovh-{sampler}-{n}",
                "hpsearch.search.testing:instant",
                sampler={"name": sampler, "seed": 0},
                budget={"n_trials": n},
            )
            rows.append(
                {
                    "sampler": sampler,
                    "n": n,
                    "bare_ms": 1000 * bare / n,
                    "ours_ms": 1000 * s.elapsed_s / n,
                    "ratio": s.elapsed_s / bare,
                }
            )
            print(f"  overhead {sampler} n={n}: {rows[-1]}", flush=True)
    return rows


# --------------------------------------------------------------------------- 2. warm vs fresh
def trial_durations(run_dir: Path) -> list[float]:
    from hpsearch.core.store import RunDir

    return [t.info.get("duration_s", 0.0) for t in RunDir(run_dir).trials()]


def warm_vs_fresh(tmp: Path, n: int) -> list[dict]:
    rows = []
    for warm in (False, True):
        label = "warm" if warm else "fresh"
        spec, s = run(
            tmp,
            f"start-{label}",
            DEFAULT_TRIAL_FN,
            resources={"warm_workers": warm},
            budget={"n_trials": n},
        )
        inside = sum(trial_durations(spec.output))
        rows.append(
            {
                "workers": label,
                "n": n,
                "wall_s_per_trial": s.elapsed_s / n,
                "outside_s_per_trial": (s.elapsed_s - inside) / n,
                "inside_s_per_trial": inside / n,
            }
        )
        print(f"  start {rows[-1]}", flush=True)
    return rows


# --------------------------------------------------------------------------- 3. throughput
def throughput(tmp: Path, n_sleep: int, n_real: int) -> list[dict]:
    rows = []
    for kind, fn, opts, n, training in (
        ("sleep 1 s", "hpsearch.search.testing:instant", {"fake_sleep_s": 1.0}, n_sleep, {}),
        ("keras, 5 epochs", DEFAULT_TRIAL_FN, None, n_real, {"max_epochs": 5, "patience": 10}),
    ):
        base = None
        for k in (1, 2):
            _, s = run(
                tmp,
                f"tp-{kind[:5].strip()}-{k}",
                fn,
                trial_options=opts,
                resources={"max_concurrent": k},
                budget={"n_trials": n},
                training=training,
            )
            tps = n / s.elapsed_s
            base = base or tps
            rows.append(
                {"trial": kind, "concurrent": k, "n": n, "per_s": tps, "speedup": tps / base}
            )
            print(f"  throughput {rows[-1]}", flush=True)
    return rows


# --------------------------------------------------------------------------- 4. TPE vs random
def cheap_objective(cfg: dict) -> float:
    """Minimum 0 at: 2 layers of ~64 units, adam, lr 3e-3, dropout 0.2, batch norm on."""
    v = (math.log10(cfg["learning_rate"]) - math.log10(3e-3)) ** 2
    v += 4 * (cfg["dropout"] - 0.2) ** 2
    v += 0.3 * (cfg["n_layers"] - 2) ** 2
    v += 0.1 * statistics.fmean((math.log2(u) - 6) ** 2 for u in cfg["units"])
    v += {"adam": 0.0, "rmsprop": 0.3, "sgd": 0.6}[cfg["optimizer"]]
    v += 0.0 if cfg["batch_norm"] else 0.2
    v += {"relu": 0.1, "elu": 0.05, "swish": 0.0}[cfg["activation"]]
    return v


def sampler_curve(sampler: str, seed: int, k: int, liar: bool, n: int) -> list[float]:
    """Best-so-far after each trial, trials asked k at a time and told together."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space("tabular_mlp")
    study = optuna.create_study(
        sampler=make_sampler(
            sampler, space, seed=seed, max_concurrent=k if liar else 1, n_startup_trials=None
        ),
        direction="minimize",
    )
    best, curve = math.inf, []
    while len(curve) < n:
        batch = []
        for _ in range(min(k, n - len(curve) - len(batch))):
            trial = study.ask()
            batch.append((trial, space.sample_optuna(trial)))
        for trial, cfg in batch:
            value = cheap_objective(cfg)
            study.tell(trial, value)
            best = min(best, value)
            curve.append(best)
    return curve


def tpe_vs_random(seeds: list[int], n_random: int, cap: int) -> list[dict]:
    # One target for every seed: the median over seeds of random search's best-of-N.
    target = statistics.median(sampler_curve("random", s, 1, False, n_random)[-1] for s in seeds)
    rows = []
    for sampler, k, liar in (
        ("random", 1, False),
        ("tpe", 1, False),
        ("tpe", 4, True),
        ("tpe", 4, False),
        ("hyperopt-tpe", 1, False),
        ("hyperopt-tpe", 4, True),
        ("hyperopt-tpe", 4, False),
    ):
        needed, finals = [], []
        for s in seeds:
            # seeds other than the target's so that random is not compared with itself
            curve = sampler_curve(sampler, s + 1000, k, liar, cap)
            hit = next((i + 1 for i, v in enumerate(curve) if v <= target), None)
            needed.append(hit if hit is not None else math.inf)
            finals.append(curve[n_random - 1])
        med = statistics.median(needed)
        rows.append(
            {
                "sampler": sampler,
                "in_flight": k,
                "liar": "yes" if liar else "no",
                "median_trials": med,
                "reached": sum(math.isfinite(x) for x in needed),
                "seeds": len(seeds),
                "best_at_n": statistics.median(finals),
                "target": target,
            }
        )
        print(f"  tpe-vs-random {rows[-1]}", flush=True)
    return rows


# --------------------------------------------------------------------------- report
def table(rows: list[dict], cols: list[tuple[str, str, str]]) -> str:
    head = "| " + " | ".join(c[1] for c in cols) + " |"
    sep = "|" + "|".join("---" for _ in cols) + "|"
    lines = [head, sep]
    for r in rows:
        cells = []
        for key, _, fmt in cols:
            v = r[key]
            cells.append(
                ">cap"
                if isinstance(v, float) and math.isinf(v)
                else format(v, fmt)
                if fmt
                else str(v)
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "search.md"))
    ap.add_argument("--parts", default="1,2,3,4")
    args = ap.parse_args(argv)
    parts = set(args.parts.split(","))
    q = args.quick
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sections = []
    t_start = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-search-") as td:
        tmp = Path(td)
        if "1" in parts:
            print("1. overhead", flush=True)
            rows = overhead(tmp, [50, 200] if q else [100, 1000], ["random", "tpe"])
            sections.append(
                "## 1. Service overhead per instant trial (one in flight)\n\n"
                + table(
                    rows,
                    [
                        ("sampler", "sampler", ""),
                        ("n", "trials", "d"),
                        ("bare_ms", "bare Optuna ask/tell, ms/trial", ".1f"),
                        ("ours_ms", "run_search, ms/trial", ".1f"),
                        ("ratio", "ratio", ".2f"),
                    ],
                )
            )
        if "2" in parts:
            print("2. warm vs fresh workers", flush=True)
            rows = warm_vs_fresh(tmp, 3 if q else 6)
            sections.append(
                "## 2. Trial start: warm actor pool against a fresh worker per trial\n\n"
                "Real Keras trainer, breast_cancer, 1 epoch, one trial in flight. "
                "*Outside* is wall time not spent inside the trial function: "
                "process start, TensorFlow import, scheduling, result transfer, writes.\n\n"
                + table(
                    rows,
                    [
                        ("workers", "workers", ""),
                        ("n", "trials", "d"),
                        ("wall_s_per_trial", "wall s/trial", ".2f"),
                        ("inside_s_per_trial", "inside trial s", ".2f"),
                        ("outside_s_per_trial", "outside s/trial", ".2f"),
                    ],
                )
            )
            if len(rows) == 2:
                sections[-1] += (
                    f"\n\nFresh / warm wall time per trial: "
                    f"**{rows[0]['wall_s_per_trial'] / rows[1]['wall_s_per_trial']:.2f}x**."
                )
        if "3" in parts:
            print("3. throughput", flush=True)
            rows = throughput(tmp, 6 if q else 12, 4 if q else 8)
            sections.append(
                "## 3. Throughput with one and two trials in flight\n\n"
                + table(
                    rows,
                    [
                        ("trial", "trial", ""),
                        ("concurrent", "in flight", "d"),
                        ("n", "trials", "d"),
                        ("per_s", "trials/s", ".3f"),
                        ("speedup", "speedup", ".2f"),
                    ],
                )
            )
        if "4" in parts:
            print("4. TPE vs random", flush=True)
            seeds = list(range(3 if q else 7))
            rows = tpe_vs_random(seeds, 64, 96 if q else 160)
            sections.append(
                "## 4. Trials needed to reach random search's best-of-64\n\n"
                "Cheap deterministic objective over `tabular_mlp` (minimum 0). The target is the "
                f"median over seeds of random search's best value after 64 trials ({rows[0]['target']:.3f}); "
                "random search itself should need about 64 trials. `>cap` means not reached within the cap "
                f"({96 if q else 160} trials); *best@64* is the median best value after 64 trials.\n\n"
                + table(
                    rows,
                    [
                        ("sampler", "sampler", ""),
                        ("in_flight", "in flight", "d"),
                        ("liar", "constant liar", ""),
                        ("median_trials", "median trials to target", ".0f"),
                        ("reached", "seeds reaching it", "d"),
                        ("best_at_n", "best@64", ".3f"),
                    ],
                )
            )
    header = (
        "# Search benchmarks\n\n"
        f"`python benchmarks/bench_search.py{' --quick' if q else ''}` on "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; {time.time() - t_start:.0f} s in all. "
        "Every figure is relative to a baseline measured in the same run.\n"
    )
    text = header + "\n" + "\n\n".join(sections) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
