"""The CLI as a user runs it: real subprocesses, real renders."""

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from farm.storage import schema

FARM = [sys.executable, "-m", "farm.cli"]
FAST = ["--notes", "60", "--note-duration", "0.3", "--render-duration", "0.5"]


def farm(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FARM, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    return tmp_path


def test_generate_then_inspect(workdir: Path) -> None:
    r = farm("generate", "--tier", "1", "-n", "5", "--seed", "3", *FAST, cwd=workdir)
    assert r.returncode == 0, r.stderr
    out = workdir / "data" / "tier1_5.h5"
    assert "wrote" in r.stdout and str(out) in r.stdout
    with h5py.File(out, "r") as f:
        assert schema.check_file(f) == []
        assert f[schema.AUDIO].shape == (5, 2, 22050)
    r = farm("inspect", str(out), cwd=workdir)
    assert r.returncode == 0 and "rows 5" in r.stdout and "rejections" in r.stdout
    r = farm("inspect", str(out), "-s", "2", "--json", cwd=workdir)
    row = json.loads(r.stdout)
    assert row["index"] == 2 and row["params"]["osc_1_on"] == "On"
    assert row["audio"]["rms"] > 0


def test_injected_segfaults_cost_only_their_presets(workdir: Path) -> None:
    r = farm(
        "generate",
        "--tier",
        "2",
        "-n",
        "8",
        "--batch-size",
        "4",
        "--inject-crash",
        "0.5",
        *FAST,
        cwd=workdir,
    )
    assert r.returncode == 0, r.stderr
    with h5py.File(workdir / "data" / "tier2_8.h5", "r") as f:
        assert schema.check_file(f) == []
        assert f[schema.AUDIO].shape[0] == 8
        assert json.loads(f.attrs["rejections"]).get("CRASH", 0) >= 1
        keys = list(
            zip(
                f["metadata/job"][...],
                f["metadata/preset"][...],
                f["metadata/midi_note"][...],
                strict=True,
            )
        )
    assert len(set(keys)) == 8 and keys == sorted(keys)


BAD = [
    (["generate", "--tier", "4", "-n", "5"], "unknown tier"),
    (["generate", "-n", "0"], "positive"),
    (["generate", "-n", "-3"], "positive"),
    (["generate", "-n", "five"], "not a valid integer"),
    (["generate", "-n", "5", "--notes", "60,x"], "MIDI notes"),
    (["generate", "-n", "5", "--notes", "60,200"], "MIDI note"),
    (["generate", "-n", "5", "--velocity", "2"], "velocity"),
    (["generate", "-n", "5", "--sampler", "magic"], "magic"),
    (["generate", "-n", "5", "--render-duration", "1", "--note-duration", "2"], "render_duration"),
    (["generate", "-n", "5", "-o", "/nonexistent-dir/x.h5"], "does not exist"),
    (["generate", "-n", "5", "-o", "sub/x.h5"], "does not exist"),
    (["generate", "-n", "5", "--wat"], "No such option"),
    (["inspect", "missing.h5"], "no such dataset"),
    (["params", "--tier", "9"], "unknown tier"),
]


@pytest.mark.parametrize(("args", "message"), BAD)
def test_bad_input_is_one_line_exit_2_no_file(workdir: Path, args: list[str], message: str) -> None:
    r = farm(*args, cwd=workdir)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("farm: error:") and message in lines[0]
    assert "Traceback" not in r.stderr
    assert list((workdir / "data").iterdir()) == []


def test_existing_output_refused_unless_force(workdir: Path) -> None:
    out = workdir / "data" / "tier2_5.h5"
    out.write_bytes(b"precious")
    r = farm("generate", "-n", "5", *FAST, cwd=workdir)
    assert r.returncode == 2 and "--force" in r.stderr
    assert out.read_bytes() == b"precious"
    r = farm("generate", "-n", "5", "--force", *FAST, cwd=workdir)
    assert r.returncode == 0, r.stderr
    assert h5py.is_hdf5(out)


def test_inspect_refuses_a_non_dataset(workdir: Path) -> None:
    junk = workdir / "data" / "junk.h5"
    junk.write_text("not hdf5")
    r = farm("inspect", str(junk), cwd=workdir)
    assert r.returncode == 2 and "not a readable HDF5 file" in r.stderr
    with h5py.File(workdir / "data" / "empty.h5", "w"):
        pass
    r = farm("inspect", str(workdir / "data" / "empty.h5"), cwd=workdir)
    assert r.returncode == 2 and "missing" in r.stderr and len(r.stderr.splitlines()) == 1


def test_every_option_has_help() -> None:
    import click

    from farm.cli import cli

    missing = [
        (name, p.opts)
        for name, cmd in cli.commands.items()
        for p in cmd.params
        if isinstance(p, click.Option) and not p.hidden and not p.help
    ]
    assert missing == []


def test_local_outputs_go_where_the_user_says(workdir: Path, tmp_path: Path) -> None:
    """generate and inspect write in their own process: an absolute path anywhere is
    honoured (the card goes beside the file). So is an embedded run's (its own workers
    write it: tests/test_farm.py); a broker's workers were not granted the folder."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = elsewhere / "x.h5"
    r = farm("generate", "--tier", "1", "-n", "2", *FAST, "-o", str(out), cwd=workdir)
    assert r.returncode == 0, r.stderr
    assert h5py.is_hdf5(out) and out.with_suffix(".md").is_file()
    r = farm("inspect", str(out), "-s", "0", "--wav", str(elsewhere / "r.wav"), cwd=workdir)
    assert r.returncode == 0, r.stderr
    assert (elsewhere / "r.wav").is_file()
    broker = "redis://127.0.0.1:9/0"  # refused before any connection
    r = farm("submit", "-n", "2", "-o", str(elsewhere / "y.h5"), "--broker", broker, cwd=workdir)
    assert r.returncode == 2 and "FARM_OUTPUT_ROOTS" in r.stderr, r.stderr


def test_like_makes_the_same_dataset_again(workdir: Path) -> None:
    """--like FILE takes FILE's spec; a given option changes it; a bigger -n keeps FILE's
    rows first."""
    spec = ["--tier", "1", "--seed", "4", *FAST]
    r = farm("generate", *spec, "-n", "5", "-o", "a.h5", cwd=workdir)
    assert r.returncode == 0, r.stderr
    a = workdir / "data" / "a.h5"
    r = farm("generate", "--like", str(a), "-n", "9", "-o", "b.h5", cwd=workdir)
    assert r.returncode == 0, r.stderr
    r = farm("generate", "--like", str(a), "--seed", "5", "-o", "c.h5", cwd=workdir)
    assert r.returncode == 0, r.stderr
    with h5py.File(a) as fa, h5py.File(workdir / "data" / "b.h5") as fb:
        assert fb[schema.AUDIO].shape[0] == 9
        np.testing.assert_array_equal(fb[schema.AUDIO][:5], fa[schema.AUDIO][:])
        np.testing.assert_array_equal(fb[schema.CONTINUOUS][:5], fa[schema.CONTINUOUS][:])
        liked, made = (json.loads(f.attrs["run_spec"]) for f in (fa, fb))
        assert made == {**liked, "n": 9}  # everything but -n from the liked file
    with h5py.File(workdir / "data" / "c.h5") as fc:
        assert fc[schema.AUDIO].shape[0] == 5 and int(fc.attrs["seed"]) == 5
    r = farm("generate", "-o", "d.h5", cwd=workdir)
    assert r.returncode == 2 and "give -n" in r.stderr
    r = farm("generate", "--like", str(workdir / "nope.h5"), cwd=workdir)
    assert r.returncode == 2 and "no such dataset" in r.stderr
