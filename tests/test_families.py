"""Architecture families: every family builds and trains a step for every task; structure checks."""

from __future__ import annotations

import numpy as np
import pytest

from search_spaces.specs import Head, InputSpec, OutputSpec, TextInput

N_ROWS = 32

INPUTS = {
    "dense": InputSpec(numeric=6, categorical={"colour": 4}),
    "cnn": InputSpec(image_shape=(8, 8, 1)),
    "text": InputSpec(text=TextInput(vocab_size=50, seq_len=12)),
    "multi_input": InputSpec(
        numeric=6, categorical={"colour": 4, "city": 30}, text=TextInput(vocab_size=50, seq_len=10)
    ),
    "wide_deep": InputSpec(numeric=6, categorical={"colour": 4, "city": 9}),
    "multi_output": InputSpec(numeric=6, categorical={"colour": 4}),
    "realmlp": InputSpec(numeric=6, categorical={"colour": 4}),
}

SMALL = {
    "dense": {
        "n_layers": 2,
        "units": [16, 8],
        "batch_norm": True,
        "dropout": 0.1,
        "residual": True,
    },
    "cnn": {
        "n_blocks": 2,
        "filters": [4, 8],
        "batch_norm": True,
        "residual": True,
        "dense_units": 8,
    },
    "text": {"embed_dim": 8, "n_conv_layers": 2, "filters": [8, 8], "kernel_size": 3},
    "multi_input": {"n_layers": 1, "units": [8], "numeric_units": 8, "text_filters": 8},
    "wide_deep": {"n_layers": 2, "units": [16, 8]},
    "multi_output": {"n_layers": 2, "units": [16, 8], "aux_head": True},
    "realmlp": {"n_layers": 2, "units": 16, "plr_frequencies": 4, "ensemble_size": 2},
}

TASKS = {
    "binary": Head("output", "binary", 1),
    "multiclass": Head("output", "multiclass", 3),
    "regression": Head("output", "regression", 1),
}


@pytest.fixture(scope="module")
def fam():
    import search_spaces.families as families

    return families


