"""The user's search spec: one YAML file, validated completely before any work starts.

The spec is a tree of pydantic models (:class:`Spec` and its sections ``DataSpec``,
``SplitSpec``, ``SamplerSpec``, ``BudgetSpec``, ``ResourcesSpec``, ``TrainingSpec``,
``EnsembleSpec``): unknown keys are refused, every type and range is declared on its
field, and the same declarations give the JSON Schema of spec files
(:func:`spec_json_schema`, ``hpsearch spec schema``). The models are frozen.

``load_spec(path_or_dict, overrides=None) -> Spec`` reads the YAML with the safe loader
of :mod:`search_spaces.safe_yaml` (no Python tags, no duplicate keys, no alias bombs),
resolves relative paths against the spec file's directory (a dict's against the current
directory), and raises one :class:`SpecError` listing *all* problems, one per line, each
naming the field, the value and the fix, with the closest valid key for an unknown one::

    spec field 'split.valid': must be between 0 and 1 (exclusive), got 1.5. Fix: ...

A spec built in Python (``Spec(name=..., data=DataSpec(...), space=...)`` or
``Spec.model_validate(d)``) is validated the same way and raises the same messages.

Checks that need the data itself (target column present, class counts, test
columns) live in :mod:`hpsearch.core.data` and raise ``DataError``. Whether the
``space`` exists is checked by the driver; the entries of ``spaces`` (several spaces with a
share of the budget each, for ``hpsearch pipeline``) are checked here, with did-you-mean.
A spec may name ``space``, ``spaces`` or neither (the pipeline's default mix);
:func:`require_one_space` refuses the last two where one space is searched.

When ``data.task`` is omitted the task is inferred from the target column
(reading that one column only) so that the default metric and the
metric/task check can be settled here; the inferred task is recorded in
``spec.data.task``.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    Strict,
    ValidationError,
    ValidationInfo,
    WrapValidator,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError
from typing_extensions import Self

from hpsearch.core.errors import (
    REDACTED,
    RunDirError,
    UserError,
    check_writable,
    redact,
    unwritable,
)

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
DEFAULT_TREES = ("rf", "et", "hgb")  # hpsearch.core.registry.TREE_MODELS lists every one
AUTO = "auto"  # the blend method with the best cross-fitted score
DATA_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")
QUOTE_MAX = 200  # characters of a value quoted in a message
# ensemble.max_corr: only near-duplicates are dropped; the blenders weigh correlated members
# themselves (the quality benchmark compares it with a diversity filter at 0.95)
MAX_CORR = 0.999
MAX_FOLDS = 20  # split.folds: the most cross-validation folds
INNER_VALID = 0.1  # split.inner_valid: the early-stopping slice of a fold's training rows
MIN_ROWS = 10  # split.min_rows: the fewest rows of train, valid and holdout
MIN_CLASS_ROWS = 1  # split.min_class_rows: every class in every split
STORAGE_URL_ENV = "HPSEARCH_STORAGE_URL"  # the full URL of a run whose stored one is redacted


class SpecError(UserError):
    """The spec is invalid. ``errors`` holds one message per problem."""

    def __init__(self, errors: list[str], source: str | None = None):
        self.errors = [redact(e) for e in errors]
        self.source = source
        where = f"spec {source}" if source else "spec"
        if len(self.errors) == 1:
            msg = self.errors[0]
        else:
            msg = f"{where}: {len(self.errors)} problems:\n" + "\n".join(self.errors)
        super().__init__(msg)


def _quote(value: Any) -> str:
    """``repr(value)``, cut to about :data:`QUOTE_MAX` characters."""
    text = repr(value)
    return text if len(text) <= QUOTE_MAX else text[: QUOTE_MAX - 3] + "..."


def _type_name(v: Any) -> str:
    if v is None:
        return "null"
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "list",
        dict: "mapping",
    }.get(type(v), type(v).__name__)


def _wrong_type(leaf: str, value: Any, expected: str, example: str) -> tuple[str, str]:
    return (
        f"expected {expected}, got {_quote(value)} ({_type_name(value)})",
        f"write {expected}, for example `{leaf}: {example}`",
    )


def _unknown(what: str, value: Any, choices: list[str], suffix: str = "") -> tuple[str, str]:
    """(problem, fix) for a name that is not one of ``choices``, with did-you-mean."""
    close = difflib.get_close_matches(str(value).lower(), choices, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown {what} {_quote(value)}", f"{hint}use one of: {', '.join(choices)}{suffix}"


# --------------------------------------------------------------------------- field types


@dataclass(frozen=True)
class Hint:
    """How a field's errors read: the example of a value, and overrides of the wording.

    ``problem``/``fix``: a range error (``{value}`` is the field's value); with
    ``any_error`` they also replace the type errors. ``choices``/``what``/``nullable``:
    an unknown name. ``missing``: the fix for a required field that is absent.
    """

    example: str = ""
    expected: str | None = None
    problem: str | None = None
    fix: str | None = None
    any_error: bool = False
    what: str = "value"
    choices: tuple[str, ...] = ()
    nullable: bool = False
    missing: str | None = None


class _Problem(ValueError):
    """Problems a validator found: ``(field, problem, fix)`` each, ``field`` relative to
    where the validator runs (None: that place itself)."""

    def __init__(self, *items: tuple[str | None, str, str]) -> None:
        super().__init__("; ".join(p for _, p, _ in items))
        self.items = items


def _fail(problem: str, fix: str, field: str | None = None) -> _Problem:
    return _Problem((field, problem, fix))


def _integral(v: Any) -> Any:
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _keep_int(v: Any, handler: Any) -> Any:
    """A number field: NaN refused; an integer stays an integer (``1``, not ``1.0``)."""
    if isinstance(v, float) and math.isnan(v):
        raise PydanticCustomError("nan_number", "not a number")
    out = handler(v)
    return v if type(v) is int else out


def _nonblank(v: Any) -> Any:
    if isinstance(v, str) and not v.strip():
        raise PydanticCustomError("blank_string", "blank")
    return v


def integer(**bounds: Any) -> Any:
    """An integer field type (``5.0`` reads as 5; true/false and strings are refused)."""
    return Annotated[int, Strict(), Field(**bounds), BeforeValidator(_integral)]


def number(**bounds: Any) -> Any:
    """A number field type (integers kept as written; NaN, true/false, strings refused)."""
    return Annotated[float, Strict(), Field(**bounds), WrapValidator(_keep_int)]


Text = Annotated[str, Strict(), Field(min_length=1), BeforeValidator(_nonblank)]
Flag = Annotated[bool, Strict()]


_IMPORT_PATH = r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"  # module:Name, as search_spaces.registry


def _registry_schema(
    registry: str, *, items: bool = False, user_code: bool = False, extra: tuple[str, ...] = ()
) -> Any:
    """The JSON Schema of a plug-in name, from the registry's names when the schema is made:
    a registered name (or one of ``extra``), or with ``user_code`` also ``module:Name``."""

    def update(schema: dict[str, Any]) -> None:
        from hpsearch.core import registry as reg

        names = [*extra, *getattr(reg, registry).names()]
        if items:  # a list of names, or null for none
            for key in ("type", "items"):
                schema.pop(key, None)
            schema["anyOf"] = [{"type": "array", "items": {"enum": names}}, {"type": "null"}]
        elif user_code:
            schema["anyOf"] = [{"enum": names}, {"type": "string", "pattern": _IMPORT_PATH}]
        else:
            schema["enum"] = names

    return update


def _base(info: ValidationInfo) -> Path:
    context = info.context or {}
    return Path(context.get("base_dir") or Path.cwd())


NAME_MAX = 255  # bytes of one file or folder name (ext4, XFS, APFS, NTFS)
PATH_MAX = 4096  # bytes of a whole path (Linux)


def _resolve_path(p: str, base: Path) -> str:
    """``p`` made absolute against ``base`` (its length checked: :func:`_check_path_length`)."""
    _check_path_length(p)
    path = Path(os.path.expanduser(p))
    if not path.is_absolute():
        path = base / path
    return str(path.resolve())


def _check_path_length(p: str) -> None:
    """A path no file system can hold (a name over :data:`NAME_MAX` or a path over
    :data:`PATH_MAX` bytes) is refused here, where the operating system would raise
    ``OSError: File name too long`` on the first look."""
    size = len(p.encode("utf-8", "surrogatepass"))
    parts = p.replace("\\", "/").split("/")
    longest = max(len(part.encode("utf-8", "surrogatepass")) for part in parts)
    if longest > NAME_MAX or size > PATH_MAX:
        what = (
            f"holds a file or folder name of {longest} bytes (at most {NAME_MAX})"
            if longest > NAME_MAX
            else f"is {size} bytes long (at most {PATH_MAX})"
        )
        raise _fail(f"the path {_quote(p)} {what}", "give a shorter path")


def _in_memory(url: str) -> bool:
    """An SQLite URL of an in-memory (or temporary) database: ``sqlite://``,
    ``sqlite:///:memory:``, ``sqlite+pysqlite:///:memory:?cache=shared``."""
    scheme, _, rest = url.partition("://")
    if not scheme.lower().startswith("sqlite"):
        return False
    db = rest.split("?", 1)[0]
    return db in ("", "/", "/:memory:") or "mode=memory" in url


def sqlite_file(url: str | None) -> str | None:
    """The file of a ``sqlite:///PATH`` storage URL; None for other URLs and in-memory ones."""
    if not url or not url.startswith("sqlite:///"):
        return None
    db = url[len("sqlite:///") :]
    return db if db and db != ":memory:" else None


# --------------------------------------------------------------------------- models


class _SpecModel(BaseModel):
    """A spec section: frozen, unknown keys refused, errors raised as :class:`SpecError`."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=False)
    _section: ClassVar[str] = ""  # the dotted prefix of its fields in messages

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _spec_error(exc, type(self), data) from None

    # validates exactly as BaseModel.__init__ does, so nested sections need not call it
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Self:
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as exc:
            source = (kwargs.get("context") or {}).get("source")
            raise _spec_error(exc, cls, obj, source) from None

    @model_validator(mode="before")
    @classmethod
    def _string_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and not all(isinstance(k, str) for k in data):
            return {str(k): v for k, v in data.items()}
        return data


def _str_keys_or_empty(v: Any) -> Any:
    if v is None:
        return {}
    return {str(k): kind for k, kind in v.items()} if isinstance(v, dict) else v


class DataSpec(_SpecModel):
    """The `data` section: the tables, the target, the task and per-column kinds."""

    _section: ClassVar[str] = "data"
    train: Annotated[
        Text,
        Hint(
            expected="a file path",
            example="sklearn:breast_cancer",
            missing="add `train: path/to/train.csv` (or sklearn:breast_cancer)",
        ),
    ] = Field(description="training table: a .csv/.csv.gz/.parquet/.pq file, or sklearn:<name>")
    test: Annotated[Text | None, Hint(expected="a file path", example="data/test.csv")] = Field(
        None, description="rows to predict (no target); the submission's rows"
    )
    sample_submission: Annotated[
        Text | None, Hint(expected="a file path", example="data/sample_submission.csv")
    ] = Field(None, description="the competition's sample submission (layout of submission.csv)")
    target: Annotated[Text, Hint(example="target")] = Field(
        "target", description="the column to predict"
    )
    id: Annotated[Text | None, Hint(example="id")] = Field(
        None, description="the id column (kept out of the features)"
    )
    task: Annotated[Literal[TASKS] | None, Hint(what="task", choices=TASKS, nullable=True)] = Field(
        None, description="inferred from the target column when left out"
    )
    image_shape: Annotated[
        Annotated[tuple[Annotated[int, Strict(), Field(gt=0)], ...], Field(min_length=1)] | None,
        Hint(
            problem="expected a list of positive integers, got {value}",
            fix="write it channels last, for example `image_shape: [8, 8, 1]`, or null",
            any_error=True,
        ),
    ] = Field(None, description="the numeric columns as an image, channels last: [8, 8, 1]")
    columns: Annotated[
        dict[str, Literal[COLUMN_KINDS]],
        BeforeValidator(_str_keys_or_empty),
        Hint(
            what="column kind",
            choices=COLUMN_KINDS,
            any_error=True,
            problem="expected a mapping column -> kind, got {value}",
            fix="write `columns: {city: categorical, notes: text}`",
        ),
    ] = Field(default_factory=dict, description="column -> kind, where inference is wrong")

    @field_validator("train", "test", "sample_submission")
    @classmethod
    def _data_file(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        return _data_path(value, _base(info), allow_sklearn=info.field_name == "train")

    @model_validator(mode="after")
    def _id_is_not_target(self) -> DataSpec:
        if self.id is not None and self.id == self.target:
            raise _fail(
                f"{_quote(self.id)} is also the target column",
                "set `id` to the id column or null",
                field="id",
            )
        return self


def _data_path(value: str, base: Path, allow_sklearn: bool) -> str:
    """A data file resolved against ``base`` and checked to exist, or ``sklearn:<name>``."""
    if value.startswith("sklearn:"):
        if not allow_sklearn:
            raise _fail(f"{_quote(value)} is a bundled dataset", "give a CSV or Parquet file path")
        ds = value.split(":", 1)[1]
        if ds not in SKLEARN_DATASETS:
            close = difflib.get_close_matches(ds, SKLEARN_DATASETS, n=1, cutoff=0.5)
            hint = f"did you mean 'sklearn:{close[0]}'? " if close else ""
            valid = ", ".join(f"sklearn:{d}" for d in SKLEARN_DATASETS)
            raise _fail(f"unknown bundled dataset {_quote(value)}", f"{hint}use one of: {valid}")
        return value
    resolved = _resolve_path(value, base)
    if not resolved.lower().endswith(DATA_SUFFIXES):
        fix = "give a path ending in .csv, .csv.gz, .parquet or .pq"
        fix += ", or sklearn:<name> for a bundled dataset" if allow_sklearn else ""
        raise _fail(f"{_quote(value)} is neither a CSV nor a Parquet file", fix)
    if not Path(resolved).is_file():
        raise _fail(
            f"file {_quote(value)} does not exist (looked for {resolved})",
            "check the path; relative paths are resolved against the spec file's directory",
        )
    return resolved


def _fraction(key: str) -> Any:
    return Annotated[
        number(gt=0, lt=1),
        Hint(
            example="0.2",
            problem="must be between 0 and 1 (exclusive), got {value}",
            fix=f"give the fraction of rows for the {key} split, for example 0.2",
        ),
    ]


class SplitSpec(_SpecModel):
    """The `split` section: the valid and holdout fractions and the split's seed, or
    ``folds`` for cross-validated trials (then ``valid`` and ``holdout`` are unused)."""

    _section: ClassVar[str] = "split"
    valid: _fraction("valid") = Field(0.2, description="fraction of rows scored during the search")
    holdout: _fraction("holdout") = Field(0.2, description="fraction of rows kept for ensembles")
    seed: Annotated[
        integer(ge=0, le=SEED_MAX),
        Hint(example="0", fix=f"use a seed from 0 to {SEED_MAX}, for example `seed: 0`"),
    ] = 0
    min_rows: Annotated[
        integer(ge=1),
        Hint(example="10", fix="give the fewest rows a split may hold, e.g. `min_rows: 10`"),
    ] = Field(MIN_ROWS, description="the fewest rows each of train, valid and holdout may hold")
    min_class_rows: Annotated[
        integer(ge=0),
        Hint(example="1", fix="give the fewest rows of each class per split, e.g. 1 (0: no check)"),
    ] = Field(
        MIN_CLASS_ROWS,
        description="classification: the fewest rows of each class in each split (0: no check)",
    )

    folds: Annotated[
        integer(ge=2, le=MAX_FOLDS) | None,
        Hint(
            example="5",
            fix=f"give the number of cross-validation folds, from 2 to {MAX_FOLDS} "
            "(for example `folds: 5`), or null for the train/valid/holdout split",
        ),
    ] = Field(
        None,
        description="cross-validated trials: one model per fold, out-of-fold predictions for "
        "every labelled row (null: the train/valid/holdout split)",
    )
    inner_valid: Annotated[
        number(gt=0, lt=0.5),
        Hint(
            example="0.1",
            problem="must be above 0 and below 0.5, got {value}",
            fix="give the fraction of each fold's training rows used for early stopping, "
            "for example 0.1",
        ),
    ] = Field(
        INNER_VALID,
        description="with folds: the fraction of each fold's training rows that early "
        "stopping watches (never the fold's held-out rows)",
    )

    @model_serializer(mode="wrap")
    def _minimums_when_set(self, handler: Any) -> dict[str, Any]:
        """The minimums and the cross-validation fields are dumped only when they differ from
        their defaults, so the split of ``run.json`` (compared on --resume) reads as before
        they existed."""
        d = handler(self)
        for key, default in (
            ("min_rows", MIN_ROWS),
            ("min_class_rows", MIN_CLASS_ROWS),
            ("folds", None),
            ("inner_valid", INNER_VALID),
        ):
            if key in d and d.get(key) == default:
                d.pop(key)
        return d

    @model_validator(mode="after")
    def _leaves_rows_to_train(self) -> SplitSpec:
        if self.valid + self.holdout >= 0.9:
            raise _fail(
                f"valid + holdout must be below 0.9, got {self.valid} + {self.holdout} = "
                f"{self.valid + self.holdout:g}",
                "leave at least 10% of the rows for training, for example valid: 0.2, holdout: 0.2",
            )
        return self


def _plugin(
    registry: str, what: str, example: str, value: Any, tail: str = "", extra: tuple = ()
) -> Any:
    """A registered plug-in name or ``module:Name``, checked without importing it."""
    from hpsearch.core import registry as reg

    reg_ = getattr(reg, registry)
    if isinstance(value, str) and reg_.problem(value) is None:
        return value
    problem, fix = _unknown(what, value, [*extra, *reg_.names()])
    raise _fail(problem, f"{fix}, or one of your own as `{example}`{tail}")


def _importable(target: str) -> None:
    """``module:function`` whose module Python can find (``importlib.util.find_spec``: the
    module itself is not run) and, when that is cheap to tell, that defines the function."""
    import importlib.util
    import sys

    module, _, attr = target.partition(":")
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):  # a parent package that does not exist
        found = None
    if found is None:
        raise _fail(
            f"cannot find the module {_quote(module)} of {_quote(target)}",
            "check the module path, install its package or add its folder to PYTHONPATH "
            "(it must import on the driver and on every Ray node)",
        )
    name = attr.split(".")[0]
    loaded = sys.modules.get(module)
    if not hasattr(loaded, name) if loaded is not None else _source_lacks(found, name):
        raise _fail(
            f"the module {_quote(module)} defines no {_quote(name)} (from {_quote(target)})",
            "name a function the module defines, as `module:function`",
        )


def _source_lacks(found: Any, name: str) -> bool:
    """True only when the module's source cannot define ``name``: the word appears nowhere
    in it and nothing in it defines names dynamically (``import *``, ``globals()``, ...)."""
    import re

    origin = getattr(found, "origin", None)
    if not origin or not str(origin).endswith(".py"):
        return False
    try:
        text = Path(origin).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    if re.search(r"import\s+\*|globals\(|__getattr__|setattr\(|exec\(", text):
        return False
    return re.search(rf"\b{re.escape(name)}\b", text) is None


class SamplerSpec(_SpecModel):
    """The `sampler` section: which sampler proposes the trials, and its seed."""

    _section: ClassVar[str] = "sampler"
    name: Annotated[str, Field(json_schema_extra=_registry_schema("SAMPLERS", user_code=True))] = (
        Field("tpe", description="tpe, hyperopt-tpe, random, cmaes, gp, or module:Class of yours")
    )
    seed: Annotated[
        integer(ge=0, le=SEED_MAX) | None,
        Hint(
            example="0",
            fix=f"use a seed from 0 to {SEED_MAX} (numpy's range), or null for a random one",
        ),
    ] = 0
    n_startup_trials: Annotated[integer(ge=1) | None, Hint(example="10")] = Field(
        None, description="random trials before the model-based sampler takes over"
    )

    @field_validator("name", mode="before")
    @classmethod
    def _registered(cls, value: Any) -> Any:
        return _plugin("SAMPLERS", "sampler", "name: mypackage.samplers:MySampler", value)


class BudgetSpec(_SpecModel):
    """The `budget` section: how many trials, and a time limit."""

    _section: ClassVar[str] = "budget"
    n_trials: Annotated[
        integer(ge=1), Hint(example="20", fix="run at least one trial, for example `n_trials: 20`")
    ] = 20
    timeout_s: Annotated[
        number(gt=0) | None,
        Hint(
            example="3600",
            problem="must be positive, got {value}",
            fix="give seconds, e.g. 3600, or null",
        ),
    ] = None


class ResourcesSpec(_SpecModel):
    """The `resources` section: what each trial reserves, and how many run at once."""

    _section: ClassVar[str] = "resources"
    cpus_per_trial: Annotated[
        number(gt=0),
        Hint(
            example="1",
            fix="give the CPUs each trial reserves, e.g. 1 (fractions such as 0.5 are allowed)",
        ),
    ] = 1
    gpus_per_trial: Annotated[
        number(ge=0),
        Hint(
            example="0",
            problem="must be 0 or more, got {value}",
            fix="use 0 for CPU-only trials, 1 for a whole GPU, or a fraction such as 0.5 to share one",
        ),
    ] = 0
    max_concurrent: Annotated[
        integer(ge=1),
        Hint(example="2", fix="run at least one trial at a time, e.g. `max_concurrent: 2`"),
    ] = 2
    max_failures: Annotated[
        integer(ge=1),
        Hint(
            example="5",
            fix="allow at least one consecutive failure before stopping, e.g. `max_failures: 5`",
        ),
    ] = 5
    warm_workers: Annotated[Flag, Hint(example="true")] = Field(
        True, description="keep one worker process per slot between trials"
    )
    parallel_folds: Annotated[Flag, Hint(example="true")] = Field(
        True,
        description="with split.folds: a trial's folds run as separate Ray calls on the free "
        "worker slots, side by side (false: one after another in the trial's worker)",
    )
    wait_timeout_s: Annotated[
        number(gt=0) | None,
        Hint(
            example="600",
            problem="must be positive, got {value}",
            fix="give the seconds a trial may wait for its CPUs/GPUs, e.g. 600, or null to wait forever",
        ),
    ] = Field(
        600,
        description="stop the run when a trial waits longer than this for a worker with its "
        "resources; null waits forever",
    )


class TrainingSpec(_SpecModel):
    """The `training` section: epochs, batch size, early stopping, and the trial function."""

    _section: ClassVar[str] = "training"
    max_epochs: Annotated[integer(ge=1), Hint(example="30")] = 30
    batch_size: Annotated[integer(ge=1), Hint(example="64")] = 64
    patience: Annotated[integer(ge=0), Hint(example="5")] = 5
    trial_fn: Annotated[
        str,
        Field(json_schema_extra=_registry_schema("TRAINERS", user_code=True, extra=(AUTO,))),
    ] = Field(
        AUTO,
        description="auto: the space family's trainer (trees for a tree family, keras "
        "otherwise); a trainer name or module:function runs your code",
    )

    @field_validator("trial_fn", mode="before")
    @classmethod
    def _registered(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None or value == AUTO:  # null: written by older versions, same as auto
            return AUTO
        example = "trial_fn: mypackage.trials:train"
        value = _plugin(
            "TRAINERS", "trainer", example, value, tail=", or leave it out", extra=(AUTO,)
        )
        from hpsearch.core.registry import TRAINERS

        if value not in TRAINERS and not (info.context or {}).get("frozen"):
            _importable(value)
        return value


class EnsembleSpec(_SpecModel):
    """The `ensemble` section: which trials and tree models go into `ensembles build`, and how."""

    _section: ClassVar[str] = "ensemble"
    top_k: Annotated[integer(ge=1), Hint(example="5")] = 5
    max_corr: Annotated[
        number(gt=0, le=1) | None,
        Hint(
            example="0.95",
            problem="must be in (0, 1], got {value}",
            fix="use e.g. 0.95, or null for no correlation filter",
        ),
    ] = Field(
        MAX_CORR,
        description="drop a candidate whose errors on the fit rows correlate above this with a "
        "better kept one (the default drops only near-duplicates); null: no correlation filter",
    )
    margin: Annotated[
        number(ge=0) | None,
        Hint(
            example="3",
            problem="must be 0 or more, got {value}",
            fix="use e.g. 3, or null for no eligibility cut",
        ),
    ] = Field(
        3.0,
        description="a candidate worse than the best by more than margin x the robust spread "
        "of the candidates' validation scores is not eligible; null: every candidate is",
    )
    trees: Annotated[
        tuple[str, ...], Field(json_schema_extra=_registry_schema("TREE_MODELS", items=True))
    ] = Field(DEFAULT_TREES, description="tree models fitted on the same split; null for none")
    method: Annotated[str, Field(json_schema_extra=_registry_schema("BLENDERS", extra=(AUTO,)))] = (
        Field(AUTO, description="auto: the blend method with the best cross-fitted score")
    )
    folds: Annotated[integer(ge=2), Hint(example="5")] = 5
    refit: Flag = Field(
        False,
        description="after blending, train the members again on every labelled row and blend "
        "their test predictions (holdout mode; see docs/ensembles.md)",
    )

    @field_validator("trees", mode="before")
    @classmethod
    def _tree_models(cls, value: Any) -> Any:
        # lgbm, xgb, catboost: installed?
        from hpsearch.core.registry import TREE_INSTALL, TREE_MODELS, missing_package

        if value is None:
            return ()
        if not isinstance(value, list | tuple):
            raise _fail(*_wrong_type("trees", value, "a list", "[rf, et, hgb]"))
        from search_spaces.families import TREE_FAMILIES

        # a tree family's name (lightgbm, xgboost, ...) names its tree model (lgbm, xgb, ...)
        value = [TREE_FAMILIES.get(t, t) if isinstance(t, str) else t for t in value]
        problems = []
        for tree in value:
            if not isinstance(tree, str) or tree not in TREE_MODELS:
                problems.append(_unknown("tree model", tree, list(TREE_MODELS.names())))
            elif package := missing_package(tree):
                problems.append(
                    (
                        f"tree model {tree!r} needs the {package} package, which is not installed",
                        f"`pip install {TREE_INSTALL.get(package, package)}`, or leave {tree} "
                        "out of the list",
                    )
                )
        if problems:
            raise _Problem(*((None, problem, fix) for problem, fix in problems))
        return tuple(value)

    @field_validator("method", mode="before")
    @classmethod
    def _blend_method(cls, value: Any) -> Any:
        if value == AUTO:
            return value
        example = "method: mypackage.blend:MyBlender"
        return _plugin("BLENDERS", "blend method", example, value, extra=(AUTO,))


_SECTIONS = ("data", "split", "sampler", "budget", "resources", "training", "ensemble")
MISSING_SPACE_FIX = "add `space: tabular_mlp` (see `hpsearch space list`) or a space file path"


def is_space_file(space: str) -> bool:
    """Whether a ``space``/``spaces`` entry names a .yaml space file (else a library space)."""
    return space.endswith((".yaml", ".yml"))


def space_dir_name(space: str) -> str:
    """The directory of a space's sibling run under a pipeline's ``output``: the library
    name, or a space file's name without its suffix."""
    return Path(space).stem if is_space_file(space) else space


def _library_names() -> list[str]:
    from search_spaces import LIBRARY_DIR

    library = Path(LIBRARY_DIR)
    return sorted({p.stem for p in library.glob("*.y*ml") if p.suffix in (".yaml", ".yml")})


def _space_shares(value: Any, info: ValidationInfo) -> Any:
    """``spaces``: a non-empty mapping {library space or .yaml file: share > 0}, the files
    resolved against the spec's directory and checked to exist, the shares normalized to
    sum 1. Every bad entry is named (``spaces.<key>``)."""
    if value is None:
        return None
    example = "{tabular_mlp: 0.5, wide_deep: 0.5}"
    if not isinstance(value, dict):
        raise _fail(*_wrong_type("spaces", value, "a mapping space -> share", example))
    if not value:
        raise _fail("empty", f"name at least one space with its share, e.g. `spaces: {example}`")
    problems: list[tuple[str | None, str, str]] = []
    shares: dict[str, float] = {}
    dirs: dict[str, str] = {}
    names = None
    for key, share in value.items():
        name = str(key)
        if not name.strip():
            problems.append((None, f"a blank space name {_quote(key)}", "name a library space"))
            continue
        if is_space_file(name):
            space = _resolve_path(name, _base(info))
            if not Path(space).is_file():
                problems.append(
                    (
                        name,
                        f"space file {_quote(name)} does not exist (looked for {space})",
                        "check the path; relative paths are resolved against the spec "
                        "file's directory",
                    )
                )
                continue
        else:
            names = _library_names() if names is None else names
            if name not in names:
                problem, fix = _unknown("space", name, names)
                problems.append((name, problem, f"{fix} (`hpsearch space list`), or a .yaml file"))
                continue
            space = name
        if isinstance(share, bool) or not isinstance(share, int | float) or not share > 0:
            shown = f"{_quote(share)} ({_type_name(share)})"
            problems.append(
                (
                    name,
                    f"the share must be a number above 0, got {shown}",
                    f"write e.g. `{name}: 0.5`",
                )
            )
            continue
        if not math.isfinite(share):
            problems.append(
                (name, f"the share must be finite, got {share}", f"write e.g. `{name}: 0.5`")
            )
            continue
        folder = space_dir_name(space)
        if folder in dirs:
            problems.append(
                (
                    name,
                    f"its run directory {folder!r} is also that of {_quote(dirs[folder])}",
                    "name each space once (rename a space file whose name is taken)",
                )
            )
            continue
        dirs[folder] = name
        shares[space] = float(share)
    if problems:
        raise _Problem(*problems)
    total = sum(shares.values())
    return {space: share / total for space, share in shares.items()}


def _pruner(v: Any) -> Any:
    return None if v == "none" else v


class Spec(_SpecModel):
    """A whole spec. Built by :func:`load_spec`, or in Python (validated the same way)."""

    model_config = ConfigDict(title="hpsearch spec")
    name: Annotated[
        Text,
        Hint(
            example="my-search",
            missing="add `name: my-search` (letters, digits, '.', '_', '-')",
        ),
    ] = Field(description="the run's name (letters, digits, '.', '_', '-')")
    data: Annotated[
        DataSpec,
        Hint(missing="add a `data:` section with at least `train: <file or sklearn:name>`"),
    ]
    split: SplitSpec = Field(default_factory=SplitSpec)
    metric: Annotated[Literal[METRICS] | None, Hint(what="metric", choices=METRICS)] = Field(
        None, description="the metric the search optimises; by default log_loss or rmse"
    )
    space: Annotated[
        Text | None,
        Hint(
            expected="a space name or a path to a space file",
            example="tabular_mlp",
            missing=MISSING_SPACE_FIX,
        ),
    ] = Field(
        None,
        description="a library space (`hpsearch space list`) or a .yaml space file; "
        "`hpsearch pipeline` also takes `spaces` (several) or neither (its default mix)",
    )
    spaces: Annotated[
        Annotated[dict[str, Annotated[float, Field(gt=0)]], Field(min_length=1)] | None,
        BeforeValidator(_space_shares),
    ] = Field(
        None,
        description="`hpsearch pipeline` only: several spaces, each with its share of the "
        "budget, {space name or .yaml file: share}; shares > 0, normalized to sum 1; one "
        "sibling run per space, one ensemble of them all",
    )
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    pruner: Annotated[
        Literal[PRUNERS] | None,
        BeforeValidator(_pruner),
        Hint(what="pruner", choices=PRUNERS, nullable=True),
    ] = Field(None, description="stop weak trials early: median, hyperband, or null")
    output: Annotated[Text, Hint(expected="a directory path", example="runs/{name}")] = Field(
        "", description="the run directory (or a URI); default runs/<name> next to the spec"
    )
    storage: Annotated[Text | None, Hint(example="sqlite:///study.db")] = Field(
        None, description="an SQLAlchemy URL of the Optuna study; default sqlite in the run"
    )
    ensemble: EnsembleSpec = Field(default_factory=EnsembleSpec)
    _source: str | None = PrivateAttr(default=None)

    @property
    def task(self) -> str | None:
        return self.data.task

    @property
    def source(self) -> str | None:
        """The spec file it was read from (None for a dict or a Spec built in Python)."""
        return self._source

    def __eq__(self, other: object) -> bool:  # the source file is not part of the spec
        if not isinstance(other, Spec):
            return NotImplemented
        return self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]  # holds dicts, like the dataclass did

    def to_dict(self, redact_secrets: bool = False) -> dict[str, Any]:
        """Plain YAML/JSON-able dict; ``load_spec(spec.to_dict()) == spec``.
        ``redact_secrets``: the storage URL's password as ``***`` (for files written)."""
        d = self.model_dump()
        if redact_secrets and d["storage"]:
            d["storage"] = redact(d["storage"])
        if self.data.image_shape is not None:
            d["data"]["image_shape"] = list(self.data.image_shape)
        d["ensemble"]["trees"] = list(self.ensemble.trees)
        for key in ("space", "spaces"):  # one of them, or neither (the pipeline's default)
            if d[key] is None:
                d.pop(key)
        return d

    def check_run_paths(self) -> None:
        """UserError when ``output`` or an SQLite ``storage`` cannot be created (before a new
        run starts; see :func:`check_run_paths`)."""
        check_run_paths(self)

    def fingerprint(self) -> str:
        """sha256 of the parts that define the data and the split (not the search settings)."""
        d = self.to_dict()
        payload = {"data": d["data"], "split": d["split"]}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        """A null section means its defaults; no ``output`` means ``runs/<name>``."""
        if not isinstance(data, dict):
            return data
        data = {k: v for k, v in data.items() if not (k in _SECTIONS and v is None)}
        if data.get("output") is None:
            name = data.get("name")
            # a name that is refused (below) leaves the default output out of its message
            ok = isinstance(name, str) and name.strip() and len(name.encode()) <= NAME_MAX
            data["output"] = f"runs/{name if ok else 'spec'}"
        return data

    @field_validator("name")
    @classmethod
    def _name_chars(cls, name: str) -> str:
        if len(name.encode("utf-8", "surrogatepass")) > NAME_MAX:
            raise _fail(
                f"{_quote(name)} is {len(name.encode('utf-8', 'surrogatepass'))} bytes long, more "
                f"than the {NAME_MAX} of a folder name (the default `output` is runs/<name>)",
                "use a shorter name",
            )
        if any(not (ch.isalnum() or ch in "._-") for ch in name):
            better = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in name)
            raise _fail(
                f"{_quote(name)} contains characters other than letters, digits, '.', '_', '-'",
                f"use a name such as {_quote(better)}",
            )
        return name

    @field_validator("space")
    @classmethod
    def _space_file(cls, space: str | None, info: ValidationInfo) -> str | None:
        if space is None:  # `space: null`: as if left out (`hpsearch pipeline`'s default mix)
            return None
        return _resolve_path(space, _base(info)) if is_space_file(space) else space

    @field_validator("output")
    @classmethod
    def _output_dir(cls, output: str, info: ValidationInfo) -> str:
        from hpsearch.core.remote import is_uri

        return output if is_uri(output) else _resolve_path(output, _base(info))

    @field_validator("storage")
    @classmethod
    def _storage_url(cls, storage: str | None, info: ValidationInfo) -> str | None:
        if storage is not None and "://" not in storage:
            raise _fail(
                f"{_quote(storage)} is not an SQLAlchemy URL",
                "write e.g. `storage: sqlite:///runs/study.db` or postgresql://user@host/db, or null",
            )
        if storage is not None and _in_memory(storage):
            raise _fail(
                f"{_quote(storage)} is an in-memory database, gone when the driver exits "
                "(--resume and `hpsearch status` would find no study)",
                "give an SQLite file, e.g. `storage: sqlite:///runs/study.db`, or null for "
                "study.db in the run directory",
            )
        if (db := sqlite_file(storage)) and not db.startswith("/"):
            # a relative SQLite path means the same file from any working directory
            return "sqlite:///" + _resolve_path(db, _base(info))
        if db:
            _check_path_length(db)
        return storage

    @model_validator(mode="after")
    def _one_space_or_several(self) -> Spec:
        if self.space is not None and self.spaces is not None:
            raise _fail(
                f"set together with `space: {self.space}`",
                "keep one: `space` for one space, or `spaces: {name: share, ...}` for several "
                "(`hpsearch pipeline`)",
                field="spaces",
            )
        return self

    @model_validator(mode="after")
    def _refit_needs_a_holdout(self) -> Spec:
        if self.ensemble.refit and self.split.folds:
            raise _fail(
                f"true with split.folds {self.split.folds}: the members of a cross-validated "
                "run already learned from every labelled row",
                "drop `ensemble.refit` (it retrains holdout-mode members), or set "
                "`split.folds: null`",
                field="ensemble.refit",
            )
        return self

    @model_validator(mode="after")
    def _task_and_metric(self) -> Spec:
        """Settle the task (inferred from the target column when left out) and the metric;
        run only once everything else is valid, as it may read the training file."""
        task = self.data.task
        if task is None:
            from hpsearch.core.data import peek_task

            task = peek_task(self.data.train, self.data.target)
        metric = self.metric
        if metric is None:
            metric = DEFAULT_METRIC[task]
        elif task not in METRIC_TASKS[metric]:
            fits = [m for m in METRICS if task in METRIC_TASKS[m]]
            inferred = "" if self.data.task else " (inferred from the target column)"
            raise _fail(
                f"{metric!r} does not apply to a {task} task{inferred}",
                f"use one of: {', '.join(fits)}, or set `data.task`",
                field="metric",
            )
        if (task, metric) != (self.data.task, self.metric):
            object.__setattr__(self, "data", self.data.model_copy(update={"task": task}))
            object.__setattr__(self, "metric", metric)
        return self


