"""Conformance of every library space: sample through every back end, build every config, train two.

Each space is sampled >= 20 times through Optuna (random sampler, define-by-run), Hyperopt
(``pyll.stochastic.sample`` + ``from_hyperopt``) and the seeded random sampler; every configuration
must build with its family on a suitable InputSpec, and every sampled parameter must be read by the
family or by ``compile_model`` (catches YAML names the family does not know).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from search_spaces.specs import Head, InputSpec, OutputSpec, TextInput

LIBRARY_DIR = Path(__file__).resolve().parents[1] / "search_spaces" / "library"
# tree families' spaces (never built as networks) are tested in tests/test_tree_trainer.py
_TREE_FAMILIES = {
    "lightgbm", "catboost", "xgboost", "hist_gbm", "random_forest", "extra_trees"
}  # fmt: skip
LIBRARY = sorted(
    p.stem
    for p in LIBRARY_DIR.glob("*.yaml")
    if yaml.safe_load(p.read_text()).get("family") not in _TREE_FAMILIES
)
EXPECTED = {
    "tabular_mlp",
    "tabular_multi_input",
    "wide_deep",
    "image_separable_cnn",
    "text_conv1d",
    "tabular_multi_output",
    "tabular_realmlp",
}
N_SAMPLES = 20
TRAINING_ONLY = {"batch_size", "epochs"}  # read by hpsearch's trial runner, not by the model
TASKS = (("binary", 1), ("multiclass", 3), ("regression", 1))
MAX_PARAMS = 2_000_000


def example_inputs(space: Any) -> InputSpec:
    """A small InputSpec that suits the space's family."""
    family = space.family
    if family == "cnn":
        return InputSpec(image_shape=(12, 12, 3))
    if family == "text":
        return InputSpec(text=TextInput(vocab_size=500, seq_len=24))
    if family == "multi_input":
        return InputSpec(
            numeric=8,
            categorical={"colour": 6, "city": 120},
            text=TextInput(vocab_size=300, seq_len=16),
        )
    if family == "wide_deep":
        return InputSpec(numeric=8, categorical={"colour": 6, "city": 120})
    return InputSpec(numeric=10, categorical={"colour": 6})


def example_outputs(space: Any, i: int) -> OutputSpec:
    task, k = TASKS[i % len(TASKS)]
    if space.family == "multi_output":
        return OutputSpec(heads=(Head("output", task, k), Head("second", "regression", 1, 0.5)))
    return OutputSpec.single(task, k)


