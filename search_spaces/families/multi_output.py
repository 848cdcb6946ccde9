"""``multi_output``: a shared dense trunk with one output per head (own loss and weight).

Params: the dense trunk's (n_layers, units, activation, batch_norm, dropout, residual, l2),
head_units (a per-head Dense tower width, 0 for none), aux_head (bool: an auxiliary output for
the first head, named ``"<head>_aux"``, from the trunk's intermediate layer ``aux_layer``,
default the first), aux_weight (its loss weight factor, used by ``compile_model``).
"""

from __future__ import annotations

from typing import Any

from keras import layers

from search_spaces.families import _common as c
from search_spaces.specs import InputSpec, OutputSpec


def build(params: dict[str, Any], inputs: InputSpec, outputs: OutputSpec) -> Any:
    tensors = c.make_inputs(inputs)
    x = c.concat(c.feature_vectors(tensors, inputs, params), "features")
    trunk_in = x
    x, hidden = c.dense_stack(x, params, prefix="trunk", return_all=True)
    tower = int(params.get("head_units") or 0)
    activation = params.get("activation") or "relu"
    outs: dict[str, Any] = {}
    for head in outputs.heads:
        h = x
        if tower > 0:
            h = layers.Dense(tower, activation=activation, name=f"{head.name}_tower")(h)
        outs[head.name] = c.output_layer(h, head)
    if params.get("aux_head"):
        first = outputs.heads[0]
        source = trunk_in
        if hidden:
            idx = int(params.get("aux_layer") or 0)
            source = hidden[min(max(idx, 0), len(hidden) - 1)]
        outs[f"{first.name}_aux"] = c.output_layer(source, first, name=f"{first.name}_aux")
    return c.finish(tensors, outs, "multi_output")
