"""``farm export --format hf|webdataset`` and ``load_dataset("hdf5", ...)`` on the file
itself, read back with the real ``datasets`` and ``webdataset`` packages."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import datasets
import h5py
import numpy as np
import pytest
import webdataset as wds

from farm.storage import schema
from farm.storage.reader import FarmReader
from farm.tools.hf import hdf5_features
from tests.farm_helpers import farm


def _splits(f: h5py.File) -> dict[str, np.ndarray]:
    sides = f[schema.meta("split")][...]
    return {s: np.flatnonzero(sides == s.encode()) for s in ("train", "validation", "test")}


def test_hf_export_is_a_datasetdict_of_the_stored_splits(
    dataset_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "hf"
    res = farm(tmp_path, "export", str(dataset_file), "--format", "hf", "-o", str(out))
    assert res.returncode == 0, res.stderr
    assert not list(tmp_path.glob("hf.*.tmp")) and not (out / ".cache").exists()
    dd = datasets.load_from_disk(str(out))
    with h5py.File(dataset_file) as f, FarmReader(dataset_file) as r:
        splits = {s: rows for s, rows in _splits(f).items() if rows.size}
        assert set(dd) == set(splits)
        for side, rows in splits.items():
            part = dd[side].with_format("numpy")
            assert len(part) == rows.size
            np.testing.assert_array_equal(part["index"], rows)
        part = dd["train"].with_format("numpy")
        for k in (0, len(part) - 1):
            row = part[k]
            i = int(row["index"])
            np.testing.assert_array_equal(row["audio"], f[schema.AUDIO][i])
            np.testing.assert_array_equal(row["continuous"], f[schema.CONTINUOUS][i])
            assert row["categorical"].dtype == np.int64
            np.testing.assert_array_equal(row["categorical"], f[schema.CATEGORICAL][i])
            name = r.continuous_names[3]
            assert row[name] == f[schema.CONTINUOUS][i, 3]
            assert row["midi_note"] == f[schema.meta("midi_note")][i]
        cat = r.categorical_names[0]
        label = dd["train"].features[cat]
        assert isinstance(label, datasets.ClassLabel) and label.names == list(r.options[cat])
    res = farm(tmp_path, "export", str(dataset_file), "--format", "hf", "-o", str(out))
    assert res.returncode == 2 and "exists" in res.stderr


def test_webdataset_export_reads_back(dataset_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "wds"
    res = farm(tmp_path, "export", str(dataset_file), "--format", "webdataset", "-o", str(out))
    assert res.returncode == 0, res.stderr
    with h5py.File(dataset_file) as f:
        for side, rows in _splits(f).items():
            shards = sorted(glob.glob(str(out / f"{side}-*.tar")))
            assert bool(shards) == bool(rows.size)
            if not shards:
                continue
            samples = list(wds.WebDataset(shards, shardshuffle=False).decode())
            assert [int(s["__key__"]) for s in samples] == rows.tolist()
            for s in samples:
                i = int(s["__key__"])
                np.testing.assert_array_equal(s["audio.npy"], f[schema.AUDIO][i])
                assert s["json"]["index"] == i
                assert s["json"]["midi_note"] == int(f[schema.meta("midi_note")][i])
                names = json.loads(f[schema.CATEGORICAL].attrs["options"])
                assert set(s["json"]["categorical"]) == set(names)


def test_load_dataset_hdf5_reads_the_file_itself(dataset_file: Path, tmp_path: Path) -> None:
    """The plain loader fails on a farm file (tables of other lengths); with the per-row
    features it reads the file as it is."""
    cache = str(tmp_path / "cache")
    with pytest.raises(datasets.exceptions.DatasetGenerationError) as failed:
        datasets.load_dataset("hdf5", data_files=str(dataset_file), split="train", cache_dir=cache)
    assert "presets expected length 40" in str(failed.value.__cause__)
    ds = datasets.load_dataset(
        "hdf5",
        data_files=str(dataset_file),
        features=hdf5_features(dataset_file),
        split="train",
        cache_dir=cache,
    ).with_format("numpy")
    with h5py.File(dataset_file) as f:
        assert len(ds) == f[schema.AUDIO].shape[0]
        for i in (0, len(ds) - 1):
            np.testing.assert_array_equal(ds[i]["audio"]["waveforms"], f[schema.AUDIO][i])
            np.testing.assert_array_equal(ds[i]["params"]["continuous"], f[schema.CONTINUOUS][i])
            assert ds[i]["metadata"]["split"] == f[schema.meta("split")][i].decode()
