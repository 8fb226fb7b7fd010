"""Non-scalar preset state (wavetables) injected through the preset JSON, on real presets
from ../shared/presets/community (CC BY 4.0, see its ATTRIBUTION.md)."""

import json
from pathlib import Path

import numpy as np

from farm.config import RenderSettings
from farm.params.tiers import TierParams
from farm.render.engine import Outcome, RenderEngine

from .conftest import init_label


def test_injected_wavetables_change_the_sound_reproducibly(
    tp1: TierParams, community_dir: Path
) -> None:
    preset = json.loads((community_dir / "Thaisync.vital").read_text())
    wavetables = preset["settings"]["wavetables"]
    engine = RenderEngine(tp1, RenderSettings(notes=(60,)))
    (plain,) = engine.render(init_label(tp1))
    label = init_label(tp1, extra={"nonscalar": {"wavetables": wavetables}})
    (a,) = engine.render(label)
    (b,) = engine.render(label)
    assert a.audio is not None and b.audio is not None and plain.audio is not None
    assert np.array_equal(a.audio, b.audio)
    assert np.abs(a.audio - plain.audio).max() > 0.1
    (bad,) = engine.render(init_label(tp1, extra={"nonscalar": {"wavetables": "garbage"}}))
    assert bad.outcome is Outcome.ERROR and bad.audio is None
    engine.close()
