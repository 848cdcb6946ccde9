"""The entrypoint of a submitted Ray Job (``python -m hpsearch.cli.job_entry spec.yaml
--address auto ...``, built by ``hpsearch.cluster.jobs.entrypoint``): ``hpsearch run`` on the
staged spec on the head node, then the uploaded inputs are kept in the run directory
(``hpsearch.cluster.jobs.keep_inputs``). It lives in the CLI layer because it *is* a command
line: the cluster layer only names it in the job's shell command."""

from __future__ import annotations

import sys

from hpsearch.cli import app as cli
from hpsearch.cluster.jobs import STAGED_SPEC, keep_inputs


def job_main(argv: list[str] | None = None) -> int:
    """Entrypoint of a submitted job: ``hpsearch run`` on the staged spec, then keep_inputs.

    ``hpsearch stop`` sends SIGINT (see ``runtime_env``): ``hpsearch run`` handles it like
    Ctrl-C, recording the trials in flight so that ``--resume`` runs them again.
    """

    argv = list(sys.argv[1:] if argv is None else argv)
    spec_path = argv[0] if argv else STAGED_SPEC
    try:
        code = cli.main(["run", *argv])
        if code == cli.EXIT_INTERRUPTED:
            print(
                "(a submitted job continues with `hpsearch submit SPEC --resume` "
                "from the submitting machine)",
                file=sys.stderr,
            )
        return code
    finally:
        try:
            moved = keep_inputs(spec_path)
        except Exception as exc:  # the search result matters more than this copy
            print(f"warning: could not copy the job's input files into the run: {exc}",
                  file=sys.stderr)  # fmt: skip
        else:
            if moved:
                print(f"inputs kept in the run directory: {', '.join(moved)}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(job_main())
