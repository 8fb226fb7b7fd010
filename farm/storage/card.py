"""The dataset card: ``NAME.md`` beside every dataset, written from the file alone.

It says what the dataset is, how it was made (the spec, seed, versions and a command that
makes it again), what was kept and rejected, how the rows split, how to load it, and
credits every real preset used (name, author, where it came from, its licence): community
presets are often CC BY, which requires that credit wherever the data goes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from farm.paths import write_atomic
from farm.storage import schema
from farm.storage.reader import FarmReader


def card_path(dataset: str | os.PathLike[str]) -> Path:
    """Where a dataset's card goes: ``NAME.md`` beside ``NAME.h5``."""
    return Path(dataset).with_suffix(".md")


def write_card(dataset: str | os.PathLike[str], out: Path | None = None) -> Path:
    """Write the card of ``dataset`` (temporary name, renamed) and return its path.

    Raises:
        DatasetError: the dataset cannot be read.
    """
    target = out or card_path(dataset)
    write_atomic(target, dataset_card(dataset).encode())
    return target


def dataset_card(dataset: str | os.PathLike[str]) -> str:
    """The card of ``dataset`` as Markdown.

    Raises:
        DatasetError: the dataset cannot be read.
    """
    with FarmReader(dataset) as r:
        info = r.info()
        f = r.file
        spec = info["run_spec"]
        splits = _counts(f, schema.meta("split"))
        sources = info["sources"]
        credits = _credits(f)
        active = {
            kind: float(np.mean(f[path][...])) if path in f and f[path].shape[0] else None
            for kind, path in (
                ("continuous", schema.ACTIVE_CONTINUOUS),
                ("categorical", schema.ACTIVE_CATEGORICAL),
            )
        }
        n_cont, n_cat = len(r.continuous_names), len(r.categorical_names)
    name = Path(dataset).stem
    render = spec.get("render", {})
    lines = [
        f"# {name}",
        "",
        f"A synthesizer sound-matching dataset made by farm from the Vital synthesizer "
        f"(vita {info['versions'].get('vita', '?')}): {info['rows']} rows from "
        f"{info['presets']} presets, each a rendered note "
        f"({'mono: the mid channel' if render.get('mono') else 'stereo'} "
        f"{info['audio_dtype']}, {info['sample_rate']} Hz, "
        f"{render.get('render_duration', '?')} s) and the exact parameters that produced it, "
        "rendered from a clean synth state so the label reproduces the audio.",
        "",
        "## What a row holds",
        "",
        f"- tier {info['tier']}: {n_cont} continuous parameters (linear in [0, 1]) and {n_cat} "
        "categorical ones (option indices)"
        + (", plus a modulation matrix" if info["modulation"] else "")
        + "; names, ranges and options are attributes of `params/*`",
        f"- notes: {_notes(render)}; velocity {_value(render.get('velocity'))}; key held "
        f"{_value(render.get('note_duration'))} s (per row in `metadata/velocity` and "
        "`metadata/note_duration`)",
    ]
    feats = spec.get("features")
    if feats:
        lines.append(
            f"- features: `features/{feats['kind']}` (channel, {feats['n_mels']} mel bands, "
            f"frames; dB, n_fft {feats['n_fft']}, hop {feats['hop']}: librosa's defaults), "
            "with per-band `mean`/`std` over the train split as its attributes"
        )
    if active["continuous"] is not None:
        lines.append(
            f"- active-parameter mask (`params/active_*`): on average "
            f"{active['continuous']:.0%} of the continuous and {active['categorical']:.0%} of "
            "the categorical parameters can change a row's sound"
        )
    lines += [
        f"- sources: {', '.join(f'{k} {v}' for k, v in sources.items())}",
        "",
        "## How it was made",
        "",
        f"- seed {info['seed']}, sampler `{spec.get('sampling', {}).get('sampler', '?')}`, "
        f"constraints {json.dumps(spec.get('sampling', {}).get('constraints', {}))}",
        f"- versions: {', '.join(f'{k} {v}' for k, v in sorted(info['versions'].items()))}",
        f"- registry fingerprint `{info['registry_fingerprint'][:16]}`",
        "- to make it again:",
        "",
        "```bash",
        _command(spec, name),
        f"farm submit --like {name}.h5 -n {2 * int(info['rows'])} -o {name}_x2.h5"
        "  # the same, bigger: its first rows are these",
        "```",
        "",
        "<details><summary>the run spec (JSON)</summary>",
        "",
        "```json",
        json.dumps(spec, indent=1, sort_keys=True),
        "```",
        "",
        "</details>",
        "",
        "## Counts",
        "",
        f"{info['rows']} rows kept of {info['renders']} notes rendered. Rejected, by reason:",
        "",
        "| reason | notes |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in sorted(info["rejections"].items())),
        "",
        "Splits (by preset, from the seed; `metadata/split`): "
        + (", ".join(f"{k} {v} rows" for k, v in splits.items()) or "none stored"),
        "",
        "## Loading",
        "",
        "```python",
        "from farm.dataset import FarmDataset",
        f'train = FarmDataset("{name}.h5", split="train")  # dicts of arrays, or torch tensors',
        *(
            [
                f'mel = FarmDataset("{name}.h5", ["{feats["kind"]}", "continuous"], split="train")',
                f'mean, std = mel.feature_stats["{feats["kind"]}"]  # per band',
            ]
            if feats
            else []
        ),
        "",
        "import datasets  # or Hugging Face datasets, on the file itself",
        "from farm.tools.hf import hdf5_features",
        f'hf = datasets.load_dataset("hdf5", data_files="{name}.h5", '
        f'features=hdf5_features("{name}.h5"))',
        "",
        "import h5py  # or plain h5py",
        f'with h5py.File("{name}.h5") as f:',
        '    audio, labels = f["audio/waveforms"][:8], f["params/continuous"][:8]',
        "```",
        "",
        "## Credits",
        "",
    ]
    if credits:
        lines += [
            "Real presets in this dataset, by their authors:",
            "",
            "| preset | author | from | licence |",
            "|---|---|---|---|",
            *(
                f"| {_cell(c['name'])} | {_cell(c['author']) or 'unknown'} | "
                f"{_cell(c['source'])}: {_cell(c['origin'])} | "
                f"{_cell(c['licence']) or 'not declared: check the source before sharing'} |"
                for c in credits
            ),
            "",
        ]
    else:
        lines += ["No real presets: every preset was drawn by farm's sampler.", ""]
    lines.append("Synthesized with Vital (vital.audio) through the vita Python bindings.")
    return "\n".join(lines) + "\n"


