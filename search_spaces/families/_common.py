"""Shared building blocks of the families. Imports Keras: only imported when building."""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from search_spaces.specs import Head, InputSpec, OutputSpec

# --------------------------------------------------------------------------- params


def per_layer(params: dict[str, Any], name: str, n: int, default: Any) -> list[Any]:
    """A per-layer parameter as a list of length ``n`` (scalars broadcast, short lists padded)."""
    value = params.get(name, default)
    if value is None:
        value = default
    if not isinstance(value, list | tuple):
        return [value] * n
    values = list(value)
    if not values:
        values = list(default) if isinstance(default, list | tuple) else [default]
    return (values + [values[-1]] * n)[:n]


def count(params: dict[str, Any], name: str, default: int) -> int:
    value = params.get(name)
    return max(0, int(default if value is None else value))


def regularizer(params: dict[str, Any]) -> Any:
    l2 = float(params.get("l2") or 0.0)
    return keras.regularizers.L2(l2) if l2 > 0 else None


def embed_dim_for(cardinality: int, params: dict[str, Any]) -> int:
    dim = params.get("cat_embed_dim")
    if dim:
        return int(dim)
    return int(min(50, max(1, (int(cardinality) + 1) // 2)))


# --------------------------------------------------------------------------- inputs


def make_inputs(spec: InputSpec) -> dict[str, Any]:
    """One ``keras.Input`` per name in ``spec.input_names()``."""
    tensors: dict[str, Any] = {}
    if spec.numeric:
        tensors["numeric"] = keras.Input(shape=(int(spec.numeric),), name="numeric")
    for col in spec.categorical:
        name = f"cat_{col}"
        tensors[name] = keras.Input(shape=(1,), dtype="int32", name=name)
    if spec.text is not None:
        tensors["text"] = keras.Input(shape=(int(spec.text.seq_len),), dtype="int32", name="text")
    if spec.image_shape is not None:
        tensors["image"] = keras.Input(shape=tuple(int(s) for s in spec.image_shape), name="image")
    if not tensors:
        raise ValueError(
            "InputSpec describes no inputs (numeric=0, no categorical, text or image)."
        )
    return tensors


def categorical_embeddings(
    tensors: dict[str, Any], spec: InputSpec, params: dict[str, Any], prefix: str = ""
) -> list[Any]:
    """One flattened Embedding per categorical column (dim from ``cat_embed_dim`` or min(50,(card+1)//2))."""
    out = []
    for col, card in spec.categorical.items():
        dim = embed_dim_for(card, params)
        emb = layers.Embedding(int(card), dim, name=f"{prefix}emb_{col}")(tensors[f"cat_{col}"])
        out.append(layers.Flatten(name=f"{prefix}emb_{col}_flat")(emb))
    return out


def text_vector(
    tensors: dict[str, Any], spec: InputSpec, params: dict[str, Any], prefix: str
) -> Any:
    """A small text branch: Embedding > Conv1D > GlobalMaxPooling1D."""
    assert spec.text is not None
    dim = int(params.get("text_embed_dim") or 16)
    filters = int(params.get("text_filters") or 32)
    kernel = int(params.get("text_kernel_size") or 3)
    x = layers.Embedding(int(spec.text.vocab_size), dim, name=f"{prefix}text_embedding")(
        tensors["text"]
    )
    x = layers.Conv1D(
        filters, kernel, padding="same", activation="relu", name=f"{prefix}text_conv"
    )(x)
    return layers.GlobalMaxPooling1D(name=f"{prefix}text_pool")(x)


def feature_vectors(
    tensors: dict[str, Any],
    spec: InputSpec,
    params: dict[str, Any],
    prefix: str = "",
    skip: tuple[str, ...] = (),
) -> list[Any]:
    """Every input present as flat feature vectors (for families that do not own a kind).

    numeric: as is; categorical: embeddings; text: the small Conv1D branch; image: Flatten.
    Names listed in ``skip`` (``"numeric"``, ``"categorical"``, ``"text"``, ``"image"``) are left out.
    """
    parts: list[Any] = []
    if "numeric" in tensors and "numeric" not in skip:
        parts.append(tensors["numeric"])
    if "categorical" not in skip:
        parts += categorical_embeddings(tensors, spec, params, prefix)
    if "text" in tensors and "text" not in skip:
        parts.append(text_vector(tensors, spec, params, prefix))
    if "image" in tensors and "image" not in skip:
        parts.append(layers.Flatten(name=f"{prefix}image_flat")(tensors["image"]))
    return parts


NUMERIC_EMBEDDINGS = ("none", "periodic")


def numeric_block(
    x: Any, spec: InputSpec, params: dict[str, Any], prefix: str = "", clip: bool = True
) -> Any:
    """The ``numeric`` input as a flat vector for tabular networks.

    ``clip``: robust scaling with the spec's ``numeric_center``/``numeric_scale`` (where
    recorded) and a smooth clip at +-3 (:class:`RobustClip`). ``numeric_embedding``:
    ``none`` (the scaled values) or ``periodic`` (PLR-lite: per feature ``plr_frequencies``
    trainable frequencies from N(0, ``plr_sigma``), cos and sin, a ``Dense(plr_dim, relu)``
    shared by the features, flattened and joined to the scaled values).
    """
    from search_spaces.families.custom_layers import PeriodicEmbedding, RobustClip

    kind = str(params.get("numeric_embedding") or "none")
    if kind not in NUMERIC_EMBEDDINGS:
        raise ValueError(
            f"numeric_embedding {kind!r}: expected one of {', '.join(NUMERIC_EMBEDDINGS)}."
        )
    if clip:
        center = list(spec.numeric_center) if spec.numeric_center is not None else None
        scale = list(spec.numeric_scale) if spec.numeric_scale is not None else None
        if center is not None and len(center) != int(spec.numeric):
            center = scale = None  # statistics of other columns: standardized values as they are
        x = RobustClip(center, scale, 3.0, name=f"{prefix}numeric_clip")(x)
    if kind == "none":
        return x
    k = int(params.get("plr_frequencies") or 16)
    sigma = float(params.get("plr_sigma") or 0.1)
    dim = int(params.get("plr_dim") or 8)
    p = PeriodicEmbedding(k, sigma, name=f"{prefix}numeric_periodic")(x)
    p = layers.Dense(dim, activation="relu", name=f"{prefix}numeric_plr")(p)
    p = layers.Flatten(name=f"{prefix}numeric_plr_flat")(p)
    return layers.Concatenate(name=f"{prefix}numeric_embedded")([x, p])


def concat(parts: list[Any], name: str) -> Any:
    if not parts:
        raise ValueError("no input features to build on")
    if len(parts) == 1:
        return parts[0]
    return layers.Concatenate(name=name)(parts)


# --------------------------------------------------------------------------- blocks


def dense_stack(
    x: Any, params: dict[str, Any], prefix: str = "dense", return_all: bool = False
) -> Any:
    """``n_layers`` x [Dense > BN? > activation > Dropout?] with optional residual adds.

    Params: n_layers, units (per layer), activation, batch_norm, dropout (scalar or per layer),
    residual (a Dense projection on the shortcut where widths differ), l2.
    """
    n = count(params, "n_layers", 2)
    units = per_layer(params, "units", n, 64)
    dropout = per_layer(params, "dropout", n, 0.0)
    activation = params.get("activation") or "relu"
    batch_norm = bool(params.get("batch_norm", False))
    residual = bool(params.get("residual", False))
    reg = regularizer(params)
    hidden = []
    for i in range(n):
        width = int(units[i])
        h = layers.Dense(width, kernel_regularizer=reg, name=f"{prefix}_{i}")(x)
        if batch_norm:
            h = layers.BatchNormalization(name=f"{prefix}_{i}_bn")(h)
        h = layers.Activation(activation, name=f"{prefix}_{i}_act")(h)
        if float(dropout[i] or 0.0) > 0:
            h = layers.Dropout(float(dropout[i]), name=f"{prefix}_{i}_dropout")(h)
        if residual:
            shortcut = x
            if x.shape[-1] != width:
                shortcut = layers.Dense(
                    width, use_bias=False, kernel_regularizer=reg, name=f"{prefix}_{i}_proj"
                )(x)
            h = layers.Add(name=f"{prefix}_{i}_res")([h, shortcut])
        x = h
        hidden.append(h)
    return (x, hidden) if return_all else x


def head_units(head: Head) -> int:
    return int(head.n_classes) if head.task == "multiclass" else 1


def head_activation(head: Head) -> str:
    return {"binary": "sigmoid", "multiclass": "softmax", "regression": "linear"}[head.task]


def output_layer(x: Any, head: Head, name: str | None = None) -> Any:
    """binary: Dense(1, sigmoid); multiclass: Dense(K, softmax); regression: Dense(1, linear)."""
    if head.task == "multiclass" and int(head.n_classes) < 2:
        raise ValueError(
            f"head {head.name!r}: multiclass needs n_classes >= 2, got {head.n_classes}."
        )
    return layers.Dense(head_units(head), activation=head_activation(head), name=name or head.name)(
        x
    )


def output_heads(x: Any, outputs: OutputSpec) -> dict[str, Any]:
    return {head.name: output_layer(x, head) for head in outputs.heads}


def finish(tensors: dict[str, Any], outs: dict[str, Any], name: str) -> Any:
    return keras.Model(inputs=tensors, outputs=outs, name=name)


# --------------------------------------------------------------------------- compile


OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
LR_SCHEDULES = ("constant", "cosine")


def _optimizer(params: dict[str, Any]) -> Any:
    name = str(params.get("optimizer") or "adam").lower()
    lr = float(params.get("learning_rate") or 1e-3)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=lr)
    if name == "adamw":  # decoupled weight decay (Loshchilov & Hutter 2019)
        wd = params.get("weight_decay")
        return keras.optimizers.AdamW(
            learning_rate=lr, weight_decay=0.01 if wd is None else float(wd)
        )
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=lr)
    if name == "sgd":
        momentum = params.get("momentum")
        return keras.optimizers.SGD(
            learning_rate=lr, momentum=0.9 if momentum is None else float(momentum)
        )
    raise ValueError(f"optimizer {name!r}: expected one of {', '.join(OPTIMIZERS)}.")


LOSSES = {
    "binary": "binary_crossentropy",
    "multiclass": "sparse_categorical_crossentropy",
    "regression": "mse",
}


def lr_schedule(params: dict[str, Any]) -> str:
    """The sampled ``lr_schedule`` (``constant`` when absent); ValueError when unknown.
    The trainer applies it (``cosine``: from ``learning_rate`` down to 0 over the epochs)."""
    name = str(params.get("lr_schedule") or "constant")
    if name not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule {name!r}: expected one of {', '.join(LR_SCHEDULES)}.")
    return name


def _smoothed_losses(params: dict[str, Any]) -> dict[str, Any]:
    """Classification losses with ``label_smoothing`` (none when it is absent or 0)."""
    from search_spaces.families.custom_layers import SparseCategoricalCrossentropyLS

    smoothing = float(params.get("label_smoothing") or 0.0)
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"label_smoothing {smoothing}: expected a value in [0, 1).")
    if smoothing == 0.0:
        return {}
    return {
        "binary": keras.losses.BinaryCrossentropy(label_smoothing=smoothing),
        "multiclass": SparseCategoricalCrossentropyLS(label_smoothing=smoothing),
    }


