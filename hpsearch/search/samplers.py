"""Samplers: every search strategy is an ``optuna.samplers.BaseSampler``.

The driver only calls ``study.ask()``, ``space.sample_optuna(trial)`` and ``study.tell()``,
whichever sampler the spec names, so the run's history lives in the study's storage alone.
:func:`make_sampler` builds the sampler from ``sampler.name``: a name registered in
``hpsearch.core.registry.SAMPLERS`` or a user's ``"module:Class"``.

- ``tpe``: ``optuna.samplers.TPESampler`` (multivariate, grouped for conditional spaces)
  with ``constant_liar`` whenever more than one trial is in flight.
- ``hyperopt-tpe``: :class:`HyperoptTPESampler`, Hyperopt's ``tpe.suggest`` given a
  ``Trials`` rebuilt from the study (finished trials with their losses, trials in flight
  with the worst loss seen so far, a constant liar).
- ``random``: ``optuna.samplers.RandomSampler``.
- ``cmaes``: ``optuna.samplers.CmaEsSampler`` (package ``cmaes``) on the float and int
  parameters every trial has; categorical and conditional ones go to a univariate TPE.
- ``gp``: ``optuna.samplers.GPSampler`` (package ``torch``, the ``gp`` extra); parameters
  outside the shared search space are drawn at random.

A resumed study gets a seed shifted by the number of trials it already holds
(:func:`resume_seed`): a seeded sampler started afresh would replay its random draws from
the start and propose configurations the study has already run.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from hpsearch.core.registry import SAMPLERS, PluginError

__all__ = [
    "HyperoptTPESampler",
    "cmaes_sampler",
    "gp_sampler",
    "hyperopt_sampler",
    "make_pruner",
    "make_sampler",
    "random_sampler",
    "resume_seed",
    "tpe_sampler",
]

DEFAULT_N_STARTUP = 10

# --------------------------------------------------------------------------- entry point


def make_sampler(
    name: str,
    space: Any,
    *,
    seed: int | None,
    max_concurrent: int,
    n_startup_trials: int | None,
    n_existing_trials: int = 0,
) -> BaseSampler:
    """The sampler for ``sampler.name``: a registered name or a user's ``"module:Class"``.

    ``n_existing_trials`` is the number of trials the study already holds (on ``--resume``);
    it shifts ``seed`` so that the resumed sampler does not replay the draws of the first.
    A user class is built as ``Class(seed=seed)`` when its ``__init__`` takes ``seed``, else
    as ``Class()``.
    """
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    seed = resume_seed(seed, n_existing_trials)
    target = SAMPLERS.resolve(name)  # unknown names: PluginError with did-you-mean
    if isinstance(target, type):
        sampler = _from_class(name, target, seed)
    elif name in SAMPLERS and callable(target):
        sampler = target(
            space, seed=seed, max_concurrent=max_concurrent, n_startup_trials=n_startup_trials
        )
    else:
        raise _not_a_sampler(name, target)
    if not isinstance(sampler, BaseSampler):
        raise _not_a_sampler(name, sampler)
    return sampler


def resume_seed(seed: int | None, n_existing_trials: int) -> int | None:
    """``seed`` for a fresh study; for a study that holds trials already, a seed derived
    deterministically from both (within numpy's 0 .. 2**32 - 1). ``None`` stays ``None``."""
    if seed is None:
        return None
    if n_existing_trials <= 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(n_existing_trials)]).generate_state(1)[0])


def _from_class(name: str, cls: type, seed: int | None) -> BaseSampler:
    if not issubclass(cls, BaseSampler):
        raise _not_a_sampler(name, cls)
    try:
        takes_seed = "seed" in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        takes_seed = False
    try:
        return cls(seed=seed) if takes_seed else cls()
    except TypeError as exc:
        call = f"{cls.__name__}(seed={seed!r})" if takes_seed else f"{cls.__name__}()"
        raise PluginError(
            f"sampler {name!r}: {call} failed ({exc}). Fix: give {cls.__name__} an __init__ "
            "whose arguments all have defaults (a `seed` keyword is passed when it has one)."
        ) from None