def _credits(f: Any) -> list[dict[str, str]]:
    if "presets/name" not in f:
        return []
    cols = ("name", "author", "origin", "source", "licence")
    data = {
        c: [_text(v) for v in f[f"presets/{c}"][...]] if f"presets/{c}" in f else [] for c in cols
    }
    n = len(data["name"])
    return [{c: (data[c][i] if i < len(data[c]) else "") for c in cols} for i in range(n)]


def _counts(f: Any, path: str) -> dict[str, int]:
    if path not in f:
        return {}
    values, counts = np.unique(f[path][...], return_counts=True)
    return {_text(v): int(c) for v, c in zip(values, counts, strict=True)}


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _value(v: Any) -> str:
    return f"{v[0]:g} to {v[1]:g} per row" if isinstance(v, list) else f"{v}"


def _notes(render: dict[str, Any]) -> str:
    notes = render.get("notes")
    if isinstance(notes, dict):
        return f"{notes['per_preset']} per preset drawn from MIDI {notes['lo']}..{notes['hi']}"
    return "MIDI " + ", ".join(str(n) for n in notes or [])


def _command(spec: dict[str, Any], name: str) -> str:
    """``farm submit`` options that give this spec (real presets: give the same folders)."""
    r, s, c = spec.get("render", {}), spec.get("sampling", {}), spec.get("compression", {})
    args = [f"--tier {spec['tier']}", f"-n {spec['n']}", f"--seed {spec['seed']}"]
    args.append(f"--sampler {s.get('sampler', 'lhs')}")
    notes = r.get("notes")
    if isinstance(notes, dict):
        args.append(f"--notes {notes['lo']}:{notes['hi']} --notes-per-preset {notes['per_preset']}")
    else:
        args.append("--notes " + ",".join(str(n) for n in notes or []))
    for key, opt in (("velocity", "--velocity"), ("note_duration", "--note-duration")):
        v = r.get(key)
        args.append(f"{opt} {v[0]:g}:{v[1]:g}" if isinstance(v, list) else f"{opt} {v:g}")
    args += [
        f"--render-duration {r.get('render_duration'):g}",
        f"--sample-rate {r.get('sample_rate')}",
    ]
    rules = tuple(s.get("constraints", {}).get("rules", ()))
    if not rules:
        args.append("--no-rules")
    if "key_tracking" in rules:
        args.append("--key-tracking")
    sp = spec.get("splits", {})
    if sp:
        args.append(f"--splits {sp['train']:g},{sp['validation']:g},{sp['test']:g}")
    if c.get("codec", "none") != "none":
        args.append(f"--codec {c['codec']} --level {c.get('level', 1)}")
    if c.get("audio_dtype") == "float16":
        args.append("--float16")
    if r.get("mono"):
        args.append("--mono")
    feats = spec.get("features")
    if feats:
        args.append(
            f"--features {feats['kind']} --n-mels {feats['n_mels']} --n-fft {feats['n_fft']} "
            f"--hop {feats['hop']}"
        )
    if spec.get("sources", {}).get("presets"):
        args.append("--community-dir SAME_FOLDERS")
    return f"farm submit {' '.join(args)} -o {name}.h5"
