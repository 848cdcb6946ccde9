"""Damaged run files: every reader turns them into exit 2 naming the file; reading never writes."""

from __future__ import annotations

import shutil

import pytest

from hpsearch.cli.app import main
from hpsearch.core.spec import load_spec
from hpsearch.search.driver import run_search
from tests.conftest import make_spec_dict

ORACLE = "hpsearch.search.testing:oracle"


@pytest.fixture(scope="module")
def pristine(ray_session, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("damaged")
    spec = load_spec(make_spec_dict(tmp, budget={"n_trials": 2}, training={"trial_fn": ORACLE}))
    run_search(spec, progress=False)
    return tmp / "run"


@pytest.fixture
def run_dir(pristine, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(pristine, copy)
    return copy


def _exit_and_error(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


@pytest.mark.parametrize("command", ["status", "trials", "best"])
def test_truncated_trial_json_is_refused_naming_the_file(run_dir, capsys, command):
    path = run_dir / "trials" / "00001" / "trial.json"
    path.write_text(path.read_text()[:20])
    code, err = _exit_and_error([command, str(run_dir)], capsys)
    assert code == 2
    assert len(err) == 1 and err[0].startswith(
        f"error: {path} is damaged (trial.json is not valid JSON"
    )
    assert "Fix: restore it from a copy of the run, or delete its trial directory" in err[0]


def test_truncated_run_json_is_refused_naming_the_file(run_dir, capsys):
    path = run_dir / "run.json"
    path.write_text('{"name": ')
    code, err = _exit_and_error(["status", str(run_dir)], capsys)
    assert code == 2
    assert err == [
        f"error: {path} is damaged (run.json is not valid JSON: " + err[0].split("JSON: ", 1)[1]
    ]


@pytest.mark.parametrize("content", [b"", b"this is no database at all"], ids=["empty", "garbage"])
def test_damaged_study_db_is_refused_and_left_as_it_was(run_dir, capsys, content):
    db = run_dir / "study.db"
    db.write_bytes(content)
    code, err = _exit_and_error(["status", str(run_dir)], capsys)
    assert code == 2
    kind = "empty" if not content else "not an SQLite database"
    assert err == [
        f"error: {db} is damaged ({kind}). Fix: restore the run's study.db from a copy of the "
        "run; hpsearch does not rebuild it."
    ]
    assert db.read_bytes() == content  # reading never writes


def test_a_json_file_holding_no_object_is_refused(run_dir, capsys):
    path = run_dir / "trials" / "00000" / "trial.json"
    path.write_text("[1, 2]")
    code, err = _exit_and_error(["trials", str(run_dir)], capsys)
    assert code == 2
    assert err[0].startswith(f"error: {path} is damaged (trial.json holds list, not an object)")


def _bomb(levels: int = 8) -> tuple[str, str]:
    """A YAML alias bomb (9**levels values from about 1 KB of text) and its alias."""
    lines = ["  a0: &a0 [" + ", ".join(["lol"] * 9) + "]"]
    for i in range(1, levels):
        lines.append(f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "anchors:\n" + "\n".join(lines) + "\n", f"*a{levels - 1}"


@pytest.mark.parametrize("damage", ["alias bomb", "not a mapping", "not yaml", "latin-1"])
def test_a_damaged_frozen_spec_is_refused_by_resume_without_printing_it(
    run_dir, tmp_path, capsys, damage
):
    """`--resume` compares the run's frozen spec.yaml with the spec; a tampered one is one
    line naming the file (before: an alias bomb in `data.target` was printed whole, 35 MB of
    stderr for 9**7 values, and a list crashed with AttributeError)."""
    import time

    import yaml

    frozen = run_dir / "spec.yaml"
    text = frozen.read_text()
    anchors, alias = _bomb()
    damaged = {
        "alias bomb": anchors + text.replace("target: target", f"target: {alias}"),
        "not a mapping": "- a list\n",
        "not yaml": "data: {target: [\n",
        "latin-1": None,
    }[damage]
    if damaged is None:
        frozen.write_bytes(b"name: caf\xe9\n" + text.encode())
    else:
        frozen.write_text(damaged)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(make_spec_dict(tmp_path, training={"trial_fn": ORACLE})))
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    start = time.monotonic()
    code, err = _exit_and_error(["run", str(spec), "--resume", "--quiet"], capsys)
    assert time.monotonic() - start < 10
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: {frozen} is damaged (")
    assert err[0].endswith("Fix: restore it from a copy of the run; hpsearch does not rebuild it.")
    assert len(err[0]) < 600
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")} == before


def test_a_long_stored_value_is_quoted_short_by_resume(run_dir, tmp_path, capsys):
    import yaml

    frozen = run_dir / "spec.yaml"
    frozen.write_text(frozen.read_text().replace("target: target", "target: " + "x" * 50_000))
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(make_spec_dict(tmp_path, training={"trial_fn": ORACLE})))
    code, err = _exit_and_error(["run", str(spec), "--resume", "--quiet"], capsys)
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"error: cannot resume {run_dir}: data.target 'target' differs ")
    assert "'xxx" in err[0] and len(err[0]) < 600


DATA_DAMAGES = [
    (name, damage, command)
    for name in ("split.json", "preprocessor.json", "target.json")
    for damage in ("truncated", "{}")
    for command in ("build", "resume")
] + [("columns.json", "truncated", "build")]


@pytest.mark.parametrize(
    ("name", "damage", "command"), DATA_DAMAGES, ids=["-".join(c) for c in DATA_DAMAGES]
)
def test_a_damaged_data_file_is_refused_naming_it(run_dir, tmp_path, capsys, name, damage, command):
    """`ensembles build`, `--resume` (and `ensembles predict`, through the same reader) on a
    run whose data/*.json is damaged: one line naming the file (before: a JSONDecodeError or
    KeyError traceback)."""
    import yaml

    from ensembles.cli import main as ens_main

    path = run_dir / "data" / name
    path.write_text(path.read_text()[:30] if damage == "truncated" else damage)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(make_spec_dict(tmp_path, training={"trial_fn": ORACLE})))
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    if command == "build":
        code = ens_main(["build", str(run_dir), "--trees", "none", "--quiet"])
    else:
        code = main(["run", str(spec), "--resume", "--quiet", "--n-trials", "3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    problem = "is not valid JSON" if damage == "truncated" else "does not hold what a run writes"
    assert err[0].startswith(f"error: {path} is damaged ({name} {problem}")
    assert err[0].endswith("Fix: restore it from a copy of the run.")
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*")} == before
