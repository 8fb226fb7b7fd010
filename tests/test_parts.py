"""Parted output (``--part-rows K``): the shards become ``NAME.parts/`` and ``NAME.h5`` a
virtual dataset over them. The same rows and bytes as a single-file run; readable by plain
h5py, the reader, verify and export after the pair is moved; a missing part is an error,
never rows of zeros."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np

from farm.dataset import FarmDataset
from farm.storage import schema
from tests.farm_helpers import SPEC, farm

N = 24


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path) as f:
        names = schema.row_datasets(schema.MODULATION in f, schema.features_in(f))
        return {name: f[name][...] for name in names}


def test_parted_output_is_the_same_dataset(tmp_path: Path) -> None:
    args = [*SPEC, "-n", str(N), "--batch-size", "2", "--workers", "2"]
    r = farm(tmp_path, "submit", *args, "-o", "one.h5")
    assert r.returncode == 0, r.stderr
    r = farm(tmp_path, "submit", *args, "--part-rows", "6", "-o", "parted.h5")
    assert r.returncode == 0, r.stderr
    assert "parted.parts/, keep them beside it" in r.stdout, r.stdout
    data = tmp_path / "data"
    parts = sorted((data / "parted.parts").iterdir())
    assert len(parts) >= 2, parts
    assert not (data / ".shards").exists()
    with h5py.File(data / "parted.h5") as f:
        assert f[schema.AUDIO].is_virtual and f.attrs["parts"] == "parted.parts"
        assert json.loads(f.attrs["rejections"]) == json.loads(
            h5py.File(data / "one.h5").attrs["rejections"]
        )
    one = _arrays(data / "one.h5")
    assert one.keys() == _arrays(data / "parted.h5").keys()
    for name, values in _arrays(data / "parted.h5").items():
        np.testing.assert_array_equal(values, one[name], err_msg=name)
    st = json.loads(farm(tmp_path, "status", "--json").stdout)
    assert all(s["collect_s"] is not None for s in st)
    # Moved together, the pair still reads (parts are found relative to NAME.h5).
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.move(data / "parted.h5", moved / "parted.h5")
    shutil.move(data / "parted.parts", moved / "parted.parts")
    assert farm(tmp_path, "verify", str(moved / "parted.h5")).returncode == 0
    ds = FarmDataset(moved / "parted.h5", as_torch=False)
    np.testing.assert_array_equal(ds[N - 1]["audio"], one[schema.AUDIO][N - 1])
    # Each virtual dataset is opened once per handle, not per row (an open reads every
    # mapping: 12 ms at 20,000 rows, 66 times a row's read).
    audio = ds.file[schema.AUDIO]
    np.testing.assert_array_equal(ds[0]["audio"], one[schema.AUDIO][0])
    assert ds.file[schema.AUDIO] is audio
    out = tmp_path / "wav"
    assert farm(tmp_path, "export", str(moved / "parted.h5"), "-o", str(out)).returncode == 0
    assert len(list((out / "rows").iterdir())) == N
    # A part gone: a clear error, not rows of zeros.
    next((moved / "parted.parts").iterdir()).unlink()
    r = farm(tmp_path, "inspect", str(moved / "parted.h5"))
    assert r.returncode != 0 and "is missing" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
