"""Real presets and wavetables: safe reading, vita-read records, the library, re-rendering
from the file alone, the wavetable catalog and preset download. Real vita, real files from
../shared/presets/community (CC BY 4.0, see its ATTRIBUTION.md), real git, real farm runs.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import struct
import subprocess
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from farm.config import RenderSettings, RunSpec, ValidationSettings
from farm.jobs.local import generate
from farm.jobs.plan import sample_job
from farm.params.label import Modulation
from farm.params.tiers import TierParams
from farm.presets.convert import TINY_AMOUNT, slot_connections
from farm.presets.files import MAX_PRESET_BYTES, scan, vital_folders
from farm.presets.ingest import prepare_sources
from farm.presets.library import Library
from farm.render.forked import call_in_child
from farm.render.spectra import spectral_correlation
from farm.storage.schema import check_file
from farm.store import Store
from farm.tools.rerender import read_row

from .farm_helpers import farm, farm_env

GOOD = ("Thaisync.vital", "PS-20-Piano.vital", "WeirdEDMBass.vital")


def _bad_folder(root: Path, community: Path) -> Path:
    """A folder of every kind of bad input beside real presets."""
    d = root / "presets"
    (d / "sub").mkdir(parents=True)
    for name in GOOD[:2]:
        shutil.copy(community / name, d / name)
    text = (community / GOOD[2]).read_text()
    (d / "sub" / "malformed.vital").write_text("{ not json")
    (d / "sub" / "truncated.vital").write_text(text[: len(text) // 2])
    newer = json.loads(text)
    newer["synth_version"] = "9.0.0"
    (d / "newer.vital").write_text(json.dumps(newer))
    with open(d / "huge.vital", "wb") as f:  # sparse: no disk used
        f.truncate(MAX_PRESET_BYTES + 1)
    name = os.fsencode(d) + b"/bad-\xff-name.vital"
    with open(name, "wb") as f:
        f.write(text.encode())
    with zipfile.ZipFile(d / "bank.vitalbank", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("Presets/Good.vital", text)
        z.writestr("../evil.vital", text)
        z.writestr("/abs.vital", text)
        z.writestr("Presets/bomb.vital", b"\0" * (20 * 2**20))
    return d


def test_bad_files_are_skipped_with_reasons(tmp_path: Path, community_dir: Path) -> None:
    folder = _bad_folder(tmp_path, community_dir)
    data = tmp_path / "data"
    before = sorted(p for p in tmp_path.rglob("*") if not p.is_relative_to(data))
    prepared = prepare_sources(data, [folder])
    reasons = prepared.scan.reasons
    assert reasons == {
        "malformed_json": 2,  # malformed, truncated
        "newer_version": 1,
        "too_large": 1,
        "bad_name": 1,
        "unsafe_path": 2,
        "zip_bomb": 1,
    }, reasons
    assert prepared.counts == {"community": 3}  # 2 files + the bank's good entry
    lines = "\n".join(prepared.lines())
    assert "skipped 8 file(s)" in lines and "unsafe_path 2" in lines
    # Nothing written outside the data folder; the bank was never extracted.
    after = sorted(p for p in tmp_path.rglob("*") if not p.is_relative_to(data))
    assert after == before
    assert not (tmp_path / "evil.vital").exists()


def test_vita_refusal_is_counted(tmp_path: Path, community_dir: Path) -> None:
    """A preset vita's load_json refuses (False, no exception) is skipped, not fatal."""
    d = tmp_path / "p"
    d.mkdir()
    shutil.copy(community_dir / GOOD[0], d / "ok.vital")
    doc = json.loads((community_dir / GOOD[0]).read_text())
    doc["settings"] = {"wavetables": "garbage"}
    (d / "refused.vital").write_text(json.dumps(doc))
    prepared = prepare_sources(tmp_path / "data", [d])
    assert prepared.counts == {"community": 1}
    assert dict(prepared.scan.reasons) in ({"rejected_by_vita": 1}, {"crash": 1})