# --------------------------------------------------------------------------- pydantic errors -> messages

_RANGES = (
    "greater_than",
    "greater_than_equal",
    "less_than",
    "less_than_equal",
    "too_short",
    "too_long",
)
_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "nan_number": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a non-empty string",
    "string_too_short": "a non-empty string",
    "blank_string": "a non-empty string",
    "tuple_type": "a list",
    "list_type": "a list",
    "dict_type": "a mapping",
}
_SECTION_TYPES = ("model_type", "model_attributes_type", "dataclass_type")


@dataclass
class _Place:
    """Where an error points: the dotted field name, its hint, the model that holds it."""

    name: str
    hint: Hint
    model: type[BaseModel] | None  # the section model at the end of the path, if any
    value_loc: tuple[Any, ...]  # the location of the field's whole value in the input


def _place(cls: type[_SpecModel], loc: tuple[Any, ...]) -> _Place:
    names = [cls._section] if cls._section else []
    model: type[BaseModel] | None = cls
    hint, value_loc = Hint(), ()
    for i, part in enumerate(loc):
        fields = model.model_fields if model is not None else {}
        if isinstance(part, str) and part in fields:
            info = fields[part]
            names.append(part)
            value_loc = loc[: i + 1]
            hint = next((m for m in info.metadata if isinstance(m, Hint)), Hint())
            ann = info.annotation
            model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        elif isinstance(part, str) and model is None:  # a key of a mapping field
            names.append(part)
    return _Place(".".join(names), hint, model, value_loc)


