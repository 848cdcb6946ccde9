"""``dense``: a multilayer perceptron over every input present (categoricals embedded).

Params: n_layers, units (per layer), activation, batch_norm, dropout, residual, l2.
"""

from __future__ import annotations

from typing import Any

from search_spaces.families import _common as c
from search_spaces.specs import InputSpec, OutputSpec


def build(params: dict[str, Any], inputs: InputSpec, outputs: OutputSpec) -> Any:
    tensors = c.make_inputs(inputs)
    x = c.concat(c.feature_vectors(tensors, inputs, params), "features")
    x = c.dense_stack(x, params, prefix="dense")
    return c.finish(tensors, c.output_heads(x, outputs), "dense")
