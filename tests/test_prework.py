"""Checks made before the work starts (paths, plug-ins, data sizes) and storage passwords
kept out of messages and files. The bad inputs of docs/faults.md are also rows of
``tests/test_faults.py::test_bad_input_exits_2_and_writes_nothing``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from hpsearch.core.data import load_table, prepare, split_sizes
from hpsearch.core.errors import RunDirError, UserError, check_writable, redact, unwritable
from hpsearch.core.spec import (
    STORAGE_URL_ENV,
    SpecError,
    has_redacted_password,
    load_spec,
    storage_url_to_open,
)
from tests.conftest import make_spec_dict, write_spec

INSTANT = "hpsearch.search.testing:instant"


def _table(n: int = 120) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "a": rng.normal(size=n).round(3),
            "b": rng.normal(size=n).round(3),
            "target": rng.choice(["no", "yes"], n),
        }
    )


def _csv_spec(tmp: Path, df: pd.DataFrame, **sections) -> dict:
    df.to_csv(tmp / "train.csv", index=False)
    spec = make_spec_dict(tmp, **sections)
    spec["data"] = {"train": str(tmp / "train.csv"), "target": "target", **sections.get("data", {})}
    return spec


# --------------------------------------------------------------------------- redaction


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://user:secret@host/db", "postgresql://user:***@host/db"),
        ("'mysql+pymysql://u:p@ss@h:3306/d' and 'x'", "'mysql+pymysql://u:***@h:3306/d' and 'x'"),
        ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
        ("postgresql://host/db?sslmode=require&password=pw", "postgresql://host/db?sslmode=require&password=***"),
        ("postgresql://user@host/db", "postgresql://user@host/db"),  # no password: unchanged
        ("http://127.0.0.1:8265 and sqlite:////tmp/study.db", "http://127.0.0.1:8265 and sqlite:////tmp/study.db"),
        ("postgresql://user:***@host/db", "postgresql://user:***@host/db"),  # idempotent
    ],
)  # fmt: skip
def test_redact_hides_the_password_of_every_url(text, expected):
    assert redact(text) == expected


def test_every_user_error_and_cli_line_is_redacted(capsys):
    import argparse

    from hpsearch.core.errors import StudyStopped, run_cli

    err = RunDirError("cannot open 'postgresql://me:hunter2@db/x'. Fix: check it.")
    assert str(err) == "cannot open 'postgresql://me:***@db/x'. Fix: check it."
    assert "hunter2" not in repr(err.args)
    assert "hunter2" not in str(SpecError(["a: mysql://me:hunter2@h/d", "b"]))
    assert str(StudyStopped("last error: x://me:hunter2@h")) == "last error: x://me:***@h"

    def fail(args):
        raise UserError("cannot reach x://u:pw@h")

    parser = argparse.ArgumentParser()
    parser.set_defaults(func=fail)
    assert run_cli(parser, []) == 2
    assert capsys.readouterr().err == "error: cannot reach x://u:***@h\n"


def test_storage_url_to_open_takes_the_password_from_the_environment(monkeypatch, tmp_path):
    stored = "postgresql://me:***@db.example/runs"
    assert has_redacted_password(stored) and not has_redacted_password("postgresql://me@db/x")
    assert storage_url_to_open("sqlite:////tmp/s.db") == "sqlite:////tmp/s.db"
    for var in (STORAGE_URL_ENV, "PGPASSWORD"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    with pytest.raises(RunDirError) as e:
        storage_url_to_open(stored, "run directory /r")
    assert str(e.value) == (
        "run directory /r: its study storage 'postgresql://me:***@db.example/runs' was written "
        "with the password redacted (hpsearch never writes passwords to files). Fix: set "
        "$HPSEARCH_STORAGE_URL to the full URL with its password (or, for PostgreSQL, put the "
        "password in ~/.pgpass or PGPASSWORD), then run the command again."
    )
    monkeypatch.setenv(STORAGE_URL_ENV, "postgresql://me:s3cret@db.example/runs")
    assert storage_url_to_open(stored) == "postgresql://me:s3cret@db.example/runs"
    monkeypatch.setenv(STORAGE_URL_ENV, "postgresql://me:s3cret@elsewhere/runs")
    with pytest.raises(RunDirError) as e:
        storage_url_to_open(stored, "run directory /r")
    assert "s3cret" not in str(e.value)
    assert str(e.value).startswith(
        "run directory /r: $HPSEARCH_STORAGE_URL is 'postgresql://me:***@elsewhere/runs', not "
        "the run's storage 'postgresql://me:***@db.example/runs'. Fix: "
    )
    monkeypatch.delenv(STORAGE_URL_ENV)
    (tmp_path / "pgpass").write_text("db.example:5432:runs:me:s3cret\n")
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "pgpass"))  # libpq reads it itself
    assert storage_url_to_open(stored) == "postgresql://me@db.example/runs"


def test_the_frozen_spec_and_to_dict_redact_on_request(tmp_path):
    s = load_spec(make_spec_dict(tmp_path, storage="postgresql://me:s3cret@db/x"))
    assert s.to_dict()["storage"] == "postgresql://me:s3cret@db/x"  # staging a job needs it
    assert s.to_dict(redact_secrets=True)["storage"] == "postgresql://me:***@db/x"
    assert load_spec(s.to_dict(redact_secrets=True)).storage == "postgresql://me:***@db/x"


def _register_password_sqlite() -> None:
    """``sqlite+pwcheck://user:secret@//path``: SQLite that refuses a wrong password, so the
    run below proves which URL each step really opened."""
    from sqlalchemy.dialects import registry

    registry.register("sqlite.pwcheck", __name__, "PasswordSQLite")


try:
    from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite

    class PasswordSQLite(SQLiteDialect_pysqlite):
        supports_statement_cache = True

        def create_connect_args(self, url):
            if url.password != "secret":
                raise PermissionError(f"password authentication failed for {url.username!r}")
            return super().create_connect_args(url._replace(username=None, password=None))

except ImportError:  # pragma: no cover
    pass


def _files_text(run_dir: Path) -> str:
    return "\n".join(
        p.read_bytes().decode("utf-8", "replace")
        for p in run_dir.rglob("*")
        if p.is_file() and p.name != "study.db"
    )


def test_a_password_never_reaches_the_run_files_and_the_run_resumes_and_reads(
    ray_session, tmp_path, monkeypatch, capsys
):
    from hpsearch.cli.app import main
    from hpsearch.core.runs import load_run
    from hpsearch.search.driver import run_search

    _register_password_sqlite()
    monkeypatch.delenv(STORAGE_URL_ENV, raising=False)
    real = f"sqlite+pwcheck://me:secret@/{tmp_path / 'study.db'}"
    shown = f"sqlite+pwcheck://me:***@/{tmp_path / 'study.db'}"
    spec_path = write_spec(tmp_path, storage=real, budget={"n_trials": 2})
    run_dir = tmp_path / "run"
    run_search(load_spec(spec_path), trial_fn=INSTANT, progress=False)
    meta = json.loads((run_dir / "run.json").read_text())
    frozen = yaml.safe_load((run_dir / "spec.yaml").read_text())
    assert meta["storage"] == frozen["storage"] == shown
    assert "secret" not in _files_text(run_dir)
    # --resume with the spec: its real URL opens the study
    summary = run_search(load_spec(spec_path), resume=True, n_trials=3, trial_fn=INSTANT, progress=False)  # fmt: skip
    assert summary.n_complete == 3
    # read-only commands: the stored URL is redacted, the password comes from the environment
    assert main(["status", str(run_dir)]) == 2
    out, err = capsys.readouterr()
    assert "secret" not in err and f"'{shown}' was written with the password redacted" in err
    assert err.startswith(f"error: run directory {run_dir}: its study storage ")
    monkeypatch.setenv(STORAGE_URL_ENV, real)
    assert main(["status", str(run_dir)]) == 0
    assert "trials: COMPLETE 3" in capsys.readouterr().out
    assert load_run(run_dir).status()["trials"] == {"COMPLETE": 3}
    # resuming from the run's own (redacted) spec.yaml works with the environment's URL
    again = run_search(load_spec(run_dir / "spec.yaml"), resume=True, n_trials=4, trial_fn=INSTANT, progress=False)  # fmt: skip
    assert again.n_complete == 4
    # a message about the storage names it redacted
    (tmp_path / "other").mkdir()
    other = write_spec(tmp_path / "other", storage=real, output=str(tmp_path / "run2"))
    assert main(["run", str(other), "--quiet", "--trial-fn", INSTANT]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: spec field 'name': the storage '{shown}' already holds a study named "
        "'bc-test', which belongs to another run. Fix: give this run a new `name`, or continue "
        "that run with --resume on its own `output`.\n"
    )
    assert not (tmp_path / "run2").exists()
    assert "secret" not in _files_text(run_dir)


# --------------------------------------------------------------------------- writable paths


def test_unwritable_names_the_reason_and_leaves_nothing(tmp_path):
    (tmp_path / "f.csv").write_text("a\n1\n")
    assert unwritable(tmp_path / "new" / "deeper") is None
    assert unwritable(tmp_path / "out.csv", "file") is None
    assert unwritable(tmp_path / "f.csv", "file") is None  # replaced atomically
    assert (
        unwritable(tmp_path / "f.csv" / "sub") == f"{tmp_path / 'f.csv'} is a file, not a directory"
    )
    assert unwritable(tmp_path / "f.csv") == f"{tmp_path / 'f.csv'} is a file, not a directory"
    assert unwritable(tmp_path, "file") == f"{tmp_path} is a directory, not a file"
    assert unwritable("/proc/x") == "nothing can be created in /proc (No such file or directory)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.csv"]  # the probes are gone
    with pytest.raises(UserError) as e:
        check_writable("/proc/x.csv", "-o", "give -o a file path in a writable folder", "file")
    assert str(e.value) == (
        "-o /proc/x.csv: cannot be written: nothing can be created in /proc (No such file or "
        "directory). Fix: give -o a file path in a writable folder"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in a read-only folder")
def test_a_read_only_folder_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert unwritable(ro / "run") == f"{ro} is not writable (permission denied)"
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["ensembles", "predict", "ENS", "DATA.csv", "-o", "/proc/x.csv"], "-o /proc/x.csv: cannot be written: nothing can be created in /proc (No such file or directory). Fix: give -o a file path in a writable folder"),
        (["ensembles", "build", "RUN", "--out", "/proc/x"], "--out /proc/x: cannot be written: nothing can be created in /proc (No such file or directory). Fix: give --out a new directory path in a writable folder"),
        (["hpsearch", "pull", "RUN", "/proc/x"], "DEST /proc/x: cannot be written: nothing can be created in /proc (No such file or directory). Fix: give a new directory path in a writable folder"),
        (["ensembles", "predict", "ENS", "DATA.csv", "-o", "{tmp}/f.csv/x.csv"], "-o {tmp}/f.csv/x.csv: cannot be written: {tmp}/f.csv is a file, not a directory. Fix: give -o a file path in a writable folder"),
    ],
)  # fmt: skip
def test_cli_output_paths_are_checked_before_any_work(tmp_path, capsys, argv, expected):
    from ensembles.cli import main as ensembles_main
    from hpsearch.cli.app import main as hpsearch_main

    (tmp_path / "f.csv").write_text("a\n1\n")
    argv = [a.format(tmp=tmp_path) for a in argv]
    main = ensembles_main if argv[0] == "ensembles" else hpsearch_main
    # the run, ensemble and data named do not exist: the output path is refused first
    assert main(argv[1:]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"error: {expected.format(tmp=tmp_path)}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.csv"]


def test_storage_paths_checked_before_a_run(tmp_path):
    run = tmp_path / "run"
    ok = make_spec_dict(tmp_path, storage=f"sqlite:///{run / 'study.db'}")  # in the run dir
    prepare(load_spec(ok))
    (tmp_path / "db").mkdir()
    bad = make_spec_dict(tmp_path, storage=f"sqlite:///{tmp_path / 'db'}")
    with pytest.raises(UserError) as e:
        prepare(load_spec(bad))
    assert str(e.value).startswith(
        f"spec field 'storage': the SQLite file {tmp_path / 'db'} cannot be written: "
        f"{tmp_path / 'db'} is a directory, not a file. Fix: "
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db"]


# --------------------------------------------------------------------------- trial_fn


def test_trial_fn_module_and_function_are_checked_without_running_the_module(tmp_path, monkeypatch):
    pkg = tmp_path / "mytrials_h6.py"
    pkg.write_text(
        "raise SystemExit('imported!')\ndef train(payload, arrays, reporter):\n    pass\n"
    )
    dyn = tmp_path / "dyntrials_h6.py"
    dyn.write_text("globals()['tr' + 'ain'] = print\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    s = load_spec(make_spec_dict(tmp_path, training={"trial_fn": "mytrials_h6:train"}))
    assert s.training.trial_fn == "mytrials_h6:train" and "mytrials_h6" not in sys.modules
    with pytest.raises(SpecError) as e:
        load_spec(make_spec_dict(tmp_path, training={"trial_fn": "mytrials_h6:fit"}))
    assert str(e.value) == (
        "spec field 'training.trial_fn': the module 'mytrials_h6' defines no 'fit' (from "
        "'mytrials_h6:fit'). Fix: name a function the module defines, as `module:function`"
    )
    # names made at run time cannot be told from the source: accepted, found out on import
    assert load_spec(make_spec_dict(tmp_path, training={"trial_fn": "dyntrials_h6:train"}))
    with pytest.raises(SpecError, match="cannot find the module 'no_pkg_h6.trials'"):
        load_spec(make_spec_dict(tmp_path, training={"trial_fn": "no_pkg_h6.trials:train"}))
    with pytest.raises(SpecError, match="defines no 'nope'"):  # a module already imported
        load_spec(make_spec_dict(tmp_path, training={"trial_fn": "json:nope"}))


# --------------------------------------------------------------------------- data


def test_min_rows_and_min_class_rows_are_configurable(tmp_path):
    small = _table(30)
    with pytest.raises(UserError, match="split.min_rows = 10"):
        prepare(load_spec(_csv_spec(tmp_path, small)))
    prepared = prepare(load_spec(_csv_spec(tmp_path, small, split={"min_rows": 6})))
    assert {k: len(v) for k, v in prepared.ids.items()} == split_sizes(30, 0.2, 0.2)
    rare = _table()
    rare.loc[:1, "target"] = "rare"
    with pytest.raises(UserError, match="class 'rare' of target 'target' has 0 row"):
        prepare(load_spec(_csv_spec(tmp_path, rare)))
    accepted = prepare(load_spec(_csv_spec(tmp_path, rare, split={"min_class_rows": 0})))
    assert accepted.classes == ["no", "rare", "yes"]


def test_the_split_minimums_stay_out_of_run_json_unless_set(tmp_path):
    s = load_spec(make_spec_dict(tmp_path))
    assert (s.split.min_rows, s.split.min_class_rows) == (10, 1)
    assert s.split.model_dump() == {"valid": 0.2, "holdout": 0.2, "seed": 0}
    t = load_spec(make_spec_dict(tmp_path, split={"min_rows": 3, "min_class_rows": 0}))
    assert t.split.model_dump() == {"valid": 0.2, "holdout": 0.2, "seed": 0, "min_rows": 3, "min_class_rows": 0}  # fmt: skip
    assert load_spec(t.to_dict()) == t
    with pytest.raises(SpecError, match="spec field 'split.min_rows': must be at least 1, got 0"):
        load_spec(make_spec_dict(tmp_path, split={"min_rows": 0}))


def test_an_inferred_drop_of_every_column_is_named(tmp_path):
    df = _table().assign(a=1.0, b="same")  # constant columns are dropped
    with pytest.raises(UserError) as e:
        prepare(load_spec(_csv_spec(tmp_path, df, data={"columns": {"b": "drop"}})))
    assert str(e.value) == (
        "spec field 'data.columns': every feature column of the training data is dropped: 'b' "
        "by `data.columns`; 'a' as constant or id-like. Fix: keep at least one: give it a kind "
        "in `data.columns`, e.g. `{a: numeric}`, or remove its `drop`"
    )


def test_duplicate_header_names_are_refused_in_compressed_csv_too(tmp_path):
    path = tmp_path / "t.csv.gz"
    pd.DataFrame([[1, 2, 3]], columns=["x", "y", "z"]).to_csv(path, index=False)
    assert list(load_table(path).columns) == ["x", "y", "z"]
    pd.DataFrame([[1, 2, 3, 4]], columns=["x", "y", "x", "y"]).to_csv(path, index=False)
    with pytest.raises(UserError) as e:
        load_table(path)
    assert str(e.value) == (
        f"data file '{path}': repeats the column name(s) 'x', 'y' in its header (pandas would "
        "silently rename the repeats 'x.1', 'y.1'). Fix: give every column of the header line "
        "its own name"
    )


def test_a_run_s_frozen_spec_loads_without_its_trainer_module(tmp_path):
    """A run copied to a machine without its trainer's module can still be read and
    ensembled: the trainer is looked up only for a search."""
    import yaml

    from hpsearch.core.spec import SpecError, load_spec
    from tests.conftest import make_spec_dict

    raw = make_spec_dict(tmp_path, training={"trial_fn": "hpsearch.search.testing:oracle"})
    raw["training"]["trial_fn"] = "my_lab_only.trainers:fit"
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert load_spec(path, frozen=True).training.trial_fn == "my_lab_only.trainers:fit"
    with pytest.raises(SpecError, match="cannot find the module 'my_lab_only.trainers'"):
        load_spec(path)


# --------------------------------------------------------------------------- over-long values

LONG = "x" * 50_000


PATH_TAIL = "Fix: give a shorter path"


@pytest.mark.parametrize(
    ("field", "value", "head", "tail"),
    [
        ("data.train", f"{LONG}.csv", "the path 'xxx", "... holds a file or folder name of 50004 bytes (at most 255). " + PATH_TAIL),
        ("output", LONG, "the path 'xxx", "... holds a file or folder name of 50000 bytes (at most 255). " + PATH_TAIL),
        ("output", "/proc/" + "d/" * 2100, "the path '/proc/d/d/", "... is 4206 bytes long (at most 4096). " + PATH_TAIL),
        ("space", f"{LONG}.yaml", "the path 'xxx", "... holds a file or folder name of 50005 bytes (at most 255). " + PATH_TAIL),
        ("storage", f"sqlite:///{LONG}/study.db", "the path 'xxx", "... holds a file or folder name of 50000 bytes (at most 255). " + PATH_TAIL),
        ("storage", f"sqlite:////tmp/{LONG}/study.db", "the path '/tmp/xxx", "... holds a file or folder name of 50000 bytes (at most 255). " + PATH_TAIL),
        ("name", LONG, "'xxx", "... is 50000 bytes long, more than the 255 of a folder name (the default `output` is runs/<name>). Fix: use a shorter name"),
        ("training.trial_fn", f"os:{LONG}", "the module 'os' defines no 'xxx", "...). Fix: name a function the module defines, as `module:function`"),
        ("training.trial_fn", f"{LONG}:fn", "cannot find the module 'xxx", "... Fix: check the module path, install its package or add its folder to PYTHONPATH (it must import on the driver and on every Ray node)"),
    ],
    ids=["data path", "output name", "output path", "space file", "relative sqlite", "absolute sqlite", "name", "trial_fn function", "trial_fn module"],
)  # fmt: skip
def test_a_value_too_long_for_a_path_or_a_message_is_one_short_line(
    tmp_path, field, value, head, tail
):
    """A path no file system can hold is refused by the spec (before: `OSError: File name
    too long` tracebacks from data, output, space and storage paths), and a long value is
    quoted to about 200 characters (before: a 50 KB trial_fn function name was printed)."""
    spec = make_spec_dict(tmp_path)
    section, _, key = field.rpartition(".")
    (spec[section] if section else spec)[key] = value
    with pytest.raises(SpecError) as err:
        load_spec(spec)
    message = str(err.value)
    assert len(message.splitlines()) == 1 and len(message) < 700, message[:1000]
    assert message.startswith(f"spec field '{field}': {head}"), message[:300]
    assert message.endswith(tail), message[-300:]
    assert list(tmp_path.iterdir()) == []


def test_a_library_space_name_too_long_for_a_file_is_an_unknown_space():
    from search_spaces import SpaceError, load_space

    with pytest.raises(SpaceError) as err:
        load_space(LONG)
    assert str(err.value).startswith("unknown space '" + "x" * 196 + "...: not in the library")
    assert len(str(err.value)) < 700


@pytest.mark.parametrize(
    "argv",
    [
        ["hpsearch", "run", f"{LONG}.yaml"],
        ["hpsearch", "status", LONG],
        ["hpsearch", "trials", LONG],
        ["hpsearch", "best", LONG],
        ["ensembles", "build", LONG],
        ["ensembles", "list", LONG],
        ["ensembles", "report", LONG],
        ["ensembles", "predict", LONG, "new.csv", "-o", "out.csv"],
    ],
    ids=lambda argv: " ".join(a if len(a) < 20 else "LONG" for a in argv),
)
def test_a_command_line_path_too_long_for_the_file_system_exits_2(
    tmp_path, monkeypatch, capsys, argv
):
    """Before: an `OSError: [Errno 36] File name too long` traceback, exit 1."""
    from ensembles.cli import main as ens_main
    from hpsearch.cli.app import main as hp_main

    monkeypatch.chdir(tmp_path)
    main = hp_main if argv[0] == "hpsearch" else ens_main
    assert main(argv[1:]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and len(err[0]) < 700, err
    assert err[0].startswith("error: ") and "Fix: " in err[0]
    assert list(tmp_path.iterdir()) == []