def test_presets_read_in_parallel_and_once(tmp_path: Path, community_dir: Path) -> None:
    """Read by two processes, the library is the one a single process makes; a second read
    into the same data folder takes every preset from the cache (no vita load); a file
    vita refuses keeps its reason from the cache; another data folder reads again."""
    d = tmp_path / "p"
    shutil.copytree(community_dir, d)
    doc = json.loads((community_dir / GOOD[0]).read_text())
    doc["settings"] = {"wavetables": "garbage"}
    (d / "refused.vital").write_text(json.dumps(doc))
    one = prepare_sources(tmp_path / "one", [d], workers=1)
    two = prepare_sources(tmp_path / "two", [d], workers=2)
    assert one.sources == two.sources and one.cached == two.cached == 0
    assert one.scan.skipped == two.scan.skipped and len(one.scan.skipped) == 1
    again = prepare_sources(tmp_path / "two", [d], workers=2)
    files = len(two.scan.files)
    assert again.cached == files and again.sources == two.sources
    assert again.scan.skipped == two.scan.skipped
    assert "known from an earlier read" in again.lines()[0]


def test_no_usable_preset_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "x.vital").write_text("nope")
    out = farm(tmp_path, "generate", "-n", "3", "--community-dir", "p")
    assert out.returncode == 2 and "no usable preset" in out.stderr
    assert "Traceback" not in out.stderr
    out = farm(tmp_path, "generate", "-n", "3", "--community-dir", "missing")
    assert out.returncode == 2 and "does not exist" in out.stderr


def test_slot_renumbering_keeps_meta_modulation_targets() -> None:
    """``modulation_N_amount`` names slot N of the preset; the label connects in canonical
    order, so the destination follows its connection; an all-zero target survives."""
    slots = [
        ("lfo_1", "osc_3_tune", [0.0, 0, 0.0, 0]),
        ("macro_control_1", "modulation_1_amount", [0.06, 0, 0.0, 0]),
        ("env_2", "filter_1_cutoff", [0.5, 1, 0.0, 0]),
        ("nope", "filter_1_cutoff", [0.5, 0, 0.0, 0]),
        ("", "", [0.0, 0, 0.0, 0]),
        ("lfo_2", "modulation_30_amount", [0.5, 0, 0.0, 0]),  # an empty slot: no effect
    ]
    mods, dropped = slot_connections(slots)
    assert dropped == 2
    by_pair = {(m.source, m.destination.split("_")[0]): m for m in mods}
    target = next(m for m in mods if m.source == "lfo_1")
    meta = next(m for m in mods if m.source == "macro_control_1")
    assert meta.destination == f"modulation_{mods.index(target) + 1}_amount"
    assert target.amount == pytest.approx(TINY_AMOUNT)
    assert len(by_pair) == 3 and all(isinstance(m, Modulation) for m in mods)


def _tier3_run(
    tmp_path: Path, community: Path, names: tuple[str, ...], n: int, batch_size: int
) -> Path:
    """A tier-3 file of these presets (then synthetic ones) at note 60, every row kept."""
    folder = tmp_path / "p"
    folder.mkdir()
    for name in names:
        shutil.copy(community / name, folder / name)
    data = tmp_path / "data"
    spec = RunSpec(
        tier=3,
        n=n,
        batch_size=batch_size,
        render=RenderSettings(notes=(60,)),
        validation=ValidationSettings(silence_rms=0.0),
        sources=prepare_sources(data, [folder]).sources,
    )
    out = data / "t3.h5"
    generate(spec, out, data_dir=data)
    return out


