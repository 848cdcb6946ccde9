"""Running on a Ray cluster: job submission to a real two-node local cluster
(`cluster/local.sh`), the cluster configs, staging, tokens and `hpsearch pull`.

The slow tests start their own cluster on free ports with token authentication and
talk to it only through subprocesses and HTTP: the test process may hold the
session's embedded Ray (conftest) and must not join another one.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from hpsearch.cluster import jobs
from hpsearch.core.errors import UserError
from tests.conftest import ROOT, make_spec_dict

LOCAL_SH = ROOT / "cluster" / "local.sh"
ORACLE = "hpsearch.search.testing:oracle"
HPSEARCH = [sys.executable, "-m", "hpsearch.cli.app"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args: list[str], env: dict[str, str], timeout: float = 120, **kw):
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, **kw)


def _csv_spec(tmp: Path, **overrides) -> Path:
    """A breast-cancer spec reading a CSV file next to it (so submit has data to upload)."""
    from sklearn.datasets import load_breast_cancer

    tmp.mkdir(parents=True, exist_ok=True)
    load_breast_cancer(as_frame=True).frame.to_csv(tmp / "train.csv", index=False)
    spec = make_spec_dict(
        tmp,
        data={"train": "train.csv", "target": "target", "task": "binary"},
        sampler={"name": "random", "seed": 0},
        budget={"n_trials": 4},
        resources={"cpus_per_trial": 1, "gpus_per_trial": 0.5, "max_concurrent": 2},
        training={"max_epochs": 3, "batch_size": 64, "patience": 2, "trial_fn": ORACLE},
        output="runs/bc",
    )
    spec.update(overrides)
    path = tmp / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _fake_run(path: Path) -> Path:
    (path / "trials" / "00000").mkdir(parents=True)
    (path / "run.json").write_text(json.dumps({"name": "fake"}))
    (path / "trials" / "00000" / "trial.json").write_text(json.dumps({"state": "COMPLETE"}))
    (path / "trials" / "00000" / "valid_pred.npy").write_bytes(b"\x93NUMPY" + bytes(100))
    return path


# --------------------------------------------------------------------------- configs


def test_aws_launcher_config_is_valid_with_a_cpu_head_and_gpu_workers():
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import validate_config

    cfg = yaml.safe_load((ROOT / "cluster" / "aws.yaml").read_text())
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(cfg, schema)
    validate_config(cfg)
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    gpu_types = [t for name, t in types.items() if name != cfg["head_node_type"]]
    assert gpu_types and all(t["resources"]["GPU"] >= 1 for t in gpu_types)
    assert all(t["node_config"]["InstanceType"].startswith(("g", "p")) for t in gpu_types)
    assert all(0 <= t["min_workers"] <= t["max_workers"] for t in gpu_types)
    assert any("pip install" in c and "hpsearch" in c for c in cfg["setup_commands"])
    assert all("RAY_AUTH_MODE=token" in " ".join(cfg[k]) for k in
               ("head_start_ray_commands", "worker_start_ray_commands"))  # fmt: skip


def _kuberay(name: str) -> dict[str, dict]:
    docs = list(yaml.safe_load_all((ROOT / "cluster" / "kuberay" / name).read_text()))
    return {d["kind"]: d for d in docs}


def _check_cluster_spec(spec: dict) -> None:
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0"
    for c in head["template"]["spec"]["containers"]:
        assert "nvidia.com/gpu" not in c["resources"]["limits"]
    (worker,) = spec["workerGroupSpecs"]
    assert worker["minReplicas"] <= worker["replicas"] <= worker["maxReplicas"]
    assert json.loads(json.loads(worker["rayStartParams"]["resources"])) == {"gpu_node": 1}
    (container,) = worker["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert spec["authOptions"]["mode"] == "token"


def test_kuberay_raycluster_has_a_gpu_worker_group_and_a_volume_for_runs():
    docs = _kuberay("raycluster.yaml")
    cluster = docs["RayCluster"]
    assert cluster["apiVersion"] == "ray.io/v1"
    _check_cluster_spec(cluster["spec"])
    mounts = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    claim = cluster["spec"]["headGroupSpec"]["template"]["spec"]["volumes"][0]
    assert (
        claim["persistentVolumeClaim"]["claimName"]
        == docs["PersistentVolumeClaim"]["metadata"]["name"]
    )
    assert mounts[0]["mountPath"] == "/mnt/runs"


def test_kuberay_rayjob_runs_hpsearch_on_a_valid_spec():
    from hpsearch.core.spec import load_spec

    docs = _kuberay("rayjob.yaml")
    job = docs["RayJob"]
    assert job["apiVersion"] == "ray.io/v1"
    assert job["spec"]["entrypoint"].startswith("hpsearch run /home/ray/spec/spec.yaml")
    _check_cluster_spec(job["spec"]["rayClusterSpec"])
    spec = load_spec(yaml.safe_load(docs["ConfigMap"]["data"]["spec.yaml"]))
    assert spec.output.startswith("/mnt/runs/") and spec.resources.gpus_per_trial > 0


def test_the_node_image_installs_the_project_on_the_ray_version_in_use():
    import ray

    text = (ROOT / "cluster" / "Dockerfile").read_text()
    (base,) = [line.split()[1] for line in text.splitlines() if line.startswith("FROM ")]
    assert base.startswith(f"rayproject/ray:{ray.__version__}-") and base.endswith("-gpu")
    for package in ("search_spaces", "hpsearch", "ensembles"):
        assert f"COPY --chown=ray:users {package} ./{package}" in text
    assert "pip install --no-cache-dir ." in text
    for manifest in ("raycluster.yaml", "rayjob.yaml"):
        assert "cluster/Dockerfile" in (ROOT / "cluster" / "kuberay" / manifest).read_text()


def test_the_documented_cluster_example_asks_for_gpus():
    """`examples/cluster.yaml` is what the docs submit to `cluster/local.sh`'s cluster: its
    trials must need a GPU, so that they can only run on the GPU worker."""
    from hpsearch.core.spec import load_spec

    spec = load_spec(ROOT / "examples" / "cluster.yaml")
    assert 0 < spec.resources.gpus_per_trial < 1 and spec.resources.max_concurrent == 4
    for doc in ("README.md", "docs/cluster.md"):
        assert "hpsearch submit examples/cluster.yaml" in (ROOT / doc).read_text(), doc


def test_local_sh_is_valid_bash_and_explains_its_usage():
    assert _run(["bash", "-n", str(LOCAL_SH)], dict(os.environ)).returncode == 0
    proc = _run(["bash", str(LOCAL_SH)], dict(os.environ))
    assert proc.returncode == 2 and "usage:" in proc.stderr and "up|down|status" in proc.stderr


# --------------------------------------------------------------------------- staging, tokens


def test_stage_uploads_data_with_relative_paths_and_keeps_output_absolute(tmp_path):
    from hpsearch.core.spec import load_spec

    spec_path = _csv_spec(tmp_path / "project")
    staging = tmp_path / "staging"
    staging.mkdir()
    staged = jobs.stage(spec_path, staging)
    raw = yaml.safe_load((staging / "spec.yaml").read_text())
    assert raw["data"]["train"] == "data/train/train.csv"
    assert (staging / "data/train/train.csv").read_bytes() == (
        tmp_path / "project/train.csv"
    ).read_bytes()
    assert raw["output"] == str((tmp_path / "project/runs/bc").resolve()) == staged.output
    assert staged.uploaded == {"data.train": str((tmp_path / "project/train.csv").resolve())}
    # the staged spec is valid where it lands: relative paths resolve inside the staging dir
    assert load_spec(staging / "spec.yaml").data.train == str(staging / "data/train/train.csv")

    kept = tmp_path / "kept"
    kept.mkdir()
    raw2 = yaml.safe_load(
        (jobs.stage(spec_path, kept, data_on_cluster=True, output="/mnt/runs/x").path
         / "spec.yaml").read_text()
    )  # fmt: skip
    assert raw2["data"]["train"] == str((tmp_path / "project/train.csv").resolve())
    assert raw2["output"] == "/mnt/runs/x" and not (kept / "data").exists()


def test_stage_uploads_test_and_sample_submission_too(tmp_path):
    from hpsearch.core.spec import load_spec

    staged = jobs.stage(ROOT / "examples/competition/spec.yaml", tmp_path)
    assert sorted(staged.uploaded) == ["data.sample_submission", "data.test", "data.train"]
    data = load_spec(tmp_path / "spec.yaml").data
    assert (data.train, data.test, data.sample_submission) == tuple(
        str(tmp_path / "data" / f / n)
        for f, n in [("train", "train.csv"), ("test", "test.csv"),
                     ("sample_submission", "sample_submission.csv")]
    )  # fmt: skip


def test_stage_refuses_an_upload_over_the_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(jobs, "MAX_UPLOAD_BYTES", 1000)
    spec_path = _csv_spec(tmp_path / "project")
    staging = tmp_path / "staging"
    staging.mkdir()
    with pytest.raises(UserError, match=r"the data files add up to 0 MiB, more than the 0 MiB"):
        jobs.stage(spec_path, staging)
    assert list(staging.iterdir()) == []  # nothing copied before the check


def test_entrypoint_runs_the_staged_spec_against_the_cluster():
    assert jobs.entrypoint() == "python -m hpsearch.cli.job_entry spec.yaml --address auto"
    cmd = jobs.entrypoint(n_trials=7, resume=True, trial_options=["fake_sleep_s=2", "x=a b"])
    assert cmd.endswith(
        "--n-trials 7 --resume --trial-option fake_sleep_s=2 --trial-option 'x=a b'"
    )


def test_keep_inputs_moves_uploaded_files_into_the_run(tmp_path):
    staging = tmp_path / "staging"
    (staging / "data/train").mkdir(parents=True)
    (staging / "data/train/train.csv").write_text("a,target\n1,0\n")
    run = tmp_path / "run"
    run.mkdir()
    spec = {"name": "x", "data": {"train": "data/train/train.csv", "test": None},
            "space": "tabular_mlp", "output": str(run)}  # fmt: skip
    (staging / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert jobs.keep_inputs(staging / "spec.yaml") == []  # no run yet: nothing to do
    # a run this job did not create (it refused the job: another spec's, or busy) stays as is
    other = {**spec, "data": {"train": str(tmp_path / "elsewhere/train.csv"), "test": None}}
    (run / "spec.yaml").write_text(yaml.safe_dump(other))
    before = (run / "spec.yaml").read_bytes()
    assert jobs.keep_inputs(staging / "spec.yaml") == []
    assert (run / "spec.yaml").read_bytes() == before and not (run / "inputs").exists()
    frozen = {**spec, "data": {"train": str(staging / "data/train/train.csv"), "test": None}}
    (run / "spec.yaml").write_text(yaml.safe_dump(frozen))
    assert jobs.keep_inputs(staging / "spec.yaml") == ["data.train"]
    assert yaml.safe_load((run / "spec.yaml").read_text())["data"]["train"] == (
        "inputs/data/train/train.csv"
    )
    assert (run / "inputs/data/train/train.csv").read_text() == "a,target\n1,0\n"


def test_auth_token_follows_rays_order(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    assert jobs.auth_token() is None
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray/auth_token").write_text("home-token\n")
    assert jobs.auth_token() == ("home-token", str(tmp_path / ".ray/auth_token"))
    (tmp_path / "t").write_text("file-token")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "t"))
    assert jobs.auth_token()[0] == "file-token"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "env-token")
    assert jobs.auth_token() == ("env-token", "RAY_AUTH_TOKEN")
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(UserError, match="RAY_AUTH_TOKEN_PATH=.*cannot be read"):
        jobs.auth_token()


def test_cli_help_does_not_import_ray():
    code = (
        "import sys, hpsearch.cli.app as c; p = c.build_parser(); "
        "p.parse_args(['submit', 'x.yaml']); print('ray' in sys.modules)"
    )
    out = _run([sys.executable, "-c", code], dict(os.environ), cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("command", [["submit", "SPEC"], ["jobs"], ["stop", "raysubmit_x"]])
def test_unreachable_address_is_a_user_error(tmp_path, command):
    port = _free_port()
    args = [str(_csv_spec(tmp_path)) if a == "SPEC" else a for a in command]
    proc = _run([*HPSEARCH, *args, "--address", f"http://127.0.0.1:{port}"], dict(os.environ))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(
        f"error: cannot reach the Ray dashboard at http://127.0.0.1:{port}"
    )
    assert "Fix: start one with `cluster/local.sh up`, or check --address" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_gcs_address_is_rejected_with_the_dashboard_hint():
    with pytest.raises(UserError, match=r"needs the dashboard's HTTP address"):
        jobs.normalise_address("ray://head:10001")
    assert jobs.normalise_address("head:8265/") == "http://head:8265"


# --------------------------------------------------------------------------- pull


@pytest.mark.parametrize("as_uri", [False, True])
def test_pull_copies_a_run_directory(tmp_path, as_uri):
    src = _fake_run(tmp_path / "cluster" / "run")
    uri = src.as_uri() if as_uri else str(src)
    proc = _run([*HPSEARCH, "pull", uri, str(tmp_path / "home")], dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"pulled 3 file(s), 0.0 MiB, from {uri} into {tmp_path / 'home'}")
    for f in src.rglob("*"):
        if f.is_file():
            assert (tmp_path / "home" / f.relative_to(src)).read_bytes() == f.read_bytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []


def test_pull_reads_a_run_at_an_fsspec_only_uri(tmp_path):
    """A scheme pyarrow does not know (fsspec's memory://) is pulled like run output is
    written: through ``hpsearch.core.remote.open_filesystem``."""
    fsspec = pytest.importorskip("fsspec")
    src = _fake_run(tmp_path / "run")
    mem = fsspec.filesystem("memory")
    for f in src.rglob("*"):
        if f.is_file():
            mem.pipe(f"/pulltest/run/{f.relative_to(src).as_posix()}", f.read_bytes())
    try:
        dest, n, _ = jobs.pull("memory://pulltest/run", tmp_path / "home")
    finally:
        mem.rm("/pulltest", recursive=True)
    assert n == 3
    for f in src.rglob("*"):
        if f.is_file():
            assert (dest / f.relative_to(src)).read_bytes() == f.read_bytes()


def test_pull_refuses_to_overwrite_and_non_runs(tmp_path):
    src = _fake_run(tmp_path / "run")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="exists and is not empty; pull never overwrites"):
        jobs.pull(str(src), dest)
    assert (dest / "keep.txt").read_text() == "mine"
    with pytest.raises(UserError, match=r"is not a run directory \(no run.json\)"):
        jobs.pull(str(tmp_path), tmp_path / "new")
    with pytest.raises(UserError, match="no such run directory"):
        jobs.pull(str(tmp_path / "missing"), tmp_path / "new")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert jobs.pull(src.as_uri(), empty)[1] == 3  # an empty destination is fine


# --------------------------------------------------------------------------- local cluster


@pytest.fixture(scope="module")
def local_cluster():
    """A two-node Ray cluster (CPU head, 2-GPU worker) on free ports, token auth on."""
    state = Path(tempfile.mkdtemp(prefix="hpl-", dir="/tmp"))  # short: Unix socket paths
    token = state / "token"
    token.write_text(secrets.token_hex(32))
    gcs, dash, client = _free_port(), _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        RAY_AUTH_TOKEN_PATH=str(token),
        HPSEARCH_LOCAL_GCS_PORT=str(gcs),
        HPSEARCH_LOCAL_DASHBOARD_PORT=str(dash),
        HPSEARCH_LOCAL_CLIENT_PORT=str(client),
        HPSEARCH_LOCAL_DIR=str(state / "c"),
        HPSEARCH_LOCAL_WORKER_CPUS="2",
        HPSEARCH_LOCAL_WORKER_GPUS="2",
    )
    up = _run(["bash", str(LOCAL_SH), "up"], env, timeout=180)
    try:
        assert up.returncode == 0, f"cluster/local.sh up failed:\n{up.stdout}\n{up.stderr}"
        yield {"address": f"http://127.0.0.1:{dash}", "env": env, "token": token.read_text()}
    finally:
        down = _run(["bash", str(LOCAL_SH), "down"], env, timeout=120)
        shutil.rmtree(state, ignore_errors=True)
        assert down.returncode == 0, down.stderr


def _nodes(cluster) -> list[dict]:
    req = urllib.request.Request(
        f"{cluster['address']}/api/v0/nodes?detail=1&limit=100",
        headers={"Authorization": f"Bearer {cluster['token']}"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)["data"]["result"]["result"]


def _jobs(cluster) -> dict[str, dict]:
    out = _run([*HPSEARCH, "jobs", "--address", cluster["address"], "--format", "json"],
               cluster["env"])  # fmt: skip
    assert out.returncode == 0, out.stderr
    return {r["id"]: r for r in json.loads(out.stdout)}


@pytest.fixture(scope="module")
def cluster_run(local_cluster, tmp_path_factory):
    """`hpsearch submit --wait` of a 4-trial, half-GPU-per-trial search."""
    tmp = tmp_path_factory.mktemp("submit")
    spec = _csv_spec(tmp / "project")
    proc = _run([*HPSEARCH, "submit", str(spec), "--address", local_cluster["address"], "--wait"],
                local_cluster["env"], timeout=300)  # fmt: skip
    return {"proc": proc, "run_dir": tmp / "project/runs/bc", "job_id": proc.stdout.split()[0]}


@pytest.mark.slow
def test_submit_wait_runs_every_trial_on_the_gpu_worker(local_cluster, cluster_run):
    proc = cluster_run["proc"]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"job {cluster_run['job_id']} SUCCEEDED" in proc.stderr
    assert "4 complete, 0 failed" in proc.stdout  # the job's logs were streamed
    nodes = _nodes(local_cluster)
    assert len(nodes) == 2
    (worker,) = [n["node_id"] for n in nodes if n["resources_total"].get("GPU", 0) > 0]
    (head,) = [n["node_id"] for n in nodes if n["is_head_node"]]
    assert worker != head
    infos = [
        json.loads(p.read_text())
        for p in sorted(cluster_run["run_dir"].glob("trials/*/trial.json"))
    ]
    assert [i["state"] for i in infos] == ["COMPLETE"] * 4
    assert {i["node_id"] for i in infos} == {worker}
    # the uploaded data now lives in the run, and the run's spec points at it
    frozen = yaml.safe_load((cluster_run["run_dir"] / "spec.yaml").read_text())
    assert frozen["data"]["train"] == "inputs/data/train/train.csv"
    assert (cluster_run["run_dir"] / frozen["data"]["train"]).is_file()


@pytest.mark.slow
def test_ensembles_build_on_a_cluster_run_and_on_its_pulled_copy(cluster_run, tmp_path):
    assert cluster_run["proc"].returncode == 0
    build = [sys.executable, "-m", "ensembles.cli", "build"]
    env = dict(os.environ)
    out = _run([*build, str(cluster_run["run_dir"]), "--trees", "rf", "--quiet"], env)
    assert out.returncode == 0, out.stderr
    assert list((cluster_run["run_dir"] / "ensembles").iterdir())
    home = tmp_path / "home"
    pulled = _run([*HPSEARCH, "pull", cluster_run["run_dir"].as_uri(), str(home)], env)
    assert pulled.returncode == 0, pulled.stderr
    (cluster_run["run_dir"].parent.parent / "train.csv").unlink()  # the original data is gone
    out = _run([*build, str(home), "--trees", "rf", "--quiet", "--name", "at-home"], env)
    assert out.returncode == 0, out.stderr
    assert (home / "ensembles" / "at-home").is_dir()


@pytest.mark.slow
def test_jobs_lists_the_submitted_job(local_cluster, cluster_run):
    row = _jobs(local_cluster)[cluster_run["job_id"]]
    assert row["status"] == "SUCCEEDED" and row["spec"] == "bc-test"
    assert row["output"] == str(cluster_run["run_dir"])
    table = _run([*HPSEARCH, "jobs", "--address", local_cluster["address"]], local_cluster["env"])
    line = next(ln for ln in table.stdout.splitlines() if ln.startswith(cluster_run["job_id"]))
    assert "SUCCEEDED" in line and line.endswith("bc-test")


@pytest.mark.slow
def test_submit_wait_of_a_failing_job_exits_1_with_its_last_log_lines(local_cluster, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("not a run")
    spec = _csv_spec(tmp_path / "project")
    proc = _run([*HPSEARCH, "submit", str(spec), "--address", local_cluster["address"],
                 "--output", str(taken), "--wait"], local_cluster["env"])  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    job_id = proc.stdout.split()[0]
    assert f"job {job_id} FAILED: Job entrypoint command failed with exit code 2\n" in proc.stderr
    tail = proc.stderr.split("last log lines:\n", 1)[1]
    assert f"error: output directory {taken} exists, is not empty and holds no run." in tail
    assert (taken / "notes.txt").read_text() == "not a run"


@pytest.mark.slow
def test_stop_interrupts_a_long_job_and_records_its_trials(local_cluster, tmp_path):
    env, address = local_cluster["env"], local_cluster["address"]
    spec = _csv_spec(tmp_path, name="long")
    run_dir = tmp_path / "runs/bc"
    sub = _run([*HPSEARCH, "submit", str(spec), "--address", address, "--n-trials", "50",
                "--trial-option", "fake_sleep_s=60"], env)  # fmt: skip
    assert sub.returncode == 0, sub.stderr
    job_id = sub.stdout.split()[0]
    deadline = time.time() + 90
    while time.time() < deadline:  # until trials are in flight
        status = _run([*HPSEARCH, "status", str(run_dir)], env) if run_dir.exists() else None
        if status is not None and "RUNNING 2" in status.stdout:
            break
        time.sleep(1)
    else:
        pytest.fail(f"no trial started: {_jobs(local_cluster).get(job_id)}")
    stop = _run([*HPSEARCH, "stop", job_id, "--address", address], env)
    assert stop.returncode == 0, stop.stderr
    assert stop.stdout.strip() == f"job {job_id} STOPPED"
    again = _run([*HPSEARCH, "stop", job_id, "--address", address], env)
    assert again.stdout.strip() == f"job {job_id} was not running (STOPPED)"
    unknown = _run([*HPSEARCH, "logs", "no-such-job", "--address", address], env)
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == (
        f"error: no job 'no-such-job' at {address}. "
        f"Fix: list the jobs with `hpsearch jobs --address {address}`."
    )
    assert _jobs(local_cluster)[job_id]["status"] == "STOPPED"
    logs = _run([*HPSEARCH, "logs", job_id, "--address", address], env).stdout
    assert "trial(s) in flight cancelled and recorded" in logs
    status = _run([*HPSEARCH, "status", str(run_dir)], env).stdout
    assert "FAIL (interrupted, re-queued) 2" in status


@pytest.mark.slow
def test_wrong_or_missing_token_is_a_user_error(local_cluster, tmp_path):
    base = {k: v for k, v in local_cluster["env"].items() if not k.startswith("RAY_AUTH")}
    address = local_cluster["address"]
    wrong = _run([*HPSEARCH, "jobs", "--address", address], {**base, "RAY_AUTH_TOKEN": "nope"})
    assert wrong.returncode == 2
    assert wrong.stderr.startswith(
        f"error: authentication failed at the Ray dashboard at {address}: "
        "the cluster rejected the token from RAY_AUTH_TOKEN"
    )
    assert "Fix: set RAY_AUTH_TOKEN to the cluster's token" in wrong.stderr
    missing = _run([*HPSEARCH, "jobs", "--address", address], {**base, "HOME": str(tmp_path)})
    assert missing.returncode == 2
    assert "the cluster requires a token and none was found" in missing.stderr
