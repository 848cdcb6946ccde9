"""Named plug-ins: one small registry type for samplers, families, trainers, blenders, trees.

A registry maps a short name (``tpe``, ``dense``, ``nelder-mead``) to a plug-in given
either as the object itself or as a ``"module:attribute"`` string that is imported on
first use, so listing or validating names never imports TensorFlow, Ray or Optuna. Any
registry also accepts a ``"module:Name"`` string in place of a registered name: that is
how user code plugs in without registering anything.

    SAMPLERS = Registry("sampler", {"tpe": "hpsearch.search.samplers:TPE"})
    SAMPLERS.register("mine", MySampler)          # or as a decorator: @SAMPLERS.register("mine")
    SAMPLERS.resolve("tpe")                       # the class, imported now
    SAMPLERS.resolve("my_pkg.samplers:Custom")    # user code, no registration needed
    SAMPLERS.problem("tpee")                      # "unknown sampler 'tpee' (did you mean 'tpe'?) ..."

This module is the bottom layer's: it imports nothing beyond the standard library.
"""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

__all__ = ["PluginError", "Registry", "import_target", "is_import_path"]

_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class PluginError(ValueError):
    """A plug-in name that is not registered, or a ``module:Name`` that cannot be imported."""


def is_import_path(text: Any) -> bool:
    """True for a ``"package.module:Name"`` string."""
    return isinstance(text, str) and bool(_TARGET.match(text))


def import_target(target: str, what: str = "plug-in") -> Any:
    """Import ``"package.module:Name"`` (``Name`` may be dotted: ``Class.method``)."""
    module_name, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise PluginError(
            f"{what} {target!r}: cannot import module {module_name!r} ({exc}). "
            "Fix: check the module path and that it is installed on every Ray node."
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise PluginError(
                f"{what} {target!r}: module {module_name!r} has no attribute {attr!r}. "
                "Fix: name an existing class or function as 'module:Name'."
            )
        obj = getattr(obj, part)
    return obj


class Registry:
    """Name -> plug-in; entries are objects or lazily imported ``"module:attr"`` strings."""

    def __init__(self, kind: str, entries: Mapping[str, Any] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, Any] = dict(entries or {})

    def register(self, name: str, target: Any = None, *, replace: bool = False) -> Any:
        """Register ``target`` under ``name``; without ``target``, return a decorator."""
        if target is None:

            def decorator(obj: Any) -> Any:
                self.register(name, obj, replace=replace)
                return obj

            return decorator
        if not isinstance(name, str) or not name or ":" in name:
            raise PluginError(f"{self.kind} name {name!r}: use a short name without ':'.")
        if name in self._entries and not replace:
            raise PluginError(
                f"{self.kind} {name!r} is registered already. Fix: pick another name, "
                "or pass replace=True."
            )
        self._entries[name] = target
        return target

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def target(self, name: str) -> Any:
        """The registered entry as given (an object or its ``module:attr`` string)."""
        return self._entries[name]

    def problem(self, name: Any) -> str | None:
        """Why ``name`` is not usable, without importing anything; None when it looks fine.

        A registered name, or any well-formed ``module:Name`` string, is fine here; whether
        the module imports is found out by :meth:`resolve`.
        """
        if name in self._entries or is_import_path(name):
            return None
        valid = ", ".join(self._entries)
        close = difflib.get_close_matches(str(name), list(self._entries), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown {self.kind} {name!r}{hint}; valid: {valid}, or 'module:Name' for your own"

    def resolve(self, name: str) -> Any:
        """The plug-in for ``name`` (a registered name or ``module:Name``), imported now."""
        if name in self._entries:
            entry = self._entries[name]
            if isinstance(entry, str) and is_import_path(entry):
                entry = import_target(entry, f"{self.kind} {name!r}")
            return entry
        if is_import_path(name):
            return import_target(name, self.kind)
        raise PluginError(str(self.problem(name)) + ".")

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """``resolve(name)(*args, **kwargs)``: build an instance of a registered class."""
        factory: Callable[..., Any] = self.resolve(name)
        return factory(*args, **kwargs)