@pytest.mark.slow
def test_rows_rerender_from_the_file_alone(tmp_path: Path, community_dir: Path) -> None:
    """Tier 3 with real presets: every row's label rebuilt from the file hashes to its
    preset_hash; farm rerender writes a WAV; the stored row sounds like the original."""
    data = tmp_path / "data"
    out = _tier3_run(tmp_path, community_dir, GOOD, n=5, batch_size=2)
    with h5py.File(out, "r") as f:
        assert check_file(f) == []
        assert [s.decode() for s in f["metadata/source"][:3]] == ["community"] * 3
        assert [s.decode() for s in f["metadata/preset_name"][:3]] == [
            "PS-20 Piano",  # the preset's own name; files are read in path order
            "Thaisync",
            "WeirdEDMBass",
        ]
        assert f["metadata/library_preset"][:3].tolist() == [0, 1, 2]
        assert f["metadata/library_preset"][3:].tolist() == [-1, -1]  # synthetic after them
        assert f["wavetables/data"].shape[0] == len(set(f["params/wavetable"][:3].ravel()))
        for i in range(5):
            assert read_row(f, i).label.hash == f["metadata/preset_hash"][i].decode()
        stored = f["audio/waveforms"][1]
    # The whole CLI path, nothing but the file (the store is deleted first).
    shutil.rmtree(data / ".store")
    res = farm(tmp_path, "rerender", "data/t3.h5", "-s", "1", "-o", "row1.wav")
    assert res.returncode == 0, res.stderr
    wav = (data / "row1.wav").read_bytes()
    assert wav[:4] == b"RIFF" and struct.unpack("<H", wav[20:22])[0] == 3  # float WAV
    audio = np.frombuffer(wav[wav.index(b"data") + 8 :], "<f4").reshape(-1, 2).T
    assert audio.shape == stored.shape
    assert spectral_correlation(audio, stored) > 0.8
    bad = farm(tmp_path, "rerender", "data/t3.h5", "-s", "99", "-o", "x.wav")
    assert bad.returncode == 2 and "out of range" in bad.stderr


@pytest.mark.slow
def test_catalog_wavetables_through_the_farm(tmp_path: Path, community_dir: Path) -> None:
    """discover-wt writes a deduplicated catalog; an embedded farm run draws synthetic
    wavetables from it (workers read them from the store), labels them, stores the used
    ones once, and every row re-renders from the file."""
    res = farm(
        tmp_path, "discover-wt", "-o", "wt.json.gz", "--extra-dir", str(community_dir),
        "--no-vital-folders",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    cat = json.loads(gzip.decompress((tmp_path / "data" / "wt.json.gz").read_bytes()))
    hashes = [e["hash"] for e in cat["wavetables"]]
    assert len(hashes) == len(set(hashes)) and 3 <= len(hashes) < 72
    res = farm(
        tmp_path, "submit", "--tier", "1", "-n", "6", "--batch-size", "4", "--notes", "60",
        "--workers", "2", "--wavetable-catalog", "data/wt.json.gz", "-o", "wt.h5",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    with h5py.File(tmp_path / "data" / "wt.h5", "r") as f:
        assert check_file(f) == []
        refs = f["params/wavetable"][...]
        assert refs.min() >= 0 and f["metadata/library_preset"][...].max() == -1
        used = np.unique(refs)
        assert used.tolist() == list(range(f["wavetables/data"].shape[0]))
        assert set(s.decode() for s in f["wavetables/hash"][...]) <= set(hashes)
        spec = RunSpec.from_json(f.attrs["run_spec"])
        for i in range(f["audio/waveforms"].shape[0]):
            assert read_row(f, i).label.hash == f["metadata/preset_hash"][i].decode()
    # The references were renumbered to the used wavetables: the rows still verify.
    res = farm(tmp_path, "verify", "data/wt.h5")
    assert res.returncode == 0, res.stderr
    # The draw is the plan's: the same job sampled here names the same wavetables.
    lib = Library(Store(tmp_path / "data"), spec.sources.library or "")
    from farm.params.registry import get_registry
    from farm.params.tiers import tier_params

    tp: TierParams = tier_params(get_registry(), 1)
    first = sample_job(spec, tp, 0, lib)[0]
    assert min(first.wavetables) >= 0
    assert first.extra["nonscalar"]["wavetables"][0] == lib.wavetable(first.wavetables[0])


def test_download_presets_from_a_local_git_repository(tmp_path: Path, community_dir: Path) -> None:
    repo = tmp_path / "src" / "vital-things"
    repo.mkdir(parents=True)
    shutil.copy(community_dir / GOOD[0], repo / "a.vital")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    url = repo.as_uri()
    res = farm(tmp_path, "download-presets", "--repo", url)
    assert res.returncode == 0, res.stderr
    assert "cloned" in res.stdout and "(1 preset files)" in res.stdout
    shutil.copy(community_dir / GOOD[1], repo / "b.vital")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "two"], check=True)
    res = farm(tmp_path, "download-presets", "--repo", url)
    assert res.returncode == 0 and "updated" in res.stdout and "(2 preset files)" in res.stdout
    dest = tmp_path / "data" / "presets" / "src-vital-things"
    assert sorted(p.name for p in dest.glob("*.vital")) == ["a.vital", "b.vital"]
    # Unreachable (a closed loopback port): one clear line, nothing left half-cloned.
    res = farm(tmp_path, "download-presets", "--repo", "http://127.0.0.1:9/none.git")
    assert res.returncode == 2 and "could not fetch" in res.stderr
    assert "Traceback" not in res.stderr
    assert not list((tmp_path / "data" / "presets").glob("*none*"))
    res = farm(tmp_path, "download-presets", "-o", "../outside", "--repo", url)
    assert res.returncode == 2 and "outside the data folder" in res.stderr


