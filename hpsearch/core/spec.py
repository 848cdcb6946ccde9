"""The user's search spec: one YAML file, validated completely before any work starts.

``load_spec(path_or_dict, overrides=None) -> Spec`` reads the YAML with
``yaml.safe_load``, rejects unknown keys (naming the closest valid one), checks
every type and range, resolves relative paths against the spec file's
directory, and raises one :class:`SpecError` listing *all* problems, one per
line, each naming the field, the value and the fix::

    spec field 'split.valid': must be between 0 and 1 (exclusive), got 1.5. Fix: ...

Checks that need the data itself (target column present, class counts, test
columns) live in :mod:`hpsearch.core.data` and raise ``DataError``. Whether the
``space`` exists is checked by the driver.

When ``data.task`` is omitted the task is inferred from the target column
(reading that one column only) so that the default metric and the
metric/task check can be settled here; the inferred task is recorded in
``spec.data.task``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpsearch.core.errors import UserError

TASKS = ("binary", "multiclass", "regression")
METRICS = ("log_loss", "roc_auc", "accuracy", "rmse", "rmsle", "mae", "f1_macro")
METRIC_TASKS = {
    "log_loss": ("binary", "multiclass"),
    "roc_auc": ("binary", "multiclass"),
    "accuracy": ("binary", "multiclass"),
    "f1_macro": ("binary", "multiclass"),
    "rmse": ("regression",),
    "rmsle": ("regression",),
    "mae": ("regression",),
}
DEFAULT_METRIC = {"binary": "log_loss", "multiclass": "log_loss", "regression": "rmse"}
SEED_MAX = 2**32 - 1  # numpy and scikit-learn seeds
PRUNERS = ("median", "hyperband")
COLUMN_KINDS = ("numeric", "categorical", "text", "datetime", "drop")
SKLEARN_DATASETS = ("breast_cancer", "digits", "wine", "iris", "diabetes")
DEFAULT_TREES = ("rf", "et", "hgb")  # ensembles.trees.TREE_MODELS lists every one
DATA_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")


class SpecError(UserError):
    """The spec is invalid. ``errors`` holds one message per problem."""

    def __init__(self, errors: list[str], source: str | None = None):
        self.errors = list(errors)
        self.source = source
        where = f"spec {source}" if source else "spec"
        if len(self.errors) == 1:
            msg = self.errors[0]
        else:
            msg = f"{where}: {len(self.errors)} problems:\n" + "\n".join(self.errors)
        super().__init__(msg)


# --------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True)
class DataSpec:
    train: str
    test: str | None = None
    sample_submission: str | None = None
    target: str = "target"
    id: str | None = None
    task: str | None = None
    image_shape: tuple[int, ...] | None = None
    columns: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SplitSpec:
    valid: float = 0.2
    holdout: float = 0.2
    seed: int = 0


@dataclass(frozen=True)
class SamplerSpec:
    name: str = "tpe"
    seed: int | None = 0
    n_startup_trials: int | None = None


@dataclass(frozen=True)
class BudgetSpec:
    n_trials: int = 20
    timeout_s: float | None = None


@dataclass(frozen=True)
class ResourcesSpec:
    cpus_per_trial: float = 1
    gpus_per_trial: float = 0
    max_concurrent: int = 2
    max_failures: int = 5
    warm_workers: bool = True


@dataclass(frozen=True)
class TrainingSpec:
    max_epochs: int = 30
    batch_size: int = 64
    patience: int = 5
    trial_fn: str | None = None  # "module:function"; None = the Keras trainer


@dataclass(frozen=True)
class EnsembleSpec:
    top_k: int = 5
    max_corr: float = 0.95
    trees: tuple[str, ...] = DEFAULT_TREES
    method: str = "auto"  # the blender with the best cross-fitted score
    folds: int = 5


@dataclass(frozen=True)
class Spec:
    name: str
    data: DataSpec
    space: str
    metric: str
    split: SplitSpec = field(default_factory=SplitSpec)
    sampler: SamplerSpec = field(default_factory=SamplerSpec)
    budget: BudgetSpec = field(default_factory=BudgetSpec)
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)
    training: TrainingSpec = field(default_factory=TrainingSpec)
    pruner: str | None = None
    output: str = ""
    storage: str | None = None
    ensemble: EnsembleSpec = field(default_factory=EnsembleSpec)
    source: str | None = field(default=None, compare=False)

    @property
    def task(self) -> str | None:
        return self.data.task

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON-able dict; ``load_spec(spec.to_dict()) == spec``."""
        d = dataclasses.asdict(self)
        d.pop("source", None)
        if self.data.image_shape is not None:
            d["data"]["image_shape"] = list(self.data.image_shape)
        d["data"]["columns"] = dict(self.data.columns)
        d["ensemble"]["trees"] = list(self.ensemble.trees)
        order = [
            "name", "data", "split", "metric", "space", "sampler", "budget",
            "resources", "training", "pruner", "output", "storage", "ensemble",
        ]  # fmt: skip
        return {k: d[k] for k in order}

    def fingerprint(self) -> str:
        """sha256 of the parts that define the data and the split (not the search settings)."""
        d = self.to_dict()
        payload = {"data": d["data"], "split": d["split"]}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


