"""The search-space language (search_spaces.space): samplers, conversions, validation.

Fast and TensorFlow-free; uses small spaces written here, never the library YAMLs.
"""

from __future__ import annotations

import functools
import math
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from search_spaces import Param, Space, SpaceError, list_library, load_space
from search_spaces import space as space_module

# --------------------------------------------------------------------------- spaces

BASIC_YAML = """
name: basic
description: A small space.
family: dense
params:
  n_layers: {type: int, low: 1, high: 3}
  lr:       {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
  opt:      {type: categorical, choices: [adam, sgd]}
  momentum: {type: float, low: 0, high: 0.9, when: {opt: [sgd]}}
  units:    {type: int, low: 8, high: 64, per: n_layers}
  head:     {type: const, value: softmax}
"""


def basic_space() -> Space:
    return Space(
        "basic",
        description="A small space.",
        family="dense",
        params=[
            Param.int("n_layers", 1, 3),
            Param.float("lr", 1e-4, 1e-2, log=True),
            Param.categorical("opt", ["adam", "sgd"]),
            Param.float("momentum", 0, 0.9, when={"opt": ["sgd"]}),
            Param.int("units", 8, 64, per="n_layers"),
            Param.const("head", "softmax"),
        ],
    )


def rich_space() -> Space:
    """Every type and every kind of condition (nested, several parents, int parents, per+when)."""
    return Space.from_dict(
        {
            "name": "rich",
            "description": "conditions of every kind",
            "family": "cnn",
            "params": {
                "n_layers": {"type": "int", "low": 0, "high": 3},
                "units": {"type": "int", "low": 8, "high": 64, "log": True, "per": "n_layers"},
                "opt": {"type": "categorical", "choices": ["adam", "rmsprop", "sgd"]},
                "momentum": {"type": "float", "low": 0.0, "high": 0.9, "when": {"opt": ["sgd"]}},
                "nesterov": {"type": "bool", "when": {"opt": ["sgd"]}},
                "nest_scale": {
                    "type": "float",
                    "low": 0.1,
                    "high": 1.0,
                    "when": {"nesterov": [True], "opt": ["sgd", "rmsprop"]},
                },
                "use_dropout": {"type": "bool"},
                "rates": {
                    "type": "float",
                    "low": 0.0,
                    "high": 0.5,
                    "step": 0.1,
                    "per": "n_layers",
                    "when": {"use_dropout": [True]},
                },
                "kernel": {"type": "int", "low": 1, "high": 7, "step": 2},
                "extra": {
                    "type": "categorical",
                    "choices": [1, 2, 3],
                    "when": {"n_layers": [2, 3]},
                },
                "width": {"type": "int", "low": 1, "high": 40},
                "wide_flag": {"type": "bool", "when": {"width": [1, 2, 3, 4, 5, 6, 7, 8]}},
                "lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True},
                "l2": {"type": "categorical", "choices": [0.0, 1.0e-5, 1.0e-4]},
                "head": {"type": "const", "value": "softmax"},
                "gated": {"type": "const", "value": 1, "when": {"opt": ["adam"]}},
                "batch": {"type": "int", "low": 16, "high": 256, "log": True},
            },
        }
    )


# Independent statement of when each conditional parameter exists.
RICH_ACTIVE = {
    "momentum": lambda c: c["opt"] == "sgd",
    "nesterov": lambda c: c["opt"] == "sgd",
    "nest_scale": lambda c: c["opt"] == "sgd" and c["nesterov"] is True,
    "rates": lambda c: c["use_dropout"] is True,
    "extra": lambda c: c["n_layers"] in (2, 3),
    "wide_flag": lambda c: 1 <= c["width"] <= 8,
    "gated": lambda c: c["opt"] == "adam",
}
RICH_ORDER = list(rich_space().names)


def check_rich(config: dict[str, Any]) -> None:
    """Shape, types, bounds, grids and conditions of a rich_space configuration."""
    assert isinstance(config, dict)
    expected = [n for n in RICH_ORDER if n not in RICH_ACTIVE or RICH_ACTIVE[n](config)]
    assert list(config) == expected, config
    n = config["n_layers"]
    assert type(n) is int and 0 <= n <= 3
    assert isinstance(config["units"], list) and len(config["units"]) == n
    for u in config["units"]:
        assert type(u) is int and 8 <= u <= 64
    assert config["opt"] in ("adam", "rmsprop", "sgd")
    if "momentum" in config:
        assert type(config["momentum"]) is float and 0.0 <= config["momentum"] <= 0.9
        assert type(config["nesterov"]) is bool
    if "nest_scale" in config:
        assert type(config["nest_scale"]) is float and 0.1 <= config["nest_scale"] <= 1.0
    assert type(config["use_dropout"]) is bool
    if "rates" in config:
        assert isinstance(config["rates"], list) and len(config["rates"]) == n
        for r in config["rates"]:
            assert type(r) is float and r in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5), r
    assert type(config["kernel"]) is int and config["kernel"] in (1, 3, 5, 7)
    if "extra" in config:
        assert type(config["extra"]) is int and config["extra"] in (1, 2, 3)
    assert type(config["width"]) is int and 1 <= config["width"] <= 40
    if "wide_flag" in config:
        assert type(config["wide_flag"]) is bool
    assert type(config["lr"]) is float and 1e-4 <= config["lr"] <= 1e-2
    assert type(config["l2"]) is float and config["l2"] in (0.0, 1e-5, 1e-4)
    assert config["head"] == "softmax"
    if "gated" in config:
        assert config["gated"] == 1
    assert type(config["batch"]) is int and 16 <= config["batch"] <= 256