def _original_renders(files: list[str]) -> list[bytes]:
    """In a fresh process (its own random history): each file through vita's own
    load_json, rendered at note 60 in a forked child of a Synth that never renders."""
    import vita

    synth = vita.Synth()
    synth.set_sample_rate(44100)
    out = []

    def render(path: str) -> bytes:
        assert synth.load_json(Path(path).read_text())
        return bytes(synth.render(60, 0.8, 1.5, 2.0).astype(np.float32).tobytes())

    for path in files:
        data, _ = call_in_child(lambda path=path: render(path))
        out.append(data or b"")
    return out


@pytest.mark.slow
def test_stored_rows_sound_like_the_original_presets(tmp_path: Path, community_dir: Path) -> None:
    """The row's label (tier 3 + stored state) against vita's load_json of the original
    file, within 0.1 of the noise floor of two load_json renders in different processes
    (bench/fidelity.py measures all 24)."""
    import multiprocessing as mp

    # PS-20-Piano modulates a slot's amount (modulation_1_amount) with a zero base amount.
    out = _tier3_run(tmp_path, community_dir, (*GOOD, "IceRain.vital"), n=4, batch_size=4)
    with h5py.File(out, "r") as f:
        rows = f["audio/waveforms"][...]
        files = [f["presets/origin"][i].decode() for i in f["metadata/library_preset"][...]]
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as a_pool, ctx.Pool(1) as b_pool:
        b_pool.apply(_original_renders, ([files[0]],))  # another random history for B
        a = a_pool.apply(_original_renders, (files,))
        b = b_pool.apply(_original_renders, (files,))
    for i, path in enumerate(files):
        orig_a, orig_b = (np.frombuffer(x[i], np.float32).reshape(2, -1) for x in (a, b))
        fidelity = spectral_correlation(rows[i], orig_b)
        noise = spectral_correlation(orig_a, orig_b)
        assert fidelity > noise - 0.1, (Path(path).name, fidelity, noise)