# --------------------------------------------------------------------------- schema

_REQUIRED = object()

_SECTIONS: dict[str, dict[str, Any]] = {
    "data": {f.name: f for f in dataclasses.fields(DataSpec)},
    "split": {f.name: f for f in dataclasses.fields(SplitSpec)},
    "sampler": {f.name: f for f in dataclasses.fields(SamplerSpec)},
    "budget": {f.name: f for f in dataclasses.fields(BudgetSpec)},
    "resources": {f.name: f for f in dataclasses.fields(ResourcesSpec)},
    "training": {f.name: f for f in dataclasses.fields(TrainingSpec)},
    "ensemble": {f.name: f for f in dataclasses.fields(EnsembleSpec)},
}
_TOP = ("name", "data", "split", "metric", "space", "sampler", "budget", "resources",
        "training", "pruner", "output", "storage", "ensemble")  # fmt: skip


def _registry(name: str) -> Any:
    from hpsearch.core import registry

    return getattr(registry, name)


def _type_name(v: Any) -> str:
    if v is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list",
            dict: "mapping"}.get(type(v), type(v).__name__)  # fmt: skip


class _Checker:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def err(self, fld: str, problem: str, fix: str) -> None:
        self.errors.append(f"spec field {fld!r}: {problem}. Fix: {fix}")

    def wrong_type(self, fld: str, value: Any, expected: str, example: str) -> None:
        self.err(
            fld,
            f"expected {expected}, got {value!r} ({_type_name(value)})",
            f"write {expected}, for example `{fld.split('.')[-1]}: {example}`",
        )

    # typed getters; each returns the value or the default (after recording an error)
    def string(self, fld: str, v: Any, default: Any, example: str, nullable: bool = True) -> Any:
        if v is None and nullable:
            return None
        if not isinstance(v, str) or not v.strip():
            self.wrong_type(fld, v, "a non-empty string", example)
            return default
        return v

    def integer(self, fld, v, default, example, low=None, nullable=False, fix=None, high=None):
        if v is None and nullable:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            else:
                self.wrong_type(fld, v, "an integer", example)
                return default
        if low is not None and v < low:
            self.err(fld, f"must be at least {low}, got {v}", fix or f"set it to {low} or more")
            return default
        if high is not None and v > high:
            self.err(fld, f"must be at most {high}, got {v}", fix or f"set it to {high} or less")
            return default
        return v

    def number(self, fld, v, default, example, nullable=False):
        if v is None and nullable:
            return None
        if isinstance(v, bool) or not isinstance(v, int | float) or math.isnan(v):
            self.wrong_type(fld, v, "a number", example)
            return default
        return v

    def boolean(self, fld, v, default, example="true"):
        if not isinstance(v, bool):
            self.wrong_type(fld, v, "true or false", example)
            return default
        return v

    def choice(self, fld, v, choices, default, nullable=False, what="value"):
        if v is None and nullable:
            return None
        if not isinstance(v, str) or v not in choices:
            close = difflib.get_close_matches(str(v).lower(), choices, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}? " if close else ""
            valid = ", ".join(choices) + (", or null" if nullable else "")
            self.err(fld, f"unknown {what} {v!r}", f"{hint}use one of: {valid}")
            return default
        return v

    def plugin(self, fld, v, registry, default, what, extra=()):
        """A registered plug-in name (or one of ``extra``), or a user's ``module:Name``."""
        from hpsearch.core.registry import is_import_path

        names = (*extra, *registry.names())
        if isinstance(v, str) and (v in names or is_import_path(v)):
            return v
        close = difflib.get_close_matches(str(v).lower(), names, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        self.err(
            fld, f"unknown {what} {v!r}", f"{hint}use one of: {', '.join(names)}, or module:Name"
        )
        return default

    def section(self, name: str, raw: Any) -> dict[str, Any]:
        """The section as a dict with unknown keys reported (and removed)."""
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.err(
                name,
                f"expected a mapping, got {raw!r} ({_type_name(raw)})",
                f"write the section as `{name}: {{key: value, ...}}`",
            )
            return {}
        valid = list(_SECTIONS[name])
        out = {}
        for key, value in raw.items():
            if key in _SECTIONS[name]:
                out[key] = value
            else:
                self.unknown(name, key, valid)
        return out

    def unknown(self, section: str | None, key: Any, valid: list[str]) -> None:
        fld = f"{section}.{key}" if section else str(key)
        where = f"section {section!r}" if section else "the top level"
        close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.5)
        fix = f"did you mean {close[0]!r}? " if close else ""
        fix += f"valid keys in {where}: {', '.join(valid)}"
        self.err(fld, f"unknown key {key!r} in {where}", fix)


