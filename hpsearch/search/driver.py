"""The search loop: ask the sampler, run the trial on Ray, persist, tell the study.

``run_search(spec)`` is the Python entry point behind ``hpsearch run``; the loop
itself is :class:`SearchLoop`, whose steps call the hooks of user callbacks
(``hpsearch.search.callbacks``). The driver process is the only writer of the run
directory and of the study storage; Ray workers only compute and send results back.

Order of writes for one finished trial (the resume logic depends on it):
trial files -> ``trials/<n>/trial.json`` (atomic; the commit point) ->
``study.tell`` (then the callbacks' ``on_trial_end``). A driver killed anywhere in
between leaves either no ``trial.json`` (the trial re-runs) or a ``trial.json``
whose study entry is still RUNNING (resume tells the study what the file says).

While it runs, the driver holds an advisory lock on ``RUN_DIR/.lock``, so a
second driver on the same run is refused instead of re-queuing live trials.
``HPSEARCH_FAULT`` kills the driver at named points of this order for fault
drills (``hpsearch.core.store.fault_point``, docs/faults.md).

With an ``output`` URI the run directory is a local staging copy, and
``hpsearch.core.remote`` pushes it at each commit point (a trial's files, then the
study, then its ``trial.json``), so the run at the URI resumes the same way.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as _dt
import math
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from hpsearch.core import atomic
from hpsearch.core.errors import RunDirError, StudyStopped, UserError
from hpsearch.core.store import RunDir, fault_point
from hpsearch.search.callbacks import Callback, Hooks
from hpsearch.search.trial import (
    COMPLETE,
    FAIL,
    PRUNED,
    TrialPayload,
    TrialResult,
    check_trainer_fits,
    strip_ansi,
    trainer_for,
)

if TYPE_CHECKING:
    import optuna

    from hpsearch.core.data import PreparedData
    from hpsearch.core.remote import RunSync
    from hpsearch.core.spec import Spec
    from hpsearch.search.runner import TrialRunner
    from search_spaces import Space
    from search_spaces.specs import InputSpec

__all__ = [
    "Callback",
    "Interrupted",
    "SearchLoop",
    "SearchSummary",
    "counted_trials",
    "open_run",
    "recover",
    "run_search",
]

FAMILY_NEEDS = {"cnn": "image", "text": "text"}

# trials done, failed and pruned towards the budget, and the best (number, value) or None
Counts = tuple[int, int, int, tuple[int, float] | None]


@dataclass
class SearchSummary:
    run_dir: Path
    n_complete: int = 0
    n_failed: int = 0
    n_pruned: int = 0
    best_number: int | None = None
    best_value: float | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    stopped: str | None = None
    elapsed_s: float = 0.0
    requeued: list[int] = field(default_factory=list)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C: trials in flight were cancelled, recorded and queued for --resume."""

    def __init__(self, summary: SearchSummary, n_cancelled: int):
        super().__init__(f"stopped by the user; {n_cancelled} trial(s) in flight cancelled")
        self.summary = summary
        self.n_cancelled = n_cancelled


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM (a batch scheduler's or a container's stop) interrupts the loop like
    Ctrl-C, so the trials in flight are cancelled, recorded and queued for --resume.

    ``ray.init`` turns SIGTERM into ``sys.exit``, which skips that bookkeeping. A second
    SIGTERM during the cleanup is ignored; SIGKILL still ends the process. Only the main
    thread can set handlers, elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = []

    def handler(signum, frame):
        if fired:
            return
        fired.append(signum)
        raise KeyboardInterrupt("SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _direction(metric: str) -> str:
    from hpsearch.core.metrics import get_metric

    return "maximize" if get_metric(metric).greater_is_better else "minimize"


def check_space_fits_data(space: Space, input_spec: InputSpec, outputs: Any = None) -> None:
    from search_spaces.families import is_tree_family

    if is_tree_family(space.family) and outputs is not None and len(outputs.heads) > 1:
        raise UserError(
            f"space {space.name!r} (tree family {space.family}) predicts one target, but the "
            f"data has {len(outputs.heads)} target heads. Fix: choose a network space "
            "(tabular_multi_output) for several targets, or give one `data.target`."
        )
    need = FAMILY_NEEDS.get(space.family)
    if need == "image" and input_spec.image_shape is None:
        raise UserError(
            f"space {space.name!r} (family cnn) needs image input, but the data has none. "
            "Fix: set `data.image_shape` in the spec (for example [8, 8, 1] for sklearn:digits)."
        )
    if need == "text" and input_spec.text is None:
        raise UserError(
            f"space {space.name!r} (family text) needs a text column, but the data has none. "
            "Fix: choose a tabular space (tabular_mlp) or mark a column as text in `data.columns`."
        )


def _trial_arrays(prepared: PreparedData, tree: bool = False) -> dict[str, Any]:
    """What the workers get in the object store; a cross-validated run's labelled rows with
    their folds (``hpsearch.search.folds.cv_data``). A run whose space is a tree family
    (``tree``) ships the tree matrix instead of the network inputs, ``{"x": {split: {"tree":
    matrix}}}``, with ``tree_meta`` (its categorical columns: ``Preprocessor.tree_meta``)."""
    x: dict[str, Any] = dict(prepared.x)
    extra: dict[str, Any] = {}
    if tree:
        from hpsearch.search.tree_trainer import TREE_INPUT

        x = {split: {TREE_INPUT: matrix} for split, matrix in prepared.tree_x.items()}
        extra = {"tree_meta": prepared.preprocessor.tree_meta()}
    if prepared.folds:
        from hpsearch.search.folds import cv_data

        return cv_data(x, prepared.y, prepared.split, extra.get("tree_meta"))
    return {"x": x, "y": {k: v for k, v in prepared.y.items() if v is not None}, **extra}


def enqueue_portfolio(study: optuna.Study, space: Space) -> list[int]:
    """Queue the space's portfolio configurations (``space.portfolio``) before the sampler
    takes over, in order, each with the user attribute ``portfolio: i``: all of them on a
    fresh study; on a resumed one only those not in it yet (no trial with ``portfolio: i``
    or with the same parameters). Returns the indices queued."""
    if not space.portfolio:
        return []
    trials = study.get_trials(deepcopy=False)
    seen = {t.user_attrs.get("portfolio") for t in trials}
    params = [dict(t.params) for t in trials]
    queued = []
    for i, config in enumerate(space.portfolio):
        flat = space.flatten(dict(config))
        if i in seen or flat in params:
            continue
        study.enqueue_trial(flat, user_attrs={"portfolio": i})
        queued.append(i)
    return queued


# trials in flight at the end of a time budget train on for this share of it (at least
# MIN_DEADLINE_GRACE_S), then stop with what they have (the payload's training["deadline"])
DEADLINE_GRACE = 0.1
MIN_DEADLINE_GRACE_S = 10.0


def _trial_splits(prepared: PreparedData) -> tuple[str, ...]:
    """The splits a trial predicts: valid, holdout and test; cross-validated, oof and test."""
    names = ("oof", "test") if prepared.folds else ("valid", "holdout", "test")
    return tuple(s for s in names if s == "oof" or s in prepared.x)


class _Progress:
    """The live progress line; ``prefix`` starts every line (``hpsearch pipeline`` puts the
    family searched and the best of the families before it there)."""

    def __init__(
        self,
        total: int,
        stream: TextIO | None = None,
        enabled: bool = True,
        prefix: str = "",
        timeout_s: float | None = None,
    ):
        self.total = total
        self.timeout_s = timeout_s  # a time budget: the ETA is at most the time left
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.prefix = prefix
        self.start = time.time()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.last = 0.0

    def line(
        self,
        done: int,
        failed: int,
        pruned: int,
        running: int,
        best: tuple[int, float] | None,
        finished_now: int,
    ) -> str:
        elapsed = time.time() - self.start
        finished = done + failed + pruned
        left: float | None = None
        if finished_now > 0 and finished < self.total:
            left = elapsed / finished_now * (self.total - finished)
        elif finished >= self.total:
            left = 0.0
        if self.timeout_s is not None:  # no new trial after the budget's time
            spare = max(0.0, float(self.timeout_s) - elapsed)
            left = spare if left is None else min(left, spare)
        eta = "?" if left is None else _fmt_s(left)
        best_s = "-" if best is None else f"{best[1]:.5g} (#{best[0]})"
        return (
            f"{self.prefix}[{finished}/{self.total}] done {done}  failed {failed}  pruned {pruned}"
            f"  running {running}"
            f"  | best {best_s} | {_fmt_s(elapsed)} elapsed, ETA {eta}"
        )

    def show(self, text: str, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.time()
        if self.tty:
            if force or now - self.last > 0.5:
                self.stream.write("\r" + text.ljust(100)[: 160 + len(self.prefix)])
                self.stream.flush()
                self.last = now
        elif force:
            self.stream.write(text + "\n")
            self.stream.flush()

    def note(self, text: str) -> None:
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r" + " " * (110 + len(self.prefix)) + "\r")
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _fmt_s(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


# --------------------------------------------------------------------------- run set-up


def open_run(
    spec: Spec, resume: bool, path: str | Path | None = None
) -> tuple[RunDir, Space, PreparedData, dict[str, Any]]:
    """Validate everything against the run directory (``path``, default ``spec.output``)
    and prepare the data.

    Nothing is written before every check has passed.
    """
    from hpsearch.core.data import load_prepared, prepare
    from search_spaces import load_space

    space = load_space(spec.space)
    rd = RunDir(spec.output if path is None else path)
    if rd.path.exists() and not rd.path.is_dir():
        raise RunDirError(
            f"output {rd.path} is a file, not a directory. "
            "Fix: set `output` to a directory path (it is created when missing)."
        )
    if rd.exists():
        meta = rd.read_meta()
        diffs = _differences(meta, spec, space, rd)
        if not resume:
            if diffs:
                raise RunDirError(
                    f"run directory {rd.path} already holds run {meta.get('name')!r} made from "
                    "a different spec: " + "; ".join(diffs) + ". "
                    "Fix: set `output` to a new directory for this spec "
                    "(hpsearch never overwrites a run)."
                )
            raise RunDirError(
                f"run directory {rd.path} already holds run {meta.get('name')!r} "
                f"({meta.get('n_trials_done', '?')} trials recorded). "
                "Fix: add --resume to continue it, or set `output` to a new directory."
            )
        if diffs:
            raise RunDirError(
                f"cannot resume {rd.path}: " + "; ".join(diffs) + ". "
                "Fix: restore the original spec, or start a new run with a different `output`."
            )
        rd.check_storage()
        prepared = load_prepared(rd.path, spec)
        check_space_fits_data(space, prepared.input_spec, prepared.output_spec)
        return rd, space, prepared, meta
    if rd.path.exists() and not rd.is_empty():
        if not rd.is_interrupted_setup():
            raise RunDirError(
                f"output directory {rd.path} exists, is not empty and holds no run. "
                "Fix: choose a new `output` directory; hpsearch never overwrites files."
            )
        if not resume:
            raise RunDirError(
                f"output directory {rd.path} holds the set-up of a run that was interrupted "
                "before its first trial (no run.json). "
                "Fix: add --resume to set it up again, or choose a new `output` directory."
            )
    _check_study_name_free(spec)
    prepared = prepare(spec, run_dir=None)
    check_space_fits_data(space, prepared.input_spec, prepared.output_spec)
    return rd, space, prepared, {}


def _check_study_name_free(spec: Spec) -> None:
    """A new run on a shared ``storage`` URL must not adopt another run's study (its trials,
    its budget, its RUNNING trials taken for a dead driver's)."""
    from hpsearch.core.errors import redact
    from hpsearch.core.spec import sqlite_file, storage_url_to_open

    if not spec.storage:
        return  # the default SQLite file lives in the new run directory
    if spec.storage.startswith("sqlite:///"):
        db = sqlite_file(spec.storage)
        if db is None or not Path(db).is_file():
            return  # connecting would create the file
    import optuna

    shown = redact(spec.storage)  # messages never show a password
    url = storage_url_to_open(spec.storage, "spec field 'storage'")
    try:
        names = optuna.get_all_study_names(storage=url)
    except Exception as exc:  # driver missing, host unreachable, bad credentials
        raise RunDirError(
            f"spec field 'storage': cannot open {shown!r}: {type(exc).__name__}: "
            f"{redact(str(exc).splitlines()[0]) if str(exc) else ''}. Fix: check the URL, that "
            "the database is reachable and its driver installed, or set `storage: null` for a "
            "SQLite file in the run directory."
        ) from None
    if spec.name in names:
        raise RunDirError(
            f"spec field 'name': the storage {shown!r} already holds a study named "
            f"{spec.name!r}, which belongs to another run. Fix: give this run a new `name`, "
            "or continue that run with --resume on its own `output`."
        )


# data settings that shape the prepared arrays; the data files themselves are checked by
# content (their paths may change: a resumed cluster job stages them in a new directory)
_DATA_SETTINGS = ("target", "id", "task", "image_shape", "columns")


def _frozen_spec(rd: RunDir) -> dict[str, Any]:
    """The run's frozen ``spec.yaml`` as a mapping ({} when it is missing), read with the
    spec files' safe loader: a damaged or tampered one (an alias bomb, not YAML, not a
    mapping) is a RunDirError naming the file, never a value printed whole."""
    import yaml

    from hpsearch.core.spec import QUOTE_MAX
    from search_spaces import safe_yaml

    path = rd.path / "spec.yaml"
    fix = "Fix: restore it from a copy of the run; hpsearch does not rebuild it."
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError:
        return {}
    except UnicodeDecodeError as exc:
        raise RunDirError(
            f"{path} is damaged (not UTF-8 text: byte 0x{exc.object[exc.start]:02x} at "
            f"offset {exc.start}). {fix}"
        ) from None
    try:
        frozen = safe_yaml.load(text)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        raise RunDirError(
            f"{path} is damaged (not a spec: {' '.join(str(problem).split())[:QUOTE_MAX]}). {fix}"
        ) from None
    if frozen is None:
        return {}
    if not isinstance(frozen, dict):
        raise RunDirError(
            f"{path} is damaged (it holds {type(frozen).__name__}, not a spec). {fix}"
        )
    return frozen


def _differences(meta: dict[str, Any], spec: Spec, space: Space, rd: RunDir) -> list[str]:
    """What in ``spec`` differs from the run it points at (space, split, metric, the data
    settings of the frozen ``spec.yaml``)."""
    from hpsearch.core.spec import _quote

    diffs = []
    stored = _frozen_spec(rd).get("data") or {}
    if not isinstance(stored, dict):
        stored = {}
    now = spec.to_dict()["data"]
    for key in _DATA_SETTINGS:
        if key not in stored:
            continue
        old, new = stored[key], now[key]
        if key == "task" and new is None:
            continue  # inferred again; the stored task is what the run uses
        if key == "task" and old is None:
            old = meta.get("task")  # inferred when the run was created
        if key == "columns":
            old, new = old or {}, new or {}
        if old != new:
            diffs.append(
                f"data.{key} {_quote(new)} differs from the stored {_quote(old)} (spec.yaml)"
            )
    if meta.get("space_fingerprint") != space.fingerprint():
        diffs.append(f"the space {spec.space!r} differs from the stored one (space.yaml)")
    if meta.get("split") != spec.split.model_dump():
        diffs.append(f"split {spec.split.model_dump()} differs from the stored {meta.get('split')}")
    if meta.get("metric") != spec.metric:
        diffs.append(f"metric {spec.metric!r} differs from the stored {meta.get('metric')!r}")
    return diffs


def _init_run_dir(rd: RunDir, spec: Spec, space: Space, prepared: PreparedData) -> dict[str, Any]:
    import yaml

    from hpsearch.core.data import save_prepared

    rd.path.mkdir(parents=True, exist_ok=True)
    save_prepared(prepared, rd.path, spec)
    frozen = spec.to_dict(redact_secrets=True)  # files never hold a storage password
    atomic.write_text(rd.path / "spec.yaml", yaml.safe_dump(frozen, sort_keys=False))
    atomic.write_text(rd.path / "space.yaml", yaml.safe_dump(space.to_dict(), sort_keys=False))
    meta = {
        "format": 1,
        "name": spec.name,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "space": space.name,
        "family": space.family,
        "space_fingerprint": space.fingerprint(),
        "data_fingerprint": prepared.fingerprint,
        "split": spec.split.model_dump(),
        "task": prepared.task,
        "metric": spec.metric,
        "direction": _direction(spec.metric),
        "classes": list(prepared.classes) if prepared.classes is not None else None,
        "input_spec": prepared.input_spec.to_dict(),
        "output_spec": prepared.output_spec.to_dict(),
        "has_test": "test" in prepared.x,
        "study_name": spec.name,
        "storage": frozen["storage"],
    }
    fault_point("kill_during_setup", 0)
    rd.write_meta(meta)
    return meta


def _open_study(
    rd: RunDir, spec: Spec, space: Space, meta: dict[str, Any], max_concurrent: int
) -> optuna.Study:
    """Create or load the run's study, then give it the spec's sampler (which may learn
    from the trials the study already holds)."""
    import optuna

    from hpsearch.search.samplers import make_pruner, make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    from hpsearch.core.spec import storage_url_to_open

    # the spec's own URL (run.json keeps it redacted); a redacted one (a frozen spec.yaml)
    # takes its password from $HPSEARCH_STORAGE_URL or the client's password file
    url = storage_url_to_open(spec.storage or rd.default_storage, "spec field 'storage'")
    storage: str | optuna.storages.BaseStorage = url
    if url.startswith("sqlite"):
        storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    study = optuna.create_study(
        study_name=meta.get("study_name", spec.name),
        storage=storage,
        # cross-validated trials report once per fold: the pruner's budget is the folds
        pruner=make_pruner(spec.pruner, spec.split.folds or spec.training.max_epochs),
        direction=meta.get("direction") or _direction(spec.metric),
        load_if_exists=True,
    )
    study.sampler = make_sampler(
        spec.sampler.name,
        space,
        seed=spec.sampler.seed,
        max_concurrent=max_concurrent,
        n_startup_trials=spec.sampler.n_startup_trials,
        n_existing_trials=len(study.get_trials(deepcopy=False)),
    )
    return study


def _check_study_knows_trials(study: optuna.Study, rd: RunDir) -> None:
    """Every recorded trial must be in the study: new trials would take their numbers and
    overwrite their directories."""
    known = {t.number for t in study.get_trials(deepcopy=False)}
    unknown = [n for n in rd.trial_numbers() if n not in known]  # a damaged trial.json too
    if unknown:
        raise RunDirError(
            f"the study {study.study_name!r} in {rd.storage_url()} does not know trial(s) "
            f"{', '.join(map(str, unknown[:10]))}{' ...' if len(unknown) > 10 else ''} recorded "
            f"in {rd.trials_dir}: the study storage was replaced or emptied. Fix: restore the "
            "run's study storage (study.db or the `storage` URL), or start a new run with a "
            "different `output`."
        )


def recover(
    study: optuna.Study, rd: RunDir, space: Space, notes: list[str] | None = None
) -> tuple[int, int]:
    """Settle what a dead driver (or damage) left behind: trials left RUNNING are told what
    their ``trial.json`` says, else failed and re-queued; damaged trials are repaired
    (:func:`repair_damaged`). Returns (told from files, re-queued or re-run); ``notes`` gets
    one line per repaired trial."""
    import optuna

    rd.remove_incomplete_trial_dirs()
    repaired = repair_damaged(study, rd, notes)
    recovered = requeued = 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        rec = rd.read_trial(t.number)
        if rec is not None and rec.state in (COMPLETE, PRUNED, FAIL):
            _tell_from_record(study, t, rec)
            recovered += 1
            continue
        study._storage.set_trial_user_attr(t._trial_id, "requeued", True)
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        if t.params:
            study.enqueue_trial(dict(t.params), user_attrs={"requeued_from": t.number})
        requeued += 1
    return recovered, requeued + repaired


def _tell_from_record(study: optuna.Study, t: optuna.trial.FrozenTrial, rec: Any) -> None:
    """Tell the study the outcome that trial ``t``'s ``trial.json`` records."""
    import optuna

    state = {
        COMPLETE: optuna.trial.TrialState.COMPLETE,
        PRUNED: optuna.trial.TrialState.PRUNED,
    }.get(rec.state, optuna.trial.TrialState.FAIL)
    for key in ("node_id", "hostname", "reason"):
        if rec.info.get(key):
            study._storage.set_trial_user_attr(t._trial_id, key, rec.info[key])
    if rec.info.get("error"):
        error = strip_ansi(str(rec.info["error"]))[:500]
        study._storage.set_trial_user_attr(t._trial_id, "error", error)
    study.tell(t.number, rec.value if rec.state == COMPLETE else None, state=state)


def repair_damaged(study: optuna.Study, rd: RunDir, notes: list[str] | None = None) -> int:
    """Move aside every committed trial that cannot be used as it is (a damaged
    ``trial.json``, a recorded prediction file missing or not matching its SHA-256:
    :meth:`RunDir.trial_damage`) to ``damaged/trials/<n>``, and run again what it held.

    A trial the study still has RUNNING is then re-queued like any trial a dead driver left
    (by :func:`recover`). One the study has COMPLETE is run again with its parameters: the
    new trial carries ``replaces: <n>``, and :func:`counted_trials` leaves trial n out of the
    budget, so the run still ends with its ``n_trials``. A FAIL or PRUNED trial is only moved
    aside: the study keeps its outcome, and it has no predictions to lose. Returns the number
    of trials queued to run again."""
    import optuna

    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    replaced = _replaced_numbers(by_number.values())
    queued = 0
    for number in rd.trial_numbers():
        why = rd.trial_damage(number)
        t = by_number.get(number)
        if why is None or t is None:
            continue
        rerun = t.state == optuna.trial.TrialState.COMPLETE and number not in replaced
        if rerun:  # queued before the move: a driver killed in between repairs it again once
            attrs = {"requeued_from": number, "replaces": number}
            study.enqueue_trial(dict(t.params), user_attrs=attrs)
            queued += 1
        dest = rd.move_aside(number, why)
        if notes is not None:
            again = rerun or t.state == optuna.trial.TrialState.RUNNING  # re-queued below
            then = "queued to run again" if again else "kept in the study as it ended"
            notes.append(f"resume: trial {number} moved to {dest} ({why}); {then}")
    return queued


def _replaced_numbers(trials: Any) -> set[int]:
    """Numbers of trials that a later trial runs again (``replaces``): out of the budget."""
    return {int(t.user_attrs["replaces"]) for t in trials if "replaces" in t.user_attrs}


def counted_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials that count towards the budget: finished, not interrupted or re-queued, and
    not run again by a later trial (``replaces``: a damaged trial repaired by --resume)."""
    import optuna

    final = (
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.PRUNED,
        optuna.trial.TrialState.FAIL,
    )
    trials = study.get_trials(deepcopy=False)
    replaced = _replaced_numbers(trials)  # damaged trials that --resume runs again
    return [
        t
        for t in trials
        if t.state in final
        and not t.user_attrs.get("requeued")
        and not t.user_attrs.get("interrupted")
        and t.number not in replaced
    ]


# --------------------------------------------------------------------------- the loop


def run_search(
    spec: Spec,
    *,
    resume: bool = False,
    address: str | None = None,
    n_trials: int | None = None,
    trial_fn: str | Callable[..., TrialResult] | None = None,
    progress: bool = True,
    stream: TextIO | None = None,
    trial_options: dict[str, Any] | None = None,
    callbacks: Sequence[Callback] = (),
    progress_prefix: str = "",
) -> SearchSummary:
    """Run (or resume) the study described by ``spec`` until its budget is spent.

    An ``output`` URI is run in a local staging copy pushed there at every commit
    point (``hpsearch.core.remote.driver_output``). ``trial_fn`` overrides the spec's
    trainer (``training.trial_fn``): a name registered in ``hpsearch.core.registry.TRAINERS``
    (``keras``), a ``module:function`` string or the function itself. ``callbacks``:
    :class:`hpsearch.search.callbacks.Callback` objects whose hooks the loop calls.
    ``progress_prefix`` starts every progress line (``hpsearch pipeline``: the family).

    ``budget.timeout_s`` counts from the start of this call's loop: a resumed run gets
    the whole of it again (``hpsearch pipeline`` passes a family the time it has left).
    """
    from hpsearch.core.remote import driver_output
    from hpsearch.core.spec import require_one_space
    from hpsearch.search.runner import check_resources, ensure_ray

    require_one_space(spec)  # `spaces` (several) or none: `hpsearch pipeline`'s
    with driver_output(spec, resume) as (path, sync):
        rd, space, prepared, meta = open_run(spec, resume, path)
        # a trainer that can train no trial of the space: bad input, found before Ray starts
        check_trainer_fits(trial_fn or spec.training.trial_fn, spec.space, space.family)
        ensure_ray(address)  # a cluster that cannot be reached is bad input: nothing written yet
        # resources no node can give would leave every trial waiting forever: bad input too
        check_resources(spec.resources.cpus_per_trial, spec.resources.gpus_per_trial)
        with rd.locked():
            if not meta and rd.exists():
                raise RunDirError(
                    f"run directory {rd.path} was set up by another hpsearch driver meanwhile. "
                    "Fix: add --resume to continue that run, or set `output` to a new directory."
                )
            loop = SearchLoop(
                spec,
                rd,
                space,
                prepared,
                meta,
                sync,
                n_trials=n_trials,
                trial_fn=trial_fn,
                progress=progress,
                stream=stream,
                trial_options=trial_options,
                callbacks=callbacks,
                progress_prefix=progress_prefix,
            )
            return loop.run()


class SearchLoop:
    """The search loop of :func:`run_search`, run while this process holds the run directory.

    Ask the study, hand the trial to a worker, collect finished trials, write their files,
    tell the study; until the budget (``total`` trials or ``budget.timeout_s``) is spent,
    ``resources.max_failures`` trials failed in a row, or a trial waited longer than
    ``resources.wait_timeout_s`` for a worker. The last two, and a search that ends with no
    complete trial, raise ``StudyStopped`` after the bookkeeping. ``sync``
    (``hpsearch.core.remote.RunSync``) is told of each commit point; it pushes a run whose
    ``output`` is a URI. ``callbacks`` get the hooks of :class:`Callback`.

    Attributes callbacks may read: ``spec``, ``space``, ``run_dir``, ``study`` (once
    started), ``total``, ``live`` (number -> ``optuna.Trial`` in flight), ``summary``.
    """

    study: optuna.Study
    runner: TrialRunner
    prog: _Progress

    def __init__(
        self,
        spec: Spec,
        rd: RunDir,
        space: Space,
        prepared: PreparedData,
        meta: dict[str, Any],
        sync: RunSync,
        *,
        n_trials: int | None = None,
        trial_fn: str | Callable[..., TrialResult] | None = None,
        progress: bool = True,
        stream: TextIO | None = None,
        trial_options: dict[str, Any] | None = None,
        callbacks: Sequence[Callback] = (),
        progress_prefix: str = "",
    ) -> None:
        self.spec, self.rd, self.space, self.prepared = spec, rd, space, prepared
        self.meta, self.sync = meta, sync
        self.total = int(n_trials or spec.budget.n_trials)
        # "auto" (the default): the family's trainer, trees for a tree family
        self.trial_fn = trainer_for(trial_fn or spec.training.trial_fn, space.family)
        self.training = {
            **_training_dict(spec),
            "cpus_per_trial": spec.resources.cpus_per_trial,  # a tree trial's threads
            **(trial_options or {}),
        }
        self.splits = _trial_splits(prepared)
        self.folds = prepared.folds  # cross-validated: K, else None
        self.max_failures = int(spec.resources.max_failures)
        self.hooks = Hooks(callbacks)
        self.summary = SearchSummary(run_dir=rd.path)
        self.live: dict[int, optuna.Trial] = {}
        self.consecutive_failures = 0
        self.last_error = ""
        self.stop_error: str | None = None  # why the search stopped early (StudyStopped)
        self.finished_now = 0  # trials finished by this driver (the ETA's rate)
        self.t0 = time.time()
        self._progress_args = {"stream": stream, "enabled": progress, "prefix": progress_prefix}

    @property
    def run_dir(self) -> Path:
        return self.rd.path

    # -- life cycle ---------------------------------------------------------
    def run(self) -> SearchSummary:
        """Set up, loop until the budget is spent, then update ``run.json``."""
        self.start()
        # SIGTERM interrupts like Ctrl-C, from the first ask to the end of the bookkeeping
        with _sigterm_interrupts():
            try:
                self.hooks("on_search_start", self)
                while self.step():
                    pass
            except KeyboardInterrupt:
                n_cancelled = self.interrupt()
                raise Interrupted(self.summary, n_cancelled) from None
            finally:
                if self.runner.mailbox is not None:
                    self.runner.shutdown()
        return self.close()

    def start(self) -> None:
        """Write a new run's set-up, open the study, settle the trials a dead driver left
        RUNNING and start the workers."""
        from hpsearch.search.runner import TrialRunner

        spec, res = self.spec, self.spec.resources
        if not self.meta:
            self.meta = _init_run_dir(self.rd, spec, self.space, self.prepared)
            self.sync.setup_written()
        self.study = _open_study(self.rd, spec, self.space, self.meta, res.max_concurrent)
        _check_study_knows_trials(self.study, self.rd)
        notes: list[str] = []
        recovered, requeued = recover(self.study, self.rd, self.space, notes)
        self.portfolio = enqueue_portfolio(self.study, self.space)  # known-good ones first
        self.prog = _Progress(self.total, timeout_s=spec.budget.timeout_s, **self._progress_args)
        for line in notes:
            self.prog.note(line)
        if recovered or requeued:
            self.prog.note(
                f"resume: {recovered} finished trial(s) recovered from their files, "
                f"{requeued} interrupted trial(s) queued to run again"
            )
        self.runner = TrialRunner(
            cpus_per_trial=res.cpus_per_trial,
            gpus_per_trial=res.gpus_per_trial,
            max_concurrent=res.max_concurrent,
            trial_fn=self.trial_fn,
            warm_workers=res.warm_workers,
            wait_timeout_s=res.wait_timeout_s,
            parallel_folds=res.parallel_folds,
        )
        from search_spaces.families import is_tree_family

        self.runner.start(_trial_arrays(self.prepared, tree=is_tree_family(self.space.family)))
        self.t0 = time.time()

    def interrupt(self) -> int:
        """Ctrl-C or SIGTERM: cancel and record the trials in flight, update ``run.json``.
        Returns how many trials were cancelled."""
        n_cancelled = self.cancel_in_flight("interrupted")
        self.runner.shutdown()
        self.prog.close()
        _fill_summary(self.summary, self.study, self.t0)
        _update_meta(self.rd, self.summary)
        self.sync.finished(strict=False)
        self.hooks("on_search_end", self.summary)
        return n_cancelled

    def close(self) -> SearchSummary:
        """The budget is spent or the search stopped: update ``run.json`` and report."""
        self.prog.close()
        _fill_summary(self.summary, self.study, self.t0)
        _update_meta(self.rd, self.summary)
        self.sync.finished()
        self.hooks("on_search_end", self.summary)
        problem = self.stop_error or self.no_complete_trial()
        if problem:
            raise StudyStopped(problem)
        return self.summary

    def no_complete_trial(self) -> str | None:
        """Why a search that ends with no complete trial failed (its most common failure
        reason); None when some trial completed."""
        if self.summary.n_complete:
            return None
        s = self.summary
        if s.n_failed:
            why = f"{s.n_failed} failed, most often {_most_common_failure(self.study)}"
        elif s.n_pruned:
            why = f"all {s.n_pruned} finished trial(s) were pruned"
        else:
            why = s.stopped or "no trial finished"
        return (
            f"the search ended with no complete trial: {why}. Fix: read the failed trials' "
            f"errors (`hpsearch trials {self.rd.path}`), correct their cause (spec, space, data "
            "or trial function), then continue with --resume."
        )

    # -- the loop's steps -----------------------------------------------------
    def step(self) -> bool:
        """Fill the free slots, wait briefly for results and record them; False when over."""
        counts = self.counts()
        done, failed, pruned, _ = counts
        finished = done + failed + pruned
        timeout_s = self.spec.budget.timeout_s
        timed_out = timeout_s is not None and time.time() - self.t0 > timeout_s
        if self.consecutive_failures >= self.max_failures:
            self.cancel_in_flight("interrupted")
            self.summary.stopped = (
                f"stopped after {self.consecutive_failures} consecutive failed trials "
                f"(resources.max_failures = {self.max_failures}); last error: {self.last_error}"
            )
            self.stop_error = (
                f"{self.summary.stopped}. Fix: read the failed trials' errors "
                f"(`hpsearch trials {self.rd.path}`), correct their cause (spec, space, data or "
                "trial function), then continue with --resume; finished trials are kept."
            )
            return False
        while (
            not timed_out
            and self.runner.free_slots() > 0
            and finished + len(self.live) < self.total
        ):
            self.launch()
        self.show_progress(counts)
        if not self.live:
            if timed_out and finished < self.total:
                self.summary.stopped = f"time budget of {timeout_s} s spent"
            return False
        results = self.runner.wait(timeout=0.5)
        # a trial's reports reach the mailbox before its result: drained here, a finished
        # trial's last epochs are recorded before it is told
        self.report_epochs()
        for payload, result in results:
            self.finish(payload, result)
            self.show_progress(self.counts(), force=True)
        late = self.runner.overdue()
        if late:
            self.stop_waiting(late[0])
            return False
        return True

    def stop_waiting(self, late: TrialPayload) -> None:
        """A trial waited longer than ``resources.wait_timeout_s`` for a worker: cancel the
        trials in flight (queued again for --resume) and stop with the reason."""
        from hpsearch.search.runner import describe_resources, free_resources

        request = self.runner.request()
        wanted, free = describe_resources(request), free_resources(request)
        n_cancelled = self.cancel_in_flight("interrupted")
        timeout = self.spec.resources.wait_timeout_s
        self.summary.stopped = (
            f"trial {late.number} waited more than {timeout:g} s "
            f"(resources.wait_timeout_s) for a Ray worker with {wanted} and did not start"
        )
        self.stop_error = (
            f"{self.summary.stopped}; the cluster has {free} free. The search stopped; "
            f"{n_cancelled} trial(s) in flight cancelled and queued again. Fix: free the "
            "cluster's resources (`ray status` shows what holds them), or lower "
            "`resources.max_concurrent` or the resources per trial (each warm worker keeps its "
            "own), or raise `resources.wait_timeout_s` (null waits forever); then continue "
            "with --resume; finished trials are kept."
        )

    def counts(self) -> Counts:
        """Trials done, failed and pruned towards the budget; the best (number, value)."""
        import optuna

        ts = counted_trials(self.study)
        done = [t for t in ts if t.state == optuna.trial.TrialState.COMPLETE]
        failed = sum(t.state == optuna.trial.TrialState.FAIL for t in ts)
        pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in ts)
        best = None
        if done:
            pick = max if self.study.direction.name == "MAXIMIZE" else min
            b = pick(done, key=lambda t: t.value)
            best = (b.number, b.value)
        return len(done), failed, pruned, best

    def show_progress(self, counts: Counts, force: bool = False) -> None:
        done, failed, pruned, best = counts
        line = self.prog.line(done, failed, pruned, len(self.live), best, self.finished_now)
        self.prog.show(line, force=force)

    def deadline(self) -> float | None:
        """When a trial in flight stops training (wall-clock seconds since the epoch; None
        without a time budget): the end of ``budget.timeout_s`` plus a grace of
        :data:`DEADLINE_GRACE` of it (at least :data:`MIN_DEADLINE_GRACE_S`). A trainer that
        reaches it keeps the model it has so far (boosters their rounds, networks their best
        epoch), so a slow trial cannot hold a search long past its budget."""
        timeout_s = self.spec.budget.timeout_s
        if timeout_s is None:
            return None
        grace = max(MIN_DEADLINE_GRACE_S, DEADLINE_GRACE * float(timeout_s))
        return self.t0 + float(timeout_s) + grace

    def launch(self) -> None:
        """Ask the study for a trial and hand it to a free worker."""
        trial = self.study.ask()
        config = self.space.sample_optuna(trial)
        trial.set_user_attr("config", config)
        payload = TrialPayload(
            number=trial.number,
            params=config,
            family=self.space.family,
            metric=self.spec.metric,
            task=self.prepared.task,
            seed=int(self.spec.sampler.seed or 0) * 100_003 + trial.number,
            training={**self.training, "deadline": self.deadline()},
            inputs=self.prepared.input_spec.to_dict(),
            outputs=self.prepared.output_spec.to_dict(),
            splits=self.splits,
            pruning=self.spec.pruner not in (None, "none"),
            folds=self.folds,
        )
        self.live[trial.number] = trial
        self.runner.submit(payload)
        self.hooks("on_trial_start", payload)

    def report_epochs(self) -> None:
        """Tell the study each epoch value the workers posted; ask to stop pruned trials."""
        for number, step, value in self.runner.drain_reports():
            trial = self.live.get(number)
            if trial is None or not math.isfinite(value):
                continue
            trial.report(value, step)
            if trial.should_prune():
                self.runner.request_stop(number)

    def finish(self, payload: TrialPayload, result: TrialResult) -> None:
        """Commit a finished trial: its files and ``trial.json``, then the study's tell."""
        import optuna

        trial = self.live.pop(payload.number)
        extra = {
            "family": self.space.family,
            "metric": self.spec.metric,
            "task": self.prepared.task,
            "classes": self.meta.get("classes"),
            "sampler": self.spec.sampler.name,
        }
        if "portfolio" in trial.user_attrs:  # a known-good configuration of the space
            extra["portfolio"] = trial.user_attrs["portfolio"]
        if self.folds:
            fingerprint = self.prepared.split.get("folds_fingerprint")
            extra["cv"] = {"folds": self.folds, "folds_fingerprint": fingerprint}
        # failure texts are stored without terminal colour codes, whatever the trainer sent
        result.error, result.traceback = strip_ansi(result.error), strip_ansi(result.traceback)
        self.rd.write_trial(result, payload.params, extra)
        self.sync.trial_written(payload.number)  # before the tell: see hpsearch.core.remote
        fault_point("kill_after_commit", payload.number)
        for key in ("node_id", "hostname", "reason"):
            if getattr(result, key):
                trial.set_user_attr(key, getattr(result, key))
        if result.state == COMPLETE:
            self.study.tell(trial, result.value)
            self.consecutive_failures = 0
        elif result.state == PRUNED:
            self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            self.consecutive_failures = 0
        else:
            trial.set_user_attr("error", (result.error or "")[:500])
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            self.consecutive_failures += 1
            self.last_error = f"trial {payload.number}: {result.reason}: {result.error}"
            self.prog.note(f"trial {payload.number} failed ({result.reason}): {result.error}")
        fault_point("kill_after_trial", payload.number)
        self.finished_now += 1
        self.hooks("on_trial_end", payload, result)

    def cancel_in_flight(self, attr: str) -> int:
        """Stop every trial in flight, record it (user attribute ``attr``) and queue its
        parameters again. Returns how many trials were stopped."""
        n_cancelled = self._cancel_submitted(attr)
        # Trials the interrupt caught between the runner and the study (asked but not yet
        # submitted, or collected but not yet told): settle them from their files, else
        # record them as interrupted and queue their parameters again.
        for number, trial in list(self.live.items()):
            self.live.pop(number)
            if self._tell_from_file(number, trial):
                continue
            self._requeue(trial, number, attr, trial.user_attrs.get("config"))
            n_cancelled += 1
        return n_cancelled

    def _cancel_submitted(self, attr: str) -> int:
        payloads = self.runner.cancel_all()
        for p in payloads:
            trial = self.live.pop(p.number, None)
            if trial is not None:
                self._requeue(trial, p.number, attr, p.params)
        return len(payloads)

    def _tell_from_file(self, number: int, trial: optuna.Trial) -> bool:
        rec = self.rd.read_trial(number)
        if rec is not None and rec.state == COMPLETE and rec.value is not None:
            self.study.tell(trial, rec.value)
            return True
        return False

    def _requeue(
        self, trial: optuna.Trial, number: int, attr: str, config: dict[str, Any] | None
    ) -> None:
        import optuna

        trial.set_user_attr(attr, True)
        self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        if config is not None:
            self.study.enqueue_trial(
                self.space.flatten(config), user_attrs={"requeued_from": number}
            )
            self.summary.requeued.append(number)


def _most_common_failure(study: optuna.Study) -> str:
    """``"(2 of 2) with exception: PluginError: ..."``: the most common failure reason of the
    study's failed trials, with the error of the latest trial that failed so."""
    import optuna

    failed = [t for t in counted_trials(study) if t.state == optuna.trial.TrialState.FAIL]
    reasons = collections.Counter(t.user_attrs.get("reason") or "unknown" for t in failed)
    if not reasons:
        return "(no reason recorded)"
    reason, n = reasons.most_common(1)[0]
    errors = [t.user_attrs.get("error") for t in failed if t.user_attrs.get("reason") == reason]
    error = next((e for e in reversed(errors) if e), "")
    lines = (strip_ansi(error) or "").strip().splitlines()
    first = lines[0].rstrip(".") if lines else ""
    first = first if len(first) <= 200 else first[:197] + "..."
    return f"({n} of {len(failed)}) with {reason}" + (f": {first}" if first else "")


def _training_dict(spec: Spec) -> dict[str, Any]:
    tr = spec.training
    return dataclasses.asdict(tr) if dataclasses.is_dataclass(tr) else dict(tr)


def _fill_summary(summary: SearchSummary, study: optuna.Study, t0: float) -> None:
    import optuna

    ts = counted_trials(study)
    summary.n_complete = sum(t.state == optuna.trial.TrialState.COMPLETE for t in ts)
    summary.n_failed = sum(t.state == optuna.trial.TrialState.FAIL for t in ts)
    summary.n_pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in ts)
    summary.elapsed_s = time.time() - t0
    if summary.n_complete:  # the best counted trial (not a damaged one run again)
        pick = max if study.direction.name == "MAXIMIZE" else min
        best = pick(
            (t for t in ts if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: t.value
        )
        summary.best_number, summary.best_value = best.number, best.value
        summary.best_params = best.user_attrs.get("config") or dict(best.params)


def _update_meta(rd: RunDir, summary: SearchSummary) -> None:
    meta = rd.read_meta()
    meta["n_trials_done"] = summary.n_complete + summary.n_failed + summary.n_pruned
    meta["best"] = {"number": summary.best_number, "value": summary.best_value}
    meta["updated"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    rd.write_meta(meta)