@pytest.mark.parametrize(
    ("system", "user_dir", "factory_dir"),
    [
        ("Linux", ".local/share/vital/User/Presets", ".local/share/vital/Factory/Presets/Pack"),
        ("Linux", "Music/Vital/User/Presets", "Music/Vital/Factory/Presets"),  # a Mac layout
        ("Darwin", "Music/Vital/User/Presets", "Music/Vital/Factory/Presets/Pack"),
    ],
)
def test_vital_folders_are_found(
    tmp_path: Path, community_dir: Path, system: str, user_dir: str, factory_dir: str
) -> None:
    for sub, name in ((user_dir, GOOD[0]), (factory_dir, GOOD[1])):
        (tmp_path / sub).mkdir(parents=True)
        shutil.copy(community_dir / name, tmp_path / sub / name)
    factory = vital_folders("factory", home=tmp_path, system=system)
    user = vital_folders("user", home=tmp_path, system=system)
    assert [p.name for p in factory] == ["Factory"] and [p.name for p in user] == ["User"]
    assert [f.origin.endswith(GOOD[1]) for f in scan(factory).files] == [True]


def test_factory_presets_render_through_the_farm(tmp_path: Path, community_dir: Path) -> None:
    """`--factory` with Vital's folders in a (temporary) home: the presets come first,
    their rows say `factory`."""
    home = tmp_path / "home"
    presets = home / ".local" / "share" / "vital" / "Factory" / "Presets"
    presets.mkdir(parents=True)
    for name in GOOD:
        shutil.copy(community_dir / name, presets / name)
    args = ["generate", "--tier", "1", "-n", "3", "--factory", "--notes", "60", "-o", "f.h5"]
    args += ["--note-duration", "0.5", "--render-duration", "1.0"]
    res = farm(tmp_path, *args, env=farm_env(HOME=str(home)))
    assert res.returncode == 0, res.stderr
    with h5py.File(tmp_path / "data" / "f.h5", "r") as f:
        sources = [s.decode() for s in f["metadata/source"][:]]
        names = [s.decode() for s in f["presets/name"][:]]
    # The file's library table holds the real presets its rows use (a silent one is not).
    assert sources[0] == "factory" and names
    assert set(names) <= {Path(n).stem for n in GOOD}


def test_the_card_credits_every_real_preset(tmp_path: Path, community_dir: Path) -> None:
    """A dataset made from community presets gets NAME.md crediting each one used: name,
    author, origin and the licence its folder declares (here CC BY 4.0)."""
    folder = tmp_path / "packs" / "tytel"
    folder.mkdir(parents=True)
    for name in GOOD:
        shutil.copy(community_dir / name, folder / name)
    shutil.copy(community_dir / "ATTRIBUTION.md", tmp_path / "packs" / "ATTRIBUTION.md")
    args = ["generate", "--tier", "1", "-n", "6", "--notes", "60", "-o", "c.h5"]
    args += ["--community-dir", str(tmp_path / "packs")]
    args += ["--note-duration", "0.5", "--render-duration", "1.0"]
    res = farm(tmp_path, *args)
    assert res.returncode == 0, res.stderr
    card = (tmp_path / "data" / "c.md").read_text()
    with h5py.File(tmp_path / "data" / "c.h5", "r") as f:
        names, authors = f["presets/name"][:], f["presets/author"][:]
        used = [(n.decode(), a.decode()) for n, a in zip(names, authors, strict=True)]
        assert {v.decode() for v in f["presets/licence"][:]} == {"CC BY 4.0"}
    assert used
    for name, author in used:
        assert f"| {name} | {author} | community:" in card
    assert card.count("| CC BY 4.0 |") == len(used)
    assert "farm submit --tier 1 -n 6 --seed 0" in card and "--community-dir" in card
    assert 'FarmDataset("c.h5"' in card
    # farm card writes it again where told, and refuses to overwrite without --force.
    res = farm(tmp_path, "card", str(tmp_path / "data" / "c.h5"), "-o", str(tmp_path / "copy.md"))
    assert res.returncode == 0 and (tmp_path / "copy.md").read_text() == card
    res = farm(tmp_path, "card", str(tmp_path / "data" / "c.h5"))
    assert res.returncode == 2 and "--force" in res.stderr


