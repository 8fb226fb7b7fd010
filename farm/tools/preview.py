"""``farm preview``: a terminal browser of a dataset (Textual; works over SSH).

A filterable list of rows; for the selected row its parameters (normalized, raw, and the
text Vital shows for the value), a waveform and spectrogram sketch in characters, and
playback through the sound card when one exists (``sounddevice``), else a WAV written to
the data folder whose path is shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from farm.errors import UsageError
from farm.storage import schema
from farm.storage.reader import FarmReader

SHADES = " .:-=+*#%@"


@dataclass(frozen=True)
class RowFilter:
    """What the filter box asks for: ``source=community note=60 tier=1`` and free words
    that must all appear in the preset name (case-insensitive)."""

    source: str | None = None
    note: int | None = None
    tier: int | None = None
    words: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> RowFilter:
        """Parse the filter box; an unknown ``key=`` or a bad number raises UsageError."""
        fields: dict[str, Any] = {}
        words: list[str] = []
        for token in text.split():
            key, sep, value = token.partition("=")
            if not sep:
                words.append(token.lower())
            elif key == "source":
                fields["source"] = value
            elif key in ("note", "tier"):
                try:
                    fields[key] = int(value)
                except ValueError:
                    raise UsageError(f"{key}= needs a number, not {value!r}") from None
            else:
                raise UsageError(f"unknown filter {key!r}: use source=, note=, tier= or words")
        return cls(words=tuple(words), **fields)

    def rows(self, meta: dict[str, np.ndarray]) -> np.ndarray:
        """Indices of the rows that pass."""
        keep = np.ones(len(meta["midi_note"]), dtype=bool)
        if self.source is not None:
            keep &= meta["source"] == self.source
        if self.note is not None:
            keep &= meta["midi_note"] == self.note
        if self.tier is not None:
            keep &= meta["tier"] == self.tier
        for word in self.words:
            keep &= np.char.find(np.char.lower(meta["preset_name"]), word) >= 0
        return np.flatnonzero(keep)


def read_meta(reader: FarmReader) -> dict[str, np.ndarray]:
    """The columns the list shows and filters on (strings decoded)."""
    f = reader.file
    return {
        "midi_note": f[schema.meta("midi_note")][...],
        "tier": f[schema.meta("tier")][...],
        "source": f[schema.meta("source")][...].astype(str),
        "preset_name": f[schema.meta("preset_name")][...].astype(str),
    }


def waveform_sketch(audio: np.ndarray, width: int = 60, height: int = 5) -> str:
    """The mono mix as a column chart of peak amplitude per time slice."""
    mono = np.abs(np.asarray(audio, dtype=np.float64).mean(axis=0))
    slices = np.array_split(mono, width)
    peaks = np.array([s.max() if s.size else 0.0 for s in slices])
    top = peaks.max() or 1.0
    levels = np.round(peaks / top * height).astype(int)
    lines = []
    for h in range(height, 0, -1):
        lines.append("".join("█" if lv >= h else " " for lv in levels))
    return "\n".join(lines)


def spectrogram_sketch(
    audio: np.ndarray, sample_rate: int, width: int = 60, height: int = 12
) -> str:
    """A log-magnitude spectrogram in characters (low frequencies at the bottom, log
    frequency axis, 60 dB of range)."""
    from farm.render.spectra import log_spectrogram

    spec = log_spectrogram(audio, 1024, sample_rate=sample_rate)
    freqs, db = spec.freqs, spec.db.T
    edges = np.geomspace(40.0, sample_rate / 2, height + 1)
    cols = np.array_split(np.arange(db.shape[1]), width)
    grid = np.full((height, width), -120.0)
    for r in range(height):
        band = (freqs >= edges[r]) & (freqs < edges[r + 1])
        if not band.any():
            band = np.abs(freqs - edges[r]) == np.abs(freqs - edges[r]).min()
        for c, idx in enumerate(cols):
            if idx.size:
                grid[r, c] = db[band][:, idx].max()
    top = grid.max()
    scaled = np.clip((grid - (top - 60.0)) / 60.0, 0.0, 1.0)
    chars = np.array(list(SHADES))[np.round(scaled * (len(SHADES) - 1)).astype(int)]
    return "\n".join("".join(row) for row in chars[::-1])


class DisplayText:
    """Vital's own text for a parameter value (``0.0625 secs``, ``Notch Blend``), from a
    Synth that only formats and never renders."""

    def __init__(self) -> None:
        self._synth: Any = None

    def __call__(self, name: str, raw: float | str) -> str:
        if isinstance(raw, str):
            return raw
        try:
            if self._synth is None:
                import vita

                self._synth = vita.Synth()
            self._synth.get_controls()[name].set(float(raw))
            return str(self._synth.get_control_text(name))
        except Exception:  # a control vita cannot format: the number is enough
            return f"{raw:.6g}"


def play_or_export(audio: np.ndarray, sample_rate: int, wav: Path) -> str:
    """Play through the sound card when sounddevice finds one, else write ``wav``.

    Returns:
        What happened, for the status line.
    """
    try:
        import sounddevice

        sounddevice.query_devices(kind="output")
        sounddevice.play(np.ascontiguousarray(audio.T), sample_rate)
        return "playing"
    except Exception:  # no module, no PortAudio, no device: the WAV is the fallback
        from farm.tools.rerender import write_wav

        write_wav(wav, audio, sample_rate)
        return f"no sound card: wrote {wav}"


def make_app(path: str, data_dir: str) -> Any:
    """The Textual app for ``path`` (an open reader; WAVs go to ``data_dir``).

    Raises:
        UsageError: Textual is not installed.
        DatasetError: the file is not a farm dataset.
    """
    try:
        from textual.app import App, ComposeResult
        from textual.binding import Binding
        from textual.containers import Horizontal, Vertical, VerticalScroll
        from textual.widgets import DataTable, Footer, Header, Input, Static
    except ImportError:
        raise UsageError("farm preview needs Textual: pip install 'farm[preview]'") from None

    reader = FarmReader(path)
    meta = read_meta(reader)
    rate = int(reader.file.attrs["sample_rate"])
    display = DisplayText()
    out_dir = Path(data_dir).resolve()

    class Preview(App[None]):  # type: ignore[misc]  # Textual is untyped here
        TITLE = f"farm preview {Path(path).name}"
        CSS = """
        #rows { width: 48; }
        #filter { dock: top; }
        #sketch { height: auto; }
        #status { height: 1; dock: bottom; }
        """
        BINDINGS = [  # noqa: RUF012 - Textual reads a class attribute
            Binding("slash", "focus_filter", "filter"),
            Binding("p", "play", "play"),
            Binding("e", "export", "export WAV"),
            Binding("escape", "focus_rows", "list"),
            Binding("q", "quit", "quit"),
        ]

        def __init__(self) -> None:
            super().__init__()
            self.shown = np.arange(len(reader))
            self.current: int | None = None
            self.last_message = ""

        def compose(self) -> ComposeResult:
            yield Header()
            yield Input(placeholder="filter: source=community note=60 tier=2 words", id="filter")
            with Horizontal():
                yield DataTable(id="rows", cursor_type="row")
                with Vertical():
                    yield Static(id="sketch")
                    with VerticalScroll():
                        yield Static(id="params")
            yield Static(id="status")
            yield Footer()

        def on_mount(self) -> None:
            table = self.query_one("#rows", DataTable)
            table.add_columns("row", "source", "note", "preset")
            self._fill()
            table.focus()

        def _fill(self) -> None:
            table = self.query_one("#rows", DataTable)
            table.clear()
            for i in self.shown[:5000]:  # a list longer than a screen-full is scrolled
                table.add_row(
                    str(i), meta["source"][i], str(meta["midi_note"][i]), meta["preset_name"][i]
                )
            self._say(f"{len(self.shown)} of {len(reader)} rows")
            if len(self.shown):
                self._show(int(self.shown[0]))

        def _say(self, text: str) -> None:
            self.last_message = text
            self.query_one("#status", Static).update(text)

        def _tell(self, text: str) -> None:
            # The status line can sit below the fold of a small terminal: a toast too.
            self._say(text)
            self.notify(text, timeout=4)

        def _show(self, row: int) -> None:
            self.current = row
            sample = reader.get_sample(row)
            raw = reader.raw_values(row)
            sketch = (
                f"row {row}: {sample['preset_name']} ({sample['source']}), note "
                f"{sample['midi_note']}, rms {sample['rms']:.3g}\n"
                + waveform_sketch(sample["audio"])
                + "\n"
                + spectrogram_sketch(sample["audio"], rate)
            )
            self.query_one("#sketch", Static).update(sketch)
            lines = [f"{'parameter':32} {'norm':>7}  {'raw':>10}  Vital"]
            for j, name in enumerate(reader.continuous_names):
                value = float(raw[name])
                lines.append(
                    f"{name:32} {sample['continuous'][j]:7.4f}  {value:10.4g}  "
                    f"{display(name, value)}"
                )
            for j, name in enumerate(reader.categorical_names):
                lines.append(f"{name:32} {sample['categorical'][j]:7d}  {'':10}  {raw[name]}")
            self.query_one("#params", Static).update("\n".join(lines))

        def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
            if 0 <= event.cursor_row < len(self.shown):
                self._show(int(self.shown[event.cursor_row]))

        def on_input_submitted(self, event: Input.Submitted) -> None:
            try:
                wanted = RowFilter.parse(event.value)
            except UsageError as e:
                self._say(str(e))
                return
            self.shown = wanted.rows(meta)
            self._fill()
            self.query_one("#rows", DataTable).focus()

        def action_focus_filter(self) -> None:
            self.query_one("#filter", Input).focus()

        def action_focus_rows(self) -> None:
            self.query_one("#rows", DataTable).focus()

        def _wav(self) -> Path:
            out_dir.mkdir(parents=True, exist_ok=True)
            return out_dir / f"preview_{Path(path).stem}_row{self.current}.wav"

        def action_play(self) -> None:
            if self.current is not None:
                audio = reader.get_sample(self.current)["audio"]
                self._tell(play_or_export(audio, rate, self._wav()))

        def action_export(self) -> None:
            if self.current is not None:
                from farm.tools.rerender import write_wav

                wav = self._wav()
                write_wav(wav, reader.get_sample(self.current)["audio"], rate)
                self._tell(f"wrote {wav}")

        def on_unmount(self) -> None:
            reader.close()

    return Preview()