def _dig(raw: Any, loc: tuple[Any, ...]) -> Any:
    for part in loc:
        if isinstance(raw, dict):
            raw = raw.get(part)
        elif isinstance(raw, list | tuple) and isinstance(part, int) and part < len(raw):
            raw = raw[part]
        else:
            raw = getattr(raw, str(part), None)
    return raw


def _field_msg(name: str, problem: str, fix: str) -> str:
    return f"spec field {_quote(name)}: {problem}. Fix: {fix}"


def _range_problem(kind: str, ctx: dict[str, Any], value: Any) -> tuple[str, str]:
    bound = next(iter(ctx.values()), None) if ctx else None
    if isinstance(bound, float) and bound.is_integer():
        bound = int(bound)
    return {
        "greater_than_equal": (
            f"must be at least {bound}, got {value}",
            f"set it to {bound} or more",
        ),
        "less_than_equal": (f"must be at most {bound}, got {value}", f"set it to {bound} or less"),
        "greater_than": (f"must be greater than {bound}, got {value}", f"set it above {bound}"),
        "less_than": (f"must be less than {bound}, got {value}", f"set it below {bound}"),
    }.get(
        kind,
        (f"has the wrong length, got {value}", "see the schema (`hpsearch spec schema`)"),
    )


def _messages(
    err: dict[str, Any], cls: type[_SpecModel], raw: Any, source: str | None
) -> list[str]:
    """The project's message(s) for one pydantic error."""
    kind, loc = err["type"], tuple(err["loc"])
    if kind == "extra_forbidden":
        return [_unknown_key(cls, loc)]
    place = _place(cls, loc)
    hint, leaf = place.hint, place.name.rsplit(".", 1)[-1]
    value = _dig(raw, place.value_loc)
    if kind == "value_error":
        error = (err.get("ctx") or {}).get("error")
        if not isinstance(error, _Problem):  # a DataError from reading the target column
            raise error from None
        return [
            _field_msg(".".join(p for p in (place.name, f) if p), problem, fix)
            for f, problem, fix in error.items
        ]
    if kind == "missing":
        return [_field_msg(place.name, "missing", hint.missing or f"add `{leaf}: ...`")]
    if kind == "literal_error":
        suffix = ", or null" if hint.nullable else ""
        return [
            _field_msg(place.name, *_unknown(hint.what, err["input"], list(hint.choices), suffix))
        ]
    if hint.problem and (hint.any_error or kind in _RANGES):
        return [_field_msg(place.name, hint.problem.format(value=_quote(value)), hint.fix or "")]
    if kind in _RANGES:
        problem, fix = _range_problem(kind, err.get("ctx") or {}, _quote(err["input"]))
        return [_field_msg(place.name, problem, hint.fix or fix)]
    if kind in _SECTION_TYPES:
        return [_section_type(place.name, err["input"], source)]
    expected = hint.expected or _EXPECTED.get(kind, "a valid value")
    raw_name = raw.get("name") if isinstance(raw, dict) else None
    example = hint.example.format(name=raw_name if isinstance(raw_name, str) else "my-search")
    return [_field_msg(place.name, *_wrong_type(leaf, err["input"], expected, example))]