# --------------------------------------------------------------------------- samplers

N = 200


def optuna_configs(space: Space, sampler: str, n: int = N, seed: int = 0) -> list[dict]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if sampler == "random":
        s = optuna.samplers.RandomSampler(seed=seed)
    elif sampler == "tpe":
        s = optuna.samplers.TPESampler(seed=seed, n_startup_trials=10)
    else:
        s = optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=10, multivariate=True, group=True
        )
    study = optuna.create_study(sampler=s)
    out = []
    for i in range(n):
        trial = study.ask()
        config = space.sample_optuna(trial)
        assert space.unflatten(trial.params) == config
        flat = space.flatten(config)  # Optuna's step grid carries float noise (0.30000000000000004)
        assert list(flat) == list(trial.params)
        assert all(math.isclose(flat[k], v) for k, v in trial.params.items() if _is_num(v))
        study.tell(trial, float(hash(str(config)) % 1000) + i * 0.001)
        out.append(config)
    return out


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def pyll_configs(space: Space, n: int = N, seed: int = 0) -> list[dict]:
    import hyperopt.pyll.stochastic

    expr = space.to_hyperopt()
    rng = np.random.default_rng(seed)
    return [space.from_hyperopt(hyperopt.pyll.stochastic.sample(expr, rng=rng)) for _ in range(n)]


def fmin_configs(space: Space, n: int = 60, seed: int = 0) -> list[dict]:
    from hyperopt import Trials, fmin, tpe

    seen: list[dict] = []

    def objective(sample: Any) -> float:
        config = space.from_hyperopt(sample)
        seen.append(config)
        return float(len(str(config)) % 17)

    fmin(
        objective,
        space.to_hyperopt(),
        algo=functools.partial(tpe.suggest, n_startup_jobs=10),
        max_evals=n,
        trials=Trials(),
        rstate=np.random.default_rng(seed),
        show_progressbar=False,
    )
    return seen


