"""``wide_deep``: a linear (wide) part joined straight to the output logits beside a deep MLP.

Wide: the numeric block through one Dense(n_out) and each categorical column through an
Embedding(card, n_out) (a one-hot linear term), added to the deep path's logits before the
head's activation. Deep: categoricals embedded (``cat_embed_dim`` or min(50,(card+1)//2)), text and
image as small branches, then n_layers/units/activation/batch_norm/dropout/residual/l2.
``wide_l2`` regularises the wide weights.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from search_spaces.families import _common as c
from search_spaces.specs import InputSpec, OutputSpec


def build(params: dict[str, Any], inputs: InputSpec, outputs: OutputSpec) -> Any:
    tensors = c.make_inputs(inputs)
    deep = c.concat(c.feature_vectors(tensors, inputs, params, prefix="deep_"), "deep_features")
    deep = c.dense_stack(deep, params, prefix="deep")
    wide_l2 = float(params.get("wide_l2") or 0.0)
    wide_reg = keras.regularizers.L2(wide_l2) if wide_l2 > 0 else None
    outs: dict[str, Any] = {}
    for head in outputs.heads:
        n_out = c.head_units(head)
        logits = [layers.Dense(n_out, name=f"{head.name}_deep_logits")(deep)]
        if "numeric" in tensors:
            logits.append(
                layers.Dense(n_out, kernel_regularizer=wide_reg, name=f"{head.name}_wide_numeric")(
                    tensors["numeric"]
                )
            )
        for col in inputs.categorical:
            w = layers.Embedding(
                int(inputs.categorical[col]),
                n_out,
                embeddings_regularizer=wide_reg,
                name=f"{head.name}_wide_{col}",
            )(tensors[f"cat_{col}"])
            logits.append(layers.Flatten(name=f"{head.name}_wide_{col}_flat")(w))
        z = logits[0] if len(logits) == 1 else layers.Add(name=f"{head.name}_logits")(logits)
        outs[head.name] = layers.Activation(c.head_activation(head), name=head.name)(z)
    return c.finish(tensors, outs, "wide_deep")