def _not_a_sampler(name: str, obj: Any) -> PluginError:
    what = obj.__qualname__ if isinstance(obj, type) else type(obj).__name__
    return PluginError(
        f"sampler {name!r} is {what}, not an optuna.samplers.BaseSampler subclass. Fix: name a "
        "class that subclasses optuna.samplers.BaseSampler as 'module:Class', or one of: "
        f"{', '.join(SAMPLERS.names())}."
    )


def _require(package: str, sampler: str, fix: str) -> None:
    if importlib.util.find_spec(package) is None:
        raise PluginError(
            f"sampler {sampler!r} needs the package {package!r}, which is not installed. "
            f"Fix: {fix}, or pick another sampler such as 'tpe'."
        )


def _startup(n_startup_trials: int | None) -> int:
    return DEFAULT_N_STARTUP if n_startup_trials is None else int(n_startup_trials)


# --------------------------------------------------------------------------- factories


def tpe_sampler(
    space: Any, *, seed: int | None, max_concurrent: int, n_startup_trials: int | None
) -> BaseSampler:
    """Optuna's TPE: multivariate, grouped, constant liar when trials run in parallel."""
    return optuna.samplers.TPESampler(
        seed=seed,
        multivariate=True,
        group=True,
        constant_liar=max_concurrent > 1,
        n_startup_trials=_startup(n_startup_trials),
    )


def random_sampler(
    space: Any, *, seed: int | None, max_concurrent: int, n_startup_trials: int | None
) -> BaseSampler:
    """Uniform draws (log-uniform for ``log`` parameters)."""
    return optuna.samplers.RandomSampler(seed=seed)


def hyperopt_sampler(
    space: Any, *, seed: int | None, max_concurrent: int, n_startup_trials: int | None
) -> BaseSampler:
    """Hyperopt's TPE on the space's Hyperopt expression, running trials as constant liars."""
    return HyperoptTPESampler(space, seed=seed, n_startup_trials=_startup(n_startup_trials))


def cmaes_sampler(
    space: Any, *, seed: int | None, max_concurrent: int, n_startup_trials: int | None
) -> BaseSampler:
    """CMA-ES on the float and int parameters; the others from a univariate TPE."""
    _require("cmaes", "cmaes", "pip install cmaes")
    independent = optuna.samplers.TPESampler(
        seed=seed, constant_liar=max_concurrent > 1, n_startup_trials=_startup(n_startup_trials)
    )
    extra = {} if n_startup_trials is None else {"n_startup_trials": int(n_startup_trials)}
    return optuna.samplers.CmaEsSampler(
        seed=seed, independent_sampler=independent, warn_independent_sampling=False, **extra
    )


def gp_sampler(
    space: Any, *, seed: int | None, max_concurrent: int, n_startup_trials: int | None
) -> BaseSampler:
    """Gaussian-process Bayesian optimisation; conditional parameters drawn at random."""
    _require("torch", "gp", "pip install 'hpsearch[gp]' (torch; its CPU build is enough)")
    quiet = "warn_independent_sampling" in inspect.signature(optuna.samplers.GPSampler).parameters
    return optuna.samplers.GPSampler(
        seed=seed,
        independent_sampler=optuna.samplers.RandomSampler(seed=seed),
        n_startup_trials=_startup(n_startup_trials),
        **({"warn_independent_sampling": False} if quiet else {}),  # Optuna 4.x lacks it
    )


# --------------------------------------------------------------------------- hyperopt


