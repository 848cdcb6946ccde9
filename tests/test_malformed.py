"""Generated malformed input: every spec and every table is loaded or refused cleanly.

A property-based test (``hypothesis``) mutates a valid spec dict (wrong types, unknown
keys, out-of-range numbers, bad names, huge strings, nested junk, deleted keys and
sections) and generates CSV training tables (empty, header only, duplicate columns, an
all-NaN or infinite target, one class, unicode junk, the wrong delimiter, ragged rows,
binary garbage, ...). Each input goes through what ``hpsearch run`` does before any
work, without Ray: ``load_spec``, ``load_space`` and the data preparation
(``hpsearch.core.data.prepare``). It is either accepted, or refused with one of the
errors the CLI turns into exit status 2 (``user_error_types``) whose message is one line
that says ``Fix:`` (a spec with several problems: a ``spec: N problems:`` line, then one
such line per problem), quotes no more than about 200 characters of a value, and nothing
is written. Any other exception fails the test with its traceback.

The examples are derandomized (the same inputs on every run, in CI too); docs/faults.md
quotes the figures (``MAX_EXAMPLES`` per property).
"""

from __future__ import annotations

import collections
import math
import re
import string
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hpsearch.core.data import prepare
from hpsearch.core.errors import user_error_types
from hpsearch.core.spec import SpecError, load_spec
from search_spaces import load_space

MAX_EXAMPLES = 150  # per property; docs/faults.md quotes it
LINE_MAX = 1500  # a message line: the problem, at most ~200 characters of a value, the fix

SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI is reproducible
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROBLEMS = re.compile(r"spec( .*)?: (\d+) problems:")


# --------------------------------------------------------------------------- the check


def _snapshot(path: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(path)): (p.lstat().st_size, p.lstat().st_mtime_ns)
        for p in sorted(path.rglob("*"))
    }


def _check_refusal(exc: BaseException) -> None:
    """A clean refusal: one line with its fix, or one line per problem of a spec."""
    message = str(exc)
    lines = message.split("\n")
    if len(lines) > 1:
        head = PROBLEMS.fullmatch(lines[0])
        assert isinstance(exc, SpecError) and head, message
        assert int(head.group(2)) == len(lines) - 1, message
        lines = lines[1:]
    for line in lines:
        assert "Fix:" in line, message
        assert len(line) < LINE_MAX, f"{len(line)} characters: {line[:300]}..."
    assert "Traceback" not in message


def _outcome(root: Path, load: Any) -> str:
    """``load()`` on inputs already written under ``root``: "accepted" or "refused" (after
    checking the refusal); nothing under ``root`` may change either way."""
    before = _snapshot(root)
    try:
        load()
        outcome = "accepted"
    except user_error_types() as exc:
        _check_refusal(exc)
        outcome = "refused"
    assert _snapshot(root) == before, "something was written"
    return outcome


def _load_and_prepare(raw: Any, base: Path) -> None:
    """What `hpsearch run` checks before any work, short of Ray and the run directory."""
    spec = load_spec(raw, base_dir=base)
    load_space(spec.space)
    prepare(spec, run_dir=None)


# --------------------------------------------------------------------------- spec dicts


def _train_table(n: int = 120) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "id": np.arange(n),
            "a": rng.normal(size=n).round(3),
            "b": rng.normal(size=n).round(3),
            "c": rng.choice(["x", "y", "z"], n),
            "target": rng.choice(["no", "yes"], n),
        }
    )


def _base_spec() -> dict[str, Any]:
    return {
        "name": "malformed",
        "data": {"train": "train.csv", "test": "test.csv", "target": "target", "id": "id"},
        "split": {"valid": 0.2, "holdout": 0.2, "seed": 0},
        "metric": "log_loss",
        "space": "tabular_mlp",
        "sampler": {"name": "tpe", "seed": 0, "n_startup_trials": 5},
        "budget": {"n_trials": 4, "timeout_s": 60},
        "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent": 2},
        "training": {"max_epochs": 3, "batch_size": 64, "patience": 2},
        "pruner": None,
        "ensemble": {"top_k": 3, "trees": ["rf"], "method": "mean"},
        "output": "run",
    }