def _unknown_key(cls: type[_SpecModel], loc: tuple[Any, ...]) -> str:
    place, key = _place(cls, loc[:-1]), loc[-1]
    valid = list((place.model or cls).model_fields)
    section = place.name or None
    fld = f"{section}.{key}" if section else str(key)
    where = f"section {section!r}" if section else "the top level"
    close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.5)
    fix = f"did you mean {close[0]!r}? " if close else ""
    fix += f"valid keys in {where}: {', '.join(valid)}"
    return _field_msg(fld, f"unknown key {_quote(key)} in {where}", fix)


def _section_type(name: str, value: Any, source: str | None) -> str:
    if not name:
        return (
            f"spec {source or ''}: expected a mapping of sections at the top level, got "
            f"{_type_name(value)}. Fix: start the file with `name: ...` and `data: ...` keys."
        )
    return _field_msg(
        name,
        f"expected a mapping, got {_quote(value)} ({_type_name(value)})",
        f"write the section as `{name.rsplit('.', 1)[-1]}: {{key: value, ...}}`",
    )


def _spec_error(
    exc: ValidationError, cls: type[_SpecModel], raw: Any, source: str | None = None
) -> SpecError:
    """One :class:`SpecError` with every problem of ``exc``, each said once (a non-spec
    error raised inside a validator, such as a ``DataError``, is raised as it is)."""
    errors: list[str] = []
    for err in exc.errors():
        for msg in _messages(err, cls, raw, source):
            if msg not in errors:
                errors.append(msg)
    return SpecError(errors, source)