def synthetic_x(model, n: int = N_ROWS, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = {}
    for t in model.inputs:
        shape = (n, *t.shape[1:])
        if "int" in str(t.dtype):
            x[t.name] = rng.integers(0, 4, size=shape).astype("int32")
        else:
            x[t.name] = rng.normal(size=shape).astype("float32")
    return x


def synthetic_y(head: Head, n: int = N_ROWS, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if head.task == "regression":
        return rng.normal(size=n).astype("float32")
    return rng.integers(0, max(2, head.n_classes), size=n).astype("int32")


def train_one_step(fam, model, params, outputs: OutputSpec, eager: bool = True) -> float:
    fam.compile_model(model, params, outputs)
    model.run_eagerly = eager  # tiny data: tracing costs more than the step
    y = fam.aux_targets(model, {h.name: synthetic_y(h) for h in outputs.heads})
    hist = model.fit(synthetic_x(model), y, epochs=1, batch_size=16, verbose=0)
    loss = hist.history["loss"][-1]
    assert np.isfinite(loss)
    return loss


def layer_types(model) -> list[str]:
    return [type(layer).__name__ for layer in model.layers]


# --------------------------------------------------------------------------- registry


def test_registry_is_lazy_and_complete():
    import subprocess
    import sys

    code = (
        "import sys, search_spaces.families as f; "
        "print(f.FAMILIES); assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "dense" in out.stdout


def test_families_tuple(fam):
    assert fam.FAMILIES == (
        "dense", "cnn", "text", "multi_input", "wide_deep", "multi_output", "realmlp",
    )  # fmt: skip


def test_unknown_family_raises_clear_error(fam):
    with pytest.raises(ValueError, match="unknown architecture family 'resnet9000'.*dense"):
        fam.build_model("resnet9000", {}, INPUTS["dense"], OutputSpec.single("binary"))


def test_a_user_family_plugs_in_as_module_colon_name(fam):
    from search_spaces import Param, Space

    space = Space("mine", family="tests.plugin_family:build", params=[Param.int("units", 2, 8)])
    model = fam.build_model(
        space.family, {"units": 5}, InputSpec(numeric=3), OutputSpec.single("binary")
    )
    assert model.name == "plugin_family"
    assert [w.shape for w in model.layers[1].weights][0] == (3, 5)


def test_a_registered_family_is_accepted_by_the_space_language(fam):
    from search_spaces import Param, Space, SpaceError

    fam.FAMILY_REGISTRY.register("tiny", "tests.plugin_family:build")
    try:
        assert Space("t", family="tiny", params=[Param.bool("a")]).family == "tiny"
        assert fam.get_builder("tiny").__module__ == "tests.plugin_family"
    finally:
        fam.FAMILY_REGISTRY.unregister("tiny")
    with pytest.raises(SpaceError, match="family 'tiny' does not exist"):
        Space("t", family="tiny", params=[Param.bool("a")])


# --------------------------------------------------------------------------- build + train


@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize("family", list(INPUTS))
def test_family_builds_and_trains_one_step(fam, family, task):
    outputs = OutputSpec(heads=(TASKS[task],))
    params = {**SMALL[family], "optimizer": "adam", "learning_rate": 1e-3}
    model = fam.build_model(family, params, INPUTS[family], outputs)
    assert sorted(t.name for t in model.inputs) == sorted(INPUTS[family].input_names())
    assert isinstance(model.output, dict) and "output" in model.output
    head = TASKS[task]
    width = head.n_classes if task == "multiclass" else 1
    assert tuple(model.output["output"].shape) == (None, width)
    train_one_step(fam, model, params, outputs)
    assert fam.count_params(model) > 0


@pytest.mark.parametrize("family", list(INPUTS))
def test_empty_params_use_defaults(fam, family):
    model = fam.build_model(family, {}, INPUTS[family], OutputSpec.single("binary"))
    assert fam.count_params(model) > 0


def test_graph_mode_fit_with_sgd(fam):
    outputs = OutputSpec.single("binary")
    params = {"optimizer": "sgd", "learning_rate": 0.01}
    model = fam.build_model("dense", params, INPUTS["dense"], outputs)
    train_one_step(fam, model, params, outputs, eager=False)
    assert type(model.optimizer).__name__ == "SGD"
    assert float(model.optimizer.momentum) == pytest.approx(0.9)


@pytest.mark.parametrize("name,cls", [("adam", "Adam"), ("rmsprop", "RMSprop"), ("sgd", "SGD")])
def test_compile_optimizers(fam, name, cls):
    outputs = OutputSpec.single("regression")
    params = {"optimizer": name, "learning_rate": 0.005, "momentum": 0.5}
    model = fam.build_model("dense", {"n_layers": 1}, INPUTS["dense"], outputs)
    fam.compile_model(model, params, outputs)
    assert type(model.optimizer).__name__ == cls
    assert float(model.optimizer.learning_rate) == pytest.approx(0.005)
    if name == "sgd":
        assert float(model.optimizer.momentum) == pytest.approx(0.5)


def test_other_inputs_are_tolerated(fam):
    """Families use every input present (dense on image + text, cnn with extra numeric)."""
    everything = InputSpec(
        numeric=4, categorical={"c": 3}, text=TextInput(30, 6), image_shape=(6, 6, 2)
    )
    outputs = OutputSpec.single("binary")
    for family in fam.FAMILIES:
        model = fam.build_model(family, {"n_layers": 1, "n_blocks": 1}, everything, outputs)
        assert sorted(t.name for t in model.inputs) == sorted(everything.input_names())


def test_cnn_reshapes_numeric_when_image_shape_param(fam):
    outputs = OutputSpec.single("binary")
    model = fam.build_model("cnn", {"image_shape": [4, 4]}, InputSpec(numeric=16), outputs)
    assert "Reshape" in layer_types(model)
    with pytest.raises(ValueError, match="needs image input"):
        fam.build_model("cnn", {}, InputSpec(numeric=16), outputs)


def test_text_family_needs_text(fam):
    with pytest.raises(ValueError, match="needs a text input"):
        fam.build_model("text", {}, InputSpec(numeric=3), OutputSpec.single("binary"))


def test_text_rnn_encoders(fam):
    outputs = OutputSpec.single("multiclass", 3)
    for rnn_type in ("lstm", "gru"):
        for bidirectional in (False, True):
            params = {
                "encoder": "rnn",
                "rnn_type": rnn_type,
                "rnn_units": 8,
                "bidirectional": bidirectional,
                "embed_dim": 8,
            }
            model = fam.build_model("text", params, INPUTS["text"], outputs)
            desc = fam.describe_model(model)
            assert rnn_type.upper() in desc
            assert ("Bi" + rnn_type.upper() in desc) == bidirectional
    train_one_step(fam, model, params, outputs)


# --------------------------------------------------------------------------- structure


def test_separable_has_fewer_params_and_is_described(fam):
    outputs = OutputSpec.single("binary")
    inputs = InputSpec(image_shape=(16, 16, 3))
    base = {"n_blocks": 2, "filters": [32, 64], "kernel_size": 3, "batch_norm": True}
    conv = fam.build_model("cnn", {**base, "conv_type": "conv"}, inputs, outputs)
    sep = fam.build_model("cnn", {**base, "conv_type": "separable"}, inputs, outputs)
    assert fam.count_params(sep) < fam.count_params(conv)
    assert "SeparableConv2D" in layer_types(sep) and "SeparableConv2D" not in layer_types(conv)
    assert "SeparableConv2D" in fam.describe_model(sep)
    assert "SeparableConv2D" not in fam.describe_model(conv)


@pytest.mark.parametrize("conv_type", ["conv", "separable"])
@pytest.mark.parametrize("pooling", ["max", "avg", "none"])
def test_cnn_residual_across_widths_and_strides(fam, conv_type, pooling):
    outputs = OutputSpec.single("multiclass", 3)
    params = {
        "n_blocks": 3,
        "filters": [4, 8, 8],
        "conv_type": conv_type,
        "residual": True,
        "pooling": pooling,
        "dropout": 0.1,
    }
    model = fam.build_model("cnn", params, InputSpec(image_shape=(9, 9, 1)), outputs)
    names = [layer.name for layer in model.layers]
    assert sum(n.endswith("_res") for n in names) == 3
    # block0 widens 1 -> 4 and block1 4 -> 8: projected; block2 keeps 8: projected only if strided
    assert "block0_proj" in names and "block1_proj" in names
    assert ("block2_proj" in names) == (pooling != "none")
    if pooling != "none":
        assert model.get_layer("block0_proj").get_config()["strides"] == (2, 2)
    assert "[+res]" in fam.describe_model(model)
    train_one_step(fam, model, params, outputs)


def test_cnn_per_block_pooling_and_global_max(fam):
    params = {"n_blocks": 2, "filters": [4, 4], "pooling": ["avg", "none"], "global_pooling": "max"}
    model = fam.build_model("cnn", params, INPUTS["cnn"], OutputSpec.single("binary"))
    types = layer_types(model)
    assert "AveragePooling2D" in types and "MaxPooling2D" not in types
    assert "GlobalMaxPooling2D" in types


def test_dense_residual_across_widths(fam):
    outputs = OutputSpec.single("regression")
    params = {"n_layers": 3, "units": [16, 16, 8], "residual": True, "batch_norm": True}
    model = fam.build_model("dense", params, InputSpec(numeric=16), outputs)
    names = [layer.name for layer in model.layers]
    assert sum(n.endswith("_res") for n in names) == 3
    # 16 -> 16 keeps the identity; 16 -> 16 identity; 16 -> 8 projects
    assert "dense_0_proj" not in names and "dense_1_proj" not in names
    assert "dense_2_proj" in names
    desc = fam.describe_model(model)
    assert "[+res]" in desc and "BN" in desc and "output:Dense(1)" in desc
    train_one_step(fam, model, params, outputs)


def test_describe_model_is_one_line(fam):
    params = {"n_layers": 2, "units": [64, 32], "dropout": 0.2, "batch_norm": True}
    model = fam.build_model("dense", params, InputSpec(numeric=30), OutputSpec.single("binary"))
    desc = fam.describe_model(model)
    assert "\n" not in desc
    assert desc.startswith("numeric(30) > Dense(64) > BN")
    assert "Dropout(0.2)" in desc and desc.endswith("output:Dense(1,sigmoid)")


def test_multi_input_embedding_dims(fam):
    inputs = InputSpec(numeric=3, categorical={"small": 5, "big": 1000})
    model = fam.build_model("multi_input", {}, inputs, OutputSpec.single("binary"))
    assert model.get_layer("emb_small").output_dim == 3
    assert model.get_layer("emb_big").output_dim == 50
    model = fam.build_model(
        "multi_input", {"cat_embed_dim": 4}, inputs, OutputSpec.single("binary")
    )
    assert model.get_layer("emb_big").output_dim == 4


# --------------------------------------------------------------------------- multi_output


def two_heads() -> OutputSpec:
    return OutputSpec(heads=(Head("churn", "binary", 1, 1.0), Head("spend", "regression", 1, 0.5)))


@pytest.mark.parametrize("aux", [False, True])
def test_multi_output_heads_and_aux(fam, aux):
    outputs = two_heads()
    params = {"n_layers": 2, "units": [16, 8], "aux_head": aux, "aux_weight": 0.2}
    model = fam.build_model("multi_output", params, INPUTS["multi_output"], outputs)
    expected = {"churn", "spend"} | ({"churn_aux"} if aux else set())
    assert set(model.output) == expected
    y = fam.aux_targets(model, {"churn": synthetic_y(outputs.heads[0]), "spend": np.zeros(N_ROWS)})
    assert set(y) == expected
    if aux:
        assert y["churn_aux"] is y["churn"]
    fam.compile_model(model, params, outputs)
    assert model.loss == {
        "churn": "binary_crossentropy",
        "spend": "mse",
        **({"churn_aux": "binary_crossentropy"} if aux else {}),
    }
    train_one_step(fam, model, params, outputs)


def test_aux_weight_default(fam):
    from search_spaces.families import _common

    outputs = two_heads()
    model = fam.build_model("multi_output", {"aux_head": True}, INPUTS["multi_output"], outputs)
    captured = {}
    original = model.compile

    def spy(**kwargs):
        captured.update(kwargs)
        return original(**kwargs)

    model.compile = spy
    _common.compile_model(model, {}, outputs)
    assert captured["loss_weights"] == pytest.approx({"churn": 1.0, "spend": 0.5, "churn_aux": 0.3})
    assert captured["loss"]["churn_aux"] == "binary_crossentropy"


def test_multiclass_needs_two_classes(fam):
    with pytest.raises(ValueError, match="n_classes >= 2"):
        fam.build_model("dense", {}, INPUTS["dense"], OutputSpec.single("multiclass", 1))


# --------------------------------------------------------------------------- wide_deep


def _predecessors(layer) -> list:
    preds = []
    for node in layer._inbound_nodes:
        for t in node.input_tensors:
            preds.append(t._keras_history.operation)
    return preds


def _paths_to_inputs(layer, path=()):
    """Every path (tuple of layer names) from ``layer`` back to an InputLayer."""
    path = (*path, layer.name)
    preds = _predecessors(layer)
    if not preds:
        yield path
        return
    for p in preds:
        yield from _paths_to_inputs(p, path)


def test_wide_deep_has_a_wide_path_around_the_deep_trunk(fam):
    inputs = INPUTS["wide_deep"]
    params = {"n_layers": 2, "units": [16, 8]}
    model = fam.build_model("wide_deep", params, inputs, OutputSpec.single("binary"))
    out_layer = model.get_layer("output")
    paths = list(_paths_to_inputs(out_layer))
    deep_layers = {layer.name for layer in model.layers if layer.name.startswith("deep_")}
    assert deep_layers, "the deep trunk is missing"
    for source in ("numeric", "cat_colour", "cat_city"):
        from_source = [p for p in paths if p[-1] == source]
        assert any(not (set(p) & deep_layers) for p in from_source), source
        assert any(set(p) & deep_layers for p in from_source), source
    # the deep and wide logits are added before the activation
    assert type(model.get_layer("output_logits")).__name__ == "Add"
    assert "Wide" in fam.describe_model(model)
    train_one_step(fam, model, params, OutputSpec.single("binary"))
