"""Tiers: which parameters a dataset labels.

| tier | labelled | modulation |
|---|---|---|
| 1 | modules ``osc_1``, ``osc_2``, ``filter_1``, ``env_1`` and ``volume``: 62 continuous +
|   | 20 categorical, the two-oscillator subtractive core (with its on-switches) | none |
| 2 | all 448 sound parameters: 322 continuous + 126 categorical | none |
| 3 | as tier 2 | a dense (4, 32, 428) matrix, at most 64 connections |

Parameters outside a tier keep vita's init-preset value in every row.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from farm.config import check_tier
from farm.errors import UsageError
from farm.params.registry import ParamSpec, Registry

TIER1_MODULES = ("osc_1", "osc_2", "filter_1", "env_1")
TIER1_NAMES = ("volume",)


def _in_tier(spec: ParamSpec, tier: int) -> bool:
    if tier == 1:
        return spec.module in TIER1_MODULES or spec.name in TIER1_NAMES
    return True


@dataclass(frozen=True, eq=False)
class TierParams:
    """The labelled parameters of one tier, with vectors for fast normalization.

    Attributes:
        tier: 1, 2 or 3.
        continuous: specs of the continuous label columns, in column order.
        categorical: specs of the categorical label columns, in column order.
        modulation: whether rows carry a modulation matrix (tier 3).
    """

    tier: int
    continuous: tuple[ParamSpec, ...]
    categorical: tuple[ParamSpec, ...]
    modulation: bool

    @functools.cached_property
    def raw_min(self) -> np.ndarray:
        """Raw minimum of each continuous column (float64)."""
        return np.array([s.min for s in self.continuous], dtype=np.float64)

    @functools.cached_property
    def raw_max(self) -> np.ndarray:
        """Raw maximum of each continuous column (float64)."""
        return np.array([s.max for s in self.continuous], dtype=np.float64)

    @functools.cached_property
    def integer(self) -> np.ndarray:
        """Mask of continuous columns whose raw value is rounded when rendering."""
        return np.array([s.integer for s in self.continuous], dtype=bool)

    @functools.cached_property
    def cat_min(self) -> np.ndarray:
        """Raw value of option index 0 of each categorical column."""
        return np.array([s.min for s in self.categorical], dtype=np.float64)

    @functools.cached_property
    def n_options(self) -> np.ndarray:
        """Number of options of each categorical column (int64)."""
        return np.array([s.n_options for s in self.categorical], dtype=np.int64)

    def continuous_index(self, name: str) -> int:
        """Column of a continuous parameter, or -1 when it is not in this tier."""
        return self._cont_index.get(name, -1)

    def categorical_index(self, name: str) -> int:
        """Column of a categorical parameter, or -1 when it is not in this tier."""
        return self._cat_index.get(name, -1)

    @functools.cached_property
    def _cont_index(self) -> dict[str, int]:
        return {s.name: i for i, s in enumerate(self.continuous)}

    @functools.cached_property
    def _cat_index(self) -> dict[str, int]:
        return {s.name: i for i, s in enumerate(self.categorical)}


def tier_params(registry: Registry, tier: int) -> TierParams:
    """Select the parameters of ``tier`` from ``registry``.

    Raises:
        UsageError: ``tier`` is not 1, 2 or 3.
    """
    try:
        check_tier(tier)
    except ValueError as e:
        raise UsageError(str(e)) from None
    return TierParams(
        tier=tier,
        continuous=tuple(s for s in registry.continuous if _in_tier(s, tier)),
        categorical=tuple(s for s in registry.categorical if _in_tier(s, tier)),
        modulation=tier == 3,
    )
