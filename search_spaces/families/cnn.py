"""``cnn``: convolutional blocks over the ``image`` input, a global pooling and a dense head.

Needs ``inputs.image_shape``; without one, ``params["image_shape"]`` reshapes the numeric block
(its width must equal the product). Params: n_blocks, filters (per block), kernel_size (scalar or
per block), conv_type conv|separable (Conv2D or SeparableConv2D), convs_per_block (default 1),
activation, batch_norm, dropout, residual (a 1x1 strided Conv2D projection on the shortcut when
width or stride changes), pooling max|avg|none (scalar or per block; 2x2 stride-2 downsampling),
global_pooling avg|max, dense_units (0 for none), l2. Other inputs present are concatenated
before the dense head.
"""

from __future__ import annotations

import math
from typing import Any

from keras import layers

from search_spaces.families import _common as c
from search_spaces.specs import InputSpec, OutputSpec

_POOL = {"max": layers.MaxPooling2D, "avg": layers.AveragePooling2D}


def _image(tensors: dict[str, Any], inputs: InputSpec, params: dict[str, Any]) -> Any:
    if "image" in tensors:
        x = tensors["image"]
        shape = tuple(inputs.image_shape or ())
    else:
        shape = tuple(int(s) for s in (params.get("image_shape") or ()))
        if not shape or "numeric" not in tensors or math.prod(shape) != inputs.numeric:
            raise ValueError(
                "family 'cnn' needs image input: set InputSpec.image_shape, or params['image_shape'] "
                f"whose product equals the numeric width ({inputs.numeric}); got {shape or None}."
            )
        x = tensors["numeric"]
    if len(shape) == 2:
        return layers.Reshape((*shape, 1), name="image_reshape")(x)
    if len(shape) != 3:
        raise ValueError(f"family 'cnn': image_shape must be (H, W) or (H, W, C), got {shape}.")
    if "image" not in tensors:
        return layers.Reshape(shape, name="image_reshape")(x)
    return x


def build(params: dict[str, Any], inputs: InputSpec, outputs: OutputSpec) -> Any:
    tensors = c.make_inputs(inputs)
    x = _image(tensors, inputs, params)
    n_blocks = c.count(params, "n_blocks", 2)
    filters = c.per_layer(params, "filters", n_blocks, 32)
    kernels = c.per_layer(params, "kernel_size", n_blocks, 3)
    pooling = c.per_layer(params, "pooling", n_blocks, "max")
    dropout = c.per_layer(params, "dropout", n_blocks, 0.0)
    convs = max(1, int(params.get("convs_per_block") or 1))
    conv_type = str(params.get("conv_type") or "conv")
    if conv_type not in ("conv", "separable"):
        raise ValueError(f"cnn conv_type {conv_type!r}: expected conv or separable.")
    conv_cls = layers.SeparableConv2D if conv_type == "separable" else layers.Conv2D
    activation = params.get("activation") or "relu"
    batch_norm = bool(params.get("batch_norm", False))
    residual = bool(params.get("residual", False))
    reg = c.regularizer(params)
    reg_kw = (
        {"depthwise_regularizer": reg, "pointwise_regularizer": reg}
        if conv_type == "separable"
        else {"kernel_regularizer": reg}
    )
    for b in range(n_blocks):
        f, k, pool = int(filters[b]), int(kernels[b]), str(pooling[b] or "none")
        if pool not in ("max", "avg", "none"):
            raise ValueError(f"cnn pooling {pool!r}: expected max, avg or none.")
        shortcut = x
        h = x
        for j in range(convs):
            h = conv_cls(f, k, padding="same", name=f"block{b}_conv{j}", **reg_kw)(h)
            if batch_norm:
                h = layers.BatchNormalization(name=f"block{b}_bn{j}")(h)
            h = layers.Activation(activation, name=f"block{b}_act{j}")(h)
        height, width = h.shape[1], h.shape[2]
        downsample = (
            pool != "none" and (height is None or height >= 2) and (width is None or width >= 2)
        )
        if downsample:
            h = _POOL[pool](2, padding="same", name=f"block{b}_pool")(h)
        if residual:
            if downsample or shortcut.shape[-1] != f:
                shortcut = layers.Conv2D(
                    f,
                    1,
                    strides=2 if downsample else 1,
                    padding="same",
                    kernel_regularizer=reg,
                    name=f"block{b}_proj",
                )(shortcut)
            h = layers.Add(name=f"block{b}_res")([h, shortcut])
        if float(dropout[b] or 0.0) > 0:
            h = layers.Dropout(float(dropout[b]), name=f"block{b}_dropout")(h)
        x = h
    gp = str(params.get("global_pooling") or "avg")
    if gp == "max":
        x = layers.GlobalMaxPooling2D(name="global_pool")(x)
    else:
        x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    extras = c.feature_vectors(
        tensors, inputs, params, skip=("image",) if "image" in tensors else ("numeric",)
    )
    x = c.concat([x, *extras], "head_features")
    units = int(params.get("dense_units") or 0)
    if units > 0:
        x = layers.Dense(units, activation=activation, kernel_regularizer=reg, name="head_dense")(x)
        head_dropout = float(params.get("head_dropout") or 0.0)
        if head_dropout > 0:
            x = layers.Dropout(head_dropout, name="head_dropout")(x)
    return c.finish(tensors, c.output_heads(x, outputs), "cnn")