def compile_model(
    model: Any,
    params: dict[str, Any],
    outputs: OutputSpec,
    losses: dict[str, str] | None = None,
) -> Any:
    """Compile with the sampled optimizer and a loss per output: ``LOSSES`` by the head's
    task, or ``losses[task]`` where given (e.g. ``{"regression": "mean_absolute_error"}``).
    ``label_smoothing`` > 0 smooths the classification losses."""
    from search_spaces.families._names import output_names

    params = params or {}
    lr_schedule(params)
    by_task = {**LOSSES, **_smoothed_losses(params), **(losses or {})}
    heads = {h.name: h for h in outputs.heads}
    aux_weight = params.get("aux_weight")
    aux_weight = 0.3 if aux_weight is None else float(aux_weight)
    loss: dict[str, Any] = {}
    weights: dict[str, float] = {}
    for name in output_names(model):
        if name in heads:
            head, w = heads[name], float(heads[name].loss_weight)
        elif name.endswith("_aux") and name[:-4] in heads:
            head = heads[name[:-4]]
            w = float(head.loss_weight) * aux_weight
        else:
            raise ValueError(f"model output {name!r} matches no head of {list(heads)}.")
        loss[name] = by_task[head.task]
        weights[name] = w
    model.compile(optimizer=_optimizer(params), loss=loss, loss_weights=weights)
    return model