@pytest.fixture(scope="module")
def spec_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("malformed-specs")
    df = _train_table()
    df.to_csv(d / "train.csv", index=False)
    df.drop(columns="target").head(20).to_csv(d / "test.csv", index=False)
    return d


_names = st.text(alphabet=string.ascii_letters + string.digits + "_-. :/*?", max_size=20)
_text = st.text(max_size=40)  # any unicode, control characters included
_huge = st.builds(lambda s, n: (s or "x") * n, _text, st.integers(5_000, 50_000))
_numbers = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([-1, 0, 1, 0.0, 0.5, 1.0, 1.5, 2**32, 2**63, -(2**63), 1e308, -0.0]),
)
_curated = st.sampled_from(
    [
        "", " ", "\x00", "名前", "../../etc/passwd", "sklearn:nope", "sklearn:iris",
        "nosuchmodule:fn", "os:system", "hpsearch.search.testing:oracle", "sqlite:///:memory:",
        "sqlite://", "postgresql://user:secret@localhost:1/db", "s3://bucket/run", "random",
        "hyperopt-tpe", "median", "hyperband", "binary", "regression", "multiclass", "rmse",
        "roc_auc", "categorical", "drop", "auto", "tabular_mpl", "wide_deep", "text_conv1d",
        "image_separable_cnn", "yes", "no", "null", "~", "*", "&a", "!!python/object",
    ]
)  # fmt: skip
_scalars = st.one_of(st.none(), st.booleans(), _numbers, _names, _text, _curated)
_junk = st.recursive(
    st.one_of(_scalars, _huge),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(_names, _curated), inner, max_size=4),
    ),
    max_leaves=12,
)

# keys whose strings are paths or URLs: absolute ones are made relative, so no generated
# spec points the checks (which probe that a folder is writable) outside the test's folder
_PATH_KEYS = {"output", "storage", "train", "test", "sample_submission", "space"}


def _contained(key: Any, value: Any) -> Any:
    if key in _PATH_KEYS and isinstance(value, str) and value.startswith(("/", "~", "file:")):
        return "junk" + value.replace("~", "_")
    if key == "storage" and isinstance(value, str) and value.startswith("sqlite:///"):
        tail = value[len("sqlite:///") :]
        return "sqlite:///" + ("junk/" + tail if tail.startswith("/") else tail)
    return value


@st.composite
def _mutation(draw: Any, base: dict[str, Any]) -> tuple[str, tuple[str, ...], Any]:
    sections = [k for k, v in base.items() if isinstance(v, dict)]
    op = draw(st.sampled_from(["replace", "replace", "delete", "unknown key", "section"]))
    if op == "section":
        return op, (draw(st.sampled_from(sections)),), draw(_junk)
    where = draw(st.sampled_from([(), *[(s,) for s in sections]]))
    if op == "unknown key":
        key = draw(st.one_of(_names, _curated, st.sampled_from(["budgte", "n_trails", "seeds"])))
        return op, (*where, key), draw(_junk)
    keys = list(base.keys() if not where else base[where[0]].keys())
    key = draw(st.sampled_from(keys))
    if op == "delete":
        return op, (*where, key), None
    value = draw(st.one_of(_junk, _numbers, _curated))
    return op, (*where, key), value


def _apply(spec: dict[str, Any], mutation: tuple[str, tuple[str, ...], Any]) -> None:
    op, path, value = mutation
    parent: Any = spec
    for key in path[:-1]:
        if not isinstance(parent.get(key), dict):
            return  # an earlier mutation replaced the section
        parent = parent[key]
    if op == "delete":
        parent.pop(path[-1], None)
    else:
        parent[path[-1]] = _contained(path[-1], value)


@given(mutations=st.lists(_mutation(_base_spec()), min_size=1, max_size=3))
@SETTINGS
def _spec_property(spec_dir: Path, seen: collections.Counter, mutations: list[Any]) -> None:
    raw = _base_spec()
    for mutation in mutations:
        _apply(raw, mutation)
    outcome = _outcome(spec_dir, lambda: _load_and_prepare(raw, spec_dir))
    event(outcome)
    seen[outcome] += 1


