"""Parted output (``--part-rows K``): the shards become ``NAME.parts/`` and ``NAME.h5`` a
virtual dataset over them. The same rows and bytes as a single-file run; readable by plain
h5py, the reader, verify and export after the pair is moved; a missing part is an error,
never rows of zeros."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import redis

from coordinator.embedded import EmbeddedBroker
from coordinator.ledger import COLLECTING, Ledger
from farm.dataset import FarmDataset
from farm.params.tiers import TierParams
from farm.paths import shard_dir
from farm.settings import FarmSettings
from farm.storage import schema
from tests.conftest import fake_rows, small_spec
from tests.farm_helpers import SPEC, farm
from tests.redis_helpers import RedisServer

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


def _labels(path: Path) -> tuple[list[tuple[str, ...]], np.ndarray]:
    """Each row's wavetables by content hash (what its references name), and its audio."""
    with h5py.File(path) as f:
        names = [h.decode() for h in f["wavetables/hash"][...]]
        refs = [tuple(names[i] for i in row) for row in f[schema.WAVETABLE][...]]
        return refs, f[schema.AUDIO][...]


def test_a_parted_dataset_collected_again_is_the_same(tmp_path: Path, community_dir: Path) -> None:
    """A collector that stopped before its file was in place (a full disk, a kill) leaves
    the parts as the next one finds them. Renumbering a catalog run's wavetable references
    once wrote through the virtual datasets into the parts, with checksums made again: the
    next collector renumbered its own output and wrote a file whose every row named other
    wavetables, and that still verified. The parts now stay the shards the workers wrote."""
    res = farm(
        tmp_path, "discover-wt", "-o", "wt.json.gz", "--extra-dir", str(community_dir),
        "--no-vital-folders",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    res = farm(
        tmp_path, "submit", "--tier", "1", "-n", "12", "--batch-size", "2", "--notes", "60",
        "--workers", "2", "--wavetable-catalog", "data/wt.json.gz", "--part-rows", "4",
        "--keep-shards", "-o", "wt.h5",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    data = tmp_path / "data"
    refs, audio = _labels(data / "wt.h5")
    assert len(set(refs)) > 1  # references that renumbering moves
    with h5py.File(data / "wt.h5") as f:
        assert f[schema.AUDIO].is_virtual and not f[schema.WAVETABLE].is_virtual
        run_id = str(f.attrs["run_id"])
    # The collector's fault: its file never reached its name; the run is collecting again.
    (data / "wt.h5").unlink()
    with EmbeddedBroker(data).reader() as url:
        Ledger(redis.Redis.from_url(url, decode_responses=True), run_id).set_state(COLLECTING)
    res = farm(tmp_path, "collect", run_id)
    assert res.returncode == 0 and "12 rows" in res.stdout, res.stdout + res.stderr
    again, audio_again = _labels(data / "wt.h5")
    assert again == refs
    np.testing.assert_array_equal(audio_again, audio)
    assert farm(tmp_path, "verify", "data/wt.h5").returncode == 0


def test_a_worker_never_reuses_a_shard_name_a_collector_moved(
    tmp_path: Path, tp1: TierParams
) -> None:
    """A parted run's collector moves the shards into ``NAME.parts/`` while jobs past n
    may still finish. The worker that wrote a moved shard starts a new one under a new
    name: under the old name, the ledger's (shard, first row) of the moved shard's jobs
    would point into the new file the next time the run is collected (found when
    collecting a run again: "rows 0+ are not job 6", and its jobs rendered again)."""
    from workers.context import WorkerContext
    from workers.render import _write

    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        spec = small_spec(part_rows=100)
        ledger = Ledger(client, "moved")
        ledger.create(spec, output="x.h5", window=2, keep_shards=False)
        data = tmp_path / "data"
        ctx = WorkerContext(FarmSettings(data_dir=str(data)))
        rows = fake_rows(spec, tp1)
        first = _write(ctx, ledger, spec, tp1, rows)
        assert first is not None and first[0] is not None
        folder, parts = shard_dir(data, "moved"), data / "x.parts"
        parts.mkdir()
        os.replace(folder / first[0], parts / first[0])  # what the collector does
        second = _write(ctx, ledger, spec, tp1, rows)
        assert second is not None and second[0] != first[0] and second[1] == 0
        assert not (folder / first[0]).exists()
        # A shard that was not moved is appended to, as before.
        third = _write(ctx, ledger, spec, tp1, rows)
        assert third == (second[0], len(rows))
    finally:
        server.stop()