def random_configs(space: Space, n: int = N, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [space.sample_random(rng) for _ in range(n)]


SAMPLERS = {
    "optuna-random": functools.partial(optuna_configs, sampler="random"),
    "optuna-tpe": functools.partial(optuna_configs, sampler="tpe", n=80),
    "optuna-tpe-grouped": functools.partial(optuna_configs, sampler="tpe-grouped", n=60),
    "hyperopt-pyll": pyll_configs,
    "hyperopt-fmin": fmin_configs,
    "random": random_configs,
}
UNIFORM_SAMPLERS = ("optuna-random", "hyperopt-pyll", "random")


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_every_sampler_gives_valid_configs_with_exact_conditions(sampler):
    space = rich_space()
    configs = SAMPLERS[sampler](space)
    for config in configs:
        check_rich(config)
        space.validate_config(config)
        assert space.unflatten(space.flatten(config)) == config
    # the conditional branches are all exercised
    for name in ("momentum", "nest_scale", "rates", "extra", "gated"):
        assert any(name in c for c in configs), name
        assert any(name not in c for c in configs), name
    assert {len(c["units"]) for c in configs} >= {0, 1, 2, 3} - ({0} if "tpe" in sampler else set())


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_same_seed_same_configs(sampler):
    space = rich_space()
    fn = SAMPLERS[sampler]
    a = fn(space, n=25, seed=3)
    b = fn(space, n=25, seed=3)
    assert a == b
    assert a != fn(space, n=25, seed=4)


def test_sample_random_accepts_seed_or_generator():
    space = basic_space()
    assert space.sample_random(7) == space.sample_random(7)
    assert space.sample_random(np.random.default_rng(7)) == space.sample_random(7)


@pytest.mark.parametrize("sampler", UNIFORM_SAMPLERS)
def test_log_and_step_respected(sampler):
    space = rich_space()
    configs = SAMPLERS[sampler](space, n=400)
    lrs = np.array([c["lr"] for c in configs])
    # log-uniform on [1e-4, 1e-2]: half below 1e-3 (uniform would put ~9% there)
    assert 0.4 < np.mean(lrs < 1e-3) < 0.6
    batches = np.array([c["batch"] for c in configs])
    # log-uniform int on [16, 256]: about half below 64 (uniform would put ~20% there)
    assert 0.38 < np.mean(batches < 64) < 0.62
    momenta = np.array([c["momentum"] for c in configs if "momentum" in c])
    assert 0.35 < np.mean(momenta < 0.45) < 0.65  # linear scale
    kernels = {c["kernel"] for c in configs}
    assert kernels == {1, 3, 5, 7}
    rates = {r for c in configs for r in c.get("rates", [])}
    assert rates == {0.0, 0.1, 0.2, 0.3, 0.4, 0.5}
    widths = {c["width"] for c in configs}
    assert min(widths) == 1 and max(widths) == 40


def test_step_grid_starts_at_low():
    space = Space(
        "g",
        family="dense",
        params=[Param.float("x", 0.01, 0.2, step=0.05), Param.int("k", 3, 12, step=4)],
    )
    for config in pyll_configs(space, n=100) + random_configs(space, n=100):
        assert config["x"] in (0.01, 0.06, 0.11, 0.16)
        assert config["k"] in (3, 7, 11)
    for config in optuna_configs(space, "random", n=100):
        assert config["x"] in (0.01, 0.06, 0.11, 0.16)
        assert config["k"] in (3, 7, 11)


def test_per_param_lengths_follow_count_for_basic_space():
    space = basic_space()
    for sampler in UNIFORM_SAMPLERS:
        for config in SAMPLERS[sampler](space, n=50):
            assert len(config["units"]) == config["n_layers"]
            assert ("momentum" in config) == (config["opt"] == "sgd")
            assert config["head"] == "softmax"
            assert list(config) == [n for n in space.names if n in config]


# --------------------------------------------------------------------------- Optuna


def test_optuna_flat_names_and_consts_not_suggested():
    import optuna

    space = basic_space()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(20):
        trial = study.ask()
        config = space.sample_optuna(trial)
        expected = ["n_layers", "lr", "opt"] + (["momentum"] if config["opt"] == "sgd" else [])
        expected += [f"units_{i}" for i in range(config["n_layers"])]
        assert sorted(trial.params) == sorted(expected)
        study.tell(trial, 0.0)


def test_enqueued_flat_config_is_asked_back():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = rich_space()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for config in random_configs(space, n=20, seed=5):
        study.enqueue_trial(space.flatten(config))
        trial = study.ask()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # an off-grid or out-of-range fixed value would warn
            assert space.sample_optuna(trial) == config
        study.tell(trial, 1.0)


def test_distributions_cover_every_flat_name():
    space = rich_space()
    dists = space.distributions()
    assert list(dists) == space.flat_names()
    assert "units_2" in dists and "units_3" not in dists and "head" not in dists
    for config in random_configs(space, n=30):
        for name, value in space.flatten(config).items():
            assert dists[name]._contains(dists[name].to_internal_repr(value))


# --------------------------------------------------------------------------- Hyperopt


def test_hyperopt_labels_unique_and_inactive_not_sampled():
    from hyperopt.pyll.base import as_apply, dfs

    space = rich_space()
    expr = as_apply(space.to_hyperopt())
    labels = [n.arg["label"].obj for n in dfs(expr) if n.name == "hyperopt_param"]
    assert len(labels) == len(set(labels))
    assert set(labels) == set(space.flat_names())
    # raw samples contain a conditional label only in the branch where it exists
    import hyperopt.pyll.stochastic

    rng = np.random.default_rng(0)
    for _ in range(100):
        raw = hyperopt.pyll.stochastic.sample(space.to_hyperopt(), rng=rng)
        flat = _walk(raw)
        assert ("momentum" in flat) == (flat["opt"] == "sgd")
        assert ("nest_scale" in flat) == (flat["opt"] == "sgd" and flat["nesterov"] is True)
        assert ("extra" in flat) == (flat["n_layers"] in (2, 3))
        assert sorted(k for k in flat if k.startswith("units_")) == [
            f"units_{i}" for i in range(flat["n_layers"])
        ]


def _walk(d: dict) -> dict:
    out: dict = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_walk(v))
        else:
            out[k] = v
    return out


def test_hyperopt_vals_shape():
    space = basic_space()
    config = {
        "n_layers": 2,
        "lr": 0.001,
        "opt": "sgd",
        "momentum": 0.5,
        "units": [8, 16],
        "head": "softmax",
    }
    assert space.hyperopt_vals(config) == {
        "n_layers": [1],
        "lr": [0.001],
        "opt": [1],
        "momentum": [0.5],
        "units_0": [8.0],
        "units_1": [16.0],
        "units_2": [],
    }
    config = {"n_layers": 1, "lr": 0.001, "opt": "adam", "units": [9], "head": "softmax"}
    vals = space.hyperopt_vals(config)
    assert vals["opt"] == [0] and vals["momentum"] == [] and vals["units_1"] == []


def _doc(tid: int, vals: dict[str, list], loss: float) -> dict[str, Any]:
    from hyperopt import JOB_STATE_DONE, STATUS_OK

    return {
        "tid": tid,
        "spec": None,
        "result": {"loss": loss, "status": STATUS_OK},
        "misc": {
            "tid": tid,
            "cmd": ("domain_attachment", "FMinIter_Domain"),
            "workdir": None,
            "idxs": {k: ([tid] if v else []) for k, v in vals.items()},
            "vals": vals,
        },
        "state": JOB_STATE_DONE,
        "owner": None,
        "book_time": None,
        "refresh_time": None,
        "exp_key": None,
    }


