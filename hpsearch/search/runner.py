"""Running trials on Ray: a pool of warm worker actors (default) or a fresh task per trial.

Ray gives a GPU task a fresh worker process per call by default
(``max_calls=1``), which pays the TensorFlow import and device start-up on
every trial. The default here is a pool of long-lived actors, one per slot
(``max_concurrent``), each holding ``cpus_per_trial`` CPUs and
``gpus_per_trial`` GPUs (fractions allowed: two 0.5-GPU actors share a GPU).
An actor clears the Keras session between trials. ``warm_workers: false``
switches to one fresh Ray task per trial (``benchmarks/bench_search.py``,
part 2, measures the difference: docs/benchmarks/search.md).

A worker process that dies is restarted by Ray and its trial retried once;
when it dies again the trial ends FAILED with reason "worker died". An actor
that used its restart is replaced after that trial, so every trial has its
own retry (its ``trial.json`` notes ``worker_restarted``).

Per-epoch values travel through a small mailbox actor: workers post
``(trial, step, value)`` and learn whether the driver asked them to stop
(pruning); the driver drains the mailbox between waits. A trial function that
must have the driver's answer before it goes on (tests that prune
deterministically) calls ``reporter.wait_for_answer()`` after a report.
A worker also posts when it begins a trial: a trial that has not begun
``wait_timeout_s`` after it was submitted is waiting for resources the cluster
does not give (:meth:`TrialRunner.overdue`).

A cross-validated trial (``payload.folds``) runs its trainer once per fold. With
``parallel_folds`` (the default) each fold is its own call on a worker slot
(:func:`hpsearch.search.folds.run_fold`), and the runner puts the folds together
(:class:`hpsearch.search.folds.FoldAccumulator`) when the last one is in: a trial's folds
take the free slots first, and a new trial is asked for only when no fold waits for a slot,
so trials finish sooner and every slot stays busy. Pruning then reports after each fold that
ends, from the runner (no mailbox); a trial told to stop gets no more folds and ends PRUNED at
once, its folds still running finish unread. Without ``parallel_folds``, the folds run one
after another inside the trial's call (:func:`hpsearch.search.folds.run_folds`).

Resources that no node can ever give (``cpus_per_trial: 1000``, a GPU on a
machine without one) are refused before any work by :func:`check_resources`.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hpsearch.search.trial import (
    DEFAULT_TRIAL_FN,
    FAIL,
    TrialPayload,
    TrialResult,
    failure_reason,
    is_keras_trainer,
    resolve_trial_fn,
    run_guarded,
    strip_ansi,
)

QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"}


def ensure_ray(address: str | None = None, **init_kwargs: Any) -> dict[str, Any]:
    """Join ``address`` or start an embedded local Ray; reuse a session that is already up."""
    import ray

    if not ray.is_initialized():
        env = {**QUIET_ENV}
        if "KERAS_BACKEND" in os.environ:
            env["KERAS_BACKEND"] = os.environ["KERAS_BACKEND"]
        kwargs: dict[str, Any] = {
            "address": address,
            "log_to_driver": bool(os.environ.get("HPSEARCH_RAY_LOGS")),
            "logging_level": "ERROR",
            "runtime_env": {"env_vars": env},
        }
        if address is None:
            kwargs["include_dashboard"] = False
        kwargs.update(init_kwargs)
        # Ray retries an unreachable address for many minutes before it gives up
        problem = _unreachable(address) if address else None
        try:
            if problem:
                raise ConnectionError(problem)
            ray.init(**kwargs)
        except ConnectionError as exc:
            from hpsearch.core.errors import UserError

            raise UserError(
                f"cannot connect to the Ray cluster at --address {address!r}: {exc}. "
                "Fix: start the cluster (`ray start --head` or `cluster/local.sh up`) "
                "or drop --address to use an embedded local Ray."
            ) from exc
    return ray.cluster_resources()


def _unreachable(address: str, timeout: float = 5.0) -> str | None:
    """Why no TCP connection opens to a ``host:port`` (or ``ray://host:port``) address;
    None when one does or the address has another form (``auto``)."""
    import socket

    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not port.isdigit():
        return None
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return None
    except OSError as exc:
        return str(exc) or type(exc).__name__


# --------------------------------------------------------------------------- resources

# the spec field behind each Ray resource a trial asks for
RESOURCE_FIELDS = {"CPU": "resources.cpus_per_trial", "GPU": "resources.gpus_per_trial"}
_UNIT = {"CPU": "CPU(s)", "GPU": "GPU(s)"}


def trial_request(
    cpus: float, gpus: float, custom: dict[str, float] | None = None
) -> dict[str, float]:
    """The Ray resources one trial asks for (zero amounts left out, CPUs always named)."""
    request = {"CPU": float(cpus)}
    if gpus:
        request["GPU"] = float(gpus)
    request.update({k: float(v) for k, v in (custom or {}).items() if v})
    return request


def cluster_offers() -> tuple[list[dict[str, float]], list[dict[str, float]], bool]:
    """What a single trial could get: the resources of each alive node, those of each node
    type an autoscaler may add, and whether an autoscaler runs whose node types are unknown
    (then nothing can be ruled out)."""
    import ray

    nodes = [dict(n.get("Resources") or {}) for n in ray.nodes() if n.get("Alive")]
    types: list[dict[str, float]] = []
    try:  # autoscalers that report their node types (KubeRay, autoscaler v2)
        from ray._private.state import state

        config = state.get_cluster_config()
        for group in getattr(config, "node_group_configs", None) or ():
            if group.max_count != 0:
                types.append({k: float(v) for k, v in group.resources.items()})
    except Exception:  # private API: absent or changed in this Ray version
        pass
    if types and not all(types):  # a node type of unknown size
        return nodes, types, True
    return nodes, types, not types and _autoscaler_running()


def _autoscaler_running() -> bool:
    """Whether the cluster's monitor reports an autoscaler that can add nodes (a ``ray up``
    cluster), rather than the read-only one of a manually started cluster or an embedded
    Ray, whose node types are its nodes (``node_<node id>``)."""
    import json

    try:
        from ray._private import ray_constants
        from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_initialized

        if not _internal_kv_initialized():
            return False
        status = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
        report = (json.loads(status) if status else {}).get("autoscaler_report") or {}
    except Exception:  # private API: assume none
        return False
    names = {
        *(report.get("active_nodes") or {}),
        *(report.get("idle_nodes") or {}),
        *(report.get("pending_launches") or {}),
        *(report.get("node_type_mapping") or {}).values(),
    }
    return any(not _READONLY_TYPE.match(str(name)) for name in names)


_READONLY_TYPE = re.compile(r"^node_[0-9a-f]{16,}$")


def check_resources(cpus: float, gpus: float, custom: dict[str, float] | None = None) -> None:
    """Refuse (``UserError``) resources per trial that no node of the cluster has, nor a node
    type its autoscaler can add: such a trial would wait forever. A cluster that cannot be
    asked, or an autoscaler of unknown node types, is given the benefit of the doubt."""
    request = trial_request(cpus, gpus, custom)
    try:
        nodes, types, unknown = cluster_offers()
    except Exception:  # a client connection without the state API: the wait timeout guards
        return
    offers = nodes + types
    if unknown or not offers or any(_fits(request, offer) for offer in offers):
        return
    from hpsearch.core.errors import UserError

    where = "the largest node of the Ray cluster"
    if types:
        where += " (or of the node types its autoscaler can add)"
    for key, amount in request.items():
        most = max(offer.get(key, 0.0) for offer in offers)
        if most + 1e-9 < amount:
            raise UserError(_refusal(key, amount, most, where))
    raise UserError(
        f"spec field 'resources': {describe_resources(request)} per trial, but no single node of the "
        f"Ray cluster has them all (its nodes: {'; '.join(describe_resources(o, request) for o in offers)}"
        "), so no trial could ever start. Fix: lower `cpus_per_trial` or `gpus_per_trial` to "
        "what one node has, or join a cluster with bigger nodes (--address)."
    )


def _fits(request: dict[str, float], offer: dict[str, float]) -> bool:
    return all(offer.get(key, 0.0) + 1e-9 >= amount for key, amount in request.items())


def describe_resources(resources: dict[str, float], keys: dict[str, float] | None = None) -> str:
    """``"4 CPU(s), 1 GPU(s)"``: the amounts of ``resources`` (of those ``keys`` names)."""
    return ", ".join(
        f"{resources.get(k, 0.0):g} {_UNIT.get(k, repr(k))}" for k in (keys or resources)
    )


def _refusal(key: str, amount: float, most: float, where: str) -> str:
    """The one-line refusal of ``amount`` of resource ``key`` when ``most`` is the most a
    node offers."""
    if key in RESOURCE_FIELDS:
        field, unit = RESOURCE_FIELDS[key], _UNIT[key]
        what = f"spec field {field!r}: {amount:g} {unit}"
        leaf = field.split(".")[1]
        smaller = f"set `{leaf}` to at most {most:g}" if most else f"set `{leaf}: 0`"
        bigger = "with GPU nodes" if key == "GPU" and not most else "with bigger nodes"
        join = f"join a cluster {bigger} (--address)"
    else:
        what = f"trial resource {key!r}: {amount:g}"
        smaller = f"ask for at most {most:g}" if most else f"leave {key!r} out"
        join = f"start nodes that have it (`ray start --resources '{{\"{key}\": 1}}'`)"
    noun = {"CPU": "a CPU", "GPU": "a GPU"}.get(key, repr(key))
    has = f"{where} has {most:g}" if most else f"no node of the Ray cluster has {noun}"
    return f"{what} per trial, but {has}, so no trial could ever start. Fix: {smaller}, or {join}."


def free_resources(keys: dict[str, float]) -> str:
    """``"0 of 4 CPU(s), 1 of 2 GPU(s)"``: what the cluster has free of each resource named."""
    import ray

    try:
        free, total = ray.available_resources(), ray.cluster_resources()
    except Exception:  # pragma: no cover - the cluster went away
        return "unknown"
    return ", ".join(
        f"{free.get(k, 0.0):g} of {total.get(k, 0.0):g} {_UNIT.get(k, repr(k))}" for k in keys
    )


# --------------------------------------------------------------------------- workers


def configure_worker(cpus: float, gpus: float, import_keras: bool) -> None:
    """Size TensorFlow's thread pools from the trial's CPUs and let GPU memory grow."""
    threads = max(1, int(math.ceil(cpus)))
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = str(max(1, min(2, threads)))
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    if not import_keras:
        return
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend == "tensorflow":
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
            for gpu in tf.config.list_physical_devices("GPU"):
                tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised in this process
            pass
    import keras  # noqa: F401  (warm the import)


class Reporter:
    """Worker-side handle on the mailbox: ``report(step, value) -> should_stop``."""

    def __init__(self, mailbox: Any, number: int):
        self.mailbox = mailbox
        self.number = number

    def report(self, step: int, value: float) -> bool:
        import ray

        return bool(ray.get(self.mailbox.report.remote(self.number, int(step), float(value))))

    def wait_for_answer(self, timeout: float = 300.0, poll: float = 0.02) -> bool:
        """Block until the driver has read this trial's reports so far and answered them;
        returns whether it asked the trial to stop.

        The driver asks to stop before its next drain of the mailbox, and the mailbox runs
        the driver's calls in order: two drains after this call began, the answer is in.
        """
        import ray

        first = ray.get(self.mailbox.n_drains.remote())
        deadline = time.monotonic() + timeout
        while ray.get(self.mailbox.n_drains.remote()) < first + 2:
            if time.monotonic() > deadline:
                raise TimeoutError(f"trial {self.number}: the driver read no report in {timeout} s")
            time.sleep(poll)
        return bool(ray.get(self.mailbox.stopping.remote(self.number)))


class NullReporter:
    def report(self, step: int, value: float) -> bool:
        return False

    def wait_for_answer(self, timeout: float = 300.0, poll: float = 0.02) -> bool:
        return False


def _run_one(
    fn_spec: str | Callable, payload: TrialPayload, data: dict[str, Any], mailbox: Any
) -> TrialResult:
    if mailbox is not None:  # the trial has its resources: the driver's wait timeout is off
        mailbox.begin.remote(payload.number)
    reporter = Reporter(mailbox, payload.number) if mailbox is not None else NullReporter()
    fn = _resolving(fn_spec)
    if payload.folds:  # cross-validated: the trainer once per fold, one after another
        from hpsearch.search.folds import run_folds

        fn = functools.partial(run_folds, fn)
    result = run_guarded(fn, payload, data, reporter)
    try:
        import ray

        result.extra.setdefault("gpu_ids", [str(g) for g in ray.get_gpu_ids()])
    except Exception:  # pragma: no cover
        pass
    return result


def _run_fold_job(
    fn_spec: str | Callable, payload: TrialPayload, data: dict[str, Any], mailbox: Any, fold: int
) -> TrialResult:
    """One fold of a cross-validated trial whose folds run as separate calls."""
    from hpsearch.search.folds import run_fold

    if mailbox is not None:
        mailbox.begin.remote(payload.number)
    fn = _resolving(fn_spec)
    result = run_guarded(lambda p, d, r: run_fold(fn, p, d, fold), payload, data, NullReporter())
    if result.state != "COMPLETE" and not (result.error or "").startswith(f"fold {fold} of"):
        result.error = f"fold {fold} of {payload.folds}: {result.error or result.reason}"
    return result


def _resolving(fn_spec: str | Callable) -> Callable[..., TrialResult]:
    """The trial function, imported when called: a module that does not import fails the
    trial with its reason (not the worker)."""
    if not isinstance(fn_spec, str):
        return fn_spec

    def call(payload: TrialPayload, data: Any, reporter: Any) -> TrialResult:
        return resolve_trial_fn(fn_spec)(payload, data, reporter)

    return call


class _Worker:
    """Body of the warm actor."""

    def __init__(self, fn_spec: str | Callable, cpus: float, gpus: float, import_keras: bool):
        configure_worker(cpus, gpus, import_keras)
        self.fn_spec = fn_spec
        self.n_trials = 0

    def run(self, payload: TrialPayload, data: dict[str, Any], mailbox: Any) -> TrialResult:
        if self.n_trials and "keras" in __import__("sys").modules:
            import keras

            keras.backend.clear_session()
        self.n_trials += 1
        result = _run_one(self.fn_spec, payload, data, mailbox)
        result.extra["worker_trials"] = self.n_trials
        if _was_restarted():
            result.extra["worker_restarted"] = True
        return result

    def run_fold(
        self, payload: TrialPayload, data: dict[str, Any], mailbox: Any, fold: int
    ) -> TrialResult:
        if self.n_trials and "keras" in __import__("sys").modules:
            import keras

            keras.backend.clear_session()
        self.n_trials += 1
        result = _run_fold_job(self.fn_spec, payload, data, mailbox, fold)
        if _was_restarted():
            result.extra["worker_restarted"] = True
        return result

    def info(self) -> dict[str, Any]:
        from hpsearch.search.trial import where_am_i

        return where_am_i()


def _was_restarted() -> bool:
    """Whether this actor process is Ray's restart of one that died."""
    try:
        import ray

        return bool(ray.get_runtime_context().was_current_actor_reconstructed)
    except Exception:  # pragma: no cover - outside an actor
        return False


