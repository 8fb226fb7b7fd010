"""Label fidelity of real presets: does a row's stored label reproduce the preset?

For each preset of a folder (default: ../shared/presets/community), rendered at one note:

* **row**: the farm's render of the preset's stored row (tier 3 label + stored wavetables
  and state), as ``farm generate --community-dir`` writes it;
* **original**: vita's ``load_json`` of the original file, in a clean forked child.

vita's oscillator phase is random and process-wide, so renders are compared by the
correlation of log-magnitude spectrograms, always across two different random histories:
fidelity = corr(row, original in process B); noise floor = corr(original in process A,
original in process B). Prints each preset's deficit (noise floor - fidelity) and the
distribution.

    python bench/fidelity.py [--dir DIR] [--note 60]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _originals(args: tuple[list[str], int, int, int]) -> list[bytes]:
    """In a fresh process with ``throwaway`` Synths made first (another random history):
    each file loaded with load_json and rendered in a forked child."""
    files, note, samples, throwaway = args
    import vita

    from farm.render.forked import call_in_child

    keep = [vita.Synth() for _ in range(throwaway)]
    for s in keep:
        s.render(60, 0.8, 0.2, 0.3)
    synth = vita.Synth()
    synth.set_sample_rate(44100)
    out = []

    def render(path: str) -> bytes | None:
        if not synth.load_json(Path(path).read_text()):
            return None
        return bytes(synth.render(note, 0.8, 1.5, 2.0).astype(np.float32).tobytes())

    for path in files:
        data, _ = call_in_child(lambda path=path: render(path))
        data = data or b""
        out.append(data if len(data) == 2 * samples * 4 else b"")
    return out


def originals(files: list[str], note: int, samples: int, throwaway: int) -> list[np.ndarray]:
    with mp.get_context("spawn").Pool(1) as pool:
        raw = pool.apply(_originals, ((files, note, samples, throwaway),))
    return [np.frombuffer(b, np.float32).reshape(2, samples) if b else None for b in raw]


def main() -> None:
    from farm.config import RenderSettings, RunSpec, ValidationSettings
    from farm.jobs.local import generate
    from farm.presets.ingest import prepare_sources
    from farm.render.spectra import spectral_correlation

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dir", default=str(ROOT.parent / "shared" / "presets" / "community"))
    ap.add_argument("--note", type=int, default=60)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        prepared = prepare_sources(tmp, [a.dir])
        n = prepared.sources.presets
        spec = RunSpec(
            tier=3,
            n=n,
            batch_size=n,
            render=RenderSettings(notes=(a.note,)),
            # Keep every row: a silent preset is a fidelity data point too.
            validation=ValidationSettings(silence_rms=0.0, clip_peak=1e9),
            sources=prepared.sources,
        )
        out = Path(tmp) / "fid.h5"
        generate(spec, out, data_dir=Path(tmp))
        with h5py.File(out, "r") as f:
            audio = f["audio/waveforms"][...]
            origin = [s.decode() for s in f["presets/origin"][...]]
            which = f["metadata/library_preset"][...]
            dropped = f["presets/dropped_modulations"][...]
        files = [origin[i] for i in which]
        samples = spec.render.samples
        a_runs = originals(files, a.note, samples, throwaway=0)
        b_runs = originals(files, a.note, samples, throwaway=2)
    rows = []
    for i, path in enumerate(files):
        if a_runs[i] is None or b_runs[i] is None:
            print(f"{Path(path).name:28} vita could not render the original")
            continue
        fid = spectral_correlation(audio[i], b_runs[i])
        noise = spectral_correlation(a_runs[i], b_runs[i])
        rows.append((Path(path).stem, fid, noise, noise - fid, int(dropped[which[i]])))
    print(f"{'preset':28} {'fidelity':>9} {'noise':>7} {'deficit':>8}")
    for name, fid, noise, d, drop in sorted(rows, key=lambda r: -r[3]):
        flag = "  <-- > 0.1 below its noise floor" if d > 0.1 else ""
        print(f"{name:28} {fid:9.3f} {noise:7.3f} {d:8.3f}{flag}{f'  dropped {drop}' * bool(drop)}")
    fid_a = np.array([r[1] for r in rows])
    noise_a = np.array([r[2] for r in rows])
    d_a = np.array([r[3] for r in rows])
    print(f"{len(rows)} presets, note {a.note}, tier 3")
    for label, v in (("fidelity", fid_a), ("noise", noise_a)):
        q10 = np.quantile(v, 0.1)
        print(f"{label:10} median {np.median(v):.3f}  p10 {q10:.3f}  min {v.min():.3f}")
    big = int((d_a > 0.1).sum())
    print(f"deficit    median {np.median(d_a):.3f}  max {d_a.max():.3f}  > 0.1: {big}")
    gap = np.median(noise_a) - np.median(fid_a)
    print(f"median gap (noise median - fidelity median) = {gap:.3f}")


if __name__ == "__main__":
    main()