class Recorder(dict):
    """A params dict that remembers which keys a family read."""

    def __init__(self, *args: Any, seen: set[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen = seen

    def get(self, key: Any, default: Any = None) -> Any:
        self.seen.add(key)
        return super().get(key, default)

    def __getitem__(self, key: Any) -> Any:
        self.seen.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: Any) -> bool:
        self.seen.add(key)
        return super().__contains__(key)


def sample_all(space: Any) -> list[tuple[str, dict[str, Any]]]:
    import hyperopt.pyll.stochastic
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    configs: list[tuple[str, dict[str, Any]]] = []
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(N_SAMPLES):
        trial = study.ask()
        configs.append(("optuna", space.sample_optuna(trial)))
    expr = space.to_hyperopt()
    for i in range(N_SAMPLES):
        raw = hyperopt.pyll.stochastic.sample(expr, rng=np.random.default_rng(i))
        configs.append(("hyperopt", space.from_hyperopt(raw)))
    for seed in range(N_SAMPLES):
        configs.append(("random", space.sample_random(seed)))
    return configs


def synthetic(model: Any, outputs: OutputSpec, n: int = 32) -> tuple[dict, dict]:
    rng = np.random.default_rng(0)
    x = {}
    for t in model.inputs:
        shape = (n, *t.shape[1:])
        if "int" in str(t.dtype):
            x[t.name] = rng.integers(0, 5, size=shape).astype("int32")
        else:
            x[t.name] = rng.normal(size=shape).astype("float32")
    y = {}
    for h in outputs.heads:
        if h.task == "regression":
            y[h.name] = rng.normal(size=n).astype("float32")
        else:
            y[h.name] = rng.integers(0, max(2, h.n_classes), size=n).astype("int32")
    return x, y


# --------------------------------------------------------------------------- YAML only


def test_library_has_the_expected_spaces():
    assert set(LIBRARY) >= EXPECTED


@pytest.mark.parametrize("name", LIBRARY)
def test_library_yaml_conventions(name):
    from search_spaces.families import FAMILIES

    doc = yaml.safe_load((LIBRARY_DIR / f"{name}.yaml").read_text())
    assert doc["name"] == name
    assert isinstance(doc["description"], str) and doc["description"].strip()
    assert "\n" not in doc["description"].strip()
    assert doc["family"] in FAMILIES
    params = doc["params"]
    for required in ("optimizer", "learning_rate", "batch_size"):
        assert required in params, f"{name}: every library space samples {required}"
    assert "adam" in params["optimizer"]["choices"]
    assert set(params["optimizer"]["choices"]) <= {"adam", "adamw", "rmsprop", "sgd"}
    assert params["learning_rate"]["type"] == "float" and params["learning_rate"].get("log")
    for pname in ("filters",):
        if pname in params:
            assert params[pname]["high"] <= 64, f"{name}.{pname}: keep models small"
    if "units" in params:
        assert params["units"]["high"] <= 256, f"{name}.units: keep models small"


# --------------------------------------------------------------------------- space language


def test_list_library_lists_every_yaml():
    from search_spaces import list_library

    rows = dict(list_library())
    assert set(LIBRARY) <= set(rows)
    assert all(rows[n] for n in LIBRARY)


def test_space_language_knows_every_family():
    import search_spaces
    from search_spaces import Param, Space, SpaceError
    from search_spaces.families import FAMILIES

    assert search_spaces.FAMILY_NAMES == FAMILIES
    for family in FAMILIES:  # every registered family is accepted by the space language
        assert Space("s", family=family, params=[Param.bool("a")]).family == family
    with pytest.raises(SpaceError, match="family 'dence' does not exist"):
        Space("s", family="dence", params=[Param.bool("a")])


@pytest.mark.parametrize("name", LIBRARY)
def test_library_space_conformance(name):
    import keras

    from search_spaces import load_space
    from search_spaces.families import (
        FAMILIES,
        build_model,
        compile_model,
        count_params,
        get_builder,
    )

    space = load_space(name)
    assert space.name == name
    assert space.family in FAMILIES
    inputs = example_inputs(space)
    builder = get_builder(space.family)
    configs = sample_all(space)
    assert len(configs) >= 3 * N_SAMPLES
    seen: set[str] = set()
    sampled: set[str] = set()
    for i, (backend, config) in enumerate(configs):
        assert isinstance(config, dict), (backend, config)
        for required in ("optimizer", "learning_rate", "batch_size"):
            assert required in config, (backend, config)
        assert ("momentum" in config) == (config["optimizer"] == "sgd"), (backend, config)
        space.validate_config(config)
        sampled |= set(config)
        outputs = example_outputs(space, i)
        params = Recorder(config, seen=seen)
        model = builder(params, inputs, outputs)
        compile_model(model, params, outputs)
        n = count_params(model)
        assert 0 < n < MAX_PARAMS, (backend, config, n)
        if i % 10 == 9:
            keras.backend.clear_session()
    unread = sampled - seen - TRAINING_ONLY
    assert not unread, f"{name}: sampled parameters the family never reads: {sorted(unread)}"

    # train two configurations (one per task kind) for one step on tiny synthetic data
    for i in (0, 1):
        config = configs[i * (N_SAMPLES + 1)][1]  # an Optuna and a Hyperopt configuration
        outputs = example_outputs(space, i)
        model = build_model(space.family, config, inputs, outputs)
        compile_model(model, config, outputs)
        model.run_eagerly = True
        x, y = synthetic(model, outputs)
        from search_spaces.families import aux_targets

        hist = model.fit(x, aux_targets(model, y), epochs=1, batch_size=16, verbose=0)
        assert np.isfinite(hist.history["loss"][-1]), (name, config)
