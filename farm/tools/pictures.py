"""Pictures of a dataset for people: one row (log-magnitude spectrogram and its most
important parameters) and a one-page overview (parameter distributions, rejections,
loudness). matplotlib (the ``plots`` extra) draws them off-screen; files are written under a
temporary name and renamed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from farm.errors import UsageError
from farm.params.normalize import to_unit
from farm.paths import atomic_path
from farm.render.spectra import log_spectrogram
from farm.storage import schema
from farm.storage.reader import FarmReader

#: Optional per-parameter weights a dataset may hold (``farm compute-weights``).
IMPORTANCE = schema.IMPORTANCE_CONTINUOUS


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise UsageError("pictures need matplotlib: pip install 'farm[plots]'") from None
    matplotlib.use("Agg")  # no screen needed (SSH, CI)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def important_parameters(reader: FarmReader, row: dict[str, Any], top: int) -> list[str]:
    """The ``top`` continuous parameters that matter most in this row: the distance of the
    normalized value from Vital's default, times the dataset's importance weight when it
    holds one."""
    from farm.params.registry import get_registry

    reg = get_registry()
    names = reader.continuous_names
    defaults = np.array(
        [reg[n].default if n in reg else lo for n, lo in zip(names, reader.raw_min, strict=True)]
    )
    default_norm = to_unit(defaults, reader.raw_min, reader.raw_max)
    score = np.abs(row["continuous"].astype(np.float64) - default_norm)
    if IMPORTANCE in reader.file:
        score = score * np.asarray(reader.file[IMPORTANCE][...], dtype=np.float64)
    order = np.argsort(-score, kind="stable")[:top]
    return [reader.continuous_names[j] for j in order]


def row_picture(reader: FarmReader, index: int, path: Path, top: int = 16) -> None:
    """One row: its spectrogram (left) and its ``top`` most important parameters (right)."""
    plt = _pyplot()
    row = reader.get_sample(index)
    rate = int(reader.file.attrs["sample_rate"])
    spec = log_spectrogram(row["audio"], sample_rate=rate)
    freqs, times, db = spec.freqs, spec.times, spec.db.T
    names = important_parameters(reader, row, top)
    raw = reader.raw_values(row["index"])
    values = [float(row["continuous"][reader.continuous_names.index(n)]) for n in names]

    fig, (ax_spec, ax_par) = plt.subplots(
        1, 2, figsize=(14, 6), gridspec_kw={"width_ratios": [3, 2]}, constrained_layout=True
    )
    mesh = ax_spec.pcolormesh(times, freqs, db, shading="auto", cmap="magma", vmin=db.max() - 90)
    ax_spec.set_yscale("symlog", linthresh=200)
    ax_spec.set_ylim(20, rate / 2)
    ax_spec.set_xlabel("time (s)")
    ax_spec.set_ylabel("frequency (Hz)")
    ax_spec.set_title(
        f"row {row['index']}: {row['preset_name']} ({row['source']}), note {row['midi_note']}"
    )
    fig.colorbar(mesh, ax=ax_spec, label="dB")
    y = np.arange(len(names))[::-1]
    ax_par.barh(y, values, color="tab:blue")
    ax_par.set_yticks(y, [f"{n} = {raw[n]:.4g}" for n in names], fontsize=8)
    ax_par.set_xlim(0, 1)
    ax_par.set_xlabel("normalized value")
    ax_par.set_title("most important parameters (distance from default)")
    _save(fig, path)
    plt.close(fig)


def overview_picture(reader: FarmReader, path: Path, max_params: int = 48) -> None:
    """The dataset on one page: each continuous parameter's distribution (up to
    ``max_params`` small histograms), rejection counts by reason and a loudness histogram."""
    plt = _pyplot()
    info = reader.info()
    cont = np.asarray(reader.file["params/continuous"][...], dtype=np.float32)
    rms = np.asarray(reader.file[schema.meta("rms")][...], dtype=np.float64)
    names = reader.continuous_names[:max_params]
    cols = 8
    rows = (len(names) + cols - 1) // cols + 1
    fig = plt.figure(figsize=(2.2 * cols, 1.6 * rows + 1), constrained_layout=True)
    grid = fig.add_gridspec(rows, cols)
    for k, name in enumerate(names):
        ax = fig.add_subplot(grid[k // cols, k % cols])
        ax.hist(cont[:, k], bins=20, range=(0, 1), color="tab:blue")
        ax.set_title(name, fontsize=7)
        ax.tick_params(labelsize=6)
        ax.set_yticks([])
    ax_rej = fig.add_subplot(grid[rows - 1, : cols // 2])
    outcomes = {"accepted": info["rows"], **info["rejections"]}
    renders = max(int(info["renders"] or 0), sum(outcomes.values()))
    if renders > sum(outcomes.values()):
        # Accepted rows of the last jobs beyond n: rendered, not kept.
        outcomes["beyond n"] = renders - sum(outcomes.values())
    ax_rej.bar(list(outcomes), list(outcomes.values()), color="tab:orange")
    ax_rej.set_title(f"renders by outcome ({renders} renders)", fontsize=9)
    ax_rej.tick_params(labelsize=7)
    ax_loud = fig.add_subplot(grid[rows - 1, cols // 2 :])
    ax_loud.hist(20 * np.log10(np.maximum(rms, 1e-9)), bins=30, color="tab:green")
    ax_loud.set_title("loudness (RMS, dBFS)", fontsize=9)
    ax_loud.tick_params(labelsize=7)
    more = len(reader.continuous_names) - len(names)
    fig.suptitle(
        f"{Path(reader.path).name}: {info['rows']} rows, tier {info['tier']}, "
        f"{len(reader.continuous_names)} continuous parameters"
        + (f" (first {len(names)} shown)" if more else "")
    )
    _save(fig, path)
    plt.close(fig)