def _audio_by_name(path: Path) -> dict[str, str]:
    """Each row's audio digest by the name of its preset (``synthetic-<row>`` for others)."""
    import hashlib

    with h5py.File(path, "r") as f:
        names = [s.decode() for s in f["presets/name"][...]]
        lp = f["metadata/library_preset"][...]
        return {
            (names[p] if p >= 0 else f"synthetic-{i}"): hashlib.sha256(
                f["audio/waveforms"][i].tobytes()
            ).hexdigest()
            for i, p in enumerate(lp.tolist())
        }


@pytest.mark.slow
def test_a_streamed_library_is_read_by_the_workers(tmp_path: Path, community_dir: Path) -> None:
    """--stream-presets: the submitter stores the files unread (no read cache, a byte-for-
    byte copy skipped as duplicate), the farm's workers read each preset as they render it,
    a file vita cannot use keeps its index as FILE_* rejections, and the rows are the rows
    of the library read first, by ``farm generate`` (which renders what the farm renders).
    The streamed file's references are renumbered past the bad file and still verify."""
    folder = tmp_path / "p"
    folder.mkdir()
    for name in GOOD:
        shutil.copy(community_dir / name, folder / name)
    shutil.copy(community_dir / GOOD[0], folder / "zz-copy.vital")
    (folder / "Aaa-bad.vital").write_text("{ not json")
    doc = json.loads((community_dir / GOOD[0]).read_text())
    doc["settings"] = {"wavetables": "garbage"}  # vita refuses it (or crashes on it)
    (folder / "refused.vital").write_text(json.dumps(doc))
    data = tmp_path / "data"
    prepared = prepare_sources(data, [folder], stream=True)
    assert prepared.sources.presets == 5 and prepared.scan.reasons == {"duplicate": 1}
    assert "read by the workers as they render them" in prepared.lines()[0]
    assert not (data / ".cache").exists()  # nothing was read: rendering can start at once
    common = ("--tier", "2", "-n", "6", "--notes", "60", "--community-dir", "p")
    res = farm(tmp_path, "submit", *common, "--stream-presets", "--workers", "2",
               "--batch-size", "2", "-o", "s.h5")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "FILE_MALFORMED_JSON=1" in res.stderr
    assert "FILE_REJECTED_BY_VITA=1" in res.stderr or "FILE_CRASH=1" in res.stderr
    assert len(list((data / ".cache" / "presets").iterdir())) == 4  # read by the workers
    # Read first, in another data folder: its own reads, not the workers' cached ones.
    res = farm(tmp_path, "generate", *common, "-o", "e.h5", "--data-dir", "eager")
    assert res.returncode == 0, res.stderr
    streamed, eager = _audio_by_name(data / "s.h5"), _audio_by_name(tmp_path / "eager/e.h5")
    assert streamed == eager and sum(not k.startswith("synthetic") for k in eager) == 3
    with h5py.File(data / "s.h5", "r") as f:
        assert check_file(f) == []
        assert f["metadata/library_preset"][:3].tolist() == [0, 1, 2]  # renumbered from 1..3
        assert f["wavetables/data"].shape[0] == len(set(f["wavetables/hash"][...]))
        for i in range(6):
            assert read_row(f, i).label.hash == f["metadata/preset_hash"][i].decode()
    for name in ("data/s.h5", "eager/e.h5"):
        res = farm(tmp_path, "verify", name)
        assert res.returncode == 0, res.stderr
    # The files vita could not use are listed by name, as a library read first lists them.
    listed = {}
    for name in (data / "s.h5", tmp_path / "eager/e.h5"):
        with h5py.File(name, "r") as f:
            listed[name.stem] = sorted(map(tuple, json.loads(f.attrs["library"])["skipped_files"]))
    assert listed["s"] == listed["e"], listed
    assert {r for _, r in listed["s"]} >= {"malformed_json", "duplicate"}
    assert len(listed["s"]) == 3


