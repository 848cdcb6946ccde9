"""``hpsearch.run``: run (or resume) a search from Python and get the :class:`Run` back."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpsearch.core.runs import Run
    from hpsearch.core.spec import Spec


def run(
    spec: Spec | str | os.PathLike | dict[str, Any],
    *,
    resume: bool = False,
    address: str | None = None,
    n_trials: int | None = None,
    callbacks: Sequence[Any] = (),
    progress: bool = True,
) -> Run:
    """Run the search ``spec`` describes (a ``Spec``, a spec file or a dict) until its budget
    is spent, and return the run read back from its directory.

    Args:
        spec: what to search; a path or dict is validated with :func:`hpsearch.load_spec`.
        resume: continue the run in ``spec.output`` (finished trials are kept).
        address: a Ray cluster to join (``"auto"``, ``ray://host:10001``); default: an
            embedded local Ray.
        n_trials: the trial budget, instead of ``spec.budget.n_trials``.
        callbacks: :class:`hpsearch.Callback` objects told of each trial's start and end.
        progress: print the live progress line on stderr.

    Raises:
        hpsearch.UserError: bad input, found before any work (nothing written), resources
            per trial that no node of the cluster has among it.
        hpsearch.StudyStopped: the search stopped early: ``resources.max_failures``
            consecutive failed trials, a trial that waited longer than
            ``resources.wait_timeout_s`` for its resources, or a search that ended with no
            complete trial (the message names the most common failure). Finished trials are
            kept; ``resume=True`` continues the run.
        hpsearch.Interrupted: Ctrl-C or SIGTERM; trials in flight are queued for ``resume``.
    """
    from hpsearch.core.runs import load_run
    from hpsearch.core.spec import Spec, load_spec
    from hpsearch.search.driver import run_search

    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    summary = run_search(
        spec,
        resume=resume,
        address=address,
        n_trials=n_trials,
        progress=progress,
        callbacks=tuple(callbacks),
    )
    result = load_run(spec.output)
    result.summary = summary
    return result