# --------------------------------------------------------------------------- loading


def _read_yaml(path: Path) -> Any:
    import yaml

    from search_spaces import safe_yaml

    where = f"spec file {_quote(str(path))}"
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise SpecError(
            [f"{where} does not exist. Fix: check the path (cwd is {os.getcwd()})."]
        ) from None
    except OSError as e:
        raise SpecError(
            [f"{where} cannot be read: {e.strerror or e}. Fix: check the path."]
        ) from None
    except UnicodeDecodeError as e:
        raise SpecError(
            [
                f"{where} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}). "
                "Fix: save it as UTF-8, for example `iconv -f latin1 -t utf-8 OLD.yaml > NEW.yaml`."
            ],
            str(path),
        ) from None
    try:
        return safe_yaml.load(text)
    except yaml.MarkedYAMLError as e:
        raise SpecError([_yaml_message(where, e)], str(path)) from None
    except yaml.YAMLError as e:
        raise SpecError(
            [f"{where}: malformed YAML: {str(e)[:QUOTE_MAX]}. Fix: correct the YAML syntax."]
        ) from None


def _yaml_message(where: str, e: Any) -> str:
    import yaml

    from search_spaces import safe_yaml

    mark = e.problem_mark or e.context_mark
    line = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = e.problem or e.context or "malformed YAML"
    if isinstance(e, safe_yaml.DuplicateKey):
        return (
            f"{where}{line}: {problem}, first on line {e.first_mark.line + 1}; YAML would keep "
            f"only the last one. Fix: {e.fix}."
        )
    if isinstance(e, safe_yaml.YamlRefused):
        return f"{where}{line}: {problem}. Fix: {e.fix}."
    if isinstance(e, yaml.constructor.ConstructorError) and e.problem and "tag" in e.problem:
        tag = problem.rsplit(" ", 1)[-1]
        return (
            f"{where}{line}: the YAML tag {tag} is not allowed: specs are read with "
            "yaml.safe_load and never construct Python objects. Fix: remove the tag and "
            "write a plain value (string, number, list or mapping)."
        )
    return (
        f"{where}{line}: malformed YAML: {problem}. "
        "Fix: correct the YAML syntax there (indentation, ':' after keys, closing brackets)."
    )


