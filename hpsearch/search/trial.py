"""What one trial is: its input (TrialPayload) and its outcome (TrialResult).

These are plain data, shipped between the driver and Ray workers. The work
itself is done by a *trial function* (a trainer) ``fn(payload, data, reporter) ->
TrialResult``, named in ``hpsearch.core.registry.TRAINERS`` or given as
``"module:function"``. The default, ``keras``, trains a Keras model
(``hpsearch.search.training``); tests and benchmarks plug in cheap ones
(``hpsearch.search.testing``).
"""

from __future__ import annotations

import math
import re
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

COMPLETE = "COMPLETE"
FAIL = "FAIL"
PRUNED = "PRUNED"

DEFAULT_TRIAL_FN = "keras"  # the registered trainer of hpsearch.search.training
AUTO_TRIAL_FN = "auto"  # training.trial_fn's default: the family's trainer (family_trainer)
TREE_TRIAL_FN = "trees"  # the registered trainer of tree families (hpsearch.search.tree_trainer)
# terminal control sequences: Keras and Ray colour parts of their error messages
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def strip_ansi(text: str | None) -> str | None:
    """``text`` without terminal colour codes (stored failure texts never carry them)."""
    return None if text is None else _ANSI.sub("", text)


@dataclass
class TrialPayload:
    """Everything a worker needs to run one trial, besides the data."""

    number: int
    params: dict[str, Any]
    family: str
    metric: str
    task: str
    seed: int
    training: dict[str, Any]
    inputs: dict[str, Any]  # InputSpec.to_dict()
    outputs: dict[str, Any]  # OutputSpec.to_dict()
    splits: tuple[str, ...] = ("valid", "holdout")
    pruning: bool = False
    # cross-validated trials (hpsearch.search.folds): ``folds`` = K on the trial's payload;
    # each fold's trainer call gets ``fold`` = k (0 .. K-1) and ``folds`` = K
    fold: int | None = None
    folds: int | None = None


@dataclass
class TrialResult:
    """What a worker sends back; the driver persists it."""

    number: int
    state: str
    value: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    predictions: dict[str, np.ndarray] = field(default_factory=dict)
    model_bytes: bytes | None = None
    fold_models: list[bytes] = field(default_factory=list)  # cross-validated: one per fold
    # how model_bytes / fold_models are saved: "keras" (model.keras) or "joblib" (a pickled
    # tree estimator, model.joblib); trial.json records it
    model_format: str = "keras"
    tb_bytes: bytes | None = None
    error: str | None = None
    traceback: str | None = None
    reason: str | None = None
    duration_s: float = 0.0
    node_id: str | None = None
    hostname: str | None = None
    pid: int | None = None
    epochs: int = 0
    n_params: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def resolve_trial_fn(name: str) -> Callable[..., TrialResult]:
    """The trial function for a registered trainer name (``keras``) or ``"module:function"``;
    raises ``PluginError`` (a ``ValueError``) naming the valid trainers."""
    from hpsearch.core.registry import TRAINERS

    return TRAINERS.resolve(name)


def family_trainer(family: str) -> str:
    """The registered trainer of an architecture family: ``trees`` for a tree family
    (``search_spaces.families.is_tree_family``), ``keras`` otherwise."""
    from search_spaces.families import is_tree_family

    return TREE_TRIAL_FN if is_tree_family(family) else DEFAULT_TRIAL_FN


def trainer_for(trial_fn: Any, family: str) -> Any:
    """The trainer a run uses: ``trial_fn`` as given (a name, ``module:function`` or the
    function), or the family's own (:func:`family_trainer`) when it is None or ``auto``."""
    if trial_fn is None or trial_fn == AUTO_TRIAL_FN:
        return family_trainer(family)
    return trial_fn


def _is_trainer(trial_fn: Any, name: str) -> bool:
    """Whether ``trial_fn`` is the registered trainer ``name``: by name, by its
    ``module:function`` path or given as the function itself."""
    from hpsearch.core.registry import TRAINERS

    target = TRAINERS.target(name)
    if isinstance(trial_fn, str):
        return trial_fn in (name, target)
    where = f"{getattr(trial_fn, '__module__', '')}:{getattr(trial_fn, '__qualname__', '')}"
    return where == target