@pytest.mark.parametrize("make", [basic_space, rich_space])
def test_hyperopt_ask_tell_round_trip(make):
    """Configs from elsewhere -> Trials docs via hyperopt_vals -> tpe.suggest -> config."""
    from hyperopt import Trials, space_eval, tpe
    from hyperopt.base import Domain

    space = make()
    expr = space.to_hyperopt()
    domain = Domain(lambda _cfg: 0.0, expr)
    configs = random_configs(space, n=30, seed=11)
    trials = Trials()
    trials.insert_trial_docs(
        [_doc(i, space.hyperopt_vals(c), float(i % 7)) for i, c in enumerate(configs)]
    )
    trials.refresh()
    # the docs read back through hyperopt give the same configs; labels hyperopt samples but
    # the config does not use (wide_flag: its int parent is too wide to nest) hold [] and are
    # given any value here: from_hyperopt drops them again
    for trial, config in zip(trials.trials, configs, strict=True):
        point = {k: (v[0] if v else 0) for k, v in trial["misc"]["vals"].items()}
        assert space.from_hyperopt(space_eval(expr, point)) == config
    suggested = []
    for seed in range(8):
        new = tpe.suggest([len(configs)], domain, trials, seed, n_startup_jobs=5)
        vals = new[0]["misc"]["vals"]
        point = {k: v[0] for k, v in vals.items() if len(v)}
        config = space.from_hyperopt(space_eval(expr, point))
        space.validate_config(config)
        if make is rich_space:
            check_rich(config)
        suggested.append(config)
        # what hyperopt stored for the point is what hyperopt_vals says, on active labels
        mine = space.hyperopt_vals(config)
        for label, v in mine.items():
            if v:
                assert len(vals[label]) == 1 and math.isclose(float(vals[label][0]), float(v[0]))
    assert len({str(c) for c in suggested}) > 1


# --------------------------------------------------------------------------- flat form, dict form


def test_flatten_unflatten_round_trip():
    space = rich_space()
    for config in random_configs(space, n=100) + pyll_configs(space, n=50):
        flat = space.flatten(config)
        assert all(not isinstance(v, (list, dict)) for v in flat.values())
        assert "head" not in flat and "gated" not in flat
        assert space.unflatten(flat) == config
    config = basic_space().sample_random(0)
    flat = basic_space().flatten(config)
    assert basic_space().unflatten({**flat, "head": "softmax"}) == config


def test_flatten_example():
    space = basic_space()
    config = {
        "n_layers": 2,
        "lr": 0.001,
        "opt": "adam",
        "units": [8, 16],
        "head": "softmax",
    }
    assert space.flatten(config) == {
        "n_layers": 2,
        "lr": 0.001,
        "opt": "adam",
        "units_0": 8,
        "units_1": 16,
    }


def test_unflatten_errors():
    space = basic_space()
    flat = {"n_layers": 2, "lr": 0.001, "opt": "adam", "units_0": 8}
    with pytest.raises(SpaceError) as e:
        space.unflatten(flat)
    assert str(e.value) == "flat parameters lack 'units_1' (needed by param 'units')."
    with pytest.raises(SpaceError) as e:
        space.unflatten({**flat, "units_1": 9, "momentum": 0.5})
    assert str(e.value) == (
        "flat parameter 'momentum' (= 0.5) is not an active parameter of space 'basic'. "
        "Did you mean 'momentum'?"
    )
    with pytest.raises(SpaceError) as e:
        space.unflatten({**flat, "units_1": 900})
    assert str(e.value) == (
        "flat parameters: 'units_1' = 900 is not a possible value (int in [8, 64])."
    )


def test_yaml_and_python_construction_are_equal(tmp_path):
    path = tmp_path / "basic.yaml"
    path.write_text(BASIC_YAML)
    from_yaml = Space.from_yaml(path)
    from_python = basic_space()
    assert from_yaml == from_python
    assert from_yaml.fingerprint() == from_python.fingerprint()
    assert len(from_yaml.fingerprint()) == 64
    assert load_space(str(path)) == from_python
    assert load_space(path).fingerprint() == from_python.fingerprint()


def test_to_dict_round_trips_and_fingerprint_changes():
    for space in (basic_space(), rich_space()):
        d = space.to_dict()
        again = Space.from_dict(yaml.safe_load(yaml.safe_dump(d, sort_keys=False)))
        assert again == space
        assert again.fingerprint() == space.fingerprint()
        assert again.names == space.names
    other = Space.from_dict(
        {
            **basic_space().to_dict(),
            "params": {**basic_space().to_dict()["params"], "x": {"type": "bool"}},
        }
    )
    assert other.fingerprint() != basic_space().fingerprint()


def test_params_as_list_and_scalar_when_value():
    space = Space.from_dict(
        {
            "name": "l",
            "family": "text",
            "params": [
                {"name": "opt", "type": "categorical", "choices": ["adam", "sgd"]},
                {"name": "m", "type": "float", "low": 0, "high": 1, "when": {"opt": "sgd"}},
            ],
        }
    )
    assert space.param("m").when == (("opt", ("sgd",)),)
    assert space.description == ""


