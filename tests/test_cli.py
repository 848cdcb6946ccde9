"""`hpsearch space list` and `hpsearch space sample`: looking at a space before searching it."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from hpsearch.cli.app import main
from search_spaces import list_library


def test_space_list_names_every_library_space_with_its_description(capsys):
    assert main(["space", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    library = list_library()
    assert len(out) == len(library) >= 6
    for line, (name, description) in zip(out, library, strict=True):
        assert line.startswith(name) and line.endswith(description) and description


def test_space_sample_build_prints_each_architecture_with_its_parameter_count(capsys):
    assert (
        main(["space", "sample", "image_separable_cnn", "-n", "5", "--build", "--seed", "3"]) == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "# space image_separable_cnn (family cnn), 5 configuration(s), seed 3"
    configs = [line for line in out if re.match(r"\[\d\] \{", line)]
    builds = [line for line in out if line.startswith("    params: ")]
    assert len(configs) == len(builds) == 5
    for config, build in zip(configs, builds, strict=True):
        conv = "SeparableConv2D(" if '"conv_type": "separable"' in config else "Conv2D("
        assert re.match(r"    params: [\d,]+  layers: image\(16,16,1\) > ", build)
        assert conv in build and int(build.split()[1].replace(",", "")) > 0
    # same seed, same configurations
    assert main(["space", "sample", "image_separable_cnn", "-n", "5", "--seed", "3"]) == 0
    again = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert again == configs


BAD_TEXT_SPACE = """\
name: bad-text
family: text
params:
  encoder: {type: const, value: rnnx}
"""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["tabular_mpl"],
            "error: unknown space 'tabular_mpl': not in the library",
        ),
        (
            ["image_separable_cnn", "--build", "--input-shape", "30"],
            "error: --input-shape 30: space 'image_separable_cnn' (family cnn) takes an image "
            "shape (height,width[,channels]). Fix: give for example --input-shape 16,16,1.",
        ),
        (
            ["tabular_mlp", "--build", "--input-shape", "8,8"],
            "error: --input-shape 8,8: space 'tabular_mlp' (family dense) takes one size. "
            "Fix: give for example --input-shape 30.",
        ),
        (
            ["tabular_mlp", "--input-shape", "8,a"],
            "error: --input-shape '8,a': expected integers. Fix: write the shape of one example "
            "as 30 (tabular, text) or 8,8,1 (images).",
        ),
        (
            ["tabular_mlp", "-n", "0"],
            "error: -n 0: the number of configurations must be at least 1. "
            "Fix: give a positive count, for example -n 5.",
        ),
        (
            ["{bad_text}", "--build"],
            "error: space 'bad-text': configuration [0] does not build: ValueError: text encoder "
            "'rnnx': expected conv1d or rnn. Fix: correct the parameter it names in the space "
            "file (or the --input-shape).",
        ),
        (
            ["{malformed}"],
            "malformed.yaml: malformed YAML (line 3, column 7): expected ',' or ']', but got "
            "':'. Fix: correct the YAML at that position.",
        ),
    ],
    ids=["unknown", "cnn-shape", "dense-shape", "not-int", "n0", "family-rejects", "malformed"],
)
def test_space_sample_bad_input_exits_2_without_traceback(tmp_path, capsys, args, message):
    (tmp_path / "bad_text.yaml").write_text(BAD_TEXT_SPACE)
    (tmp_path / "malformed.yaml").write_text("name: m\nfamily: [dense\nparams: {}\n")
    args = [
        a.format(bad_text=tmp_path / "bad_text.yaml", malformed=tmp_path / "malformed.yaml")
        for a in args
    ]
    n = [] if "-n" in args else ["-n", "1"]
    assert main(["space", "sample", *args, *n]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err and err.count("error:") == 1


def test_help_answers_without_importing_tensorflow_or_ray():
    code = (
        "import sys, contextlib, io\n"
        "from hpsearch.cli.app import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'ray', 'optuna') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


def test_trials_lists_the_run_as_table_csv_and_json(ray_session, tmp_path, capsys):
    import csv
    import io
    import json

    from tests.conftest import write_spec

    spec = write_spec(tmp_path, budget={"n_trials": 5}, sampler={"name": "random", "seed": 0})
    argv = ["run", str(spec), "--quiet", "--trial-fn", "hpsearch.search.testing:instant"]
    assert main([*argv, "--trial-option", "fake_fail_every=4"]) == 0
    capsys.readouterr()
    run = str(tmp_path / "run")
    assert main(["trials", run, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["number"] for r in rows] == [0, 1, 2, 3, 4]
    for r in rows:
        assert {"number", "state", "value", "params", "duration_s"} <= set(r)
        assert isinstance(r["params"], dict) and r["params"]
    assert [r["state"] for r in rows] == ["COMPLETE"] * 3 + ["FAIL", "COMPLETE"]
    complete = sorted((r for r in rows if r["state"] == "COMPLETE"), key=lambda r: r["value"])
    assert main(["trials", run, "--format", "json", "--top", "2"]) == 0
    top = json.loads(capsys.readouterr().out)
    assert [r["number"] for r in top] == [r["number"] for r in complete[:2]]
    assert main(["trials", run, "--format", "csv"]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [int(r["number"]) for r in table] == [0, 1, 2, 3, 4]
    assert json.loads(table[0]["params"]) == rows[0]["params"]
    assert main(["trials", run]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["#", "state", "value"] and len(lines) == 6
    assert main(["best", run]) == 0
    best = json.loads(capsys.readouterr().out)
    assert (best["number"], best["value"]) == (complete[0]["number"], complete[0]["value"])
    assert best["model"] is None  # the instant trials save no model
    assert main(["trials", run, "--top", "-3"]) == 2
    assert "--top -3: must be at least 1. Fix:" in capsys.readouterr().err


def test_submit_names_a_spec_mistake_before_contacting_the_cluster(tmp_path, capsys):
    from tests.conftest import write_spec

    spec = write_spec(tmp_path, budgte={"n_trials": 2})
    assert main(["submit", str(spec), "--address", "http://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "spec field 'budgte': unknown key 'budgte' in the top level. Fix: did you mean" in err
    assert "127.0.0.1:1" not in err