class HyperoptTPESampler(BaseSampler):
    """Hyperopt's TPE as an Optuna sampler.

    When a trial starts (``before_trial``) Hyperopt suggests one point from the study's
    history: finished trials with their losses and, with ``constant_liar``, trials still
    running with the worst loss seen so far. ``sample_independent`` then answers each
    parameter from that point (a random draw for a name the point lacks). A trial enqueued
    with fixed parameters keeps them: Optuna answers those before asking the sampler, and no
    point is computed for it.
    """

    def __init__(
        self,
        space: Any,
        *,
        seed: int | None = None,
        n_startup_trials: int = DEFAULT_N_STARTUP,
        constant_liar: bool = True,
    ) -> None:
        self._space = space
        self._seed = _random_seed() if seed is None else int(seed)
        self._n_startup = int(n_startup_trials)
        self._liar = bool(constant_liar)
        self._random = optuna.samplers.RandomSampler(seed=seed)
        self._points: dict[int, dict[str, Any]] = {}  # trial id -> flat configuration
        self._expr: Any = None
        self._domain: Any = None

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return {}

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._raise_error_if_multi_objective(study)
        if "fixed_params" in trial.system_attrs:
            return  # an enqueued trial: its parameters are given
        self._points[trial._trial_id] = self.suggest(study, trial.number)

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: Any
    ) -> Any:
        point = self._points.get(trial._trial_id, {})
        if param_name in point and _contains(param_distribution, point[param_name]):
            return point[param_name]
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._points.pop(trial._trial_id, None)

    def reseed_rng(self) -> None:
        self._seed = _random_seed()
        self._random.reseed_rng()

    def suggest(self, study: Study, number: int) -> dict[str, Any]:
        """Hyperopt's point for trial ``number`` of ``study``, flat (``units_0``, ...)."""
        from hyperopt import space_eval, tpe

        self._ensure_domain()
        trials = self._history(study)
        algo = functools.partial(tpe.suggest, n_startup_jobs=self._n_startup)
        new = algo([len(trials.trials)], self._domain, trials, self._seed + int(number))
        vals = new[0]["misc"]["vals"]
        point = {k: v[0] for k, v in vals.items() if len(v)}
        return self._space.flatten(self._space.from_hyperopt(space_eval(self._expr, point)))

    def _ensure_domain(self) -> None:
        if self._domain is None:
            from hyperopt.base import Domain

            self._expr = self._space.to_hyperopt()
            self._domain = Domain(lambda _cfg: 0.0, self._expr)

    def _history(self, study: Study) -> Any:
        """A Hyperopt ``Trials`` of the study's finished trials (and running ones as liars)."""
        from hyperopt import JOB_STATE_DONE, STATUS_OK, Trials

        sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
        done, running = [], []
        for t in study.get_trials(deepcopy=False):
            if t.state == TrialState.COMPLETE and t.value is not None:
                done.append((t, sign * t.value))
            elif t.state == TrialState.RUNNING and t.params:
                running.append(t)
        worst = max((loss for _, loss in done), default=None)
        entries = list(done)
        if self._liar and worst is not None:
            entries += [(t, worst) for t in running]
        docs = []
        for t, loss in entries:
            try:
                vals = self._space.hyperopt_vals(self._space.unflatten(t.params))
            except Exception:
                continue  # a trial from an older space version: not evidence for this one
            docs.append(_doc(len(docs), vals, loss, JOB_STATE_DONE, STATUS_OK))
        trials = Trials()
        if docs:
            trials.insert_trial_docs(docs)
            trials.refresh()
        return trials


def _random_seed() -> int:
    return int(np.random.SeedSequence().generate_state(1)[0])


def _contains(distribution: Any, value: Any) -> bool:
    try:
        return bool(distribution._contains(distribution.to_internal_repr(value)))
    except (TypeError, ValueError):
        return False


def _doc(tid: int, vals: dict[str, list], loss: float, state: int, status: str) -> dict[str, Any]:
    idxs = {k: ([tid] if len(v) else []) for k, v in vals.items()}
    return {
        "tid": tid,
        "spec": None,
        "result": {"loss": float(loss), "status": status},
        "misc": {
            "tid": tid,
            "cmd": ("domain_attachment", "FMinIter_Domain"),
            "workdir": None,
            "idxs": idxs,
            "vals": vals,
        },
        "state": state,
        "owner": None,
        "book_time": None,
        "refresh_time": None,
        "exp_key": None,
    }


# --------------------------------------------------------------------------- pruners


def make_pruner(name: str | None, max_epochs: int):
    if name in (None, "none"):
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(2, int(max_epochs)))
    raise ValueError(f"unknown pruner {name!r}; valid: median, hyperband, or null")


# ----------------------------------------------------------------------------------------
