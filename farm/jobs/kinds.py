"""The kinds of run the farm makes, in one place.

A run spec says which kind it is; everything that differs by kind (the output's suffix,
what a row is called, which job and collect functions run) is looked up here or in the
per-layer tables keyed by :attr:`RunKind.name` (``workers.render.JOBS``,
``coordinator.collect.COLLECTORS``), never by testing a spec field in each place. A new
kind (features, exports, ...) is one entry here and one function per layer; a test checks
that every layer knows every kind.
"""

from __future__ import annotations

from dataclasses import dataclass

from farm.config import RunSpec


@dataclass(frozen=True)
class RunKind:
    """One kind of run.

    Attributes:
        name: its key (stored in the ledger as the run's ``kind``).
        suffix: the output file's suffix.
        unit: what one counted result is (``rows``, ``base presets``).
    """

    name: str
    suffix: str
    unit: str


DATASET = RunKind("dataset", ".h5", "rows")
WEIGHTS = RunKind("weights", ".json", "base presets")
KINDS: dict[str, RunKind] = {k.name: k for k in (DATASET, WEIGHTS)}


def kind_of(spec: RunSpec) -> RunKind:
    """The kind of run ``spec`` describes."""
    return WEIGHTS if spec.weights is not None else DATASET
