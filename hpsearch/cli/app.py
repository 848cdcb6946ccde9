"""``hpsearch``: look at spaces, run and resume searches, inspect their trials.

Heavy libraries (TensorFlow, Keras, Ray, Optuna) are imported inside the
command that needs them, so ``hpsearch --help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from hpsearch.core.errors import EXIT_INTERRUPTED, EXIT_STOPPED, EXIT_USER_ERROR  # noqa: F401

# --------------------------------------------------------------------------- space


def cmd_space_list(args: argparse.Namespace) -> int:
    from search_spaces import list_library

    rows = list_library()
    width = max((len(n) for n, _ in rows), default=10)
    for name, description in rows:
        print(f"{name.ljust(width)}  {description}")
    return 0


def _parse_shape(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    from hpsearch.core.errors import UserError

    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(",") if s.strip())
    except ValueError:
        raise UserError(
            f"--input-shape {text!r}: expected integers. Fix: write the shape of one example "
            "as 30 (tabular, text) or 8,8,1 (images)."
        ) from None
    if not shape or any(s <= 0 for s in shape):
        raise UserError(
            f"--input-shape {text!r}: every size must be a positive integer. "
            "Fix: write the shape of one example as 30 (tabular, text) or 8,8,1 (images)."
        )
    return shape


# the input shape each family takes from --input-shape: (dimensions, example)
_SHAPE_DIMS = {"cnn": ((2, 3), "16,16,1")}


def example_io(space: Any, shape: tuple[int, ...] | None, task: str = "binary", n_classes: int = 1):
    """An InputSpec/OutputSpec that suits a space's family, for `space sample --build`."""
    from hpsearch.core.errors import UserError
    from search_spaces.specs import Head, InputSpec, OutputSpec, TextInput

    family = space.family
    dims, example = _SHAPE_DIMS.get(family, ((1,), "30"))
    if shape is not None and len(shape) not in dims:
        kind = "an image shape (height,width[,channels])" if family == "cnn" else "one size"
        raise UserError(
            f"--input-shape {','.join(map(str, shape))}: space {space.name!r} (family {family}) "
            f"takes {kind}. Fix: give for example --input-shape {example}."
        )
    if family == "cnn":
        inputs = InputSpec(image_shape=shape or (16, 16, 1))
    elif family == "text":
        seq = shape[0] if shape else 40
        inputs = InputSpec(text=TextInput(vocab_size=2000, seq_len=seq))
    elif family in ("multi_input", "wide_deep"):
        inputs = InputSpec(
            numeric=shape[0] if shape else 8,
            categorical={"colour": 6, "city": 20},
            text=TextInput(vocab_size=1000, seq_len=20) if family == "multi_input" else None,
        )
    else:
        inputs = InputSpec(numeric=shape[0] if shape else 30)
    if family == "multi_output":
        outputs = OutputSpec(
            heads=(Head("output", task, n_classes), Head("second", "regression", 1, 0.5))
        )
    else:
        outputs = OutputSpec.single(task, n_classes)
    return inputs, outputs


def _first_line(exc: BaseException) -> str:
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()  # Keras colours its errors
    return text.splitlines()[0].rstrip(".") if text else ""


def cmd_space_sample(args: argparse.Namespace) -> int:
    import numpy as np

    from hpsearch.core.errors import UserError
    from search_spaces import load_space

    if args.n < 1:
        raise UserError(
            f"-n {args.n}: the number of configurations must be at least 1. "
            "Fix: give a positive count, for example -n 5."
        )
    space = load_space(args.space)
    shape = _parse_shape(args.input_shape)
    rng = np.random.default_rng(args.seed)
    configs = [space.sample_random(rng) for _ in range(args.n)]
    from search_spaces.families import is_tree_family

    if args.build and is_tree_family(space.family):
        raise UserError(
            f"--build: space {space.name!r} is of tree family {space.family!r}, which is "
            "trained by the `trees` trainer, not built as a Keras model. Fix: leave --build "
            "out to print its configurations."
        )
    if args.build:
        from search_spaces.families import (
            build_model,
            compile_model,
            count_params,
            describe_model,
        )

        inputs, outputs = example_io(space, shape)
    print(
        f"# space {space.name} (family {space.family}), {args.n} configuration(s), seed {args.seed}"
    )
    for i, config in enumerate(configs):
        print(f"[{i}] {json.dumps(config)}")
        if args.build:
            try:
                model = build_model(space.family, config, inputs, outputs)
                compile_model(model, config, outputs)  # the optimizer and losses are valid too
            except (ValueError, TypeError, KeyError) as exc:
                raise UserError(
                    f"space {space.name!r}: configuration [{i}] does not build: "
                    f"{type(exc).__name__}: {_first_line(exc)}. Fix: correct the parameter it "
                    "names in the space file (or the --input-shape)."
                ) from None
            print(f"    params: {count_params(model):,}  layers: {describe_model(model)}")
    return 0