# --------------------------------------------------------------------------- loading


def _read_yaml(path: Path) -> Any:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(
            [f"spec file {str(path)!r} does not exist. Fix: check the path (cwd is {os.getcwd()})."]
        ) from None
    except OSError as e:
        raise SpecError(
            [f"spec file {str(path)!r} cannot be read: {e}. Fix: check the path."]
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = e.problem or e.context or "malformed YAML"
        if isinstance(e, yaml.constructor.ConstructorError) and e.problem and "tag" in e.problem:
            tag = problem.rsplit(" ", 1)[-1]
            raise SpecError(
                [f"spec file {str(path)!r}{line}: the YAML tag {tag} is not allowed: specs are "
                 "read with yaml.safe_load and never construct Python objects. "
                 "Fix: remove the tag and write a plain value (string, number, list or mapping)."],
                str(path),
            ) from None  # fmt: skip
        raise SpecError(
            [f"spec file {str(path)!r}{line}: malformed YAML: {problem}. "
             "Fix: correct the YAML syntax there (indentation, ':' after keys, closing brackets)."],
            str(path),
        ) from None  # fmt: skip
    except yaml.YAMLError as e:
        raise SpecError(
            [f"spec file {str(path)!r}: malformed YAML: {e}. Fix: correct the YAML syntax."]
        ) from None


def _parse_override_value(v: Any) -> Any:
    if isinstance(v, str):
        import yaml

        try:
            return yaml.safe_load(v) if v.strip() else v
        except yaml.YAMLError:
            return v
    return v


def _apply_overrides(raw: dict[str, Any], overrides: Any) -> dict[str, Any]:
    """Overrides: a mapping of dotted keys (``budget.n_trials``) or nested dicts, or
    a list of ``"key=value"`` strings; string values are parsed as YAML scalars."""
    if not overrides:
        return raw
    raw = copy.deepcopy(raw)
    items: list[tuple[str, Any]] = []
    if isinstance(overrides, dict):
        items = list(overrides.items())
    else:
        for entry in overrides:
            if not isinstance(entry, str) or "=" not in entry:
                raise SpecError(
                    [
                        f"override {entry!r}: expected KEY=VALUE. Fix: write it like budget.n_trials=50."
                    ]
                )
            k, v = entry.split("=", 1)
            items.append((k.strip(), v))
    for key, value in items:
        parts = str(key).split(".")
        node = raw
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]] = {**node[parts[-1]], **value}
        else:
            node[parts[-1]] = _parse_override_value(value)
    return raw


