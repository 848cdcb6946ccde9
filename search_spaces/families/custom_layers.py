"""Layers and a loss of the tabular families that Keras does not ship, saved and loaded in
safe mode: each is registered with Keras (package ``hpsearch``) and carries its settings in
``get_config``, so a ``model.keras`` holding one loads without running code from the file.

Importing this module registers them; ``hpsearch.core.store.load_keras_model`` imports it
before it loads a model. Imports Keras: only imported when building or loading.

- :class:`RobustClip`: ``(x - center) / scale``, then the smooth clip ``x / sqrt(1 + (x/c)^2)``
  (robust scaling and smooth clipping of numerics, RealMLP; Holzmueller et al. 2024,
  "Better by Default: Strong Pre-Tuned MLPs and Boosted Trees on Tabular Data").
- :class:`PeriodicEmbedding`: per feature, ``cos`` and ``sin`` of ``2 pi f x`` for ``k``
  trainable frequencies ``f`` drawn from N(0, sigma) (the periodic part of PLR embeddings;
  Gorishniy et al. 2022, "On Embeddings for Numerical Features in Tabular Deep Learning").
- :class:`EnsembleScale`, :class:`EnsembleDense`: TabM-mini style ensembling inside one
  model (Gorishniy et al. 2024, "TabM: Advancing Tabular Deep Learning with
  Parameter-Efficient Ensembling").
- :class:`SparseCategoricalCrossentropyLS`: sparse categorical cross-entropy with label
  smoothing (Keras' sparse loss has none).
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

PACKAGE = "hpsearch"


@keras.saving.register_keras_serializable(package=PACKAGE)
class RobustClip(keras.layers.Layer):
    """``z = (x - center) / scale`` per column, then ``z / sqrt(1 + (z / clip)^2)``: values
    near the center pass almost unchanged, outliers are squashed towards +-``clip``.
    ``center``/``scale`` are lists (one value per column) or None (0 and 1)."""

    def __init__(
        self,
        center: list[float] | None = None,
        scale: list[float] | None = None,
        clip: float = 3.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.center = None if center is None else [float(v) for v in center]
        self.scale = None if scale is None else [float(v) for v in scale]
        self.clip = float(clip)

    def call(self, x: Any) -> Any:
        if self.center is not None:
            x = x - ops.convert_to_tensor(self.center, dtype=x.dtype)
        if self.scale is not None:
            x = x / ops.convert_to_tensor(self.scale, dtype=x.dtype)
        return x / ops.sqrt(1.0 + ops.square(x / self.clip))

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "center": self.center,
            "scale": self.scale,
            "clip": self.clip,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class PeriodicEmbedding(keras.layers.Layer):
    """``(batch, F) -> (batch, F, 2k)``: ``[cos(2 pi f x), sin(2 pi f x)]`` with trainable
    frequencies ``f`` of shape ``(F, k)``, initialized from N(0, ``sigma``)."""

    def __init__(self, n_frequencies: int = 16, sigma: float = 0.1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n_frequencies = int(n_frequencies)
        self.sigma = float(sigma)

    def build(self, input_shape: Any) -> None:
        self.frequencies = self.add_weight(
            name="frequencies",
            shape=(int(input_shape[-1]), self.n_frequencies),
            initializer=keras.initializers.RandomNormal(stddev=self.sigma),
            trainable=True,
        )

    def call(self, x: Any) -> Any:
        angle = 2 * math.pi * ops.expand_dims(x, -1) * self.frequencies
        return ops.concatenate([ops.cos(angle), ops.sin(angle)], axis=-1)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (*tuple(input_shape), 2 * self.n_frequencies)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "n_frequencies": self.n_frequencies, "sigma": self.sigma}


@keras.saving.register_keras_serializable(package=PACKAGE)
class SparseCategoricalCrossentropyLS(keras.losses.Loss):
    """Cross-entropy of class probabilities against integer labels smoothed towards the
    uniform distribution: ``(1 - e) * -log p[y] + e * mean_k(-log p[k])``, the same as
    ``CategoricalCrossentropy(label_smoothing=e)`` on one-hot labels."""

    def __init__(
        self, label_smoothing: float = 0.0, name: str = "sparse_ce_ls", **kwargs: Any
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        eps = keras.backend.epsilon()
        log_p = ops.log(ops.clip(y_pred, eps, 1.0 - eps))
        labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        nll = -ops.sum(ops.one_hot(labels, ops.shape(y_pred)[-1]) * log_p, axis=-1)
        smooth = -ops.mean(log_p, axis=-1)
        e = self.label_smoothing
        return (1.0 - e) * nll + e * smooth

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package=PACKAGE)
class EnsembleScale(keras.layers.Layer):
    """``(batch, D) -> (batch, k, D)``: the features copied once per ensemble member, each
    copy multiplied by the member's trainable vector (random signs at the start; the first
    adapter of TabM-mini, Gorishniy et al. 2024)."""

    def __init__(self, k: int = 4, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.k = int(k)

    def build(self, input_shape: Any) -> None:
        self.r = self.add_weight(
            name="r",
            shape=(self.k, int(input_shape[-1])),
            initializer=_random_signs,
            trainable=True,
        )

    def call(self, x: Any) -> Any:
        return ops.expand_dims(x, 1) * self.r

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (input_shape[0], self.k, input_shape[-1])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "k": self.k}


def _random_signs(shape: Any, dtype: Any = None) -> Any:
    """+1 or -1 with equal chance (Keras' seeded random generator)."""
    draw = keras.random.uniform(shape, dtype=dtype or "float32")
    return ops.where(draw < 0.5, -1.0, 1.0)


@keras.saving.register_keras_serializable(package=PACKAGE)
class EnsembleDense(keras.layers.Layer):
    """``(batch, k, D) -> (batch, k, units)``: a separate linear layer per ensemble member."""

    def __init__(self, units: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = int(units)

    def build(self, input_shape: Any) -> None:
        k, d = int(input_shape[-2]), int(input_shape[-1])
        self.kernel = self.add_weight(
            name="kernel", shape=(k, d, self.units), initializer="glorot_uniform"
        )
        self.bias = self.add_weight(name="bias", shape=(k, self.units), initializer="zeros")

    def call(self, x: Any) -> Any:
        return ops.einsum("bkd,kdu->bku", x, self.kernel) + self.bias

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (input_shape[0], input_shape[1], self.units)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units}