def _parse_override_value(v: Any) -> Any:
    if isinstance(v, str):
        import yaml

        from search_spaces import safe_yaml

        try:
            return safe_yaml.load(v) if v.strip() else v
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
                        f"override {_quote(entry)}: expected KEY=VALUE. Fix: write it like budget.n_trials=50."
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


def load_spec(
    path_or_dict: str | os.PathLike | dict[str, Any],
    overrides: Any = None,
    base_dir: str | os.PathLike | None = None,
    *,
    frozen: bool = False,
) -> Spec:
    """Read and validate a spec (a YAML path or an already-parsed dict).

    ``overrides``: ``{"budget.n_trials": 5}`` or ``["budget.n_trials=5"]``.
    ``base_dir``: where relative paths are resolved (default: for a file, its directory;
    for a dict, the current directory).
    ``frozen``: the ``spec.yaml`` of an existing run, read to look at or ensemble it: the
    trainer is not looked up (it runs only in a search, maybe on another machine).
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
        raise SpecError([_section_type("", raw, source)], source)
    raw = _apply_overrides(raw, overrides)
    context = {"base_dir": base, "source": source, "frozen": frozen}
    spec = Spec.model_validate(raw, context=context)
    spec._source = source
    return spec


def spec_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of spec files, for editors and CI checks."""
    schema = Spec.model_json_schema()
    schema.pop("default", None)
    schema["properties"]["output"].pop("default", None)  # runs/<name>, computed
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