# --------------------------------------------------------------------------- describe


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:g}"
    if isinstance(x, tuple | list):
        return "x".join(str(v) for v in x) if len(set(x)) > 1 else str(x[0])
    return str(x)


def _layer_token(layer: Any) -> str | None:
    cls = type(layer).__name__
    cfg = layer.get_config()
    act = cfg.get("activation")
    act = act if isinstance(act, str) and act != "linear" else None
    if cls == "InputLayer":
        shape = cfg.get("batch_shape") or cfg.get("batch_input_shape") or (None,)
        return f"{layer.name}({','.join(str(s) for s in shape[1:])})"
    if cls == "Dense":
        prefix = "Dense"
        if layer.name.endswith("_proj"):
            prefix = "Proj"
        elif "_wide_" in layer.name:
            prefix = "Wide"
        elif layer.name.endswith("_logits"):
            prefix = "Logits"
        return f"{prefix}({cfg['units']}{',' + act if act else ''})"
    if cls in ("Conv2D", "SeparableConv2D", "Conv1D", "SeparableConv1D"):
        if layer.name.endswith("_proj"):
            return f"Proj{cls[-2:]}({cfg['filters']},1,s{_fmt(cfg['strides'])})"
        return f"{cls}({cfg['filters']},{_fmt(cfg['kernel_size'])}{',' + act if act else ''})"
    if cls == "Embedding":
        if "_wide_" in layer.name:
            return f"WideEmbedding({cfg['input_dim']},{cfg['output_dim']})"
        return f"Embedding({cfg['input_dim']},{cfg['output_dim']})"
    if cls in ("LSTM", "GRU"):
        return f"{cls}({cfg['units']})"
    if cls == "Bidirectional":
        inner = layer.forward_layer
        return f"Bi{type(inner).__name__}({inner.units})"
    if cls == "BatchNormalization":
        return "BN"
    if cls == "Dropout":
        return f"Dropout({_fmt(cfg['rate'])})"
    if cls == "Activation":
        return str(cfg["activation"])
    if cls == "Add":
        return "+logits" if "logit" in layer.name else "[+res]"
    if cls == "Concatenate":
        return "Concat"
    short = {
        "MaxPooling2D": "MaxPool",
        "AveragePooling2D": "AvgPool",
        "MaxPooling1D": "MaxPool1D",
        "AveragePooling1D": "AvgPool1D",
        "GlobalAveragePooling2D": "GAP",
        "GlobalMaxPooling2D": "GMP",
        "GlobalAveragePooling1D": "GAP1D",
        "GlobalMaxPooling1D": "GMP1D",
        "Reshape": "Reshape",
    }
    if cls in short:
        return short[cls]
    if cls == "Flatten":
        return None
    return cls


def describe_model(model: Any) -> str:
    from search_spaces.families._names import output_names

    outs = set(output_names(model))
    tokens = []
    for layer in model.layers:
        token = _layer_token(layer)
        if token is None:
            continue
        if layer.name in outs:
            token = f"{layer.name}:{token}"
        tokens.append(token)
    return " > ".join(tokens)