def test_a_read_that_never_ends_is_a_timeout(
    tmp_path: Path, community_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file whose read hangs (an injected fault: the read sleeps) is skipped as
    ``timeout`` instead of holding the submitter or a worker's job for ever."""
    import time

    from farm.presets import convert
    from farm.presets.files import SourceFile

    def hang(synth: object, f: SourceFile) -> bytes:
        time.sleep(30)
        return b"{}"

    monkeypatch.setattr(convert, "READ_TIMEOUT_S", 1)
    monkeypatch.setattr(convert, "_content_bytes", hang)
    data = (community_dir / GOOD[0]).read_bytes()
    # Without the alarm the child would answer "{}" after 30 s: no reason at all.
    assert convert.read_file(SourceFile("x.vital", "x", data), (1, 5, 5)) == {"reason": "timeout"}


def test_a_read_killed_from_outside_is_read_again(
    tmp_path: Path, community_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reading child killed by SIGKILL (the OOM killer, a person: an injected fault here,
    the first read kills itself) is not the file's crash: the file is read again, and the
    read cache keeps what it holds. Before, the kill was cached as the file's ``crash``,
    and every later run, streamed or not, left the preset out."""
    import signal

    from farm.presets import convert
    from farm.presets.cache import PresetCache
    from farm.presets.files import SourceFile

    real = convert._content_bytes
    marker = tmp_path / "killed-once"

    def killed_once(synth: object, f: SourceFile) -> bytes | None:
        if not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return real(synth, f)

    monkeypatch.setattr(convert, "_content_bytes", killed_once)
    f = SourceFile("x.vital", "x", (community_dir / GOOD[0]).read_bytes())
    cache = PresetCache(tmp_path)
    found = convert.read_file(f, (1, 5, 5), cache)
    assert marker.exists() and "reason" not in found, found
    assert cache.get(f.data) == found
    # Killed every time: an error, never cached (the next run reads it again).
    marker.unlink()
    monkeypatch.setattr(convert, "_content_bytes", lambda s, f: os.kill(os.getpid(), 9))
    g = SourceFile("y.vital", "y", f.data + b" ")
    assert convert.read_file(g, (1, 5, 5), cache) == {"reason": "error"}
    assert cache.get(g.data) is None
    # A crash kept before kills were told from crashes is read again; one kept since is not.
    cache.put(g.data, {"reason": "crash"})
    assert cache.get(g.data) is None
    cache.put(g.data, {"reason": "crash", "signal": int(signal.SIGSEGV)})
    assert cache.get(g.data) == {"reason": "crash", "signal": int(signal.SIGSEGV)}


def test_the_reader_process_reads_as_a_fresh_synth_does(community_dir: Path) -> None:
    """A streamed library's reader (one Synth, a child per file) finds what a child with a
    fresh Synth finds, file for file; killed, it is started again at the next read."""
    import signal

    from farm.presets.convert import read_with
    from farm.presets.files import SourceFile
    from farm.presets.reader import Reader

    files = [SourceFile(n, n, (community_dir / n).read_bytes()) for n in GOOD]
    reader = Reader()
    try:
        assert [reader.read(f) for f in files] == [read_with(None, f) for f in files]
        first = reader._pid
        os.kill(first, signal.SIGKILL)
        assert reader.read(files[0]) == read_with(None, files[0])
        assert reader._pid not in (0, first)
    finally:
        reader.close()


def test_gc_keeps_a_streamed_librarys_files(tmp_path: Path, community_dir: Path) -> None:
    """Everything a streamed library stored (its manifest and the files, unread) is what a
    run made with it needs: ``farm gc`` keeps all of it while the run may resume."""
    from coordinator.gc import _library_objects

    folder = tmp_path / "p"
    folder.mkdir()
    for name in GOOD:
        shutil.copy(community_dir / name, folder / name)
    data = tmp_path / "data"
    sources = prepare_sources(data, [folder], stream=True).sources
    stored = {p.name.removesuffix(".json.gz") for p in (data / ".store").iterdir()}
    assert len(stored) == len(GOOD) + 1
    assert stored == _library_objects(data, RunSpec(tier=2, n=3, sources=sources))
