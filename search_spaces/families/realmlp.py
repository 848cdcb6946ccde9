"""``realmlp``: a tabular MLP built from published techniques for tables.

- numerics: robust scaling (median and interquartile range of the train rows, from the
  ``InputSpec``) and a smooth clip ``x / sqrt(1 + (x/3)^2)`` (RealMLP; Holzmueller et al. 2024,
  "Better by Default"), then ``numeric_embedding``: ``periodic`` (PLR-lite: ``plr_frequencies``
  frequencies from N(0, ``plr_sigma``), cos/sin, ``Dense(plr_dim, relu)``; Gorishniy et al. 2022)
  or ``none``;
- categoricals: one embedding per column (``cat_embed_dim``, default 8; 0: min(50, (card+1)//2));
- a trunk of ``n_layers`` x [Dense(``units``) > BN? > ``activation`` > Dropout(``dropout``)],
  ``residual`` adds (a ResNet-style MLP), ``l2``;
- ``ensemble_size`` k > 1: TabM-mini style ensembling (Gorishniy et al. 2024, "TabM"): the
  features are copied k times, each copy multiplied by its own trainable vector (random
  signs at the start), the trunk is shared, each copy has its own output layer, and the
  model predicts the mean of the k members' outputs.

What it is trained with (``compile_model`` and the Keras trainer): ``optimizer`` (``adamw``
with ``weight_decay``), ``learning_rate``, ``lr_schedule`` (``constant`` or ``cosine``),
``label_smoothing``, ``batch_size``, ``epochs`` (at most ``training.max_epochs``).
"""

from __future__ import annotations

from typing import Any

from keras import layers

from search_spaces.families import _common as c
from search_spaces.specs import InputSpec, OutputSpec

# the architecture when a parameter is absent: the library space's first portfolio entry
DEFAULTS: dict[str, Any] = {
    "numeric_embedding": "periodic",
    "plr_frequencies": 16,
    "plr_sigma": 0.1,
    "plr_dim": 8,
    "cat_embed_dim": 8,
    "n_layers": 3,
    "units": 256,
    "activation": "selu",
    "dropout": 0.15,
    "batch_norm": False,
    "residual": False,
    "l2": 0.0,
    "ensemble_size": 1,
}


def resolved(params: dict[str, Any]) -> dict[str, Any]:
    """``DEFAULTS`` overridden by the params that are given (not None)."""
    out = dict(DEFAULTS)
    for key in DEFAULTS:
        value = params.get(key)
        if value is not None:
            out[key] = value
    return out


def build(params: dict[str, Any], inputs: InputSpec, outputs: OutputSpec) -> Any:
    p = resolved(params)
    tensors = c.make_inputs(inputs)
    parts: list[Any] = []
    if "numeric" in tensors:
        parts.append(c.numeric_block(tensors["numeric"], inputs, p))
    parts += c.feature_vectors(tensors, inputs, p, skip=("numeric",))
    x = c.concat(parts, "features")
    k = int(p["ensemble_size"])
    if k <= 1:
        x = c.dense_stack(x, p, prefix="block")
        return c.finish(tensors, c.output_heads(x, outputs), "realmlp")
    from search_spaces.families.custom_layers import EnsembleDense, EnsembleScale

    x = EnsembleScale(k, name="ensemble_scale")(x)  # (batch, k, features)
    x = c.dense_stack(x, p, prefix="block")  # Dense acts on the last axis: shared by members
    outs = {}
    for head in outputs.heads:
        if head.task == "multiclass" and int(head.n_classes) < 2:
            raise ValueError(
                f"head {head.name!r}: multiclass needs n_classes >= 2, got {head.n_classes}."
            )
        h = EnsembleDense(c.head_units(head), name=f"{head.name}_members")(x)
        h = layers.Activation(c.head_activation(head), name=f"{head.name}_member_act")(h)
        outs[head.name] = layers.GlobalAveragePooling1D(name=head.name)(h)
    return c.finish(tensors, outs, "realmlp")
