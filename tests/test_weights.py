"""Parameter importance (``farm compute-weights``) on the real embedded farm, where the
answer is known: with filter 1 switched off its parameters cannot change the sound (weight
near zero) and the volume always does."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import h5py
import numpy as np
import pytest

from farm.jobs.weights import aggregate
from farm.params.registry import get_registry
from farm.params.tiers import tier_params
from farm.storage.schema import IMPORTANCE_CATEGORICAL as CATEGORICAL_KEY
from farm.storage.schema import IMPORTANCE_CONTINUOUS as CONTINUOUS_KEY
from tests.farm_helpers import farm, interrupt, start_farm, wait_for

pytestmark = pytest.mark.slow

SHORT = ["--note-duration", "0.3", "--render-duration", "0.5"]


def test_weights_where_the_answer_is_known(dataset_file: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(dataset_file, data / "ds.h5")
    args = ["compute-weights", "--tier", "1", "--n-base", "3", "--set", "filter_1_on=0"]
    res = farm(tmp_path, *args, *SHORT, "-o", "ds.h5", "--json", "w.json", "--workers", "2")
    assert res.returncode == 0, res.stderr
    assert "weights from 3 base presets" in res.stdout

    w = json.loads((data / "w.json").read_text())
    cont, cat = w["continuous"], w["categorical"]
    tp = tier_params(get_registry(), 1)
    assert list(cont) == [s.name for s in tp.continuous]
    assert w["bases"] == 3
    assert np.mean(list(cont.values())) == pytest.approx(1.0)
    filter_params = [k for k in cont if k.startswith("filter_1_")]
    assert len(filter_params) >= 10
    assert max(cont[k] for k in filter_params) < 0.05, {k: cont[k] for k in filter_params}
    assert cont["volume"] > 1.0
    assert cat["filter_1_on"] > 0.05  # switching the filter on does change the sound

    with h5py.File(data / "ds.h5", "r") as f:
        names = [str(n) for n in f["params/continuous"].attrs["names"]]
        np.testing.assert_allclose(
            f[CONTINUOUS_KEY][...], [cont[n] for n in names], rtol=1e-6, atol=1e-9
        )
        assert [str(n) for n in f[CATEGORICAL_KEY].attrs["names"]] == list(
            f["params/categorical"].attrs["names"]
        )
    # The dataset is still a valid farm file, and the pictures use the weights.
    res = farm(tmp_path, "inspect", "data/ds.h5")
    assert res.returncode == 0, res.stderr

    res = farm(tmp_path, *args, *SHORT, "--json", "w.json")
    assert res.returncode == 2 and "exists" in res.stderr


def test_interrupted_weights_run_resumes(tmp_path: Path) -> None:
    args = ["compute-weights", "--tier", "1", "--n-base", "6", *SHORT, "--workers", "1"]
    proc = start_farm(tmp_path, *args)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    run_id = line.split()[1].rstrip(":")
    wait_for(tmp_path, run_id, jobs_done=2)
    code, _ = interrupt(proc, signal.SIGINT)
    assert code == 130
    res = farm(tmp_path, "resume", run_id, "--workers", "2")
    assert res.returncode == 0, res.stderr
    w = json.loads((tmp_path / "data" / "weights_t1_6.json").read_text())
    assert w["bases"] == 6 and w["run_id"] == run_id


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "nope=1"], "not a parameter of tier 1"),
        (["--set", "volume=99999"], "outside"),
        (["--set", "filter_1_on"], "NAME=VALUE"),
        (["--set", "filter_1_style=banana"], "options are"),
        (["-o", "missing.h5"], "no dataset"),
        (["--json", "w.txt"], "must end in .json"),
        (["--delta", "0.9"], "delta"),
    ],
)
def test_bad_weights_options_are_one_line(tmp_path: Path, extra: list[str], message: str) -> None:
    res = farm(tmp_path, "compute-weights", "--tier", "1", "--n-base", "2", *extra)
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("\n") == 1 and message in res.stderr, res.stderr
    assert not list(tmp_path.glob("data/*.json"))


def test_weights_of_another_tier_are_refused(dataset_file: Path, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    shutil.copy(dataset_file, tmp_path / "data" / "ds.h5")
    res = farm(tmp_path, "compute-weights", "--tier", "2", "--n-base", "2", "-o", "ds.h5")
    assert res.returncode == 2 and "not tier 2" in res.stderr, res.stderr


def test_aggregate_subtracts_the_floor_and_normalizes() -> None:
    tp = tier_params(get_registry(), 1)
    c, k = len(tp.continuous), len(tp.categorical)
    base = {"continuous": [0.5] * c, "categorical": [0.2] * k}
    results = [
        {**base, "noise": 0.1, "continuous": [0.1] + [0.5] * (c - 2) + [None]},
        {**base, "noise": 0.3, "continuous": [0.2] + [0.5] * (c - 1)},
    ]
    w = aggregate(results, tp)
    cont = list(w["continuous"].values())
    assert cont[0] == 0.0  # never above the noise floor
    assert np.mean(cont) == pytest.approx(1.0)
    # The last one: (0.5 - 0.3) from the one base that rendered it, against (0.4 + 0.2) / 2.
    assert cont[-1] / cont[1] == pytest.approx(0.2 / 0.3)
    assert all(v == pytest.approx(1.0) for v in w["categorical"].values())
    assert w["bases"] == 2
