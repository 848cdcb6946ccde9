"""``text``: Embedding(vocab_size, embed_dim) on the ``text`` input, an encoder, global pooling, a dense head.

encoder conv1d: n_conv_layers x Conv1D(filters (per layer), kernel_size) with 2x max pooling
between layers (while the sequence allows); encoder rnn: rnn_type lstm|gru, rnn_units,
bidirectional. Then global pooling (``pooling`` max|avg), dense_units (0 for none), dropout.
Other inputs present are concatenated before the dense head.
"""

from __future__ import annotations

from typing import Any

from keras import layers

from search_spaces.families import _common as c
from search_spaces.specs import InputSpec, OutputSpec


def build(params: dict[str, Any], inputs: InputSpec, outputs: OutputSpec) -> Any:
    if inputs.text is None:
        raise ValueError(
            "family 'text' needs a text input: set InputSpec.text = TextInput(vocab_size, seq_len)."
        )
    tensors = c.make_inputs(inputs)
    activation = params.get("activation") or "relu"
    reg = c.regularizer(params)
    embed_dim = int(params.get("embed_dim") or 32)
    x = layers.Embedding(int(inputs.text.vocab_size), embed_dim, name="text_embedding")(
        tensors["text"]
    )
    encoder = str(params.get("encoder") or "conv1d")
    if encoder == "conv1d":
        n = max(1, c.count(params, "n_conv_layers", 1))
        filters = c.per_layer(params, "filters", n, 64)
        kernels = c.per_layer(params, "kernel_size", n, 5)
        for i in range(n):
            if i > 0 and (x.shape[1] is None or x.shape[1] >= 4):
                x = layers.MaxPooling1D(2, padding="same", name=f"conv{i}_pool")(x)
            x = layers.Conv1D(
                int(filters[i]),
                int(kernels[i]),
                padding="same",
                activation=activation,
                kernel_regularizer=reg,
                name=f"conv{i}",
            )(x)
    elif encoder == "rnn":
        rnn_type = str(params.get("rnn_type") or "lstm")
        if rnn_type not in ("lstm", "gru"):
            raise ValueError(f"text rnn_type {rnn_type!r}: expected lstm or gru.")
        cls = layers.LSTM if rnn_type == "lstm" else layers.GRU
        rnn = cls(int(params.get("rnn_units") or 32), return_sequences=True, name=rnn_type)
        if params.get("bidirectional"):
            rnn = layers.Bidirectional(rnn, name=f"bi{rnn_type}")
        x = rnn(x)
    else:
        raise ValueError(f"text encoder {encoder!r}: expected conv1d or rnn.")
    if str(params.get("pooling") or "max") == "avg":
        x = layers.GlobalAveragePooling1D(name="global_pool")(x)
    else:
        x = layers.GlobalMaxPooling1D(name="global_pool")(x)
    extras = c.feature_vectors(tensors, inputs, params, skip=("text",))
    x = c.concat([x, *extras], "head_features")
    units = int(params.get("dense_units") or 0)
    if units > 0:
        x = layers.Dense(units, activation=activation, kernel_regularizer=reg, name="head_dense")(x)
    dropout = float(params.get("dropout") or 0.0)
    if dropout > 0:
        x = layers.Dropout(dropout, name="head_dropout")(x)
    return c.finish(tensors, c.output_heads(x, outputs), "text")