# --------------------------------------------------------------------------- before a run


def require_one_space(spec: Spec, command: str = "hpsearch run") -> str:
    """The spec's ``space``; a one-line :class:`SpecError` when it names several spaces
    (``spaces``: ``hpsearch pipeline`` runs those) or none (only the pipeline has a
    default mix)."""
    if spec.spaces is not None:
        names = ", ".join(space_dir_name(s) for s in spec.spaces)
        raise SpecError(
            [
                _field_msg(
                    "spaces",
                    f"`{command}` searches one space, the spec names {len(spec.spaces)} ({names})",
                    "run `hpsearch pipeline SPEC` (one run per space, then one ensemble of "
                    "them all), or set `space: NAME` instead of `spaces`",
                )
            ],
            spec.source,
        )
    if spec.space is None:
        fix = MISSING_SPACE_FIX + "; only `hpsearch pipeline` has a default (its mix)"
        raise SpecError([_field_msg("space", "missing", fix)], spec.source)
    return spec.space


def check_run_paths(spec: Spec) -> None:
    """UserError when the run directory (``output``, unless a URI) or the SQLite file of
    ``storage`` cannot be created: checked before a new run starts, leaving nothing behind."""
    from hpsearch.core.remote import is_uri

    output = None if is_uri(spec.output) else Path(spec.output)
    if output is not None and not output.is_file():  # a file: open_run says so
        check_writable(
            output,
            "spec field 'output': the run directory",
            "set `output` to a directory path in a writable folder (it is created when missing)",
        )
    db = sqlite_file(spec.storage)
    if db is None:
        return
    problem = _sqlite_file_problem(Path(db), output)
    if problem is not None:
        raise UserError(
            f"spec field 'storage': the SQLite file {db} cannot be written: {problem}. Fix: "
            "name a file in an existing writable folder, e.g. `storage: sqlite:///runs/study.db`, "
            "or set `storage: null` for study.db in the run directory."
        )