def test_generated_specs_load_or_are_refused_cleanly(spec_dir):
    """1 to 3 random mutations of a valid spec dict, then load_spec, load_space and the
    data preparation: accepted, or refused with one clean line per problem; nothing
    written. The unmutated spec is accepted."""
    _load_and_prepare(_base_spec(), spec_dir)
    seen: collections.Counter = collections.Counter()
    _spec_property(spec_dir, seen)
    print(f"generated specs: {dict(seen)}")  # docs/faults.md quotes it (pytest -s)
    assert seen["refused"] > 0 and seen["accepted"] > 0, seen  # both sides are reached
    assert sum(seen.values()) >= MAX_EXAMPLES * 0.9, seen


def test_a_spec_that_is_no_mapping_or_a_bad_yaml_file_is_refused_cleanly(spec_dir, tmp_path):
    """Junk at the top level (a list, a number, a string) as a dict's replacement and as a
    YAML file: refused with one clean line, nothing written."""
    for junk in ([1, 2], 3, "spec", None, {"name": None}):
        path = tmp_path / "spec.yaml"
        path.write_text(yaml.safe_dump(junk))
        assert _outcome(tmp_path, lambda p=path: _load_and_prepare(p, spec_dir)) == "refused"


# --------------------------------------------------------------------------- CSV tables

_CORRUPTIONS = (
    None,
    "empty file",
    "header only",
    "duplicate column",
    "wrong delimiter",
    "ragged rows",
    "unbalanced quote",
    "unicode junk header",
    "unicode junk cells",
    "binary garbage",
    "latin-1 bytes",
    "nul bytes",
    "byte order mark",
    "only the target",
    "blank lines",
)
_TARGETS = (
    "binary",
    "multiclass",
    "regression",
    "one class",
    "all NaN",
    "some NaN",
    "infinite",
    "mixed types",
    "missing",
)
_KINDS = ("float", "int", "category", "text", "empty", "mixed", "unicode", "constant", "date")


def _column(kind: str, n: int, rng: np.random.Generator) -> list[Any]:
    if kind == "float":
        return list(rng.normal(size=n).round(4))
    if kind == "int":
        return list(rng.integers(-5, 50, n))
    if kind == "category":
        return list(rng.choice(["red", "green", "blue"], n))
    if kind == "text":
        words = ["lorem", "ipsum", "dolor", "sit", "amet", "consectetur"]
        return [" ".join(rng.choice(words, 5)) for _ in range(n)]
    if kind == "empty":
        return [None] * n
    if kind == "mixed":
        return [str(v) if i % 3 else "n/a?" for i, v in enumerate(rng.normal(size=n).round(2))]
    if kind == "unicode":
        junk = ["ü", "名前", "🙂", "\u202e", "a\tb", "x\ny", '"q"']
        return [rng.choice(junk) for _ in range(n)]
    if kind == "constant":
        return [7] * n
    return [f"2024-01-{1 + i % 28:02d}" for i in range(n)]


def _target(kind: str, n: int, rng: np.random.Generator) -> list[Any]:
    if kind == "binary":
        return list(rng.choice(["no", "yes"], n))
    if kind == "multiclass":
        return list(rng.integers(0, 4, n))
    if kind == "regression":
        return list(rng.normal(size=n).round(3))
    if kind == "one class":
        return ["yes"] * n
    if kind == "all NaN":
        return [math.nan] * n
    y = list(rng.normal(size=n).round(3))
    if kind == "some NaN" and n:
        y[0] = math.nan
    if kind == "infinite" and n:
        y[-1] = math.inf
    if kind == "mixed types":
        y = [v if i % 4 else "oops" for i, v in enumerate(y)]
    return y


def _mostly(sound: list[Any], problems: Any) -> Any:
    """Sound values four times as often as each problem: both outcomes get explored."""
    return st.sampled_from([*sound * 4, *problems])


