"""``multi_input``: per-kind branches concatenated into a dense trunk.

numeric: Dense(numeric_units) block, fed the standardized values as they are
(``numeric_embedding: none``, the default) or robustly scaled, smoothly clipped and embedded
(``periodic``: the numeric block of ``realmlp``, params plr_frequencies, plr_sigma, plr_dim);
categorical: one Embedding per column (``cat_embed_dim`` or
min(50, (card+1)//2)); text (when present and ``use_text`` is not False): Embedding(text_embed_dim)
> Conv1D(text_filters, text_kernel_size) > GlobalMaxPooling1D; image: flattened.
Trunk params: n_layers, units (per layer), activation, batch_norm, dropout, residual, l2.
"""

from __future__ import annotations

from typing import Any

from keras import layers

from search_spaces.families import _common as c
from search_spaces.specs import InputSpec, OutputSpec


def build(params: dict[str, Any], inputs: InputSpec, outputs: OutputSpec) -> Any:
    tensors = c.make_inputs(inputs)
    reg = c.regularizer(params)
    activation = params.get("activation") or "relu"
    parts: list[Any] = []
    if "numeric" in tensors:
        units = int(params.get("numeric_units") or 32)
        numeric = tensors["numeric"]
        if (params.get("numeric_embedding") or "none") != "none":
            numeric = c.numeric_block(numeric, inputs, params)
        h = layers.Dense(units, kernel_regularizer=reg, name="numeric_dense")(numeric)
        if params.get("batch_norm"):
            h = layers.BatchNormalization(name="numeric_bn")(h)
        parts.append(layers.Activation(activation, name="numeric_act")(h))
    parts += c.categorical_embeddings(tensors, inputs, params)
    if "text" in tensors and params.get("use_text", True) is not False:
        parts.append(c.text_vector(tensors, inputs, params, prefix=""))
    if "image" in tensors:
        parts.append(layers.Flatten(name="image_flat")(tensors["image"]))
    if not parts:
        # text was the only input and use_text is False: keep the model well-formed
        parts.append(c.text_vector(tensors, inputs, params, prefix=""))
    x = c.concat(parts, "branches")
    x = c.dense_stack(x, params, prefix="trunk")
    return c.finish(tensors, c.output_heads(x, outputs), "multi_input")
