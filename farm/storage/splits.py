"""Which side of the train / validation / test split a preset falls on.

By preset, so every note of a preset is on the same side (validation never hears a preset
it was trained on), and from a keyed hash of the preset's label hash, so the split is the
same on any machine, for any batch size or process count, and stable when a dataset grows.
"""

from __future__ import annotations

import hashlib

import numpy as np

from farm.config import SplitSettings

SIDES = ("train", "validation", "test")


def position(preset_hash: bytes | str, seed: int) -> float:
    """The preset's place in [0, 1) under ``seed`` (a keyed blake2b read as a fraction)."""
    data = preset_hash.encode() if isinstance(preset_hash, str) else bytes(preset_hash)
    digest = hashlib.blake2b(data, key=str(seed).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def side_of(preset_hash: bytes | str, splits: SplitSettings, seed: int) -> str:
    """``train``, ``validation`` or ``test`` for one preset."""
    u = position(preset_hash, seed)
    if u < splits.train:
        return "train"
    return "validation" if u < splits.train + splits.validation else "test"


def sides(preset_hashes: np.ndarray, splits: SplitSettings, seed: int) -> np.ndarray:
    """The side of every row (S10), each distinct preset hashed once."""
    presets, row_preset = np.unique(preset_hashes, return_inverse=True)
    per = np.array([side_of(h, splits, seed).encode() for h in presets], dtype="S10")
    return per[row_preset.reshape(-1)] if len(presets) else np.array([], dtype="S10")
