"""Descriptions of a model's inputs and outputs, shared by families and hpsearch.

Plain frozen dataclasses with ``to_dict``/``from_dict`` so they travel to Ray
workers and into ``run.json`` as JSON.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

TASKS = ("binary", "multiclass", "regression")


@dataclass(frozen=True)
class TextInput:
    """A text column fed as integer token ids of length ``seq_len``."""

    vocab_size: int
    seq_len: int


@dataclass(frozen=True)
class InputSpec:
    """What the model is fed. Input names: ``numeric``, ``cat_<column>``, ``text``, ``image``.

    ``numeric_center`` and ``numeric_scale`` (optional, one value per column of ``numeric``):
    the median and the robust spread (interquartile range) of each ``numeric`` column over
    the rows the preprocessing was fitted on, for families that scale robustly
    (``(x - center) / scale``); None in runs made before they were recorded.
    """

    numeric: int = 0
    categorical: dict[str, int] = field(default_factory=dict)
    text: TextInput | None = None
    image_shape: tuple[int, ...] | None = None
    numeric_center: tuple[float, ...] | None = None
    numeric_scale: tuple[float, ...] | None = None

    def input_names(self) -> list[str]:
        names = []
        if self.numeric:
            names.append("numeric")
        names += [f"cat_{c}" for c in self.categorical]
        if self.text is not None:
            names.append("text")
        if self.image_shape is not None:
            names.append("image")
        return names

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.image_shape is not None:
            d["image_shape"] = list(self.image_shape)
        for key in ("numeric_center", "numeric_scale"):
            if d[key] is None:
                del d[key]  # runs without robust statistics keep their earlier form
            else:
                d[key] = [float(v) for v in d[key]]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputSpec:
        text = d.get("text")
        shape = d.get("image_shape")
        center, scale = d.get("numeric_center"), d.get("numeric_scale")
        return cls(
            numeric=int(d.get("numeric", 0)),
            categorical={str(k): int(v) for k, v in (d.get("categorical") or {}).items()},
            text=TextInput(**text) if text else None,
            image_shape=tuple(int(s) for s in shape) if shape else None,
            numeric_center=tuple(float(v) for v in center) if center is not None else None,
            numeric_scale=tuple(float(v) for v in scale) if scale is not None else None,
        )


@dataclass(frozen=True)
class Head:
    """One model output. ``n_classes`` is 1 for binary (sigmoid) and regression."""

    name: str = "output"
    task: str = "binary"
    n_classes: int = 1
    loss_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"head {self.name!r}: task must be one of {TASKS}, got {self.task!r}.")


@dataclass(frozen=True)
class OutputSpec:
    heads: tuple[Head, ...] = (Head(),)

    @property
    def names(self) -> list[str]:
        return [h.name for h in self.heads]

    def to_dict(self) -> dict[str, Any]:
        return {"heads": [asdict(h) for h in self.heads]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OutputSpec:
        return cls(heads=tuple(Head(**h) for h in d["heads"]))

    @classmethod
    def single(cls, task: str, n_classes: int = 1) -> OutputSpec:
        return cls(heads=(Head(name="output", task=task, n_classes=n_classes),))
