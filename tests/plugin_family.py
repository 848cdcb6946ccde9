"""A user's architecture family, plugged in as ``tests.plugin_family:build`` (tests only)."""

from __future__ import annotations

from typing import Any


def build(params: dict[str, Any], inputs: Any, outputs: Any) -> Any:
    """One Dense layer of ``params['units']`` over the numeric block, one sigmoid head."""
    import keras

    x_in = keras.Input(shape=(inputs.numeric,), name="numeric")
    hidden = keras.layers.Dense(int(params.get("units", 4)), activation="relu")(x_in)
    head = outputs.heads[0]
    out = keras.layers.Dense(1, activation="sigmoid", name=head.name)(hidden)
    return keras.Model({"numeric": x_in}, {head.name: out}, name="plugin_family")
