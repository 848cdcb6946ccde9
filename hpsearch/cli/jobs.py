"""Cluster commands of the ``hpsearch`` CLI (submit, jobs, logs, stop, pull).

Registered by ``hpsearch.cli.app.build_parser``; Ray is imported only inside the
command functions so that ``hpsearch --help`` stays fast. The work is in
``hpsearch.cluster.jobs``.
"""

from __future__ import annotations

import argparse
import sys

EXIT_JOB_FAILED = 1
EXIT_INTERRUPTED = 130
TAIL_LINES = 30

ADDRESS_HELP = (
    "the Ray dashboard of the cluster, e.g. http://HEAD:8265 "
    "(default: $HPSEARCH_ADDRESS, $RAY_API_SERVER_ADDRESS, or http://127.0.0.1:8265)"
)


def _tail(text: str, n: int = TAIL_LINES) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-n:])


def _finish(client, job_id: str, state: str) -> int:
    from hpsearch.cluster import jobs

    if state == "SUCCEEDED":
        print(f"job {job_id} SUCCEEDED", file=sys.stderr)
        return 0
    info = jobs._call(client, "read the job", lambda: client.get_job_info(job_id), job_id)
    # Ray appends the log tail to the message; the tail is printed below, once
    text = (getattr(info, "message", None) or "").split(", last available logs")[0].strip()
    message = f": {text.splitlines()[0]}" if text else ""
    print(f"job {job_id} {state}{message}", file=sys.stderr)
    last = _tail(jobs.logs(client, job_id))
    if last:
        print(f"last log lines:\n{last}", file=sys.stderr)
    return EXIT_JOB_FAILED


def cmd_submit(args: argparse.Namespace) -> int:
    from hpsearch.cluster import jobs
    from hpsearch.core.spec import load_spec, require_one_space

    # a mistake in the spec is named before any cluster is contacted; the job runs
    # `hpsearch run`, which searches one space
    require_one_space(load_spec(args.spec), "hpsearch submit")
    client = jobs.connect(args.address)
    sub = jobs.submit(
        args.spec,
        n_trials=args.n_trials,
        resume=args.resume,
        output=args.output,
        data_on_cluster=args.data_on_cluster,
        trial_options=args.trial_option,
        client=client,
    )
    print(sub.job_id)
    print(f"submitted {sub.spec_name} to {sub.address}", file=sys.stderr)
    print(f"run directory (on the cluster's filesystem): {sub.output}", file=sys.stderr)
    if sub.uploaded:
        print(f"uploaded: {', '.join(sorted(sub.uploaded))}", file=sys.stderr)
    if not args.wait:
        print(
            f"follow: hpsearch logs {sub.job_id} --address {sub.address} --follow\n"
            f"stop:   hpsearch stop {sub.job_id} --address {sub.address}",
            file=sys.stderr,
        )
        return 0
    try:
        state = jobs.follow(client, sub.job_id)
    except KeyboardInterrupt:
        print(
            f"\nstopped following; job {sub.job_id} keeps running. "
            f"Stop it with: hpsearch stop {sub.job_id} --address {sub.address}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    return _finish(client, sub.job_id, state)


def cmd_jobs(args: argparse.Namespace) -> int:
    import json

    from hpsearch.cluster import jobs

    client = jobs.connect(args.address)
    rows = jobs.list_jobs(client)
    if args.format == "json":
        print(json.dumps(rows, indent=2, default=str))
    else:
        print(jobs.jobs_table(rows))
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from hpsearch.cluster import jobs

    client = jobs.connect(args.address)
    if not args.follow:
        print(jobs.logs(client, args.job_id), end="")
        return 0
    try:
        state = jobs.follow(client, args.job_id)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    print(f"job {args.job_id} {state}", file=sys.stderr)
    return 0 if state == "SUCCEEDED" else EXIT_JOB_FAILED


def cmd_stop(args: argparse.Namespace) -> int:
    from hpsearch.cluster import jobs

    client = jobs.connect(args.address)
    was_running, state = jobs.stop(client, args.job_id)
    if not was_running:
        print(f"job {args.job_id} was not running ({state})")
    elif state in jobs.TERMINAL:
        print(f"job {args.job_id} {state}")
    else:
        print(f"job {args.job_id} asked to stop; still {state}")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    import os

    from hpsearch.cluster import jobs
    from hpsearch.core.errors import check_writable

    if not os.path.exists(args.dest):  # an existing one: pull says whether it may be used
        check_writable(args.dest, "DEST", "give a new directory path in a writable folder")
    dest, n_files, n_bytes = jobs.pull(args.run_uri, args.dest)
    print(f"pulled {n_files} file(s), {n_bytes / 2**20:.1f} MiB, from {args.run_uri} into {dest}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add the cluster subcommands to the ``hpsearch`` parser."""
    s = sub.add_parser(
        "submit",
        help="run a search on a Ray cluster as a Ray Job (spec, data and code uploaded)",
        description="Submit `hpsearch run SPEC` to a running Ray cluster through its Jobs API. "
        "The spec, the local data files it names and this project's packages travel with the "
        "job; the cluster needs the dependencies only. The run directory is the spec's "
        "`output` resolved to an absolute path here: the head node must be able to write it "
        "(same machine, or a shared filesystem mounted at the same path), or a URI "
        "(s3://, gs://) the head node can write to.",
    )
    s.add_argument("spec", metavar="SPEC")
    s.add_argument("--address", help=ADDRESS_HELP)
    s.add_argument("--wait", action="store_true", help="follow the job's logs until it ends")
    s.add_argument("--n-trials", type=int, help="override budget.n_trials")
    s.add_argument("--resume", action="store_true", help="continue the run in `output`")
    s.add_argument(
        "--output",
        help="run directory as the cluster sees it, a path or a URI such as s3://bucket/run "
        "(default: the spec's `output`)",
    )
    s.add_argument(
        "--data-on-cluster",
        action="store_true",
        help="the spec's data paths are readable on the cluster already: do not upload them",
    )
    s.add_argument(
        "--trial-option", action="append", default=[], help=argparse.SUPPRESS
    )  # key=value, passed to `hpsearch run` (tests and fault drills)
    s.set_defaults(func=cmd_submit)

    j = sub.add_parser("jobs", help="list the jobs of a Ray cluster")
    j.add_argument("--address", help=ADDRESS_HELP)
    j.add_argument("--format", choices=("table", "json"), default="table")
    j.set_defaults(func=cmd_jobs)

    lg = sub.add_parser("logs", help="print (or follow) the logs of a submitted job")
    lg.add_argument("job_id", metavar="JOB_ID")
    lg.add_argument("--address", help=ADDRESS_HELP)
    lg.add_argument("--follow", "-f", action="store_true", help="stream until the job ends")
    lg.set_defaults(func=cmd_logs)

    st = sub.add_parser("stop", help="stop a submitted job (trials in flight are recorded)")
    st.add_argument("job_id", metavar="JOB_ID")
    st.add_argument("--address", help=ADDRESS_HELP)
    st.set_defaults(func=cmd_stop)

    p = sub.add_parser(
        "pull",
        help="copy a run directory from a path or URI (file://, s3://, gs://) to a local folder",
    )
    p.add_argument("run_uri", metavar="RUN_URI")
    p.add_argument("dest", metavar="DEST", help="a new or empty local directory")
    p.set_defaults(func=cmd_pull)