def sqlite_file(url: str | None) -> str | None:
    """The file of a ``sqlite:///PATH`` storage URL; None for other URLs and in-memory ones."""
    if not url or not url.startswith("sqlite:///"):
        return None
    db = url[len("sqlite:///") :]
    return db if db and db != ":memory:" else None


def _resolve_path(p: str, base: Path) -> str:
    path = Path(os.path.expanduser(p))
    if not path.is_absolute():
        path = base / path
    return str(path.resolve())


def _check_data_path(c: _Checker, fld: str, value: Any, base: Path, allow_sklearn: bool) -> Any:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        example = "sklearn:breast_cancer" if allow_sklearn else "data/test.csv"
        c.wrong_type(fld, value, "a file path", example)
        return None
    if value.startswith("sklearn:"):
        if not allow_sklearn:
            c.err(fld, f"{value!r} is a bundled dataset", "give a CSV or Parquet file path")
            return None
        ds = value.split(":", 1)[1]
        if ds not in SKLEARN_DATASETS:
            close = difflib.get_close_matches(ds, SKLEARN_DATASETS, n=1, cutoff=0.5)
            hint = f"did you mean 'sklearn:{close[0]}'? " if close else ""
            c.err(
                fld,
                f"unknown bundled dataset {value!r}",
                hint + "use one of: " + ", ".join(f"sklearn:{d}" for d in SKLEARN_DATASETS),
            )
            return None
        return value
    resolved = _resolve_path(value, base)
    if not resolved.lower().endswith(DATA_SUFFIXES):
        c.err(
            fld,
            f"{value!r} is neither a CSV nor a Parquet file",
            "give a path ending in .csv, .csv.gz, .parquet or .pq"
            + (", or sklearn:<name> for a bundled dataset" if allow_sklearn else ""),
        )
        return None
    if not Path(resolved).is_file():
        c.err(
            fld,
            f"file {value!r} does not exist (looked for {resolved})",
            "check the path; relative paths are resolved against the spec file's directory",
        )
        return None
    return resolved