# --------------------------------------------------------------------------- spec


def cmd_spec_schema(args: argparse.Namespace) -> int:
    """The JSON Schema of spec files, on stdout or written atomically to ``-o FILE``."""
    from hpsearch.core.errors import UserError
    from hpsearch.core.spec import spec_json_schema

    text = json.dumps(spec_json_schema(), indent=2) + "\n"
    if not args.output:
        sys.stdout.write(text)
        return 0
    from hpsearch.core import atomic

    try:
        atomic.write_text(args.output, text)
    except OSError as exc:
        raise UserError(
            f"cannot write the schema to {args.output}: {exc.strerror or exc}. "
            "Fix: give a writable file path to -o."
        ) from None
    print(f"wrote {args.output}")
    return 0


# --------------------------------------------------------------------------- run


def _load_spec(path: str, args: argparse.Namespace | None = None):
    from hpsearch.core.spec import load_spec

    return load_spec(path)


def _check_n_trials(n: int | None) -> None:
    from hpsearch.core.errors import UserError

    if n is not None and n < 1:
        raise UserError(
            f"--n-trials {n}: must be at least 1. Fix: give the number of trials "
            "to run, for example --n-trials 20, or leave it out to use `budget.n_trials`."
        )


def _interrupted(exc: Any, where: Any, resume_cmd: str) -> int:
    print(
        f"\nstopped: {exc.n_cancelled} trial(s) in flight cancelled and recorded; "
        f"{exc.summary.n_complete} complete trial(s) kept in {where}. "
        f"Continue with: {resume_cmd}",
        file=sys.stderr,
    )
    return EXIT_INTERRUPTED


_EXIT_STATUS = """exit status:
  0    the budget was spent{done}
  1    the search stopped early: resources.max_failures failed trials in a row, a trial
       waited longer than resources.wait_timeout_s for its CPUs/GPUs, or the search ended
       with no complete trial (the most common failure is named); the run directory is
       kept and --resume continues it{more}
  2    bad input, refused before anything was written ("error: ... Fix: ...")
  130  Ctrl-C, `hpsearch stop` or SIGTERM: trials in flight are queued for --resume"""


_PIPELINE_EXIT = """;
       with several spaces, also when one family stopped early: the ensemble of the
       others and its submission are written all the same"""


def cmd_run(args: argparse.Namespace) -> int:
    """``hpsearch run``; a search that stops early raises ``StudyStopped`` (exit 1)."""
    from hpsearch.core.spec import require_one_space
    from hpsearch.search.driver import Interrupted, run_search

    spec = _load_spec(args.spec)
    require_one_space(spec)  # `spaces`: `hpsearch pipeline`
    _check_n_trials(args.n_trials)
    try:
        summary = run_search(
            spec,
            resume=args.resume,
            address=args.address,
            n_trials=args.n_trials,
            trial_fn=args.trial_fn,
            progress=not args.quiet,
            trial_options=_options(args.trial_option),
        )
    except Interrupted as exc:
        return _interrupted(exc, spec.output, f"hpsearch run {args.spec} --resume")
    _print_summary(summary, spec.output)
    if summary.stopped:
        print(f"note: {summary.stopped}", file=sys.stderr)
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    from hpsearch.core.errors import UserError
    from hpsearch.core.remote import is_uri
    from hpsearch.pipeline.run import run_pipeline
    from hpsearch.search.driver import Interrupted

    spec = _load_spec(args.spec)
    if is_uri(spec.output):
        raise UserError(
            f"spec {args.spec}: `hpsearch pipeline` writes its submission into the run directory "
            f"and needs a path `output`, got {spec.output!r}. Fix: give a local or shared path, "
            "or run `hpsearch run SPEC` then `ensembles build URI` for a run at a URI."
        )
    _check_n_trials(args.n_trials)
    try:
        result = run_pipeline(
            spec,
            resume=args.resume,
            address=args.address,
            n_trials=args.n_trials,
            progress=not args.quiet,
            trial_fn=args.trial_fn,
            trial_options=_options(args.trial_option),
            ensemble_name=args.name,
            folds=args.folds,
        )
    except Interrupted as exc:
        return _interrupted(exc, exc.summary.run_dir, f"hpsearch pipeline {args.spec} --resume")
    print(result.summary_text())
    if result.stopped:  # families that stopped early; the others made the ensemble
        for reason in result.stopped:
            print(f"note: {reason}", file=sys.stderr)
        print(
            f"note: the ensemble blends the other families; continue the stopped ones with: "
            f"hpsearch pipeline {args.spec} --resume",
            file=sys.stderr,
        )
        return EXIT_STOPPED
    return 0


