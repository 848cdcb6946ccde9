"""Samplers (hpsearch.search.samplers): one conformance suite for every registered sampler,
Hyperopt's TPE as an Optuna sampler, user samplers as ``module:Class``, resume without repeats.

Plain in-memory Optuna studies driven as the search driver drives them: ``study.ask()``,
``space.sample_optuna(trial)``, ``study.tell()``. No Ray, no TensorFlow.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import warnings
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from hpsearch.core.registry import SAMPLERS, PluginError
from hpsearch.search import samplers as samplers_module
from hpsearch.search.samplers import HyperoptTPESampler, make_sampler, resume_seed
from search_spaces import Param, Space

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

HAS_TORCH = importlib.util.find_spec("torch") is not None
NAMES = [
    pytest.param(n, marks=pytest.mark.skipif(not HAS_TORCH, reason="gp needs torch"))
    if n == "gp"
    else n
    for n in SAMPLERS.names()
]
EXPECTED = {
    "tpe": optuna.samplers.TPESampler,
    "hyperopt-tpe": HyperoptTPESampler,
    "random": optuna.samplers.RandomSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "gp": optuna.samplers.GPSampler,
}
VALID = "tpe, hyperopt-tpe, random, cmaes, gp"
ROOT = Path(__file__).resolve().parents[1]


def small_space() -> Space:
    """Float (log, stepped), int, categorical, a conditional float and a per-layer int."""
    return Space(
        "small",
        family="dense",
        params=[
            Param.int("n_layers", 1, 3),
            Param.int("units", 8, 64, per="n_layers"),
            Param.float("lr", 1e-4, 1e-1, log=True),
            Param.float("dropout", 0.0, 0.5, step=0.1),
            Param.categorical("opt", ["adam", "sgd"]),
            Param.float("momentum", 0.0, 0.9, when={"opt": ["sgd"]}),
        ],
    )


def sampler(name: str, space: Space, seed: int | None = 0, **kw: Any) -> Any:
    kw.setdefault("max_concurrent", 1)
    kw.setdefault("n_startup_trials", 3)
    return make_sampler(name, space, seed=seed, **kw)


def objective(config: dict[str, Any]) -> float:
    return (
        abs(math.log10(config["lr"]) + 2.5)
        + config["dropout"]
        + 0.01 * sum(config["units"])
        + config.get("momentum", 0.3)
    )


def run(study: optuna.Study, space: Space, n: int) -> list[dict[str, Any]]:
    """``n`` trials one after another, as the driver runs them; their configurations."""
    configs = []
    for _ in range(n):
        trial = study.ask()
        config = space.sample_optuna(trial)
        check_in_space(space, trial, config)
        study.tell(trial, objective(config))
        configs.append(config)
    return configs


def check_in_space(space: Space, trial: Any, config: dict[str, Any]) -> None:
    space.validate_config(config)  # types, ranges, and conditional params only when active
    assert space.unflatten(trial.params) == config  # no parameter outside the active space
    assert ("momentum" in config) == (config["opt"] == "sgd")
    assert len(config["units"]) == config["n_layers"]


def key(config: dict[str, Any]) -> str:
    return repr(sorted(config.items()))


# --------------------------------------------------------------------------- conformance


@pytest.mark.parametrize("name", NAMES)
def test_every_registered_name_builds_its_base_sampler(name):
    built = make_sampler(name, small_space(), seed=0, max_concurrent=1, n_startup_trials=None)
    assert isinstance(built, optuna.samplers.BaseSampler)
    assert type(built) is EXPECTED[name]


@pytest.mark.parametrize("name", NAMES)
def test_samples_stay_inside_the_space(name):
    space = small_space()
    study = optuna.create_study(sampler=sampler(name, space))
    configs = run(study, space, 10)  # 3 startup trials, then the model's own proposals
    assert {c["opt"] for c in configs} <= {"adam", "sgd"}
    assert len({key(c) for c in configs}) == len(configs)


@pytest.mark.parametrize("name", NAMES)
def test_the_same_seed_gives_the_same_first_configurations(name):
    space = small_space()
    first, second, other = (
        run(optuna.create_study(sampler=sampler(name, space, seed=s)), space, 6) for s in (0, 0, 1)
    )
    assert first == second
    assert first[0] != other[0]


@pytest.mark.parametrize("name", NAMES)
def test_trials_in_flight_do_not_break_sampling(name):
    """max_concurrent > 1: three trials asked and sampled before any is told."""
    space = small_space()
    study = optuna.create_study(sampler=sampler(name, space, max_concurrent=3))
    seen = []
    for _ in range(3):
        batch = []
        for _ in range(3):
            trial = study.ask()
            config = space.sample_optuna(trial)
            check_in_space(space, trial, config)
            batch.append((trial, config))
        assert len({key(c) for _, c in batch}) == 3
        for trial, config in batch:
            study.tell(trial, objective(config))
        seen += [c for _, c in batch]
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 9


@pytest.mark.parametrize("name", NAMES)
def test_an_enqueued_configuration_takes_precedence(name):
    """A re-queued trial (crash recovery) or a given configuration runs as enqueued."""
    space = small_space()
    study = optuna.create_study(sampler=sampler(name, space))
    run(study, space, 4)
    given = {
        "n_layers": 2,
        "units": [16, 32],
        "lr": 0.001,
        "dropout": 0.2,
        "opt": "sgd",
        "momentum": 0.5,
    }
    study.enqueue_trial(space.flatten(given))
    trial = study.ask()
    assert space.sample_optuna(trial) == given
    study.tell(trial, objective(given))
    assert len(run(study, space, 2)) == 2  # and sampling goes on after it


def test_tpe_keeps_its_settings():
    space = small_space()
    one = make_sampler("tpe", space, seed=0, max_concurrent=1, n_startup_trials=None)
    many = make_sampler("tpe", space, seed=0, max_concurrent=2, n_startup_trials=4)
    assert (one._multivariate, one._group, one._constant_liar) == (True, True, False)
    assert many._constant_liar is True
    assert (one._n_startup_trials, many._n_startup_trials) == (10, 4)


# --------------------------------------------------------------------------- resume


@pytest.mark.parametrize("name", NAMES)
def test_a_resumed_study_proposes_no_configuration_it_has_run(name, tmp_path):
    """The drill of a driver SIGKILLed with a trial in flight, then resumed: the new driver
    loads the study from its SQLite file with a sampler built afresh, the interrupted trial is
    failed and re-queued (its configuration runs again, on purpose), then new trials follow.
    The seed is shifted by the trials the study holds, so no draw of the first driver is
    replayed."""
    space = small_space()
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=url, sampler=sampler(name, space, n_startup_trials=None))
    before = run(study, space, 3)
    killed = study.ask()
    before.append(space.sample_optuna(killed))  # in flight when the driver died
    del study

    resumed = optuna.load_study(study_name=None, storage=url)
    resumed.tell(killed.number, state=optuna.trial.TrialState.FAIL)
    resumed.enqueue_trial(dict(killed.params))
    resumed.sampler = sampler(
        name, space, n_startup_trials=None, n_existing_trials=len(resumed.trials)
    )
    after = run(resumed, space, 7)
    assert after[0] == before[-1]  # the re-queued trial runs its own configuration
    assert len({key(c) for c in before + after[1:]}) == 10


def test_without_the_shift_a_resumed_seeded_sampler_replays_its_draws():
    """Why the shift is needed: the same seed started afresh repeats trial 0."""
    space = small_space()
    study = optuna.create_study(sampler=sampler("random", space))
    before = run(study, space, 2)
    study.sampler = sampler("random", space)  # n_existing_trials left at 0
    assert run(study, space, 1)[0] == before[0]


def test_resume_seed_is_deterministic_and_in_numpys_range():
    assert resume_seed(None, 5) is None
    assert resume_seed(42, 0) == 42
    shifted = {resume_seed(42, n) for n in range(1, 50)}
    assert len(shifted) == 49 and 42 not in shifted
    assert all(0 <= s < 2**32 for s in shifted)
    assert resume_seed(42, 7) == resume_seed(42, 7) != resume_seed(43, 7)


# --------------------------------------------------------------------------- hyperopt


def _study_with_one_trial_running(space: Space) -> optuna.Study:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for value in (0.3, 0.5, 0.9):
        trial = study.ask()
        space.sample_optuna(trial)
        study.tell(trial, value)
    space.sample_optuna(study.ask())  # left RUNNING
    return study


@pytest.mark.parametrize("liar, losses", [(True, [0.3, 0.5, 0.9, 0.9]), (False, [0.3, 0.5, 0.9])])
def test_hyperopt_sees_running_trials_as_the_worst_loss_only_with_the_liar(
    monkeypatch, liar, losses
):
    import hyperopt

    space = small_space()
    study = _study_with_one_trial_running(space)
    seen: list = []

    def spy(new_ids, domain, trials, seed, **kw):
        seen.append(sorted(d["result"]["loss"] for d in trials.trials))
        return hyperopt.rand.suggest(new_ids, domain, trials, seed)

    monkeypatch.setattr(hyperopt.tpe, "suggest", spy)
    study.sampler = HyperoptTPESampler(space, seed=0, constant_liar=liar)
    space.sample_optuna(study.ask())
    assert seen == [losses]


def test_the_hyperopt_factory_uses_the_liar_and_the_startup_count():
    built = make_sampler(
        "hyperopt-tpe", small_space(), seed=0, max_concurrent=2, n_startup_trials=None
    )
    assert (built._liar, built._n_startup) == (True, 10)


def test_hyperopt_answers_each_parameter_from_its_point():
    space = small_space()
    hyper = HyperoptTPESampler(space, seed=3, n_startup_trials=2)
    study = optuna.create_study(sampler=hyper)
    run(study, space, 4)
    trial = study.ask()
    point = dict(hyper._points[trial._trial_id])
    assert point == hyper.suggest(study, trial.number)  # the point Hyperopt gives this trial
    assert space.flatten(space.sample_optuna(trial)) == point
    # a name the point lacks is drawn inside its distribution
    dist = optuna.distributions.FloatDistribution(2.0, 3.0)
    frozen = study._storage.get_trial(trial._trial_id)
    assert 2.0 <= hyper.sample_independent(study, frozen, "not_in_space", dist) <= 3.0
    study.tell(trial, 1.0)
    assert trial._trial_id not in hyper._points  # forgotten once the trial is told


def test_hyperopt_computes_no_point_for_an_enqueued_trial(monkeypatch):
    space = small_space()
    hyper = HyperoptTPESampler(space, seed=0)
    study = optuna.create_study(sampler=hyper)
    given = {"n_layers": 1, "units": [8], "lr": 0.01, "dropout": 0.0, "opt": "adam"}
    study.enqueue_trial(space.flatten(given))
    monkeypatch.setattr(hyper, "suggest", lambda *a: pytest.fail("point computed"))
    assert space.sample_optuna(study.ask()) == given


# --------------------------------------------------------------------------- user samplers


def test_a_user_sampler_class_is_resolved_built_with_the_seed_and_used():
    space = small_space()
    built = make_sampler(
        "sampler_plugins:MidpointSampler",
        space,
        seed=5,
        max_concurrent=1,
        n_startup_trials=None,
        n_existing_trials=3,
    )
    assert type(built).__name__ == "MidpointSampler"
    assert built.seed == resume_seed(5, 3)
    study = optuna.create_study(sampler=built)
    trial = study.ask()
    config = space.sample_optuna(trial)
    assert config == {"n_layers": 2, "units": [36, 36], "lr": pytest.approx(0.05005),
                      "dropout": pytest.approx(0.2), "opt": "adam"}  # fmt: skip


def test_a_user_sampler_without_a_seed_argument_is_built_with_none():
    built = make_sampler(
        "sampler_plugins:SeedlessSampler", small_space(), seed=1, max_concurrent=1,
        n_startup_trials=None,
    )  # fmt: skip
    assert type(built).__name__ == "SeedlessSampler"


def test_a_class_that_is_not_a_sampler_is_refused_with_the_fix():
    with pytest.raises(PluginError) as err:
        sampler("sampler_plugins:NotASampler", small_space())
    assert str(err.value) == (
        "sampler 'sampler_plugins:NotASampler' is NotASampler, not an "
        "optuna.samplers.BaseSampler subclass. Fix: name a class that subclasses "
        f"optuna.samplers.BaseSampler as 'module:Class', or one of: {VALID}."
    )


def test_an_unknown_sampler_name_says_did_you_mean():
    with pytest.raises(PluginError) as err:
        sampler("tpee", small_space())
    assert str(err.value) == (
        f"unknown sampler 'tpee' (did you mean 'tpe'?); valid: {VALID}, "
        "or 'module:Name' for your own."
    )


def test_a_user_module_that_does_not_import_is_named():
    with pytest.raises(PluginError, match="cannot import module 'no_such_module_xyz'"):
        sampler("no_such_module_xyz:Sampler", small_space())


@pytest.mark.parametrize(
    "name, package, fix",
    [
        ("gp", "torch", "pip install 'hpsearch[gp]' (torch; its CPU build is enough)"),
        ("cmaes", "cmaes", "pip install cmaes"),
    ],
)
def test_a_sampler_whose_package_is_missing_says_which_and_how(monkeypatch, name, package, fix):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        samplers_module.importlib.util,
        "find_spec",
        lambda n, *a: None if n == package else real(n, *a),
    )
    with pytest.raises(PluginError) as err:
        sampler(name, small_space())
    assert str(err.value) == (
        f"sampler {name!r} needs the package {package!r}, which is not installed. "
        f"Fix: {fix}, or pick another sampler such as 'tpe'."
    )


# --------------------------------------------------------------------------- docs/plugins.md

PLUGINS_DOC = ROOT / "docs" / "plugins.md"


def _doc_blocks(lang: str) -> list[str]:
    """The ``lang`` code blocks of the Samplers section of docs/plugins.md."""
    text = PLUGINS_DOC.read_text().split("## Samplers", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def test_the_documented_user_sampler_runs_as_module_class(tmp_path, monkeypatch):
    (tmp_path / "my_samplers.py").write_text(_doc_blocks("python")[0])
    monkeypatch.syspath_prepend(str(tmp_path))
    yaml_names = [yaml.safe_load(b)["sampler"]["name"] for b in _doc_blocks("yaml")]
    assert yaml_names == ["optuna.samplers:QMCSampler", "my_samplers:MidpointFirst"]
    space = small_space()
    for name in yaml_names:
        study = optuna.create_study(sampler=sampler(name, space))
        configs = run(study, space, 3)
        assert len({key(c) for c in configs}) == 3
    assert configs[0] == {"n_layers": 1, "units": [8], "lr": pytest.approx(0.05005),
                          "dropout": pytest.approx(0.2), "opt": "adam"}  # fmt: skip


def test_a_factory_registered_under_a_short_name_is_called_with_the_space(monkeypatch):
    calls: list = []

    def factory(space, *, seed, max_concurrent, n_startup_trials):
        calls.append((space.name, seed, max_concurrent, n_startup_trials))
        return optuna.samplers.RandomSampler(seed=seed)

    monkeypatch.setattr(SAMPLERS, "_entries", {**SAMPLERS._entries, "mine": factory})
    built = make_sampler("mine", small_space(), seed=4, max_concurrent=2, n_startup_trials=5)
    assert isinstance(built, optuna.samplers.RandomSampler)
    assert calls == [("small", 4, 2, 5)]
    monkeypatch.setattr(SAMPLERS, "_entries", {**SAMPLERS._entries, "bad": lambda *a, **k: 3})
    with pytest.raises(PluginError, match=r"^sampler 'bad' is int, not an optuna.samplers"):
        make_sampler("bad", small_space(), seed=4, max_concurrent=2, n_startup_trials=5)


@pytest.mark.parametrize(
    "name",
    [
        "cmaes",
        pytest.param("gp", marks=pytest.mark.skipif(not HAS_TORCH, reason="gp needs torch")),
        "hyperopt-tpe",
        "tests.sampler_plugins:MidpointSampler",
    ],
)
def test_a_search_runs_end_to_end_with_the_sampler(ray_session, tmp_path, name):
    """`sampler: {name: ...}` through `hpsearch.run`: every trial completes, each with its
    own configuration, and the run's study used the named sampler."""
    import hpsearch
    from tests.conftest import make_spec_dict

    spec = hpsearch.load_spec(
        make_spec_dict(
            tmp_path,
            sampler={"name": name, "seed": 3, "n_startup_trials": 2},
            budget={"n_trials": 5},
            training={"trial_fn": "hpsearch.search.testing:oracle"},
        )
    )
    run = hpsearch.run(spec, progress=False)
    frame = run.trials()
    assert list(frame["state"]) == ["COMPLETE"] * 5
    configs = {json.dumps(p, sort_keys=True) for p in frame["params"]}
    # the user's sampler puts every trial at the middle of the space: one configuration
    assert len(configs) == (1 if name == "tests.sampler_plugins:MidpointSampler" else 5)
    info = json.loads((tmp_path / "run" / "trials" / "00004" / "trial.json").read_text())
    assert info["sampler"] == name
