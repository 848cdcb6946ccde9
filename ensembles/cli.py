"""``ensembles``: build ensembles of finished runs, predict with them, read their reports.

Heavy libraries (TensorFlow, Keras, Ray, scikit-learn) are imported inside the
command that needs them, so ``ensembles --help`` answers at once. User errors
print ``error: <message>`` on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from hpsearch.core.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR  # noqa: F401

METHODS = ("auto", "best", "mean", "greedy", "nelder-mead", "stack")


def cmd_build(args: argparse.Namespace) -> int:
    from ensembles.build import build_ensemble

    result = build_ensemble(
        args.run_dirs,
        top_k=args.top_k,
        max_corr=args.max_corr,
        trees=args.trees,
        method=args.method,
        folds=args.folds,
        out=args.out,
        name=args.name,
        progress=not args.quiet,
    )
    print(result.summary_text())
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from ensembles.predict import predict_new
    from hpsearch.core import atomic

    frame = predict_new(args.ens_dir, args.data)
    atomic.write_text(args.output, frame.to_csv(index=False))
    print(f"wrote {len(frame)} row(s) to {args.output}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from ensembles.build import load_ensemble
    from ensembles.checks import check_submission_file
    from hpsearch.core.errors import UserError
    from hpsearch.core.spec import load_spec

    ens = load_ensemble(args.ens_dir)
    info = ens.info
    layout = info.get("submission")
    if not layout:
        raise UserError(
            f"ensemble {ens.out_dir} was built from a run without a test set, so it has no "
            "submission layout. Fix: check a submission of an ensemble whose run has `data.test`."
        )
    from hpsearch.core.remote import is_uri

    test, sample = args.test, args.sample
    if not test:
        run = str(info["runs"][0])
        if is_uri(run):
            raise UserError(
                f"the ensemble's run is at {run}; its test file path is not on this machine. "
                "Fix: give the test file with --test (and --sample for sample_submission.csv)."
            )
        spec = load_spec(Path(run) / "spec.yaml")
        test = spec.data.test
        sample = sample or spec.data.sample_submission
    sub = check_submission_file(
        args.submission,
        test=test,
        sample=sample,
        id_col=layout["id_column"],
        task=info["task"],
        columns=layout["columns"],
        classes=info.get("classes"),
        metric=info.get("metric"),
    )
    print(
        f"ok: {args.submission} has {len(sub)} rows, the ids of {sample or test} in order, "
        f"columns {', '.join(map(str, sub.columns))}, valid values"
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ensembles.build import load_ensemble
    from ensembles.report import PLOTS, REPORT_MD, write_report

    ens = load_ensemble(args.ens_dir)
    path = ens.out_dir / REPORT_MD
    if not all((ens.out_dir / p).exists() for p in (REPORT_MD, *PLOTS)):
        path = write_report(ens.out_dir, ens.info)
        print(f"report regenerated from ensemble.json: {path}")
    else:
        print(f"report: {path}")
    print()
    print(ens.summary_text())
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from hpsearch.core.remote import local_copy
    from hpsearch.core.store import RUN_JSON

    # a run at a URI: its run.json and ensemble.json files are all this reads
    with local_copy(args.run_dir, include=(RUN_JSON, "ensembles/*/ensemble.json")) as (path, _):
        return _list(path, args.run_dir)


def _list(path: Path, where: str) -> int:
    from ensembles.build import ENSEMBLE_JSON, load_ensemble
    from hpsearch.core.errors import UserError
    from hpsearch.core.store import RunDir

    rd = RunDir(path)
    rd.read_meta()  # a clear error for a directory that holds no run
    root = rd.ensembles_dir
    dirs = (
        sorted(p for p in root.iterdir() if (p / ENSEMBLE_JSON).exists() and p.name[0] != ".")
        if root.exists()
        else []
    )
    if not dirs:
        print(f"no ensembles in {where}; build one with: ensembles build {where}")
        return 0
    rows = []
    for d in dirs:
        try:
            info = load_ensemble(d).info
        except UserError as exc:
            rows.append((d.name, "?", "?", "-", "-", str(exc)))
            continue
        # an auto build's honest score is the nested one of its `auto` row
        s = info["scores"].get("auto") or info["scores"].get(info["method"], {})
        rows.append(
            (
                d.name,
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
        description="Select diverse members, fit every blender on the holdout rows, score each "
        "fitted and cross-fitted, and write the chosen blend to RUN_DIR/ensembles/<name>. "
        "Defaults come from the `ensemble` section of the first run's spec.",
    )
    b.add_argument(
        "run_dirs", metavar="RUN_DIR", nargs="+", help="run directories, paths or URIs (s3://...)"
    )
    b.add_argument("--top-k", type=_positive_int, help="at most K networks (trees not counted)")
    b.add_argument("--max-corr", type=float, help="drop a candidate whose errors correlate above R")
    b.add_argument(
        "--trees",
        type=_trees,
        help="tree models, comma-separated: rf,et,hgb (lgbm, xgb when installed); none for none",
    )
    b.add_argument(
        "--method",
        choices=METHODS,
        help="the blender that makes the ensemble; auto (the spec's default): the one with the best cross-fitted score",
    )
    b.add_argument("--folds", type=int, help="folds for the cross-fitted scores")
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