def load_spec(
    path_or_dict: str | os.PathLike | dict[str, Any],
    overrides: Any = None,
    base_dir: str | os.PathLike | None = None,
) -> Spec:
    """Read and validate a spec (a YAML path or an already-parsed dict).

    ``overrides``: ``{"budget.n_trials": 5}`` or ``["budget.n_trials=5"]``.
    ``base_dir``: where relative paths are resolved for a dict spec (default:
    the current directory; for a file, its directory).
    """
    if isinstance(path_or_dict, dict):
        raw: Any = copy.deepcopy(path_or_dict)
        source = None
        base = Path(base_dir) if base_dir is not None else Path.cwd()
    else:
        path = Path(path_or_dict)
        raw = _read_yaml(path)
        source = str(path)
        base = Path(base_dir) if base_dir is not None else path.resolve().parent
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SpecError(
            [f"spec {source or ''}: expected a mapping of sections at the top level, got "
             f"{_type_name(raw)}. Fix: start the file with `name: ...` and `data: ...` keys."],
            source,
        )  # fmt: skip
    raw = _apply_overrides(raw, overrides)
    c = _Checker()
    for key in raw:
        if key not in _TOP:
            c.unknown(None, key, list(_TOP))

    # name
    name = raw.get("name", _REQUIRED)
    if name is _REQUIRED:
        c.err("name", "missing", "add `name: my-search` (letters, digits, '.', '_', '-')")
        name = "spec"
    elif not isinstance(name, str) or not name.strip():
        c.wrong_type("name", name, "a non-empty string", "my-search")
        name = "spec"
    elif any(not (ch.isalnum() or ch in "._-") for ch in name):
        c.err(
            "name",
            f"{name!r} contains characters other than letters, digits, '.', '_', '-'",
            f"use a name such as {''.join(ch if ch.isalnum() or ch in '._-' else '-' for ch in name)!r}",
        )

    # data
    if "data" not in raw:
        c.err(
            "data", "missing", "add a `data:` section with at least `train: <file or sklearn:name>`"
        )
    d = c.section("data", raw.get("data"))
    if "train" not in d and "data" in raw and isinstance(raw.get("data"), dict):
        c.err("data.train", "missing", "add `train: path/to/train.csv` (or sklearn:breast_cancer)")
    train = _check_data_path(c, "data.train", d.get("train"), base, True) if "train" in d else None
    test = _check_data_path(c, "data.test", d.get("test"), base, False)
    sub = _check_data_path(c, "data.sample_submission", d.get("sample_submission"), base, False)
    target = c.string("data.target", d.get("target", "target"), "target", "target", nullable=False)
    id_col = c.string("data.id", d.get("id"), None, "id")
    task = c.choice("data.task", d.get("task"), TASKS, None, nullable=True, what="task")
    image_shape = None
    shape = d.get("image_shape")
    if shape is not None:
        ok = (
            isinstance(shape, list | tuple)
            and len(shape) >= 1
            and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)
        )
        if ok:
            image_shape = tuple(int(s) for s in shape)
        else:
            c.err(
                "data.image_shape",
                f"expected a list of positive integers, got {shape!r}",
                "write it channels last, for example `image_shape: [8, 8, 1]`, or null",
            )
    columns: dict[str, str] = {}
    cols = d.get("columns")
    if cols is not None and not isinstance(cols, dict):
        c.err(
            "data.columns",
            f"expected a mapping column -> kind, got {cols!r}",
            "write `columns: {city: categorical, notes: text}`",
        )
    elif cols:
        for col, kind in cols.items():
            k = c.choice(f"data.columns.{col}", kind, COLUMN_KINDS, None, what="column kind")
            if k is not None:
                columns[str(col)] = k
    if id_col is not None and id_col == target:
        c.err(
            "data.id", f"{id_col!r} is also the target column", "set `id` to the id column or null"
        )

    # split
    s = c.section("split", raw.get("split"))
    fr = {}
    for key in ("valid", "holdout"):
        v = c.number(f"split.{key}", s.get(key, 0.2), None, "0.2")
        if v is not None and not 0 < v < 1:
            c.err(
                f"split.{key}",
                f"must be between 0 and 1 (exclusive), got {v}",
                f"give the fraction of rows for the {key} split, for example 0.2",
            )
            v = None
        fr[key] = v
    if fr["valid"] is not None and fr["holdout"] is not None and fr["valid"] + fr["holdout"] >= 0.9:
        c.err(
            "split",
            f"valid + holdout must be below 0.9, got {fr['valid']} + {fr['holdout']} = "
            f"{fr['valid'] + fr['holdout']:g}",
            "leave at least 10% of the rows for training, for example valid: 0.2, holdout: 0.2",
        )
    split_seed = c.integer(
        "split.seed", s.get("seed", 0), 0, "0", low=0, high=SEED_MAX,
        fix=f"use a seed from 0 to {SEED_MAX}, for example `seed: 0`",
    )  # fmt: skip

    # metric (task fit checked below)
    metric = raw.get("metric")
    if metric is not None:
        metric = c.choice("metric", metric, METRICS, None, what="metric")

    space = raw.get("space", _REQUIRED)
    if space is _REQUIRED:
        c.err(
            "space",
            "missing",
            "add `space: tabular_mlp` (see `hpsearch space list`) or a space file path",
        )
        space = ""
    elif not isinstance(space, str) or not space.strip():
        c.wrong_type("space", space, "a space name or a path to a space file", "tabular_mlp")
        space = ""
    elif space.endswith((".yaml", ".yml")):
        space = _resolve_path(space, base)

    # sampler
    sm = c.section("sampler", raw.get("sampler"))
    sampler = SamplerSpec(
        name=c.plugin(
            "sampler.name", sm.get("name", "tpe"), _registry("SAMPLERS"), "tpe", "sampler"
        ),
        seed=c.integer(
            "sampler.seed",
            sm.get("seed", 0),
            0,
            "0",
            nullable=True,
            low=0,
            high=SEED_MAX,
            fix=f"use a seed from 0 to {SEED_MAX} (numpy's range), or null for a random one",
        ),
        n_startup_trials=c.integer(
            "sampler.n_startup_trials", sm.get("n_startup_trials"), None, "10", low=1, nullable=True
        ),
    )

    # budget
    b = c.section("budget", raw.get("budget"))
    n_trials = c.integer(
        "budget.n_trials", b.get("n_trials", 20), 20, "20", low=1,
        fix="run at least one trial, for example `n_trials: 20`",
    )  # fmt: skip
    timeout = c.number("budget.timeout_s", b.get("timeout_s"), None, "3600", nullable=True)
    if timeout is not None and timeout <= 0:
        c.err(
            "budget.timeout_s",
            f"must be positive, got {timeout}",
            "give seconds, e.g. 3600, or null",
        )
        timeout = None
    budget = BudgetSpec(n_trials=n_trials, timeout_s=timeout)

    # resources
    r = c.section("resources", raw.get("resources"))
    cpus = c.number("resources.cpus_per_trial", r.get("cpus_per_trial", 1), 1, "1")
    if cpus <= 0:
        c.err(
            "resources.cpus_per_trial",
            f"must be greater than 0, got {cpus}",
            "give the CPUs each trial reserves, e.g. 1 (fractions such as 0.5 are allowed)",
        )
        cpus = 1
    gpus = c.number("resources.gpus_per_trial", r.get("gpus_per_trial", 0), 0, "0")
    if gpus < 0:
        c.err(
            "resources.gpus_per_trial",
            f"must be 0 or more, got {gpus}",
            "use 0 for CPU-only trials, 1 for a whole GPU, or a fraction such as 0.5 to share one",
        )
        gpus = 0
    resources = ResourcesSpec(
        cpus_per_trial=cpus,
        gpus_per_trial=gpus,
        max_concurrent=c.integer(
            "resources.max_concurrent", r.get("max_concurrent", 2), 2, "2", low=1,
            fix="run at least one trial at a time, e.g. `max_concurrent: 2`",
        ),
        max_failures=c.integer(
            "resources.max_failures", r.get("max_failures", 5), 5, "5", low=1,
            fix="allow at least one consecutive failure before stopping, e.g. `max_failures: 5`",
        ),
        warm_workers=c.boolean("resources.warm_workers", r.get("warm_workers", True), True),
    )  # fmt: skip

    # training
    t = c.section("training", raw.get("training"))
    trial_fn = c.string(
        "training.trial_fn", t.get("trial_fn"), None, "hpsearch.search.testing:oracle"
    )
    if trial_fn is not None and _registry("TRAINERS").problem(trial_fn):
        c.err(
            "training.trial_fn",
            f"{trial_fn!r} is neither a registered trainer "
            f"({', '.join(_registry('TRAINERS').names())}) nor of the form module:function",
            "write it like `trial_fn: mypackage.trials:train`, or leave it out",
        )
    training = TrainingSpec(
        max_epochs=c.integer("training.max_epochs", t.get("max_epochs", 30), 30, "30", low=1),
        batch_size=c.integer("training.batch_size", t.get("batch_size", 64), 64, "64", low=1),
        patience=c.integer("training.patience", t.get("patience", 5), 5, "5", low=0),
        trial_fn=trial_fn,
    )

    pruner = raw.get("pruner")
    if pruner == "none":
        pruner = None
    pruner = c.choice("pruner", pruner, PRUNERS, None, nullable=True, what="pruner")

    from hpsearch.core.remote import is_uri

    output = raw.get("output")
    if output is None:
        output = _resolve_path(f"runs/{name}", base)
    elif not isinstance(output, str) or not output.strip():
        c.wrong_type("output", output, "a directory path", f"runs/{name}")
        output = ""
    elif not is_uri(output):  # a URI (s3://bucket/runs/x) is kept as written
        output = _resolve_path(output, base)

    storage = c.string("storage", raw.get("storage"), None, "sqlite:///study.db")
    if storage is not None and "://" not in storage:
        c.err(
            "storage",
            f"{storage!r} is not an SQLAlchemy URL",
            "write e.g. `storage: sqlite:///runs/study.db` or postgresql://user@host/db, or null",
        )
    elif (db := sqlite_file(storage)) and not db.startswith("/"):
        # a relative SQLite path means the same file from any working directory
        storage = "sqlite:///" + _resolve_path(db, base)

    # ensemble
    e = c.section("ensemble", raw.get("ensemble"))
    max_corr = c.number("ensemble.max_corr", e.get("max_corr", 0.95), 0.95, "0.95")
    if not 0 < max_corr <= 1:
        c.err(
            "ensemble.max_corr", f"must be in (0, 1], got {max_corr}", "use e.g. 0.95 (1 keeps all)"
        )
        max_corr = 0.95
    trees_raw = e.get("trees", list(DEFAULT_TREES))
    trees: tuple[str, ...] = DEFAULT_TREES
    if trees_raw is None:
        trees = ()
    elif not isinstance(trees_raw, list | tuple):
        c.wrong_type("ensemble.trees", trees_raw, "a list", "[rf, et, hgb]")
    else:
        from hpsearch.core.registry import TREE_MODELS, missing_package  # lgbm, xgb: installed?

        good = [
            c.choice("ensemble.trees", t_, TREE_MODELS.names(), None, what="tree model")
            for t_ in trees_raw
        ]
        for tree in good:
            package = missing_package(tree) if tree else None
            if package:
                c.err(
                    "ensemble.trees",
                    f"tree model {tree!r} needs the {package} package, which is not installed",
                    f"`pip install {package}`, or leave {tree} out of the list",
                )
        trees = tuple(g for g in good if g is not None)
    ensemble = EnsembleSpec(
        top_k=c.integer("ensemble.top_k", e.get("top_k", 5), 5, "5", low=1),
        max_corr=max_corr,
        trees=trees,
        method=c.plugin(
            "ensemble.method", e.get("method", "auto"), _registry("BLENDERS"), "auto",
            "blend method", extra=("auto",),
        ),
        folds=c.integer("ensemble.folds", e.get("folds", 5), 5, "5", low=2),
    )  # fmt: skip

    if c.errors:
        raise SpecError(c.errors, source)

    # task: inferred from the target column when omitted (only once all else is valid)
    if task is None:
        from hpsearch.core.data import peek_task

        task = peek_task(train, target)
    if metric is None:
        metric = DEFAULT_METRIC[task]
    elif task not in METRIC_TASKS[metric]:
        fits = [m for m in METRICS if task in METRIC_TASKS[m]]
        inferred = "" if d.get("task") else " (inferred from the target column)"
        c.err(
            "metric",
            f"{metric!r} does not apply to a {task} task{inferred}",
            f"use one of: {', '.join(fits)}, or set `data.task`",
        )
        raise SpecError(c.errors, source)

    data = DataSpec(
        train=train,
        test=test,
        sample_submission=sub,
        target=target,
        id=id_col,
        task=task,
        image_shape=image_shape,
        columns=columns,
    )
    return Spec(
        name=name,
        data=data,
        space=space,
        metric=metric,
        split=SplitSpec(valid=fr["valid"], holdout=fr["holdout"], seed=split_seed),
        sampler=sampler,
        budget=budget,
        resources=resources,
        training=training,
        pruner=pruner,
        output=output,
        storage=storage,
        ensemble=ensemble,
        source=source,
    )
