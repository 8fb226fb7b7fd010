"""Shared fixtures: the real registry, real vita Synths and engines (no mocks of vita)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from farm.config import RenderSettings, RunSpec
from farm.jobs.plan import sample_job
from farm.params.label import Label, Modulation
from farm.params.normalize import categorical_from_raw, continuous_from_raw
from farm.params.registry import Registry, get_registry
from farm.params.tiers import TierParams, tier_params
from farm.render.engine import RenderEngine
from farm.storage.shard import Row


@pytest.fixture(scope="session")
def registry() -> Registry:
    return get_registry()


@pytest.fixture(scope="session")
def tp1(registry: Registry) -> TierParams:
    return tier_params(registry, 1)


@pytest.fixture(scope="session")
def tp2(registry: Registry) -> TierParams:
    return tier_params(registry, 2)


@pytest.fixture(scope="session")
def tp3(registry: Registry) -> TierParams:
    return tier_params(registry, 3)


@pytest.fixture(scope="module")
def engine2(tp2: TierParams) -> Iterator[RenderEngine]:
    """A tier-2 engine rendering note 60 only (fast)."""
    e = RenderEngine(tp2, RenderSettings(notes=(60,)))
    yield e
    e.close()


def small_spec(**kw: object) -> RunSpec:
    """A run spec with short renders, for tests that write files."""
    base: dict[str, object] = {
        "tier": 1,
        "n": 6,
        "batch_size": 4,
        "render": RenderSettings(notes=(48, 60), note_duration=0.3, render_duration=0.5),
    }
    base.update(kw)
    return RunSpec(**base)  # type: ignore[arg-type]


def fake_rows(spec: RunSpec, tp: TierParams, job: int = 0) -> list[Row]:
    """Rows with real labels and synthetic audio (storage does not care how audio was made)."""
    rng = np.random.default_rng(job)
    rows = []
    for p, label in enumerate(sample_job(spec, tp, job)):
        for note in spec.render.notes:
            audio = (0.1 * rng.standard_normal((2, spec.render.samples))).astype(np.float32)
            rows.append(Row(job, p, note, label, audio, 0.1, float(np.abs(audio).max())))
    return rows


def init_label(
    tp: TierParams, mods: tuple[Modulation, ...] = (), extra: dict[str, Any] | None = None
) -> Label:
    """The label of vita's init preset in tier ``tp`` (audible: osc 1 saw into the output)."""
    c = continuous_from_raw(tp, np.array([s.default for s in tp.continuous]))
    k = categorical_from_raw(tp, np.array([s.default for s in tp.categorical]))
    return Label(tp.tier, c, k, mods, extra=extra or {})


@pytest.fixture(scope="session")
def community_dir() -> Path:
    """../shared/presets/community (real CC BY 4.0 presets). Skipped locally when missing;
    a failure in CI, where shared/ always lies beside the clone."""
    path = Path(__file__).resolve().parents[2] / "shared" / "presets" / "community"
    if not path.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing: CI must run beside shared/")
        pytest.skip(f"{path} is missing")
    return path


@pytest.fixture(scope="session")
def dataset_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real farm file (tier 1, 40 rows: 20 presets x notes 48 and 60), made once
    by ``farm generate``. Read it; do not change it."""
    from tests.farm_helpers import farm

    root = tmp_path_factory.mktemp("ds")
    res = farm(
        root,
        "generate",
        *("--tier", "1", "-n", "40", "--notes", "48,60", "--batch-size", "4"),
        *("--note-duration", "0.2", "--render-duration", "0.3", "--seed", "11", "-o", "ds.h5"),
    )
    assert res.returncode == 0, res.stderr
    return root / "data" / "ds.h5"
