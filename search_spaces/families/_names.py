"""Output names of a built model; no Keras import (shared by the registry and the builders)."""

from __future__ import annotations

from typing import Any


def output_names(model: Any) -> list[str]:
    """Names of a model's outputs (the keys of its output dict)."""
    out = getattr(model, "output", None)
    if isinstance(out, dict):
        return list(out)
    return list(getattr(model, "output_names", None) or [])
