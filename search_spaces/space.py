"""The search-space language: one representation, translated three ways.

A :class:`Space` is a frozen object holding :class:`Param` objects in order. It is
loaded from YAML (:meth:`Space.from_yaml`, :func:`load_space`), from a dict
(:meth:`Space.from_dict`) or built in Python::

    Space(
        "x",
        family="dense",
        params=[
            Param.int("n_layers", 1, 3),
            Param.float("lr", 1e-4, 1e-2, log=True),
            Param.categorical("opt", ["adam", "sgd"]),
            Param.float("momentum", 0.0, 0.9, when={"opt": ["sgd"]}),
            Param.int("units", 8, 64, per="n_layers"),
        ],
    )

which is equivalent (same :meth:`Space.fingerprint`) to the YAML::

    name: x
    family: dense
    params:
      n_layers: {type: int, low: 1, high: 3}
      lr:       {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
      opt:      {type: categorical, choices: [adam, sgd]}
      momentum: {type: float, low: 0.0, high: 0.9, when: {opt: [sgd]}}
      units:    {type: int, low: 8, high: 64, per: n_layers}

Parameter types: ``float`` and ``int`` (``low``, ``high``, optional ``log``, optional
``step``; values are ``low + k * step``), ``categorical`` (``choices``: str, int, float
or bool scalars), ``bool`` and ``const`` (``value``, never sampled).

- ``when: {parent: [values]}``: the parameter exists only when every parent exists
  and has one of the listed values. Parents are categorical, bool or int parameters.
- ``per: count``: the value is a list of length ``config[count]``; element ``i`` is
  sampled under the flat name ``f"{name}_{i}"``. ``count`` is a non-log int parameter
  with ``0 <= low`` and ``high <= 16``.

A configuration is a plain ``dict`` of values (never indices): keys in space order,
inactive conditional parameters absent, per-parameters as lists, ints as ``int``,
floats as ``float``. Every sampler (:meth:`Space.sample_optuna`,
:meth:`Space.to_hyperopt` + :meth:`Space.from_hyperopt`, :meth:`Space.sample_random`)
gives that same shape. Optuna stores the *flat* form (:meth:`Space.flatten`:
``units_0``, ``units_1``, ..., consts left out); :meth:`Space.unflatten` reads it back.

Hyperopt: conditional parameters are nested ``hp.choice`` branches, so a parameter is
only sampled in the branches where it can exist (a parameter with several parents is
nested under one of them and dropped by :meth:`Space.from_hyperopt` when the others do
not hold). Labels are the flat names. Stepped parameters (``step`` on a float, or a
step > 1 on an int) use the grid index ``k`` as the label's value.
:meth:`Space.hyperopt_vals` gives a configuration in Hyperopt's ``misc.vals`` form
(choice labels hold the index) for feeding finished trials to ``hyperopt.Trials``.

Every problem raises :class:`SpaceError` (a ``ValueError``) whose message states the
rule and echoes the offending value. Optuna and Hyperopt are imported inside the
methods that use them.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from search_spaces import safe_yaml

FAMILY_NAMES = (
    "dense",
    "cnn",
    "text",
    "multi_input",
    "wide_deep",
    "multi_output",
    "realmlp",
)


def _family_names() -> tuple[str, ...]:
    from search_spaces.families import FAMILY_REGISTRY

    return FAMILY_REGISTRY.names()


def _family_known(family: str) -> bool:
    """A registered family, or a user's ``module:build`` function."""
    from search_spaces.families import FAMILY_REGISTRY

    return FAMILY_REGISTRY.problem(family) is None


PARAM_TYPES = ("float", "int", "categorical", "bool", "const")
LIBRARY_DIR = Path(__file__).resolve().parent / "library"
MAX_PER_COUNT = 16  # highest value of a `per` count parameter
MAX_CHOICE_INT = 32  # int parents with at most this many values are nested hp.choice branches

_NUMERIC_KEYS = ("type", "low", "high", "log", "step", "when", "per")
PARAM_KEYS: dict[str, tuple[str, ...]] = {
    "float": _NUMERIC_KEYS,
    "int": _NUMERIC_KEYS,
    "categorical": ("type", "choices", "when", "per"),
    "bool": ("type", "when", "per"),
    "const": ("type", "value", "when", "per"),
}
_REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "float": ("low", "high"),
    "int": ("low", "high"),
    "categorical": ("choices",),
    "bool": (),
    "const": ("value",),
}
SPACE_KEYS = ("name", "description", "family", "params", "portfolio")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SCALARS = (str, int, float, bool)


class SpaceError(ValueError):
    """A search space, a space file or a configuration that breaks a rule of the language."""


# --------------------------------------------------------------------------- helpers


def _did_you_mean(word: Any, options: Iterable[Any]) -> str:
    match = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f" Did you mean {match[0]!r}?" if match else ""


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _py(v: Any) -> Any:
    """numpy scalars -> python scalars."""
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        try:
            return v.item()
        except (TypeError, ValueError):
            return v
    return v


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, str):
        return "str"
    if _is_number(v):
        return "number"
    return "other"


def _same(a: Any, b: Any) -> bool:
    """Equality that keeps bools, numbers and strings apart (True is not 1)."""
    return _kind(a) == _kind(b) and a == b


def _clean(x: float) -> float:
    """Drops float noise from grid arithmetic (0.15000000000000002 -> 0.15)."""
    return float(f"{x:.12g}")


def _fmt(v: Any) -> str:
    return repr(v)


# --------------------------------------------------------------------------- Param