def _options(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _print_summary(summary: Any, where: str) -> None:
    print(
        f"run {where}: {summary.n_complete} complete, {summary.n_failed} failed, "
        f"{summary.n_pruned} pruned in {summary.elapsed_s:.1f} s"
    )
    if summary.best_number is not None:
        print(f"best: trial {summary.best_number}, value {summary.best_value:.6g}")
        print(f"params: {json.dumps(summary.best_params)}")


def _run(run_dir: str) -> Any:
    from hpsearch.core.runs import load_run

    return load_run(run_dir)


def cmd_status(args: argparse.Namespace) -> int:
    st = _run(args.run_dir).status()
    print(f"run: {st['name']}  ({args.run_dir})")
    print(
        f"space: {st['space']} (family {st['family']}), task {st['task']}, "
        f"metric {st['metric']} ({st['direction']})"
    )
    if st.get("folds"):
        print(
            f"split: {st['folds']}-fold CV (values: {st['metric']} on the out-of-fold predictions)"
        )
    print("trials: " + (", ".join(f"{k} {v}" for k, v in st["trials"].items()) or "none"))
    if st["best"]:
        print(f"best: trial {st['best']['number']}, value {st['best']['value']:.6g}")
    return 0


_CSV_COLUMNS = ("number", "state", "value", "duration_s", "epochs", "n_params", "reason", "params")


def cmd_trials(args: argparse.Namespace) -> int:
    from hpsearch.core.errors import UserError

    if args.top is not None and args.top < 1:
        raise UserError(
            f"--top {args.top}: must be at least 1. Fix: give how many of the best complete "
            "trials to list, for example --top 5, or leave it out to list every trial."
        )
    run = _run(args.run_dir)
    rows = run.ranked()[: args.top] if args.top else run.trial_rows()
    if args.format == "json":
        print(json.dumps(rows, indent=2, default=str))
    elif args.format == "csv":
        import csv

        writer = csv.writer(sys.stdout)
        writer.writerow(_CSV_COLUMNS)
        for r in rows:
            cells = {**r, "reason": r["reason"] or "", "params": json.dumps(r["params"])}
            writer.writerow([cells[c] for c in _CSV_COLUMNS])
    else:
        _print_trials_table(rows, run.folds)
    return 0


def _print_trials_table(rows: list[dict[str, Any]], folds: int | None = None) -> None:
    """The trials as a table; a cross-validated run's (``folds``) shows the out-of-fold
    value and how many folds each trial finished."""
    cv = f" {'folds':>5}" if folds else ""
    head = "oof value" if folds else "value"
    print(f"{'#':>5} {'state':<9} {head:>11} {'time s':>8} {'epochs':>6}{cv}  params")
    for r in rows:
        value = "-" if r["value"] is None else f"{r['value']:.6g}"
        dur = "-" if r["duration_s"] is None else f"{r['duration_s']:.1f}"
        params = json.dumps(r["params"])
        if len(params) > 90:
            params = params[:87] + "..."
        done = r.get("fold_values")
        cv = f" {(f'{len(done)}/{folds}' if done is not None else '-'):>5}" if folds else ""
        print(
            f"{r['number']:>5} {r['state']:<9} {value:>11} {dur:>8} {str(r['epochs'] or '-'):>6}"
            f"{cv}  {params}"
        )


def cmd_best(args: argparse.Namespace) -> int:
    print(json.dumps(_run(args.run_dir).best(), indent=2))
    return 0


# --------------------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace) -> int:
    from hpsearch.pipeline.demo import run_demo

    return run_demo(out=args.out, n_trials=args.n_trials, quick=args.quick)


# --------------------------------------------------------------------------- parser


def _search_arguments(p: argparse.ArgumentParser, resume_help: str) -> None:
    """The arguments `run` and `pipeline` share."""
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--n-trials", type=int, help="override budget.n_trials")
    p.add_argument("--resume", action="store_true", help=resume_help)
    p.add_argument(
        "--address", help="address of a running Ray cluster (default: embedded local Ray)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress display")
    # tests and fault drills: a module:function trainer, and key=value trial options
    p.add_argument("--trial-fn", help=argparse.SUPPRESS)
    p.add_argument("--trial-option", action="append", default=[], help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hpsearch",
        description="Hyperparameter search over Keras architectures on Ray (TPE, Hyperopt TPE, random).",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    space = sub.add_parser("space", help="look at search spaces before spending a GPU on them")
    ssub = space.add_subparsers(dest="space_command", metavar="SUBCOMMAND")
    ssub.required = True
    sl = ssub.add_parser("list", help="list the library spaces")
    sl.set_defaults(func=cmd_space_list)
    ss = ssub.add_parser("sample", help="print sampled configurations (and build their models)")
    ss.add_argument("space", metavar="NAME_OR_FILE")
    ss.add_argument("-n", type=int, default=5, help="how many configurations (default 5)")
    ss.add_argument("--seed", type=int, default=0)
    ss.add_argument(
        "--build", action="store_true", help="build each model; print parameter count and layers"
    )
    ss.add_argument(
        "--input-shape", help="input shape for --build, e.g. 30 (tabular) or 28,28,1 (images)"
    )
    ss.set_defaults(func=cmd_space_sample)

    spec_cmd = sub.add_parser("spec", help="about spec files")
    spsub = spec_cmd.add_subparsers(dest="spec_command", metavar="SUBCOMMAND")
    spsub.required = True
    sc = spsub.add_parser("schema", help="print the JSON Schema of spec files (for editors)")
    sc.add_argument("-o", "--output", metavar="FILE", help="write it to FILE instead of stdout")
    sc.set_defaults(func=cmd_spec_schema)

    run = sub.add_parser(
        "run",
        help="run (or resume) a search described by a spec file",
        epilog=_EXIT_STATUS.format(done=" with at least one complete trial", more=""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _search_arguments(run, "continue the run in the spec's output directory")
    run.set_defaults(func=cmd_run)

    pl = sub.add_parser(
        "pipeline",
        help="search, ensemble and write a checked submission.csv (train.csv + test.csv in)",
        description="Search the spec's space, or each of its `spaces` with its share of the "
        "budget (sibling runs OUTPUT/<space>/; neither: the default mix), build one ensemble "
        "and write its checked submission.csv. See docs/pipeline.md.",
        epilog=_EXIT_STATUS.format(
            done=", the ensemble built and its submission written", more=_PIPELINE_EXIT
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _search_arguments(pl, "continue the search in the spec's output directory")
    pl.add_argument("--name", help="name of the ensemble (default pipeline-<timestamp>)")
    pl.add_argument(
        "--folds",
        type=int,
        metavar="K",
        help="cross-validation folds (default: the spec's split when it names folds, valid "
        "or holdout, else 5); 0: the train/valid/holdout split",
    )
    pl.set_defaults(func=cmd_pipeline)

    st = sub.add_parser("status", help="summary of a run directory")
    st.add_argument("run_dir", metavar="RUN_DIR")
    st.set_defaults(func=cmd_status)

    tr = sub.add_parser("trials", help="list a run's trials")
    tr.add_argument("run_dir", metavar="RUN_DIR")
    tr.add_argument("--top", type=int, help="only the K best complete trials")
    tr.add_argument("--format", choices=("table", "csv", "json"), default="table")
    tr.set_defaults(func=cmd_trials)

    be = sub.add_parser("best", help="the best trial of a run (JSON)")
    be.add_argument("run_dir", metavar="RUN_DIR")
    be.set_defaults(func=cmd_best)

    demo = sub.add_parser("demo", help="a demo search and ensemble on bundled data")
    demo.add_argument("--out", help="run directory (default: runs/demo-<timestamp>)")
    demo.add_argument("--n-trials", type=int, default=None)
    demo.add_argument("--quick", action="store_true", help="a smaller demo (CI smoke test)")
    demo.set_defaults(func=cmd_demo)

    from hpsearch.cli import jobs as jobs_cli

    jobs_cli.add_commands(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from hpsearch.core.errors import run_cli

    return run_cli(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