@st.composite
def _tables(draw: Any) -> dict[str, Any]:
    n = draw(_mostly([60, 120], [0, 1, 3, 12, 30]))
    kinds = draw(st.lists(_mostly(["float", "int", "category"], _KINDS), min_size=1, max_size=4))
    names = [f"c{i}" for i in range(len(kinds))]
    if draw(_mostly([False], [True])):  # unicode junk, or the names of the id or the target
        junk = _mostly(["a"], ["id", "target", ""]) | _text
        names = draw(st.lists(junk, min_size=len(kinds), max_size=len(kinds), unique=True))
    return {
        "n": n,
        "kinds": kinds,
        "names": names,
        "target": draw(_mostly(["binary", "multiclass", "regression"], _TARGETS)),
        "corruption": draw(_mostly([None], _CORRUPTIONS)),
        "seed": draw(st.integers(0, 2**16)),
        "task": draw(_mostly([None], ["binary", "multiclass", "regression"])),
        "id": draw(_mostly([None], ["id", "a", "target", "nope"])),
    }


def _csv_bytes(t: dict[str, Any]) -> bytes:
    rng = np.random.default_rng(t["seed"])
    n = t["n"]
    kinds = zip(t["names"], t["kinds"], strict=True)
    columns = {name: _column(kind, n, rng) for name, kind in kinds}
    if t["target"] != "missing":
        columns["target"] = _target(t["target"], n, rng)
    if t["corruption"] == "only the target":
        columns = {"target": columns.get("target", [1] * n)}
    text = pd.DataFrame(columns).to_csv(index=False) if columns else ""
    return _corrupt(text, t["corruption"], rng)


def _corrupt(text: str, how: str | None, rng: np.random.Generator) -> bytes:
    lines = text.splitlines()
    if how == "empty file":
        text = ""
    elif how == "header only":
        text = (lines[0] + "\n") if lines else "a,target\n"
    elif how == "duplicate column" and lines:
        first = lines[0].split(",")[0]
        lines = [f"{first},{line.split(',')[0]},{line.partition(',')[2]}" for line in lines]
        text = "\n".join(lines) + "\n"
    elif how == "wrong delimiter":
        text = text.replace(",", ";")
    elif how == "ragged rows" and len(lines) > 2:
        lines[2] += ",1,2,3"
        text = "\n".join(lines) + "\n"
    elif how == "unbalanced quote" and len(lines) > 1:
        lines[1] = '"' + lines[1]
        text = "\n".join(lines) + "\n"
    elif how == "unicode junk header":
        text = "\u202e\x00名前,🙂,\ufeff\n" + text
    elif how == "unicode junk cells" and len(lines) > 1:
        lines[1] = ",".join("\x01\u2028ü" for _ in lines[1].split(","))
        text = "\n".join(lines) + "\n"
    elif how == "binary garbage":
        return bytes(rng.integers(0, 256, 300, dtype=np.uint8))
    elif how == "latin-1 bytes":
        return (text + "caf\xe9,1\n").encode("latin-1", "replace")
    elif how == "nul bytes":
        return text.encode() + b"\x00\x00\x00,\x00\n"
    elif how == "byte order mark":
        return b"\xef\xbb\xbf" + text.encode()
    elif how == "blank lines":
        text = "\n\n" + text.replace("\n", "\n\n")
    return text.encode("utf-8", "surrogatepass")


@given(table=_tables())
@SETTINGS
def _table_property(root: Path, seen: collections.Counter, table: dict[str, Any]) -> None:
    d = Path(tempfile.mkdtemp(dir=root))
    (d / "train.csv").write_bytes(_csv_bytes(table))
    data = {"train": "train.csv", "target": "target", "task": table["task"], "id": table["id"]}
    raw = {"name": "tables", "data": data, "space": "tabular_mlp", "output": "run"}
    outcome = _outcome(d, lambda: _load_and_prepare(raw, d))
    event(outcome)
    seen[outcome] += 1


def test_generated_csv_tables_load_or_are_refused_cleanly(tmp_path_factory):
    """Generated training tables (sizes, column kinds, unicode names, every target
    problem, one corruption each) through load_spec and the data preparation: accepted,
    or refused with one clean line; nothing written."""
    seen: collections.Counter = collections.Counter()
    _table_property(tmp_path_factory.mktemp("malformed-tables"), seen)
    print(f"generated tables: {dict(seen)}")  # docs/faults.md quotes it (pytest -s)
    assert seen["refused"] > 0 and seen["accepted"] > 0, seen
    assert sum(seen.values()) >= MAX_EXAMPLES * 0.9, seen
