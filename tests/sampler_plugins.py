"""User samplers for the sampler registry tests, imported as ``"sampler_plugins:Name"``."""

from __future__ import annotations

from typing import Any

import optuna


class MidpointSampler(optuna.samplers.BaseSampler):
    """Every float and int at the middle of its range, every categorical at its first choice;
    records the seed it was built with."""

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed

    def infer_relative_search_space(self, study: Any, trial: Any) -> dict:
        return {}

    def sample_relative(self, study: Any, trial: Any, search_space: Any) -> dict:
        return {}

    def sample_independent(self, study: Any, trial: Any, name: str, dist: Any) -> Any:
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            return dist.choices[0]
        if isinstance(dist, optuna.distributions.IntDistribution):
            return dist.low + (dist.high - dist.low) // dist.step // 2 * dist.step
        return (dist.low + dist.high) / 2


class SeedlessSampler(optuna.samplers.RandomSampler):
    """A sampler whose ``__init__`` takes no seed: built with no arguments."""

    def __init__(self) -> None:
        super().__init__(seed=7)


class NotASampler:
    """A class that is not an ``optuna.samplers.BaseSampler``."""