def _sqlite_file_problem(db: Path, output: Path | None) -> str | None:
    folder = db.parent
    if output is not None and folder == output:
        return None  # the run directory: created by the run, checked above
    if not db.exists() and not folder.is_dir():
        if folder.exists():
            return f"{folder} is a file, not a directory"
        return f"its folder {folder} does not exist (SQLite does not create folders)"
    return unwritable(db, "file")


def has_redacted_password(url: str | None) -> bool:
    """True for a URL whose password was replaced by ``***`` when it was written."""
    return bool(url and redact(url) == url and f":{REDACTED}@" in url)


def storage_url_to_open(url: str, where: str = "") -> str:
    """The URL to open a study with, given the one a spec or ``run.json`` holds.

    A URL whose password was redacted when it was written (``user:***@``) is replaced by
    ``$HPSEARCH_STORAGE_URL`` when that URL redacts to the same text; else, for
    PostgreSQL with ``PGPASSWORD`` or a password file (``PGPASSFILE``, ``~/.pgpass``),
    by the URL without a password, so the client reads it from there. Otherwise a
    RunDirError says how to give the password. Any other URL is returned as it is.
    """
    if not has_redacted_password(url):
        return url
    given = os.environ.get(STORAGE_URL_ENV)
    if given:
        if redact(given) != url:
            raise RunDirError(
                f"{where or 'the run'}: ${STORAGE_URL_ENV} is {redact(given)!r}, not the "
                f"run's storage {url!r}. Fix: set ${STORAGE_URL_ENV} to the run's storage URL "
                "with its password, or unset it."
            )
        return given
    scheme = url.split("://", 1)[0].lower()
    if scheme.startswith("postgres") and _pg_password_available():
        return url.replace(f":{REDACTED}@", "@", 1)
    raise RunDirError(
        f"{where or 'the run'}: its study storage {url!r} was written with the password "
        f"redacted (hpsearch never writes passwords to files). Fix: set ${STORAGE_URL_ENV} "
        "to the full URL with its password (or, for PostgreSQL, put the password in "
        "~/.pgpass or PGPASSWORD), then run the command again."
    )


def _pg_password_available() -> bool:
    if os.environ.get("PGPASSWORD"):
        return True
    passfile = os.environ.get("PGPASSFILE") or os.path.expanduser("~/.pgpass")
    return os.path.isfile(passfile)