@dataclass(frozen=True)
class Param:
    """One parameter of a space.

    Build with the helpers ``Param.float(name, low, high, log=False, step=None, when=None,
    per=None)``, ``Param.int(...)`` (same arguments), ``Param.categorical(name, choices,
    when=None, per=None)``, ``Param.bool(name, when=None, per=None)`` and
    ``Param.const(name, value, when=None, per=None)``, or from the YAML form with
    ``Param.from_dict(name, {"type": ..., ...})``. ``when`` is ``{parent: [values]}``;
    ``per`` names the int count parameter. Arguments are validated and normalised
    (float bounds become floats, lists become tuples, an int ``step`` of 1 is dropped).
    """

    name: str
    type: str
    low: Any = None
    high: Any = None
    log: bool = False
    step: Any = None
    choices: Any = None
    value: Any = None
    when: Any = ()
    per: str | None = None

    def __post_init__(self) -> None:
        _check_param(self)

    # -- helper constructors (the names shadow builtins only inside this class body)

    @staticmethod
    def float(
        name: str,
        low: Any,
        high: Any,
        *,
        log: bool = False,
        step: Any = None,
        when: Mapping[str, Any] | None = None,
        per: str | None = None,
    ) -> Param:
        """A float in ``[low, high]`` (log-uniform with ``log=True``; grid ``low + k*step``)."""
        return Param(name, "float", low=low, high=high, log=log, step=step, when=when, per=per)

    @staticmethod
    def int(
        name: str,
        low: Any,
        high: Any,
        *,
        log: bool = False,
        step: Any = None,
        when: Mapping[str, Any] | None = None,
        per: str | None = None,
    ) -> Param:
        """An int in ``[low, high]`` (log-uniform with ``log=True``; grid ``low + k*step``)."""
        return Param(name, "int", low=low, high=high, log=log, step=step, when=when, per=per)

    @staticmethod
    def categorical(
        name: str,
        choices: Iterable[Any],
        *,
        when: Mapping[str, Any] | None = None,
        per: str | None = None,
    ) -> Param:
        """One of ``choices`` (str, int, float or bool scalars)."""
        return Param(name, "categorical", choices=choices, when=when, per=per)

    @staticmethod
    def bool(name: str, *, when: Mapping[str, Any] | None = None, per: str | None = None) -> Param:
        """``False`` or ``True``."""
        return Param(name, "bool", when=when, per=per)

    @staticmethod
    def const(
        name: str, value: Any, *, when: Mapping[str, Any] | None = None, per: str | None = None
    ) -> Param:
        """Always ``value`` (a scalar or null); never sampled, never stored by Optuna."""
        return Param(name, "const", value=value, when=when, per=per)

    @classmethod
    def from_dict(cls, name: str, d: Any) -> Param:
        """A parameter from its YAML form, e.g. ``{"type": "int", "low": 1, "high": 4}``."""
        if not isinstance(d, Mapping):
            raise SpaceError(f"param {name!r}: must be a mapping with a 'type' key, got {_fmt(d)}.")
        if "type" not in d:
            raise SpaceError(
                f"param {name!r}: missing key 'type'; valid types: {', '.join(PARAM_TYPES)}."
            )
        ptype = d["type"]
        if ptype not in PARAM_TYPES:
            raise SpaceError(
                f"param {name!r}: unknown type {_fmt(ptype)}; valid types: "
                f"{', '.join(PARAM_TYPES)}.{_did_you_mean(ptype, PARAM_TYPES)}"
            )
        valid = PARAM_KEYS[ptype]
        for key in d:
            if key not in valid:
                raise SpaceError(
                    f"param {name!r}: unknown key {_fmt(key)} for type {ptype}; valid keys: "
                    f"{', '.join(valid)}.{_did_you_mean(key, valid)}"
                )
        for key in _REQUIRED_KEYS[ptype]:
            if key not in d:
                raise SpaceError(f"param {name!r}: missing required key {key!r} for type {ptype}.")
        kwargs = {k: v for k, v in d.items() if k != "type"}
        return cls(name, ptype, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The YAML form (only the keys that are set); round-trips through ``from_dict``."""
        d: dict[str, Any] = {"type": self.type}
        if self.type in ("float", "int"):
            d["low"] = self.low
            d["high"] = self.high
            if self.log:
                d["log"] = True
            if self.step is not None:
                d["step"] = self.step
        elif self.type == "categorical":
            d["choices"] = list(self.choices)
        elif self.type == "const":
            d["value"] = self.value
        if self.when:
            d["when"] = {parent: list(values) for parent, values in self.when}
        if self.per is not None:
            d["per"] = self.per
        return d

    # -- derived facts

    def n_steps(self) -> int:
        """For a stepped float or int: the number of steps ``n`` (values ``low + k*step``, k <= n)."""
        if self.type == "int":
            return (self.high - self.low) // (self.step or 1)
        return int(math.floor((self.high - self.low) / self.step + 1e-9))

    def grid_high(self) -> Any:
        """The highest value reachable on the step grid (``high`` without a step)."""
        if self.step is None:
            return self.high
        if self.type == "int":
            return self.low + self.n_steps() * self.step
        return _clean(self.low + self.n_steps() * self.step)

    def values(self) -> list[Any]:
        """Every possible value of a categorical, bool or non-log int parameter."""
        if self.type == "categorical":
            return list(self.choices)
        if self.type == "bool":
            return [False, True]
        if self.type == "int":
            return list(range(self.low, self.grid_high() + 1, self.step or 1))
        if self.type == "const":
            return [self.value]
        raise SpaceError(f"param {self.name!r}: a {self.type} parameter has no finite value list.")

    def contains(self, v: Any) -> bool:
        """Whether ``v`` is a possible value (of one element, for a per-parameter)."""
        v = _py(v)
        if self.type == "float":
            if not _is_number(v) or not math.isfinite(v):
                return False
            tol = 1e-9 * max(1.0, abs(self.low), abs(self.high))
            if not (self.low - tol <= v <= self.high + tol):
                return False
            if self.step is not None:
                k = (v - self.low) / self.step
                return abs(k - round(k)) < 1e-6
            return True
        if self.type == "int":
            if not isinstance(v, int) or isinstance(v, bool):
                return False
            return self.low <= v <= self.high and (v - self.low) % (self.step or 1) == 0
        if self.type == "categorical":
            return any(_same(v, c) for c in self.choices)
        if self.type == "bool":
            return isinstance(v, bool)
        return _same(v, self.value) or (v is None and self.value is None)

    def _snap(self, v: Any) -> Any:
        """Clip a numeric sample to ``[low, high]`` and onto the step grid; python types."""
        v = _py(v)
        if self.type == "int":
            v = int(round(v))
            v = min(max(v, self.low), self.high)
            if self.step is not None:
                k = min(max(round((v - self.low) / self.step), 0), self.n_steps())
                v = self.low + k * self.step
            return int(v)
        v = float(v)
        if self.step is not None:
            k = min(max(round((v - self.low) / self.step), 0), self.n_steps())
            return _clean(self.low + k * self.step)
        return float(min(max(v, self.low), self.high))

    def _canonical(self, v: Any) -> Any:
        """The stored form of a value that ``contains`` accepts (the choice object itself)."""
        v = _py(v)
        if self.type == "categorical":
            return next(c for c in self.choices if _same(v, c))
        if self.type in ("float", "int"):
            return self._snap(v)
        return v


def _check_number(p: Param, key: str, v: Any) -> Any:
    v = _py(v)
    if p.type == "int":
        if not isinstance(v, int) or isinstance(v, bool):
            raise SpaceError(f"param {p.name!r}: {key} must be an integer, got {_fmt(v)}.")
        return v
    if isinstance(v, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        with contextlib.suppress(ValueError):
            v = float(v)
    if not _is_number(v) or not math.isfinite(v):
        raise SpaceError(f"param {p.name!r}: {key} must be a finite number, got {_fmt(v)}.")
    return float(v)


def _check_scalar(p: Param, what: str, v: Any) -> Any:
    v = _py(v)
    if not isinstance(v, _SCALARS):
        raise SpaceError(
            f"param {p.name!r}: {what} must be a str, int, float or bool, got {_fmt(v)}."
        )
    return v


def _check_param(p: Param) -> None:
    """Validates and normalises a Param in place (rules that need only the parameter itself)."""
    put = object.__setattr__
    if not isinstance(p.name, str) or not _NAME_RE.match(p.name):
        raise SpaceError(
            f"parameter names must be identifiers (letters, digits, underscores), got {_fmt(p.name)}."
        )
    if p.type not in PARAM_TYPES:
        raise SpaceError(
            f"param {p.name!r}: unknown type {_fmt(p.type)}; valid types: "
            f"{', '.join(PARAM_TYPES)}.{_did_you_mean(p.type, PARAM_TYPES)}"
        )
    valid = PARAM_KEYS[p.type]
    defaults = {"low": None, "high": None, "log": False, "step": None, "choices": None}
    for key, default in defaults.items():
        if key not in valid and getattr(p, key) != default:
            raise SpaceError(
                f"param {p.name!r}: key {key!r} does not apply to type {p.type}; valid keys: "
                f"{', '.join(valid)}."
            )
    if p.type != "const" and p.value is not None:
        raise SpaceError(
            f"param {p.name!r}: key 'value' does not apply to type {p.type}; valid keys: "
            f"{', '.join(valid)}."
        )

    if p.type in ("float", "int"):
        low = _check_number(p, "low", p.low)
        high = _check_number(p, "high", p.high)
        put(p, "low", low)
        put(p, "high", high)
        if low > high:
            raise SpaceError(f"param {p.name!r}: low ({low}) must be <= high ({high}).")
        if not isinstance(p.log, bool):
            raise SpaceError(f"param {p.name!r}: log must be true or false, got {_fmt(p.log)}.")
        if p.log and low <= 0:
            raise SpaceError(f"param {p.name!r}: log requires low > 0, got low={low}.")
        if p.step is not None:
            step = _check_number(p, "step", p.step)
            if step <= 0:
                raise SpaceError(f"param {p.name!r}: step must be > 0, got {_py(p.step)}.")
            if p.log:
                raise SpaceError(
                    f"param {p.name!r}: step ({step}) cannot be combined with log; drop one."
                )
            put(p, "step", None if (p.type == "int" and step == 1) else step)

    if p.type == "categorical":
        choices = p.choices
        if isinstance(choices, (str, bytes, Mapping)) or not isinstance(choices, Iterable):
            raise SpaceError(
                f"param {p.name!r}: choices must be a non-empty list, got {_fmt(choices)}."
            )
        choices = [_py(c) for c in choices]
        if not choices:
            raise SpaceError(f"param {p.name!r}: choices must be a non-empty list, got [].")
        for i, c in enumerate(choices):
            _check_scalar(p, f"choice [{i}]", c)
            if any(c == other for other in choices[:i]):
                raise SpaceError(f"param {p.name!r}: duplicate choice {_fmt(c)} in {choices}.")
        put(p, "choices", tuple(choices))

    if p.type == "const":
        v = _py(p.value)
        if v is not None and not isinstance(v, _SCALARS):
            raise SpaceError(
                f"param {p.name!r}: value must be a str, int, float, bool or null, got {_fmt(v)}."
            )
        put(p, "value", v)

    when = p.when
    if when is None:
        when = ()
    if isinstance(when, Mapping):
        items = list(when.items())
    elif isinstance(when, (tuple, list)) and all(
        isinstance(w, (tuple, list)) and len(w) == 2 for w in when
    ):
        items = [tuple(w) for w in when]
    else:
        raise SpaceError(
            f"param {p.name!r}: when must be a mapping of parent name to a list of values, "
            f"got {_fmt(when)}."
        )
    norm = []
    for parent, values in items:
        if not isinstance(parent, str):
            raise SpaceError(
                f"param {p.name!r}: when keys must be parameter names, got {_fmt(parent)}."
            )
        values = list(values) if isinstance(values, (list, tuple)) else [values]
        if not values:
            raise SpaceError(f"param {p.name!r}: when[{parent!r}] must list at least one value.")
        values = [_check_scalar(p, f"when[{parent!r}] value", v) for v in values]
        norm.append((parent, tuple(values)))
    put(p, "when", tuple(norm))

    if p.per is not None and not isinstance(p.per, str):
        raise SpaceError(f"param {p.name!r}: per must be a parameter name, got {_fmt(p.per)}.")


# --------------------------------------------------------------------------- YAML


def _read_yaml(path: Path) -> Any:
    """The YAML of a space file, read with :mod:`search_spaces.safe_yaml`'s loader: no
    Python tags, no duplicate keys, no alias bombs; the file must be UTF-8."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise SpaceError(f"space file not found: {path}") from None
    except OSError as exc:
        raise SpaceError(f"cannot read space file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise SpaceError(
            f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
            f"{exc.start}). Fix: save it as UTF-8, for example `iconv -f latin1 -t utf-8 "
            "OLD.yaml > NEW.yaml`."
        ) from None
    try:
        return safe_yaml.load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = str(exc.problem or exc.context)
        if isinstance(exc, safe_yaml.YamlRefused) and not isinstance(exc, safe_yaml.DuplicateKey):
            raise SpaceError(f"{path}{where}: {problem}. Fix: {exc.fix}.") from None
        if "tag" in problem and "python/" in problem:
            raise SpaceError(
                f"{path}{where}: {problem}. Python tags are refused: space files are read "
                "with a safe YAML loader. Fix: write plain values (numbers, strings, lists)."
            ) from None
        raise SpaceError(
            f"{path}: malformed YAML{where}: {problem}. Fix: correct the YAML at that position."
        ) from None
    except yaml.YAMLError as exc:
        raise SpaceError(
            f"{path}: malformed YAML: {str(exc)[:200]}. Fix: correct the file's YAML syntax."
        ) from None


# --------------------------------------------------------------------------- Space


@dataclass(frozen=True)
class Space:
    """A search space: ``Space(name, params, family, description="", portfolio=())``.

    ``params`` is a sequence of :class:`Param` (stored as a tuple, in order); ``family``
    is one of :data:`FAMILY_NAMES`. ``portfolio`` is a short list of known-good
    configurations of the space, tried in order before the sampler takes over (each a full
    configuration, as :meth:`validate_config` accepts). Validated on construction
    (:class:`SpaceError`).
    """

    name: str
    params: tuple[Param, ...]
    family: str
    description: str = ""
    portfolio: tuple[dict[str, Any], ...] = field(default=(), hash=False)

    def __post_init__(self) -> None:
        put = object.__setattr__
        if not isinstance(self.name, str) or not self.name.strip():
            raise SpaceError(f"space name must be a non-empty string, got {_fmt(self.name)}.")
        if not isinstance(self.description, str):
            raise SpaceError(f"space description must be a string, got {_fmt(self.description)}.")
        if not isinstance(self.family, str) or not _family_known(self.family):
            raise SpaceError(
                f"family {_fmt(self.family)} does not exist; valid families: "
                f"{', '.join(_family_names())}.{_did_you_mean(self.family, _family_names())}"
            )
        if isinstance(self.params, (str, bytes, Mapping)) or not isinstance(self.params, Iterable):
            raise SpaceError(f"params must be a list of Param, got {_fmt(self.params)}.")
        params = tuple(self.params)
        for p in params:
            if not isinstance(p, Param):
                raise SpaceError(f"params must be Param objects, got {_fmt(p)}.")
        if not params:
            raise SpaceError(f"space {self.name!r}: params must not be empty.")
        put(self, "params", params)
        by_name: dict[str, Param] = {}
        for p in params:
            if p.name in by_name:
                raise SpaceError(f"duplicate parameter name {p.name!r}.")
            by_name[p.name] = p
        put(self, "_by_name", by_name)
        _check_links(by_name)
        put(self, "_order", _topological(params, by_name))
        parents = {q.per for q in params if q.per is not None}
        put(self, "_parent_names", parents | {parent for q in params for parent, _ in q.when})
        flat_owner: dict[str, str] = {}
        for p in params:
            for flat in self._possible_flat(p):
                if flat in flat_owner:
                    raise SpaceError(
                        f"param {p.name!r}: flat name {flat!r} collides with parameter "
                        f"{flat_owner[flat]!r}."
                    )
                flat_owner[flat] = p.name
        self._check_portfolio()

    def _check_portfolio(self) -> None:
        raw = self.portfolio
        if raw is None:
            raw = ()
        if isinstance(raw, (str, bytes, Mapping)) or not isinstance(raw, Iterable):
            raise SpaceError(
                f"space {self.name!r}: portfolio must be a list of configurations, got "
                f"{_fmt(raw)}. Fix: write `portfolio: [{{param: value, ...}}, ...]`."
            )
        configs = []
        for i, config in enumerate(raw):
            try:
                self.validate_config(config)
            except SpaceError as exc:
                raise SpaceError(
                    f"space {self.name!r}: portfolio[{i}]: {exc} Fix: give every active "
                    "parameter a possible value of the space."
                ) from None
            configs.append(
                {
                    k: _py(v) if not isinstance(v, list) else [_py(e) for e in v]
                    for k, v in config.items()
                }
            )
        object.__setattr__(self, "portfolio", tuple(configs))

    # -- construction

    @classmethod
    def from_dict(cls, d: Any) -> Space:
        """A space from its dict form: ``{name, description?, family, params: {name: {...}}}``.

        ``params`` may also be a list of mappings each with a ``name`` key.
        """
        if not isinstance(d, Mapping):
            raise SpaceError(
                f"a space must be a mapping with name, family and params, got {type(d).__name__}."
            )
        for key in d:
            if key not in SPACE_KEYS:
                raise SpaceError(
                    f"unknown key {_fmt(key)} in space; valid keys: {', '.join(SPACE_KEYS)}."
                    f"{_did_you_mean(key, SPACE_KEYS)}"
                )
        for key in ("name", "family", "params"):
            if key not in d:
                raise SpaceError(f"space is missing required key {key!r}.")
        raw = d["params"]
        params: list[Param] = []
        if isinstance(raw, Mapping):
            params = [Param.from_dict(str(k), v) for k, v in raw.items()]
        elif isinstance(raw, list):
            for item in raw:
                if not isinstance(item, Mapping) or "name" not in item:
                    raise SpaceError(
                        f"params given as a list need a 'name' in each item, got {_fmt(item)}."
                    )
                rest = {k: v for k, v in item.items() if k != "name"}
                params.append(Param.from_dict(item["name"], rest))
        else:
            raise SpaceError(
                f"params must be a mapping of parameter name to definition, got {_fmt(raw)}."
            )
        description = d.get("description")
        portfolio = d.get("portfolio")
        return cls(
            name=d["name"],
            params=tuple(params),
            family=d["family"],
            description="" if description is None else description,
            portfolio=() if portfolio is None else portfolio,
        )

    @classmethod
    def from_yaml(cls, path: str | Path) -> Space:
        """A space from a YAML file (safe loading; duplicate keys are refused)."""
        path = Path(path)
        doc = _read_yaml(path)
        try:
            return cls.from_dict(doc)
        except SpaceError as exc:
            raise SpaceError(f"{path}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """The YAML form; ``Space.from_dict(space.to_dict()) == space``. ``portfolio``
        appears only when the space has one (a space without one keeps its fingerprint)."""
        d: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "family": self.family,
            "params": {p.name: p.to_dict() for p in self.params},
        }
        if self.portfolio:
            d["portfolio"] = [dict(c) for c in self.portfolio]
        return d

    def fingerprint(self) -> str:
        """sha256 (hex) of the canonical JSON of :meth:`to_dict`."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    # -- structure

    @property
    def names(self) -> list[str]:
        """Parameter names in space order."""
        return [p.name for p in self.params]

    def param(self, name: str) -> Param:
        """The parameter called ``name``."""
        try:
            return self._by_name[name]
        except KeyError:
            raise SpaceError(
                f"space {self.name!r} has no parameter {name!r}.{_did_you_mean(name, self.names)}"
            ) from None

    def _possible_flat(self, p: Param) -> list[str]:
        if p.per is None:
            return [p.name]
        return [f"{p.name}_{i}" for i in range(self._by_name[p.per].grid_high())]

    def flat_names(self) -> list[str]:
        """Every flat name Optuna may store (consts excluded), in space order."""
        return [f for p in self.params if p.type != "const" for f in self._possible_flat(p)]

    def is_active(self, name: str, config: Mapping[str, Any]) -> bool:
        """Whether parameter ``name`` exists given the (partial) configuration ``config``."""
        return _active(self.param(name), config)

    # -- generic builder used by every sampler/reader

    def _build(self, get: Callable[[Param, str], Any]) -> dict[str, Any]:
        cfg: dict[str, Any] = {}
        for p in self._order:
            if not _active(p, cfg):
                continue
            if p.per is not None:
                count = cfg[p.per]
                if p.type == "const":
                    cfg[p.name] = [p.value] * count
                else:
                    cfg[p.name] = [get(p, f"{p.name}_{i}") for i in range(count)]
            elif p.type == "const":
                cfg[p.name] = p.value
            else:
                cfg[p.name] = get(p, p.name)
        return {p.name: cfg[p.name] for p in self.params if p.name in cfg}

    # -- samplers

    def sample_optuna(self, trial: Any) -> dict[str, Any]:
        """A configuration suggested define-by-run on ``trial`` (``optuna.Trial`` or any
        object with ``suggest_float``/``suggest_int``/``suggest_categorical``). Flat names
        (``units_0``, ...) for per-parameters; consts are not suggested."""

        def get(p: Param, flat: str) -> Any:
            if p.type == "float":
                v = trial.suggest_float(flat, p.low, p.grid_high(), step=p.step, log=p.log)
            elif p.type == "int":
                v = trial.suggest_int(flat, p.low, p.grid_high(), step=p.step or 1, log=p.log)
            elif p.type == "categorical":
                v = trial.suggest_categorical(flat, list(p.choices))
            else:
                v = trial.suggest_categorical(flat, [False, True])
            return _read_value(p, flat, v, "optuna trial")

        return self._build(get)

    def sample_random(self, rng: Any = None) -> dict[str, Any]:
        """A configuration drawn uniformly (log-uniformly with ``log``) from a numpy
        ``Generator`` or a seed (int or None). The same seed gives the same configuration."""
        import numpy as np

        if not isinstance(rng, np.random.Generator):
            rng = np.random.default_rng(rng)

        def get(p: Param, flat: str) -> Any:
            if p.type == "categorical":
                return p.choices[int(rng.integers(len(p.choices)))]
            if p.type == "bool":
                return bool(rng.integers(2))
            if p.step is not None:
                return p._snap(p.low + int(rng.integers(p.n_steps() + 1)) * p.step)
            if p.type == "int":
                if p.log:
                    x = math.exp(rng.uniform(math.log(p.low - 0.5), math.log(p.high + 0.5)))
                    return p._snap(x)
                return int(rng.integers(p.low, p.high + 1))
            if p.log:
                return p._snap(math.exp(rng.uniform(math.log(p.low), math.log(p.high))))
            return p._snap(rng.uniform(p.low, p.high))

        return self._build(get)

    # -- flat form (Optuna storage)

    def flatten(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """``{flat_name: scalar}`` as Optuna stores it (``units_0``, ...; consts left out).
        Validates ``config`` first."""
        self.validate_config(config)
        flat: dict[str, Any] = {}
        for p in self.params:
            if p.name not in config or p.type == "const":
                continue
            if p.per is not None:
                for i, v in enumerate(config[p.name]):
                    flat[f"{p.name}_{i}"] = p._canonical(v)
            else:
                flat[p.name] = p._canonical(config[p.name])
        return flat

    def unflatten(self, flat: Mapping[str, Any]) -> dict[str, Any]:
        """The configuration for flat parameters (e.g. an Optuna trial's ``params``).
        Keys that no active parameter uses raise :class:`SpaceError` (const keys equal
        to their value are accepted)."""
        if not isinstance(flat, Mapping):
            raise SpaceError(f"unflatten needs a mapping of flat names, got {_fmt(flat)}.")
        used: set[str] = set()

        def get(p: Param, name: str) -> Any:
            if name not in flat:
                raise SpaceError(f"flat parameters lack {name!r} (needed by param {p.name!r}).")
            used.add(name)
            return _read_value(p, name, flat[name], "flat parameters")

        config = self._build(get)
        for key, v in flat.items():
            if key in used:
                continue
            p = self._by_name.get(key)
            if p is not None and p.type == "const" and p.contains(v):
                continue
            raise SpaceError(
                f"flat parameter {key!r} (= {_fmt(v)}) is not an active parameter of space "
                f"{self.name!r}.{_did_you_mean(key, self.flat_names())}"
            )
        return config

    def validate_config(self, config: Any) -> None:
        """Raises :class:`SpaceError` unless ``config`` is exactly a configuration of this
        space: every active parameter present with a possible value, nothing else."""
        if not isinstance(config, Mapping):
            raise SpaceError(f"config must be a mapping, got {_fmt(config)}.")
        for key in config:
            if key not in self._by_name:
                raise SpaceError(
                    f"config: unknown parameter {_fmt(key)}.{_did_you_mean(key, self.names)}"
                )
        for p in self._order:
            active = _active(p, config)
            if not active:
                if p.name in config:
                    raise SpaceError(
                        f"config: param {p.name!r} is given but inactive ({_condition(p)})."
                    )
                continue
            if p.name not in config:
                raise SpaceError(f"config: param {p.name!r} is missing.")
            v = config[p.name]
            if p.per is not None:
                count = config[p.per]
                if not isinstance(v, (list, tuple)) or len(v) != count:
                    raise SpaceError(
                        f"config: param {p.name!r} must be a list of {count} values "
                        f"({p.per}={count}), got {_fmt(v)}."
                    )
                for i, e in enumerate(v):
                    if not p.contains(e):
                        raise SpaceError(
                            f"config: param {p.name!r}[{i}] = {_fmt(e)} is not a possible value "
                            f"({_describe(p)})."
                        )
            elif not p.contains(v):
                raise SpaceError(
                    f"config: param {p.name!r} = {_fmt(v)} is not a possible value ({_describe(p)})."
                )

    # -- Optuna distributions

    def distributions(self) -> dict[str, Any]:
        """``{flat_name: optuna distribution}`` for every flat name (consts excluded)."""
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        out: dict[str, Any] = {}
        for p in self.params:
            if p.type == "const":
                continue
            if p.type == "float":
                dist = FloatDistribution(p.low, p.grid_high(), log=p.log, step=p.step)
            elif p.type == "int":
                dist = IntDistribution(p.low, p.grid_high(), log=p.log, step=p.step or 1)
            elif p.type == "categorical":
                dist = CategoricalDistribution(list(p.choices))
            else:
                dist = CategoricalDistribution([False, True])
            for flat in self._possible_flat(p):
                out[flat] = dist
        return out

    # -- Hyperopt

    def _choice_encoded(self, p: Param) -> bool:
        if p.type in ("categorical", "bool"):
            return True
        if p.type != "int" or p.log or p.name not in self._parent_names:
            return False
        return p.n_steps() + 1 <= MAX_CHOICE_INT

    def _anchors(self) -> dict[str, tuple[str, frozenset[int]] | None]:
        """For each hyperopt label: the (parent, branch indices) it is nested under, or None."""
        anchors: dict[str, tuple[str, frozenset[int]] | None] = {}
        depth: dict[str, int] = {}

        def candidate(parent: str, ok: Callable[[Any], bool]) -> tuple[int, Any]:
            q = self._by_name[parent]
            if self._choice_encoded(q):
                idx = frozenset(k for k, v in enumerate(q.values()) if ok(v))
                return depth[parent] + 1, (parent, idx)
            return depth[parent], anchors[parent]

        for p in self._order:
            if p.type == "const":
                continue
            base: list[tuple[int, Any]] = [(0, None)]
            for parent, values in p.when:
                base.append(candidate(parent, lambda v, vs=values: any(_same(v, x) for x in vs)))
            if p.per is None:
                d, a = max(enumerate(base), key=lambda t: (t[1][0], t[0]))[1]
                anchors[p.name], depth[p.name] = a, d
                continue
            for i, flat in enumerate(self._possible_flat(p)):
                cands = [*base, candidate(p.per, lambda v, i=i: v > i)]
                d, a = max(enumerate(cands), key=lambda t: (t[1][0], t[0]))[1]
                anchors[flat], depth[flat] = a, d
        return anchors

    def to_hyperopt(self) -> Any:
        """A Hyperopt search space (nested ``hp`` expressions; labels are the flat names).

        Evaluate it with ``hyperopt.pyll.stochastic.sample``, ``space_eval`` or ``fmin``,
        then read the result with :meth:`from_hyperopt`.
        """
        from hyperopt import hp

        anchors = self._anchors()
        owner = {}
        for p in self.params:
            if p.type != "const":
                for flat in self._possible_flat(p):
                    owner[flat] = p
        children: dict[str, list[tuple[str, frozenset[int]]]] = {}
        roots: list[str] = []
        for flat in owner:  # space order
            a = anchors[flat]
            if a is None:
                roots.append(flat)
            else:
                children.setdefault(a[0], []).append((flat, a[1]))
        nodes: dict[str, Any] = {}

        def node(flat: str) -> Any:
            if flat in nodes:
                return nodes[flat]
            p = owner[flat]
            if self._choice_encoded(p):
                kids = children.get(flat, [])
                if kids:
                    branches = []
                    for k, v in enumerate(p.values()):
                        branch = {flat: v}
                        for kid, idx in kids:
                            if k in idx:
                                branch[kid] = node(kid)
                        branches.append(branch)
                    expr = hp.choice(flat, branches)
                else:
                    expr = hp.choice(flat, p.values())
            elif p.step is not None:
                expr = hp.quniform(flat, -0.5, p.n_steps() + 0.5, 1)
            elif p.type == "int" and p.log:
                expr = hp.qloguniform(flat, math.log(p.low - 0.5), math.log(p.high + 0.5), 1)
            elif p.type == "int":
                expr = hp.quniform(flat, p.low - 0.5, p.high + 0.5, 1)
            elif p.log:
                expr = hp.loguniform(flat, math.log(p.low), math.log(p.high))
            else:
                expr = hp.uniform(flat, p.low, p.high)
            nodes[flat] = expr
            return expr

        return {flat: node(flat) for flat in roots}

    def from_hyperopt(self, sample: Any) -> dict[str, Any]:
        """The configuration for an evaluated :meth:`to_hyperopt` space (what
        ``pyll.stochastic.sample``, ``space_eval`` or ``fmin``'s objective receives)."""
        if not isinstance(sample, Mapping):
            raise SpaceError(
                f"from_hyperopt needs the evaluated space (a dict), got {_fmt(sample)}."
            )
        raw: dict[str, Any] = {}

        def walk(d: Mapping[str, Any]) -> None:
            for k, v in d.items():
                if isinstance(v, Mapping):
                    walk(v)
                else:
                    raw[k] = v

        walk(sample)

        def get(p: Param, flat: str) -> Any:
            if flat not in raw:
                raise SpaceError(f"hyperopt sample lacks {flat!r} (needed by param {p.name!r}).")
            v = _py(raw[flat])
            if self._choice_encoded(p):
                if not p.contains(v):
                    raise SpaceError(
                        f"hyperopt sample: {flat!r} = {_fmt(v)} is not a possible value "
                        f"({_describe(p)})."
                    )
                return p._canonical(v)
            if not _is_number(v):
                raise SpaceError(f"hyperopt sample: {flat!r} must be a number, got {_fmt(v)}.")
            if p.step is not None:
                return p._snap(p.low + round(v) * p.step)
            return p._snap(v)

        return self._build(get)

    def hyperopt_vals(self, config: Mapping[str, Any]) -> dict[str, list[Any]]:
        """``config`` in Hyperopt's ``misc.vals`` form: ``{label: [value]}`` for every label
        of :meth:`to_hyperopt` (choice labels hold the index, stepped labels the grid index),
        ``[]`` for labels the configuration does not use (also for a label Hyperopt samples
        in a branch where the parameter is still inactive: a parameter with several parents,
        or whose int parent has more than ``MAX_CHOICE_INT`` values, is nested under one
        parent only and dropped by :meth:`from_hyperopt` when the others do not hold)."""
        self.validate_config(config)
        vals: dict[str, list[Any]] = {}
        for p in self.params:
            if p.type == "const":
                continue
            given = config.get(p.name)
            for i, flat in enumerate(self._possible_flat(p)):
                if p.name not in config or (p.per is not None and i >= len(given)):
                    vals[flat] = []
                    continue
                v = given[i] if p.per is not None else given
                if self._choice_encoded(p):
                    vals[flat] = [next(k for k, c in enumerate(p.values()) if _same(v, c))]
                elif p.step is not None:
                    vals[flat] = [float(round((v - p.low) / p.step))]
                else:
                    vals[flat] = [float(v)]
        return vals


# --------------------------------------------------------------------------- space-level rules


def _active(p: Param, config: Mapping[str, Any]) -> bool:
    if p.per is not None and p.per not in config:
        return False
    for parent, values in p.when:
        if parent not in config or not any(_same(_py(config[parent]), v) for v in values):
            return False
    return True


def _condition(p: Param) -> str:
    parts = [f"{parent} in {list(values)}" for parent, values in p.when]
    if p.per is not None:
        parts.append(f"{p.per} present")
    return "needs " + " and ".join(parts)


def _describe(p: Param) -> str:
    if p.type in ("float", "int"):
        s = f"{p.type} in [{p.low}, {p.high}]"
        return s + (f" step {p.step}" if p.step is not None else "")
    if p.type == "categorical":
        return f"one of {list(p.choices)}"
    if p.type == "bool":
        return "true or false"
    return f"always {p.value!r}"


def _read_value(p: Param, flat: str, v: Any, source: str) -> Any:
    """A value read from Optuna or a flat dict, checked and in its canonical form."""
    v = _py(v)
    if p.type == "int" and isinstance(v, float) and v.is_integer():
        v = int(v)
    if p.type == "float" and p.step is not None and _is_number(v):
        v = p._snap(v) if p.low - p.step / 2 <= v <= p.high + p.step / 2 else v
    if not p.contains(v):
        raise SpaceError(
            f"{source}: {flat!r} = {_fmt(v)} is not a possible value ({_describe(p)})."
        )
    return p._canonical(v)


def _check_links(by_name: dict[str, Param]) -> None:
    names = list(by_name)
    for p in by_name.values():
        for parent, values in p.when:
            q = by_name.get(parent)
            if q is None:
                raise SpaceError(
                    f"param {p.name!r}: when refers to unknown parameter {parent!r}."
                    f"{_did_you_mean(parent, names)}"
                )
            if q.type not in ("categorical", "bool", "int"):
                raise SpaceError(
                    f"param {p.name!r}: when parent {parent!r} must be a categorical, bool or int "
                    f"parameter, got {q.type}."
                )
            if q.per is not None:
                raise SpaceError(
                    f"param {p.name!r}: when parent {parent!r} is a per-layer parameter (a list); "
                    "conditions need a scalar parent."
                )
            for v in values:
                if not q.contains(v):
                    raise SpaceError(
                        f"param {p.name!r}: when value {_fmt(v)} is not a possible value of "
                        f"{parent!r} ({_describe(q)})."
                    )
        if p.per is not None:
            q = by_name.get(p.per)
            if q is None:
                raise SpaceError(
                    f"param {p.name!r}: per refers to unknown parameter {p.per!r}."
                    f"{_did_you_mean(p.per, names)}"
                )
            if q.type != "int":
                raise SpaceError(
                    f"param {p.name!r}: per parameter {p.per!r} must be an int parameter, "
                    f"got {q.type}."
                )
            if q.per is not None:
                raise SpaceError(
                    f"param {p.name!r}: per parameter {p.per!r} is itself a per-layer parameter."
                )
            if q.log:
                raise SpaceError(
                    f"param {p.name!r}: per parameter {p.per!r} must not be log-scaled."
                )
            if q.low < 0 or q.high > MAX_PER_COUNT:
                raise SpaceError(
                    f"param {p.name!r}: per parameter {p.per!r} must have 0 <= low and "
                    f"high <= {MAX_PER_COUNT}, got low={q.low}, high={q.high}."
                )


def _deps(p: Param) -> list[str]:
    out = [parent for parent, _ in p.when]
    if p.per is not None:
        out.append(p.per)
    return out


def _topological(params: tuple[Param, ...], by_name: dict[str, Param]) -> tuple[Param, ...]:
    """Parents before children, otherwise space order; refuses cycles."""
    state: dict[str, int] = {}  # 1 visiting, 2 done
    order: list[Param] = []

    def visit(p: Param, path: list[str]) -> None:
        if state.get(p.name) == 2:
            return
        if state.get(p.name) == 1:
            cycle = [*path[path.index(p.name) :], p.name]
            raise SpaceError(
                f"conditions form a cycle: {' -> '.join(cycle)} (each parameter's when/per "
                "refers to the next)."
            )
        state[p.name] = 1
        for dep in _deps(p):
            visit(by_name[dep], [*path, p.name])
        state[p.name] = 2
        order.append(p)

    for p in params:
        visit(p, [])
    return tuple(order)


# --------------------------------------------------------------------------- library


def list_library() -> list[tuple[str, str]]:
    """``(name, description)`` for every YAML in :data:`LIBRARY_DIR`, sorted by name."""
    rows = []
    for path in sorted(Path(LIBRARY_DIR).glob("*.y*ml")):
        if path.suffix not in (".yaml", ".yml"):
            continue
        doc = _read_yaml(path)
        desc = doc.get("description", "") if isinstance(doc, Mapping) else ""
        rows.append((path.stem, str(desc or "").strip()))
    return sorted(rows)


def load_space(name_or_path: str | Path | Space) -> Space:
    """A library space by name (``LIBRARY_DIR/<name>.yaml``) or a space from a
    ``.yaml``/``.yml`` path (a :class:`Space` is returned as is)."""
    if isinstance(name_or_path, Space):
        return name_or_path
    if not isinstance(name_or_path, (str, Path)) or not str(name_or_path):
        raise SpaceError(f"a space is a library name or a .yaml path, got {_fmt(name_or_path)}.")
    text = str(name_or_path)
    if (
        isinstance(name_or_path, Path)
        or text.endswith((".yaml", ".yml"))
        or "/" in text
        or "\\" in text
    ):
        return Space.from_yaml(name_or_path)
    library = Path(LIBRARY_DIR)
    for suffix in (".yaml", ".yml"):
        path = library / f"{text}{suffix}"
        try:
            if path.is_file():
                return Space.from_yaml(path)
        except OSError:  # a name no file system can hold (File name too long): not a space
            break
    names = sorted({p.stem for p in library.glob("*.y*ml") if p.suffix in (".yaml", ".yml")})
    shown = repr(text) if len(repr(text)) <= 200 else repr(text)[:197] + "..."
    raise SpaceError(
        f"unknown space {shown}: not in the library {library} (available: "
        f"{', '.join(names) or 'none'}) and not a .yaml path.{_did_you_mean(text, names)} "
        "Fix: name a library space (`hpsearch space list`) or give the path of a .yaml space file."
    )
