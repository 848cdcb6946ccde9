"""Hooks into the search loop for user code: log trials to MLflow, send a message, stop early.

Subclass :class:`Callback`, override the hooks you need (the others do nothing) and pass
instances to ``run_search(spec, callbacks=[...])``:

- ``on_search_start(loop)``: the study is open, trials a dead driver left are settled and the
  workers are up; ``loop`` is the :class:`hpsearch.search.driver.SearchLoop` (``loop.spec``,
  ``loop.study``, ``loop.space``, ``loop.run_dir``, ``loop.total``).
- ``on_trial_start(payload)``: a trial was asked from the study and handed to a worker
  (``payload.number``, ``payload.params``).
- ``on_trial_end(payload, result)``: a trial finished and is committed: its files and
  ``trial.json`` are written and the study has been told (``result.state`` is ``COMPLETE``,
  ``PRUNED`` or ``FAIL``; ``result.value``, ``result.metrics``, ``result.error``). Trials
  cancelled by Ctrl-C or SIGTERM have no result and get no call.
- ``on_search_end(summary)``: the run's bookkeeping is done (``run.json`` updated), whether the
  budget was spent, the search stopped early (``summary.stopped``) or was interrupted; then
  ``run_search`` returns the summary or raises ``StudyStopped`` or ``Interrupted``.

Hooks run in the driver process, between the loop's steps, so a slow hook slows the search.
An exception raised by a hook never corrupts the run: it is reported as a
:class:`CallbackWarning` (one line naming the callback, the hook and the error) and the search
goes on. Ctrl-C inside a hook interrupts the search as anywhere else.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpsearch.search.driver import SearchLoop, SearchSummary
    from hpsearch.search.trial import TrialPayload, TrialResult

__all__ = ["Callback", "CallbackWarning"]


class CallbackWarning(UserWarning):
    """A user callback raised an exception; the search went on without it."""


class Callback:
    """Base class for search-loop hooks; every hook does nothing unless overridden."""

    def on_search_start(self, loop: SearchLoop) -> None:
        """The study is open and the workers are up; no trial has been asked yet."""

    def on_trial_start(self, payload: TrialPayload) -> None:
        """A trial was handed to a worker."""

    def on_trial_end(self, payload: TrialPayload, result: TrialResult) -> None:
        """A trial is committed: its ``trial.json`` is written and the study told."""

    def on_search_end(self, summary: SearchSummary) -> None:
        """The search is over and ``run.json`` is up to date."""


class Hooks:
    """Calls every callback's hook in order; an exception in one becomes a warning."""

    def __init__(self, callbacks: Sequence[Callback] = ()) -> None:
        self.callbacks = tuple(callbacks)

    def __call__(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            method = getattr(callback, hook, None)  # duck-typed callbacks may leave hooks out
            if method is None:
                continue
            try:
                method(*args)
            except Exception as exc:  # noqa: BLE001 - user code must not end the search
                first = str(exc).splitlines()[0] if str(exc) else ""
                warnings.warn(
                    f"callback {type(callback).__name__}.{hook} raised "
                    f"{type(exc).__name__}: {first}; the search goes on",
                    CallbackWarning,
                    stacklevel=2,
                )