def _fresh_task(fn_spec, cpus, gpus, import_keras, payload, data, mailbox, fold=None):
    configure_worker(cpus, gpus, import_keras)
    if fold is not None:
        return _run_fold_job(fn_spec, payload, data, mailbox, fold)
    result = _run_one(fn_spec, payload, data, mailbox)
    result.extra["worker_trials"] = 1
    return result


class _Mailbox:
    def __init__(self) -> None:
        self.reports: list[tuple[int, int, float]] = []
        self.begun: list[int] = []
        self.stop: set[int] = set()
        self.drains = 0

    def begin(self, number: int) -> None:
        self.begun.append(number)

    def report(self, number: int, step: int, value: float) -> bool:
        self.reports.append((number, step, value))
        return number in self.stop

    def drain(self) -> tuple[list[tuple[int, int, float]], list[int]]:
        """The reports posted since the last drain, and the trials begun since then."""
        out, self.reports = self.reports, []
        begun, self.begun = self.begun, []
        self.drains += 1
        return out, begun

    def n_drains(self) -> int:
        return self.drains

    def stopping(self, number: int) -> bool:
        return number in self.stop

    def request_stop(self, number: int) -> None:
        self.stop.add(number)


@dataclass
class _InFlight:
    payload: TrialPayload
    ref: Any
    actor: Any = None
    started: float = field(default_factory=time.time)  # submitted (wall clock)
    submitted: float = field(default_factory=time.monotonic)
    begun: bool = False  # a worker has begun the trial (it got its resources)
    fold: int | None = None  # one fold of a trial whose folds run as separate calls