def is_keras_trainer(trial_fn: str | Callable[..., TrialResult]) -> bool:
    """Whether ``trial_fn`` is the Keras trainer (its workers import Keras up front), named
    ``keras``, by its ``module:function`` path or given as the function itself."""
    return _is_trainer(trial_fn, DEFAULT_TRIAL_FN)


def check_trainer_fits(trial_fn: Any, space: str, family: str) -> None:
    """UserError when the trainer ``trial_fn`` (``training.trial_fn`` or the ``trial_fn``
    argument) can train no trial of ``space`` (of ``family``): the Keras trainer on a tree
    family (never a Keras model) or the trees trainer on a network family. Checked before
    the run starts, where every trial would otherwise fail. A user's ``module:function``
    is not judged."""
    from hpsearch.core.errors import UserError
    from hpsearch.core.spec import _quote
    from search_spaces.families import is_tree_family

    tree = is_tree_family(family)
    wrong = DEFAULT_TRIAL_FN if tree else TREE_TRIAL_FN
    if trial_fn is None or trial_fn == AUTO_TRIAL_FN or not _is_trainer(trial_fn, wrong):
        return
    if tree:
        kind = "a tree family, which the keras trainer cannot build"
    else:
        kind = "a network family, which the trees trainer cannot fit"
    raise UserError(
        f"spec field 'training.trial_fn': {wrong!r} cannot train space {_quote(space)} (family "
        f"{family!r} is {kind}). Fix: leave training.trial_fn out (auto: the family's own "
        f"trainer, {family_trainer(family)!r}), or choose a space the trainer can train."
    )


def where_am_i() -> dict[str, Any]:
    """Node id, host name and pid of the current process (Ray-aware)."""
    import os
    import socket

    info: dict[str, Any] = {"hostname": socket.gethostname(), "pid": os.getpid(), "node_id": None}
    try:
        import ray

        if ray.is_initialized():
            info["node_id"] = ray.get_runtime_context().get_node_id()
    except Exception:  # pragma: no cover - best effort only
        pass
    return info


def run_guarded(
    fn: Callable[..., TrialResult], payload: TrialPayload, data: Any, reporter: Any
) -> TrialResult:
    """Run a trial function; any exception becomes a FAIL result with its traceback.

    A trial never takes the study down: the driver records the failure and
    goes on.
    """
    start = time.perf_counter()
    started_at = time.time()
    try:
        result = fn(payload, data, reporter)
    except BaseException as exc:  # noqa: BLE001 - every trial error is recorded
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        result = TrialResult(
            number=payload.number,
            state=FAIL,
            error=strip_ansi(f"{type(exc).__name__}: {exc}"),
            traceback=strip_ansi(traceback.format_exc()),
            reason=failure_reason(exc),
        )
    result.error, result.traceback = strip_ansi(result.error), strip_ansi(result.traceback)
    result.duration_s = result.duration_s or (time.perf_counter() - start)
    result.extra.setdefault("started_at", started_at)
    result.extra.setdefault("finished_at", time.time())
    if result.state == COMPLETE and (result.value is None or not math.isfinite(result.value)):
        result.state = FAIL
        result.reason = result.reason or "non-finite objective"
        result.error = result.error or f"objective value is {result.value!r}"
    for key, value in where_am_i().items():
        if getattr(result, key) is None:
            setattr(result, key, value)
    return result


def failure_reason(exc: BaseException) -> str:
    """The reason recorded for a trial that raised ``exc``."""
    name = type(exc).__name__
    if name == "ResourceExhaustedError" or isinstance(exc, MemoryError):
        return "out of memory"
    if isinstance(exc, NonFiniteLossError):
        return "non-finite loss"
    if name in {"InvalidArgumentError", "ValueError"} and "shape" in str(exc).lower():
        return "invalid graph"
    return "exception"


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


class TrialPruned(Exception):
    """Raised inside a trial function when the driver asked it to stop."""