def test_children_may_precede_parents():
    space = Space(
        "o",
        family="dense",
        params=[
            Param.int("units", 1, 4, per="n"),
            Param.float("m", 0, 1, when={"opt": ["sgd"]}),
            Param.categorical("opt", ["adam", "sgd"]),
            Param.int("n", 1, 2),
        ],
    )
    for config in random_configs(space, n=30) + pyll_configs(space, n=30):
        assert list(config) == [k for k in ("units", "m", "opt", "n") if k in config]
        assert len(config["units"]) == config["n"]
        assert ("m" in config) == (config["opt"] == "sgd")


def test_const_per_param_and_zero_count():
    space = Space(
        "c",
        family="dense",
        params=[Param.int("n", 0, 2), Param.const("act", "relu", per="n")],
    )
    seen = set()
    for config in random_configs(space, n=40) + pyll_configs(space, n=40):
        assert config["act"] == ["relu"] * config["n"]
        seen.add(config["n"])
    assert seen == {0, 1, 2}


# --------------------------------------------------------------------------- validation

PARAM_ERRORS = [
    ({"type": "float", "low": 0.1, "high": 0.01}, "param 'lr': low (0.1) must be <= high (0.01)."),
    ({"type": "int", "low": 5, "high": 2}, "param 'lr': low (5) must be <= high (2)."),
    (
        {"type": "float", "low": 0.0, "high": 1.0, "log": True},
        "param 'lr': log requires low > 0, got low=0.0.",
    ),
    (
        {"type": "int", "low": -1, "high": 8, "log": True},
        "param 'lr': log requires low > 0, got low=-1.",
    ),
    ({"type": "float", "low": 0, "high": 1, "step": 0}, "param 'lr': step must be > 0, got 0."),
    ({"type": "int", "low": 0, "high": 8, "step": -2}, "param 'lr': step must be > 0, got -2."),
    (
        {"type": "float", "low": 0.001, "high": 1, "log": True, "step": 0.1},
        "param 'lr': step (0.1) cannot be combined with log; drop one.",
    ),
    (
        {"type": "categorical", "choices": []},
        "param 'lr': choices must be a non-empty list, got [].",
    ),
    (
        {"type": "categorical", "choices": "adam"},
        "param 'lr': choices must be a non-empty list, got 'adam'.",
    ),
    (
        {"type": "categorical", "choices": ["a", None]},
        "param 'lr': choice [1] must be a str, int, float or bool, got None.",
    ),
    (
        {"type": "categorical", "choices": ["a", "b", "a"]},
        "param 'lr': duplicate choice 'a' in ['a', 'b', 'a'].",
    ),
    (
        {"type": "flaot", "low": 0, "high": 1},
        "param 'lr': unknown type 'flaot'; valid types: float, int, categorical, bool, const. "
        "Did you mean 'float'?",
    ),
    (
        {"type": "zzz"},
        "param 'lr': unknown type 'zzz'; valid types: float, int, categorical, bool, const.",
    ),
    (
        {"low": 0, "high": 1},
        "param 'lr': missing key 'type'; valid types: float, int, categorical, bool, const.",
    ),
    (
        {"type": "float", "low": 0, "hihg": 1},
        "param 'lr': unknown key 'hihg' for type float; valid keys: type, low, high, log, step, "
        "when, per. Did you mean 'high'?",
    ),
    (
        {"type": "bool", "choices": [True]},
        "param 'lr': unknown key 'choices' for type bool; valid keys: type, when, per.",
    ),
    ({"type": "float", "low": 0}, "param 'lr': missing required key 'high' for type float."),
    ({"type": "int", "low": 0.5, "high": 3}, "param 'lr': low must be an integer, got 0.5."),
    (
        {"type": "float", "low": "abc", "high": 3},
        "param 'lr': low must be a finite number, got 'abc'.",
    ),
    (
        {"type": "float", "low": 0, "high": 1, "log": "yes"},
        "param 'lr': log must be true or false, got 'yes'.",
    ),
    (
        {"type": "const", "value": [1, 2]},
        "param 'lr': value must be a str, int, float, bool or null, got [1, 2].",
    ),
    (
        {"type": "float", "low": 0, "high": 1, "when": "opt"},
        "param 'lr': when must be a mapping of parent name to a list of values, got 'opt'.",
    ),
    (
        {"type": "float", "low": 0, "high": 1, "when": {"opt": []}},
        "param 'lr': when['opt'] must list at least one value.",
    ),
    (3, "param 'lr': must be a mapping with a 'type' key, got 3."),
]


@pytest.mark.parametrize(("definition", "message"), PARAM_ERRORS)
def test_param_validation_messages(definition, message):
    with pytest.raises(SpaceError) as e:
        Param.from_dict("lr", definition)
    assert str(e.value) == message
    assert isinstance(e.value, ValueError)


def test_python_constructors_validate_too():
    with pytest.raises(SpaceError) as e:
        Param.float("lr", 0.1, 0.01)
    assert str(e.value) == "param 'lr': low (0.1) must be <= high (0.01)."
    with pytest.raises(SpaceError) as e:
        Param("lr", "bool", low=1)
    assert str(e.value) == (
        "param 'lr': key 'low' does not apply to type bool; valid keys: type, when, per."
    )
    with pytest.raises(SpaceError) as e:
        Param.int("bad-name", 1, 2)
    assert str(e.value) == (
        "parameter names must be identifiers (letters, digits, underscores), got 'bad-name'."
    )