@dataclass
class _FoldedTrial:
    """A cross-validated trial whose folds run as separate calls (``parallel_folds``)."""

    payload: TrialPayload
    acc: Any  # hpsearch.search.folds.FoldAccumulator
    pending: list[int]  # folds not submitted yet, in order
    running: set[int] = field(default_factory=set)
    started: float = field(default_factory=time.time)
    first: TrialResult | None = None  # the first fold's result: where the trial ran
    failed: TrialResult | None = None
    stop: bool = False  # the pruner asked it to stop
    restarted: bool = False  # a fold's worker died once and Ray ran the fold again


class TrialRunner:
    """Submits trials to Ray and hands back finished ``TrialResult`` objects.

    ``wait_timeout_s``: how long a submitted trial may wait for a worker to begin it
    (:meth:`overdue`); None waits forever.
    """

    def __init__(
        self,
        *,
        cpus_per_trial: float = 1.0,
        gpus_per_trial: float = 0.0,
        max_concurrent: int = 1,
        trial_fn: str | Callable = DEFAULT_TRIAL_FN,
        warm_workers: bool = True,
        max_retries: int = 1,
        wait_timeout_s: float | None = None,
        parallel_folds: bool = True,
    ):
        self.cpus = float(cpus_per_trial)
        self.gpus = float(gpus_per_trial)
        self.wait_timeout_s = None if wait_timeout_s is None else float(wait_timeout_s)
        self.slots = int(max_concurrent)
        self.trial_fn = trial_fn
        self.warm = bool(warm_workers)
        self.max_retries = int(max_retries)
        self.import_keras = is_keras_trainer(trial_fn)
        self.parallel_folds = bool(parallel_folds)
        self.folded: dict[int, _FoldedTrial] = {}  # trial number -> its folds' progress
        self.fold_reports: list[tuple[int, int, float]] = []
        self.cv_targets: tuple[Any, Any] | None = None  # (labelled targets, fold of each row)
        self.in_flight: dict[Any, _InFlight] = {}
        self.idle: list[Any] = []
        self.actors: list[Any] = []
        self.mailbox = None
        self.data_ref = None

    # -- life cycle ---------------------------------------------------------
    def start(self, data: dict[str, Any]) -> None:
        """Put the trial arrays (``{"x": {split: {input: array}}, "y": {split: array}}``)
        into the object store and start the workers."""
        import ray

        self.data_ref = ray.put(data)
        if "folds" in data:  # cross-validated: folds run as separate calls are put together here
            self.cv_targets = (data["y"]["train"], data["folds"])
        self.mailbox = ray.remote(num_cpus=0)(_Mailbox).remote()
        if self.warm:
            self._actor_cls = ray.remote(_Worker).options(
                num_cpus=self.cpus,
                num_gpus=self.gpus,
                max_restarts=self.max_retries,
                max_task_retries=self.max_retries,
            )
            for _ in range(self.slots):
                self._add_actor()
        else:
            # max_calls is a property of the remote function, not an .options() override
            self._task = ray.remote(max_calls=1)(_fresh_task).options(
                num_cpus=self.cpus, num_gpus=self.gpus, max_retries=self.max_retries
            )

    def _add_actor(self) -> None:
        actor = self._actor_cls.remote(self.trial_fn, self.cpus, self.gpus, self.import_keras)
        self.actors.append(actor)
        self.idle.append(actor)

    def free_slots(self) -> int:
        """Worker slots free for a new trial: neither busy nor promised to a fold that waits."""
        waiting = sum(len(t.pending) for t in self.folded.values())
        return self.slots - len(self.in_flight) - waiting

    def submit(self, payload: TrialPayload) -> None:
        if self.free_slots() <= 0:
            raise RuntimeError("no free trial slot")
        if payload.folds and self.parallel_folds and self.cv_targets is not None:
            from hpsearch.search.folds import FoldAccumulator

            acc = FoldAccumulator(payload, *self.cv_targets)
            self.folded[payload.number] = _FoldedTrial(payload, acc, list(range(payload.folds)))
            self._dispatch_folds()
            return
        self._submit(payload)

    def _submit(
        self, payload: TrialPayload, fold: int | None = None, call: TrialPayload | None = None
    ) -> None:
        """One call on a worker slot: a whole trial, or fold ``fold`` of one (``call``: the
        payload the fold's worker gets, with the fold's deadline)."""
        call = payload if call is None else call
        if self.warm:
            actor = self.idle.pop(0)
            if fold is None:
                ref = actor.run.remote(payload, self.data_ref, self.mailbox)
            else:
                ref = actor.run_fold.remote(call, self.data_ref, self.mailbox, fold)
        else:
            actor = None
            ref = self._task.remote(
                self.trial_fn,
                self.cpus,
                self.gpus,
                self.import_keras,
                call,
                self.data_ref,
                self.mailbox,
                fold,
            )
        self.in_flight[ref] = _InFlight(payload, ref, actor, fold=fold)

    def _dispatch_folds(self) -> None:
        """Give the folds that wait the free slots, the oldest trial's first."""
        from hpsearch.search.folds import with_fold_deadline

        for trial in self.folded.values():
            while trial.pending and self.slots - len(self.in_flight) > 0:
                fold = trial.pending.pop(0)
                trial.running.add(fold)
                # the time left to the deadline split over the trial's rounds of folds
                unfinished = len(trial.pending) + len(trial.running)
                self._submit(
                    trial.payload, fold, with_fold_deadline(trial.payload, unfinished, self.slots)
                )

    def wait(self, timeout: float = 0.5) -> list[tuple[TrialPayload, TrialResult]]:
        """Results of trials that finished within ``timeout`` seconds."""
        import ray

        done = self._folded_done()  # trials the pruner stopped since the last wait
        if not self.in_flight:
            if not done:
                time.sleep(min(timeout, 0.05))
            return done
        ready, _ = ray.wait(
            list(self.in_flight), num_returns=len(self.in_flight), timeout=0 if done else timeout
        )
        for ref in ready:
            item = self.in_flight.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as exc:  # the worker process died (twice) or Ray failed the task
                result, died = _failure_in_ray(exc, item)
                if died and item.actor is not None:
                    self._replace_actor(item.actor)
                    item.actor = None
            if item.actor is not None and result.extra.get("worker_restarted"):
                # its one restart is spent: a fresh actor gives the next trial its own retry
                self._replace_actor(item.actor)
                item.actor = None
            if item.actor is not None:
                self.idle.append(item.actor)
            if item.fold is None:
                done.append((item.payload, result))
            else:
                self._fold_done(item, result)
        done += self._folded_done()
        self._dispatch_folds()
        return done

    def _fold_done(self, item: _InFlight, result: TrialResult) -> None:
        """Add a fold's result to its trial (a fold of a trial already over is dropped)."""
        trial = self.folded.get(item.payload.number)
        if trial is None:
            return
        trial.running.discard(item.fold)
        trial.restarted = trial.restarted or bool(result.extra.get("worker_restarted"))
        if trial.failed is not None or trial.stop:
            return
        if result.state != "COMPLETE":
            if not (result.error or "").startswith(f"fold {item.fold} of"):
                result.error = f"fold {item.fold} of {trial.acc.k}: {result.error}"
            trial.failed, trial.pending = trial.acc.failed(item.fold, result), []
            trial.first = trial.first or result
            return
        trial.first = trial.first or result
        trial.acc.add(item.fold, result)
        if item.payload.pruning:  # after each fold, the metric on the folds done so far
            self.fold_reports.append((item.payload.number, trial.acc.n_done - 1, trial.acc.value()))

    def _folded_done(self) -> list[tuple[TrialPayload, TrialResult]]:
        """The folded trials that are over: every fold in, one failed, or told to stop."""
        done = []
        for number, trial in list(self.folded.items()):
            if trial.failed is not None:
                result = trial.failed
            elif trial.stop:
                result = trial.acc.pruned()
            elif trial.acc.n_done == trial.acc.k:
                result = trial.acc.complete()
            else:
                continue
            del self.folded[number]
            result.duration_s = time.time() - trial.started
            result.extra.setdefault("started_at", trial.started)
            result.extra.setdefault("finished_at", time.time())
            result.extra["parallel_folds"] = True
            if trial.restarted:
                result.extra["worker_restarted"] = True
            for key in ("node_id", "hostname", "pid"):
                if trial.first is not None and getattr(result, key) is None:
                    setattr(result, key, getattr(trial.first, key))
            done.append((trial.payload, result))
        return done

    def _replace_actor(self, dead: Any) -> None:
        import ray

        if dead in self.actors:
            self.actors.remove(dead)
        with contextlib.suppress(Exception):
            ray.kill(dead, no_restart=True)
        self._add_actor()

    def drain_reports(self) -> list[tuple[int, int, float]]:
        """The epoch reports posted since the last call; notes which trials have begun."""
        import ray

        folds, self.fold_reports = self.fold_reports, []
        if self.mailbox is None:
            return folds
        reports, begun = ray.get(self.mailbox.drain.remote())
        reports = reports + folds
        if begun:
            numbers = set(begun)
            for item in self.in_flight.values():
                item.begun = item.begun or item.payload.number in numbers
        return reports

    def overdue(self) -> list[TrialPayload]:
        """Trials submitted more than ``wait_timeout_s`` ago that no worker has begun (as of
        the last :meth:`drain_reports`): they wait for resources the cluster does not give."""
        if self.wait_timeout_s is None:
            return []
        now = time.monotonic()
        return [
            item.payload
            for item in self.in_flight.values()
            if not item.begun and now - item.submitted > self.wait_timeout_s
        ]

    def request(self) -> dict[str, float]:
        """The Ray resources each trial asks for."""
        return trial_request(self.cpus, self.gpus)

    def request_stop(self, number: int) -> None:
        trial = self.folded.get(number)
        if trial is not None:  # its folds that wait are not run; it ends at the next wait
            trial.stop, trial.pending = True, []
            return
        if self.mailbox is not None:
            self.mailbox.request_stop.remote(number)

    def cancel_all(self) -> list[TrialPayload]:
        """Stop every trial in flight; returns their payloads."""
        import ray

        payloads = [item.payload for item in self.in_flight.values() if item.fold is None]
        payloads += [trial.payload for trial in self.folded.values()]
        for ref, item in list(self.in_flight.items()):
            try:
                if item.actor is not None:
                    ray.kill(item.actor, no_restart=True)
                else:
                    ray.cancel(ref, force=True)
            except Exception:
                pass
        self.in_flight.clear()
        self.folded.clear()
        return payloads

    def shutdown(self) -> None:
        import ray

        for actor in self.actors:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
        if self.mailbox is not None:
            with contextlib.suppress(Exception):
                ray.kill(self.mailbox, no_restart=True)
        self.actors.clear()
        self.idle.clear()
        self.in_flight.clear()
        self.folded.clear()
        self.mailbox = None


def _failure_in_ray(exc: Exception, item: _InFlight) -> tuple[TrialResult, bool]:
    """The FAIL result of a trial whose ``ray.get`` raised, and whether its worker died.

    An exception raised inside the task (``RayTaskError``) fails the trial with that
    exception and its reason; the worker lives on. Anything else (the worker process died
    twice, the actor could not be created) is "worker died". No terminal colour codes
    (Ray colours its error headers) reach the stored text.
    """
    import ray

    task_error = isinstance(exc, ray.exceptions.RayTaskError) and not isinstance(
        exc, ray.exceptions.RayActorError
    )
    cause = getattr(exc, "cause", None)
    common = {
        "number": item.payload.number,
        "state": FAIL,
        "duration_s": time.time() - item.started,
    }
    if task_error and isinstance(cause, BaseException):
        return TrialResult(
            **common,
            error=strip_ansi(f"{type(cause).__name__}: {cause}"),
            traceback=strip_ansi(str(exc)),
            reason=failure_reason(cause),
        ), False
    text = (strip_ansi(str(exc)) or "").strip()
    error = f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
    return TrialResult(**common, error=error, reason="worker died"), not task_error
