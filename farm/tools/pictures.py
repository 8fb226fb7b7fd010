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
    holds one; parameters the row's active mask says cannot be heard come last."""
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
    active = np.ones(len(names), dtype=bool)
    if schema.ACTIVE_CONTINUOUS in reader.file:
        active = np.asarray(reader.file[schema.ACTIVE_CONTINUOUS][row["index"]], dtype=bool)
    order = np.lexsort((-score, ~active))[:top]  # heard first, then by score
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
        f"row {row['index']}: {str(row['preset_name'])[:40]} ({row['source']})\n"
        f"note {row['midi_note']}",
        fontsize=10,
    )
    fig.colorbar(mesh, ax=ax_spec, label="dB")
    y = np.arange(len(names))[::-1]
    defaults = _default_positions(reader, names)
    ax_par.barh(y, values, color="tab:blue", label="this row")
    ax_par.scatter(defaults, y, marker="|", s=200, color="black", label="Vital's default")
    ax_par.set_yticks(y, [f"{n} = {raw[n]:.4g}" for n in names], fontsize=8)
    ax_par.set_xlim(0, 1)
    ax_par.set_xlabel("normalized value (raw value in the label)")
    ax_par.set_title("farthest from Vital's default\n(times importance, when weighed)", fontsize=10)
    ax_par.legend(fontsize=7, loc="lower right")
    _save(fig, path)
    plt.close(fig)


def shown_columns(reader: FarmReader, limit: int, *, categorical: bool = False) -> list[int]:
    """The label columns worth a picture, best first: those that can change the sound in
    the most rows (the active-parameter mask), times their importance weight when the file
    has one; a column no row can hear is never shown. Files without a mask keep column
    order."""
    f = reader.file
    names = reader.categorical_names if categorical else reader.continuous_names
    mask = schema.ACTIVE_CATEGORICAL if categorical else schema.ACTIVE_CONTINUOUS
    weights = schema.IMPORTANCE_CATEGORICAL if categorical else schema.IMPORTANCE_CONTINUOUS
    score = np.ones(len(names))
    if mask in f and f[mask].shape[0]:
        score = np.asarray(f[mask][...], dtype=np.float64).mean(axis=0)
    if weights in f:
        score = score * np.asarray(f[weights][...], dtype=np.float64)
    order = np.argsort(-score, kind="stable")
    return [int(j) for j in order if score[j] > 0][:limit]


def overview_picture(reader: FarmReader, path: Path, max_params: int = 40) -> None:
    """The dataset on one page: the distributions of the continuous parameters heard in the
    most rows (up to ``max_params`` histograms, :func:`shown_columns`), of 8 categorical
    ones (option counts), rejection counts by reason and a loudness histogram."""
    plt = _pyplot()
    info = reader.info()
    cont = np.asarray(reader.file[schema.CONTINUOUS][...], dtype=np.float32)
    cat = np.asarray(reader.file[schema.CATEGORICAL][...], dtype=np.int64)
    rms = np.asarray(reader.file[schema.meta("rms")][...], dtype=np.float64)
    shown = shown_columns(reader, max_params)
    shown_cat = shown_columns(reader, 8, categorical=True)
    cols = 8
    rows = (len(shown) + cols - 1) // cols + (1 if shown_cat else 0) + 1
    fig = plt.figure(figsize=(2.2 * cols, 1.7 * rows + 1), constrained_layout=True)
    grid = fig.add_gridspec(rows, cols)
    for k, j in enumerate(shown):
        ax = fig.add_subplot(grid[k // cols, k % cols])
        ax.hist(cont[:, j], bins=20, range=(0, 1), color="tab:blue")
        ax.set_title(reader.continuous_names[j], fontsize=7)
        ax.tick_params(labelsize=6)
        ax.set_yticks([])
    first_cat_row = (len(shown) + cols - 1) // cols
    for k, j in enumerate(shown_cat):
        name = reader.categorical_names[j]
        labels = [str(o)[:8] for o in reader.options[name]]
        counts = np.bincount(cat[:, j], minlength=len(labels))[: len(labels)]
        ax = fig.add_subplot(grid[first_cat_row, k])
        ax.bar(range(len(labels)), counts, color="tab:purple")
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=5)
        ax.set_title(name, fontsize=7)
        ax.tick_params(axis="y", labelsize=6)
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
    fig.suptitle(
        f"{Path(reader.path).name}: {info['rows']} rows, tier {info['tier']}; the "
        f"{len(shown)} of {len(reader.continuous_names)} continuous and {len(shown_cat)} of "
        f"{len(reader.categorical_names)} categorical parameters heard in the most rows"
    )
    _save(fig, path)
    plt.close(fig)


def _default_positions(reader: FarmReader, names: list[str]) -> list[float]:
    """Where Vital's default of each named continuous parameter sits, normalized."""
    from farm.params.registry import get_registry

    reg = get_registry()
    cols = [reader.continuous_names.index(n) for n in names]
    lo, hi = reader.raw_min[cols], reader.raw_max[cols]
    raw = np.array([reg[n].default if n in reg else lo[k] for k, n in enumerate(names)])
    return [float(v) for v in to_unit(raw, lo, hi)]
