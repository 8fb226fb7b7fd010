"""FarmDataset on a real farm file: fields, the split by preset, and loading from several
processes (fork and spawn; a real torch DataLoader with workers when torch is installed)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from farm.config import SplitSettings
from farm.dataset import FarmDataset, FarmIterableDataset
from farm.errors import DatasetError
from farm.storage.reader import FarmReader
from farm.storage.splits import SIDES
from farm.storage.splits import sides as split_sides


def test_items_are_the_file_rows(dataset_file: Path) -> None:
    fields = ["audio", "continuous", "midi_note", "preset_hash", "active_continuous", "velocity"]
    ds = FarmDataset(dataset_file, fields, as_torch=False)
    with h5py.File(dataset_file, "r") as f:
        assert len(ds) == f["audio/waveforms"].shape[0] == 40
        for i in (0, 17, 39, -1):
            item = ds[i]
            row = i % 40
            np.testing.assert_array_equal(item["audio"], f["audio/waveforms"][row])
            np.testing.assert_array_equal(item["continuous"], f["params/continuous"][row])
            assert int(item["midi_note"]) == f["metadata/midi_note"][row]
            assert item["preset_hash"] == f["metadata/preset_hash"][row].decode()
            mask = f["params/active_continuous"][row]
            np.testing.assert_array_equal(item["active_continuous"], mask)
            assert item["velocity"] == np.float32(0.8)
    with pytest.raises(IndexError):
        ds[40]


def test_split_by_preset_is_deterministic(dataset_file: Path) -> None:
    kw: dict[str, Any] = {"validation_fraction": 0.3, "seed": 5}
    train = FarmDataset(dataset_file, ["preset_hash"], split="train", **kw)
    val = FarmDataset(dataset_file, ["preset_hash"], split="validation", **kw)
    assert set(train.rows).isdisjoint(val.rows)
    assert sorted([*train.rows, *val.rows]) == list(range(40))
    train_presets = {train[i]["preset_hash"] for i in range(len(train))}
    val_presets = {val[i]["preset_hash"] for i in range(len(val))}
    assert train_presets and val_presets and train_presets.isdisjoint(val_presets)
    # Same seed: same split; another seed: another split.
    again = FarmDataset(dataset_file, ["preset_hash"], split="validation", **kw)
    np.testing.assert_array_equal(again.rows, val.rows)
    other = [
        FarmDataset(dataset_file, split="validation", validation_fraction=0.3, seed=s).rows
        for s in range(6, 10)
    ]
    assert any(not np.array_equal(o, val.rows) for o in other)


def test_stored_split_by_preset(dataset_file: Path) -> None:
    """The file's own train / validation / test split (fractions 0.8/0.1/0.1 of presets, the
    run's seed): disjoint, complete, preset-pure, and what the run's seed gives anywhere."""
    sides = {s: FarmDataset(dataset_file, ["preset_hash"], split=s) for s in SIDES}
    rows = [set(ds.rows.tolist()) for ds in sides.values()]
    assert sum(len(r) for r in rows) == 40 and set().union(*rows) == set(range(40))
    presets = [{ds[i]["preset_hash"] for i in range(len(ds))} for ds in sides.values()]
    assert all(a.isdisjoint(b) for i, a in enumerate(presets) for b in presets[i + 1 :])
    assert len(sides["train"]) > len(sides["test"])
    with h5py.File(dataset_file, "r") as f:
        stored = f["metadata/split"][:]
        expected = split_sides(f["metadata/preset_hash"][:], SplitSettings(), seed=11)
    np.testing.assert_array_equal(stored, expected)


def test_bad_arguments_are_clear(dataset_file: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"no field 'nope'.*continuous"):
        FarmDataset(dataset_file, ["nope"])
    with pytest.raises(DatasetError, match="no field 'modulation'"):
        FarmDataset(dataset_file, ["modulation"])  # tier 1 has none
    with pytest.raises(DatasetError, match="no such dataset"):
        FarmDataset(tmp_path / "missing.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(DatasetError, match="not a readable HDF5"):
        FarmDataset(tmp_path / "junk.h5")
    with pytest.raises(DatasetError, match="split"):
        FarmDataset(dataset_file, split="tset")  # type: ignore[arg-type]
    with pytest.raises(DatasetError, match="no test side"):
        FarmDataset(dataset_file, split="test", validation_fraction=0.2)


def _sums(args: tuple[FarmDataset, list[int]]) -> list[float]:
    ds, indices = args
    return [float(np.asarray(ds[i]["audio"], dtype=np.float64).sum()) for i in indices]


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_several_processes_read_their_own_handles(dataset_file: Path, method: str) -> None:
    ds = FarmDataset(dataset_file, ["audio"], as_torch=False)
    expected = _sums((ds, list(range(len(ds)))))  # opens a handle in this process first
    parts = [list(range(k, len(ds), 4)) for k in range(4)]
    with multiprocessing.get_context(method).Pool(2) as pool:
        got = pool.map(_sums, [(ds, p) for p in parts])
    for part, sums in zip(parts, got, strict=True):
        assert sums == [expected[i] for i in part]


def test_torch_dataloader_with_workers(dataset_file: Path) -> None:
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    ds = FarmDataset(dataset_file, ["audio", "continuous", "categorical"], split="train")
    assert isinstance(ds[0]["audio"], torch.Tensor)
    loader = DataLoader(ds, batch_size=4, num_workers=2, shuffle=False)
    batches = list(loader)
    audio = torch.cat([b["audio"] for b in batches])
    assert audio.shape[0] == len(ds)
    with h5py.File(dataset_file, "r") as f:
        expected = f["audio/waveforms"][np.sort(ds.rows)]
    np.testing.assert_array_equal(audio.numpy(), expected)


def test_names_options_and_raw_values(dataset_file: Path) -> None:
    ds = FarmDataset(dataset_file, ["continuous", "categorical"], as_torch=False)
    with FarmReader(dataset_file) as r:
        assert ds.continuous_names == r.continuous_names
        assert ds.categorical_names == r.categorical_names
        assert ds.options == r.options
        raw = ds.raw(5)
        expected = r.raw_values(5)
    assert raw == expected
    assert raw["osc_1_unison_voices"] == round(raw["osc_1_unison_voices"])  # rounded as rendered
    assert raw["osc_1_on"] in ds.options["osc_1_on"]
    assert ds[0]["categorical"].dtype == np.int64  # cross-entropy targets


def test_slices_and_index_lists_are_batches(dataset_file: Path) -> None:
    ds = FarmDataset(dataset_file, ["audio", "categorical", "preset_hash"], as_torch=False)
    for key in (slice(2, 6), [7, 1, 7], np.array([39, 0])):
        batch = ds[key]
        items = [ds[int(i)] for i in np.arange(len(ds))[key]]
        assert batch["preset_hash"] == [it["preset_hash"] for it in items]
        np.testing.assert_array_equal(batch["audio"], np.stack([it["audio"] for it in items]))
        assert batch["categorical"].dtype == np.int64
    with pytest.raises(IndexError):
        ds[[0, 40]]


def test_the_iterable_variant_streams_every_row_in_order(dataset_file: Path) -> None:
    mapped = FarmDataset(dataset_file, ["continuous", "midi_note"], split="train", as_torch=False)
    stream = FarmIterableDataset(
        dataset_file, ["continuous", "midi_note"], split="train", as_torch=False, chunk=7
    )
    rows = list(stream)
    assert len(rows) == len(stream) == len(mapped)
    for i, row in enumerate(rows):
        np.testing.assert_array_equal(row["continuous"], mapped[i]["continuous"])
        assert int(row["midi_note"]) == int(mapped[i]["midi_note"])
    with pytest.raises(DatasetError, match="chunk"):
        FarmIterableDataset(dataset_file, chunk=0)