def test_yaml_float_without_dot_is_read_as_number():
    p = Param.from_dict("lr", {"type": "float", "low": "1e-4", "high": "1e-2", "log": True})
    assert p.low == 1e-4 and p.high == 1e-2


def _space(params: dict, family: str = "dense") -> dict:
    return {"name": "t", "family": family, "params": params}


OPT = {"type": "categorical", "choices": ["adam", "sgd"]}
N_LAYERS = {"type": "int", "low": 1, "high": 3}

SPACE_ERRORS = [
    (
        _space(
            {"opt": OPT, "m": {"type": "float", "low": 0, "high": 1, "when": {"optim": ["sgd"]}}}
        ),
        "param 'm': when refers to unknown parameter 'optim'. Did you mean 'opt'?",
    ),
    (
        _space(
            {
                "lr": {"type": "float", "low": 0, "high": 1},
                "m": {"type": "bool", "when": {"lr": [0.5]}},
            }
        ),
        "param 'm': when parent 'lr' must be a categorical, bool or int parameter, got float.",
    ),
    (
        _space({"opt": OPT, "m": {"type": "bool", "when": {"opt": ["sgdd"]}}}),
        "param 'm': when value 'sgdd' is not a possible value of 'opt' (one of ['adam', 'sgd']).",
    ),
    (
        _space({"b": {"type": "bool"}, "m": {"type": "bool", "when": {"b": [1]}}}),
        "param 'm': when value 1 is not a possible value of 'b' (true or false).",
    ),
    (
        _space({"n": N_LAYERS, "m": {"type": "bool", "when": {"n": [7]}}}),
        "param 'm': when value 7 is not a possible value of 'n' (int in [1, 3]).",
    ),
    (
        _space(
            {
                "n": N_LAYERS,
                "u": {"type": "int", "low": 1, "high": 4, "per": "n"},
                "m": {"type": "bool", "when": {"u": [2]}},
            }
        ),
        "param 'm': when parent 'u' is a per-layer parameter (a list); conditions need a scalar "
        "parent.",
    ),
    (
        _space({"n_layers": N_LAYERS, "u": {"type": "int", "low": 1, "high": 4, "per": "n_layer"}}),
        "param 'u': per refers to unknown parameter 'n_layer'. Did you mean 'n_layers'?",
    ),
    (
        _space({"opt": OPT, "u": {"type": "int", "low": 1, "high": 4, "per": "opt"}}),
        "param 'u': per parameter 'opt' must be an int parameter, got categorical.",
    ),
    (
        _space({"n": {"type": "float", "low": 1, "high": 3}, "u": {"type": "bool", "per": "n"}}),
        "param 'u': per parameter 'n' must be an int parameter, got float.",
    ),
    (
        _space(
            {
                "n": {"type": "int", "low": 1, "high": 8, "log": True},
                "u": {"type": "bool", "per": "n"},
            }
        ),
        "param 'u': per parameter 'n' must not be log-scaled.",
    ),
    (
        _space({"n": {"type": "int", "low": 1, "high": 20}, "u": {"type": "bool", "per": "n"}}),
        "param 'u': per parameter 'n' must have 0 <= low and high <= 16, got low=1, high=20.",
    ),
    (
        _space(
            {
                "n": N_LAYERS,
                "u": {"type": "int", "low": 1, "high": 4, "per": "n"},
                "v": {"type": "bool", "per": "u"},
            }
        ),
        "param 'v': per parameter 'u' is itself a per-layer parameter.",
    ),
    (
        _space(
            {
                "a": {"type": "categorical", "choices": ["x", "y"], "when": {"b": ["x"]}},
                "b": {"type": "categorical", "choices": ["x", "y"], "when": {"c": [True]}},
                "c": {"type": "bool", "when": {"a": ["y"]}},
            }
        ),
        "conditions form a cycle: a -> b -> c -> a (each parameter's when/per refers to the next).",
    ),
    (
        _space({"a": {"type": "bool", "when": {"a": [True]}}}),
        "conditions form a cycle: a -> a (each parameter's when/per refers to the next).",
    ),
    (
        _space(
            {
                "n": {"type": "int", "low": 1, "high": 3, "when": {"u": [1]}},
                "k": {"type": "bool"},
                "u": {"type": "int", "low": 1, "high": 2, "when": {"n": [1]}},
            }
        ),
        "conditions form a cycle: n -> u -> n (each parameter's when/per refers to the next).",
    ),
    (
        _space({"n": N_LAYERS, "u": {"type": "bool", "per": "n"}, "u_1": {"type": "bool"}}),
        "param 'u_1': flat name 'u_1' collides with parameter 'u'.",
    ),
    (
        _space({"opt": OPT}, family="mlp"),
        "family 'mlp' does not exist; valid families: dense, cnn, text, multi_input, wide_deep, "
        "multi_output, realmlp, lightgbm, catboost, xgboost, hist_gbm, random_forest, "
        "extra_trees. Did you mean 'realmlp'?",
    ),
    (
        _space({"opt": OPT}, family="dnse"),
        "family 'dnse' does not exist; valid families: dense, cnn, text, multi_input, wide_deep, "
        "multi_output, realmlp, lightgbm, catboost, xgboost, hist_gbm, random_forest, "
        "extra_trees. Did you mean 'dense'?",
    ),
    (
        {"name": "t", "family": "dense", "parms": {}},
        "unknown key 'parms' in space; valid keys: name, description, family, params, portfolio. "
        "Did you mean 'params'?",
    ),
    ({"name": "t", "params": {"opt": OPT}}, "space is missing required key 'family'."),
    (
        {"name": "", "family": "dense", "params": {"opt": OPT}},
        "space name must be a non-empty string, got ''.",
    ),
    (_space({}), "space 't': params must not be empty."),
    (_space([1]), "params given as a list need a 'name' in each item, got 1."),
    (
        _space("opt"),
        "params must be a mapping of parameter name to definition, got 'opt'.",
    ),
    (["a"], "a space must be a mapping with name, family and params, got list."),
]


