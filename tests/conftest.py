"""Shared fixtures: one Ray session for the whole test run, small specs, fresh run directories."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def ray_session():
    """One embedded Ray for the session, with 4 logical CPUs and 2 logical GPUs."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=4,
            num_gpus=2,
            include_dashboard=False,
            log_to_driver=False,
            logging_level="ERROR",
            runtime_env={"env_vars": {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"}},
        )
    yield ray.get_runtime_context().gcs_address
    # left running until the interpreter exits: other session fixtures may still use it


def make_spec_dict(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """A small breast-cancer spec; ``overrides`` replace top-level sections (dicts are merged)."""
    spec: dict[str, Any] = {
        "name": "bc-test",
        "data": {"train": "sklearn:breast_cancer", "target": "target", "task": "binary"},
        "split": {"valid": 0.2, "holdout": 0.2, "seed": 0},
        "metric": "log_loss",
        "space": "tabular_mlp",
        "sampler": {"name": "tpe", "seed": 0},
        "budget": {"n_trials": 4},
        "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent": 2},
        "training": {"max_epochs": 3, "batch_size": 64, "patience": 2},
        "output": str(tmp_path / "run"),
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


def write_spec(tmp_path: Path, **overrides: Any) -> Path:
    import yaml

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(make_spec_dict(tmp_path, **overrides), sort_keys=False))
    return path
