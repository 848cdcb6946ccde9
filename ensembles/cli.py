"""``ensembles``: build ensembles of finished runs, predict with them, read their reports.

Heavy libraries (TensorFlow, Keras, Ray, scikit-learn) are imported inside the
command that needs them, so ``ensembles --help`` answers at once. User errors
print ``error: <message>`` on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from hpsearch.core.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR  # noqa: F401
from hpsearch.core.registry import BLENDERS

METHODS = ("auto", *BLENDERS.names())


def cmd_build(args: argparse.Namespace) -> int:
    import os

    from ensembles.api import build
    from hpsearch.core.errors import check_writable
    from hpsearch.core.remote import is_uri

    if args.out and not is_uri(args.out) and not os.path.exists(args.out):  # exists: refused
        check_writable(args.out, "--out", "give --out a new directory path in a writable folder")
    ens = build(
        args.run_dirs,
        top_k=args.top_k,
        max_corr=args.max_corr,
        margin=args.margin,
        trees=args.trees,
        method=args.method,
        folds=args.folds,
        out=args.out,
        name=args.name,
        progress=not args.quiet,
        refit=args.refit,
    )
    print(ens.summary_text())
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from ensembles.api import load
    from hpsearch.core import atomic
    from hpsearch.core.errors import check_writable

    check_writable(args.output, "-o", "give -o a file path in a writable folder", kind="file")
    frame = load(args.ens_dir).predict_frame(args.data)
    atomic.write_text(args.output, frame.to_csv(index=False))
    print(f"wrote {len(frame)} row(s) to {args.output}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from ensembles.api import load
    from ensembles.checks import check_ensemble_submission

    sub, reference = check_ensemble_submission(
        args.submission, load(args.ens_dir), test=args.test, sample=args.sample
    )
    print(
        f"ok: {args.submission} has {len(sub)} rows, the ids of {reference} in order, "
        f"columns {', '.join(map(str, sub.columns))}, valid values"
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ensembles.api import load

    ens = load(args.ens_dir)
    path, regenerated = ens.ensure_report()
    if regenerated:
        print(f"report regenerated from ensemble.json: {path}")
    else:
        print(f"report: {path}")
    print()
    print(ens.summary_text())
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from ensembles.ensemble import list_ensembles

    found = list_ensembles(args.run_dir)
    if not found:
        print(f"no ensembles in {args.run_dir}; build one with: ensembles build {args.run_dir}")
        return 0
    rows = []
    for name, info in found:
        if not isinstance(info, dict):  # the error that stopped reading it
            rows.append((name, "?", "?", "-", "-", str(info)))
            continue
        # an auto build's honest score is the nested one of its `auto` row
        s = info["scores"].get("auto") or info["scores"].get(info["method"], {})
        rows.append(
            (
                name,
                info["method"],
                str(len(info["members"])),
                _fmt(s.get("fitted")),
                _fmt(s.get("cross_fitted")),
                info["metric"],
            )
        )
    width = max(len(r[0]) for r in rows + [("name",)])
    print(f"{'name':<{width}}  {'method':<12} {'members':>7} {'fitted':>10} {'cross-fitted':>13}")
    for r in rows:
        print(f"{r[0]:<{width}}  {r[1]:<12} {r[2]:>7} {r[3]:>10} {r[4]:>13}  {r[5]}")
    return 0


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.5g}"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _none_or(low: float, high: float, what: str):
    """An argparse type: a number in [low, high], or ``none`` (switched off)."""

    def parse(text: str) -> float | str:
        if text.strip().lower() == "none":
            return "none"
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a number or none ({what}), got {text!r}"
            ) from None
        if not (low <= value <= high):
            raise argparse.ArgumentTypeError(
                f"must be in [{low:g}, {high:g}] or none ({what}), got {text}"
            )
        return value

    return parse


def _trees(text: str) -> tuple[str, ...]:
    if text.strip().lower() in ("", "none"):
        return ()
    return tuple(t.strip() for t in text.split(",") if t.strip())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ensembles",
        description="Blend the finished trials of hpsearch runs (and tree models) into one "
        "ensemble; predict new rows with it.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    b = sub.add_parser(
        "build",
        help="build an ensemble from one or more run directories",
        description="Select diverse members, fit every blender on the holdout rows (on the "
        "out-of-fold predictions of every labelled row for cross-validated runs), score each "
        "fitted and cross-fitted, and write the chosen blend to RUN_DIR/ensembles/<name>. "
        "Defaults come from the `ensemble` section of the first run's spec.",
    )
    b.add_argument(
        "run_dirs", metavar="RUN_DIR", nargs="+", help="run directories, paths or URIs (s3://...)"
    )
    b.add_argument("--top-k", type=_positive_int, help="at most K networks (trees not counted)")
    b.add_argument(
        "--max-corr",
        type=_none_or(0.0, 1.0, "none: no correlation filter"),
        metavar="R",
        help="drop a candidate whose holdout errors correlate above R with a better kept one; "
        "none: no correlation filter",
    )
    b.add_argument(
        "--margin",
        type=_none_or(0.0, float("inf"), "none: every candidate is eligible"),
        metavar="M",
        help="a candidate worse than the best by more than M x the robust spread of the "
        "candidates' validation scores is not eligible; none: no eligibility cut",
    )
    b.add_argument(
        "--trees",
        type=_trees,
        help="tree models, comma-separated: rf,et,hgb (lgbm, xgb when installed); none for none",
    )
    b.add_argument(
        "--method",
        metavar="METHOD",
        help=f"the blender that makes the ensemble: {', '.join(METHODS)}, or module:Class for "
        "your own; auto (the spec's default): the one with the best cross-fitted score",
    )
    b.add_argument("--folds", type=int, help="folds for the cross-fitted scores")
    b.add_argument(
        "--refit",
        action="store_true",
        default=None,
        help="after blending, train the members again on every labelled row (train, valid "
        "and holdout) and blend their test predictions with the same weights (holdout mode)",
    )
    b.add_argument("--out", help="ensemble directory (must not exist)")
    b.add_argument("--name", help="name under RUN_DIR/ensembles/ (default <method>-<timestamp>)")
    b.add_argument("--quiet", action="store_true", help="no progress lines")
    b.set_defaults(func=cmd_build)

    pr = sub.add_parser("predict", help="predict new rows; write a submission-shaped CSV")
    pr.add_argument("ens_dir", metavar="ENS_DIR")
    pr.add_argument("data", metavar="DATA", help="CSV or Parquet file with the feature columns")
    pr.add_argument("-o", "--output", required=True, metavar="OUT.csv")
    pr.set_defaults(func=cmd_predict)

    c = sub.add_parser(
        "check",
        help="check a submission file against an ensemble's test set (ids, columns, values)",
    )
    c.add_argument("submission", metavar="SUBMISSION.csv")
    c.add_argument("ens_dir", metavar="ENS_DIR", help="the ensemble whose layout it must follow")
    c.add_argument("--test", help="test file (default: the run's `data.test`)")
    c.add_argument(
        "--sample", help="sample submission (default: the run's `data.sample_submission`)"
    )
    c.set_defaults(func=cmd_check)

    r = sub.add_parser("report", help="print an ensemble's summary (regenerates a lost report)")
    r.add_argument("ens_dir", metavar="ENS_DIR")
    r.set_defaults(func=cmd_report)

    ls = sub.add_parser("list", help="the ensembles of a run with their scores")
    ls.add_argument("run_dir", metavar="RUN_DIR", help="a run directory, path or URI")
    ls.set_defaults(func=cmd_list)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from hpsearch.core.errors import run_cli

    return run_cli(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