@pytest.mark.parametrize(("definition", "message"), SPACE_ERRORS)
def test_space_validation_messages(definition, message):
    with pytest.raises(SpaceError) as e:
        Space.from_dict(definition)
    assert str(e.value) == message


def test_duplicate_names_in_python():
    with pytest.raises(SpaceError) as e:
        Space("d", family="dense", params=[Param.bool("a"), Param.bool("a")])
    assert str(e.value) == "duplicate parameter name 'a'."


def test_family_names_constant():
    assert space_module.FAMILY_NAMES == (
        "dense",
        "cnn",
        "text",
        "multi_input",
        "wide_deep",
        "multi_output",
        "realmlp",
    )


# --------------------------------------------------------------------------- files and library


def test_yaml_errors_name_the_path(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SpaceError) as e:
        Space.from_yaml(missing)
    assert str(e.value) == f"space file not found: {missing}"
    with pytest.raises(SpaceError) as e:
        load_space(str(missing))
    assert str(e.value) == f"space file not found: {missing}"

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nparams: {a: [1, 2}\n")
    with pytest.raises(SpaceError) as e:
        Space.from_yaml(bad)
    assert str(e.value) == (
        f"{bad}: malformed YAML (line 2, column 18): expected ',' or ']', but got '}}'. "
        "Fix: correct the YAML at that position."
    )

    dup = tmp_path / "dup.yaml"
    dup.write_text("name: x\nfamily: dense\nparams:\n  a: {type: bool}\n  a: {type: bool}\n")
    with pytest.raises(SpaceError) as e:
        Space.from_yaml(dup)
    assert str(e.value) == (
        f"{dup}: malformed YAML (line 5, column 3): duplicate key 'a'. "
        "Fix: correct the YAML at that position."
    )

    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(SpaceError) as e:
        Space.from_yaml(listy)
    assert str(e.value) == (
        f"{listy}: a space must be a mapping with name, family and params, got list."
    )

    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(BASIC_YAML.replace("low: 1.0e-4, high: 1.0e-2", "low: 0.1, high: 0.01"))
    with pytest.raises(SpaceError) as e:
        Space.from_yaml(wrong)
    assert str(e.value) == f"{wrong}: param 'lr': low (0.1) must be <= high (0.01)."


@pytest.fixture
def library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    lib = tmp_path / "library"
    lib.mkdir()
    (lib / "basic.yaml").write_text(BASIC_YAML)
    (lib / "zeta.yaml").write_text(
        BASIC_YAML.replace("name: basic", "name: zeta").replace("A small space.", "Last one.")
    )
    (lib / "alpha_mlp.yaml").write_text(
        BASIC_YAML.replace("name: basic", "name: alpha_mlp").replace("A small space.", "First.")
    )
    (lib / "notes.txt").write_text("not a space")
    monkeypatch.setattr(space_module, "LIBRARY_DIR", lib)
    return lib


def test_list_library_sorted(library):
    assert list_library() == [
        ("alpha_mlp", "First."),
        ("basic", "A small space."),
        ("zeta", "Last one."),
    ]


def test_load_space_by_library_name(library):
    space = load_space("basic")
    assert space == basic_space()
    assert load_space(space) is space


def test_unknown_library_name(library):
    with pytest.raises(SpaceError) as e:
        load_space("alpha_mpl")
    assert str(e.value) == (
        f"unknown space 'alpha_mpl': not in the library {library} (available: alpha_mlp, basic, "
        "zeta) and not a .yaml path. Did you mean 'alpha_mlp'? "
        "Fix: name a library space (`hpsearch space list`) or give the path of a .yaml space file."
    )
    with pytest.raises(SpaceError) as e:
        load_space("qqq")
    assert str(e.value) == (
        f"unknown space 'qqq': not in the library {library} (available: alpha_mlp, basic, "
        "zeta) and not a .yaml path. "
        "Fix: name a library space (`hpsearch space list`) or give the path of a .yaml space file."
    )


def test_python_tags_are_refused(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['true']\nfamily: dense\nparams: {}\n")
    with pytest.raises(SpaceError) as e:
        Space.from_yaml(evil)
    msg = str(e.value)
    assert (
        "tag:yaml.org,2002:python/object/apply:os.system" in msg
        and "safe YAML loader" in msg
        and "Fix:" in msg
    )


def test_malformed_library_file(library):
    (library / "broken.yaml").write_text("name: [\n")
    with pytest.raises(SpaceError) as e:
        load_space("broken")
    assert str(e.value).startswith(f"{library / 'broken.yaml'}: malformed YAML (line ")


# --------------------------------------------------------------------------- validate_config


CONFIG_ERRORS = [
    (
        {"n_layers": 1, "lr": 0.001, "opt": "adam", "units": [8], "head": "softmax", "x": 1},
        "config: unknown parameter 'x'.",
    ),
    (
        {
            "n_layers": 1,
            "lr": 0.001,
            "opt": "adam",
            "units": [8],
            "head": "softmax",
            "momentum": 0.1,
        },
        "config: param 'momentum' is given but inactive (needs opt in ['sgd']).",
    ),
    (
        {"n_layers": 1, "lr": 0.001, "opt": "sgd", "units": [8], "head": "softmax"},
        "config: param 'momentum' is missing.",
    ),
    (
        {"n_layers": 2, "lr": 0.001, "opt": "adam", "units": [8], "head": "softmax"},
        "config: param 'units' must be a list of 2 values (n_layers=2), got [8].",
    ),
    (
        {"n_layers": 1, "lr": 0.5, "opt": "adam", "units": [8], "head": "softmax"},
        "config: param 'lr' = 0.5 is not a possible value (float in [0.0001, 0.01]).",
    ),
    (
        {"n_layers": 1, "lr": 0.001, "opt": "nadam", "units": [8], "head": "softmax"},
        "config: param 'opt' = 'nadam' is not a possible value (one of ['adam', 'sgd']).",
    ),
    (
        {"n_layers": 1, "lr": 0.001, "opt": "adam", "units": [8.5], "head": "softmax"},
        "config: param 'units'[0] = 8.5 is not a possible value (int in [8, 64]).",
    ),
    (
        {"n_layers": 1, "lr": 0.001, "opt": "adam", "units": [8], "head": "sigmoid"},
        "config: param 'head' = 'sigmoid' is not a possible value (always 'softmax').",
    ),
    ([1], "config must be a mapping, got [1]."),
]


@pytest.mark.parametrize(("config", "message"), CONFIG_ERRORS)
def test_validate_config_messages(config, message):
    with pytest.raises(SpaceError) as e:
        basic_space().validate_config(config)
    assert str(e.value) == message


def test_validate_config_accepts_samples():
    space = basic_space()
    space.validate_config(space.sample_random(0))
    with pytest.raises(SpaceError):
        space.flatten({"n_layers": 1})


def test_importing_search_spaces_stays_light():
    import subprocess
    import sys

    code = (
        "import sys, search_spaces; "
        "heavy = [m for m in ('tensorflow', 'keras', 'optuna', 'hyperopt', 'ray') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


def _portfolio_space(portfolio):
    return Space.from_dict(
        {
            "name": "p",
            "family": "dense",
            "params": {
                "n": {"type": "int", "low": 1, "high": 3},
                "u": {"type": "int", "low": 8, "high": 64, "per": "n"},
                "opt": {"type": "categorical", "choices": ["adam", "sgd"]},
                "m": {"type": "float", "low": 0.0, "high": 0.9, "when": {"opt": ["sgd"]}},
            },
            "portfolio": portfolio,
        }
    )


def test_a_space_portfolio_is_validated_and_round_trips():
    space = _portfolio_space(
        [{"n": 2, "u": [16, 32], "opt": "adam"}, {"n": 1, "u": [8], "opt": "sgd", "m": 0.5}]
    )
    assert space.portfolio[1] == {"n": 1, "u": [8], "opt": "sgd", "m": 0.5}
    assert Space.from_dict(space.to_dict()) == space
    # a space without a portfolio keeps its YAML form (and so its fingerprint)
    bare = _portfolio_space(None)
    assert "portfolio" not in bare.to_dict() and bare.portfolio == ()
    assert bare.fingerprint() != space.fingerprint()


@pytest.mark.parametrize(
    "portfolio, words",
    [
        (
            [{"n": 2, "u": [16], "opt": "adam"}],
            "portfolio[0]: config: param 'u' must be a list of 2",
        ),
        (
            [{"n": 1, "u": [8], "opt": "adam", "m": 0.1}],
            "portfolio[0]: config: param 'm' is given but inactive",
        ),
        ([{"n": 1, "u": [8], "opt": "adam"}, {"n": 9, "u": [8], "opt": "adam"}], "portfolio[1]"),
        ({"n": 1}, "portfolio must be a list of configurations"),
    ],
)
def test_a_bad_portfolio_entry_is_refused_naming_its_index(portfolio, words):
    with pytest.raises(SpaceError, match=re.escape(words)):
        _portfolio_space(portfolio)
