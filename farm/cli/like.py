"""``--like FILE``: make the dataset FILE was made from again, its stored spec changed by
every option given on the command line."""

from __future__ import annotations

from typing import Any

from farm.errors import UsageError

#: Which run-spec fields each spec option sets (for ``--like``: a given option changes
#: these, everything else comes from the liked file).
_FIELDS: dict[str, tuple[str, ...]] = {
    "tier": ("tier",),
    "n": ("n",),
    "seed": ("seed",),
    "batch_size": ("batch_size",),
    "notes": ("render.notes",),
    "notes_per_preset": ("render.notes",),
    "velocity": ("render.velocity",),
    "note_duration": ("render.note_duration",),
    "render_duration": ("render.render_duration",),
    "sample_rate": ("render.sample_rate",),
    "mono": ("render.mono",),
    "features": ("features",),
    "n_mels": ("features",),
    "n_fft": ("features",),
    "hop": ("features",),
    "sampler": ("sampling.sampler",),
    "no_rules": ("sampling.constraints",),
    "key_tracking": ("sampling.constraints",),
    "splits": ("splits",),
    "codec": ("compression.codec",),
    "level": ("compression.level",),
    "no_shuffle": ("compression.shuffle",),
    "float16": ("compression.audio_dtype",),
}


def liked_spec(file: str) -> Any:
    """The run spec a dataset was made from (its stored ``run_spec``)."""
    from farm.config import RunSpec
    from farm.errors import DatasetError
    from farm.storage.reader import FarmReader

    try:
        with FarmReader(file) as r:
            text = str(r.file.attrs["run_spec"])
    except DatasetError as e:
        raise UsageError(f"--like {file}: {e}") from None
    return RunSpec.from_json(text)


def like_with(like: Any, spec: Any, kw: dict[str, Any]) -> Any:
    """``like`` with the fields of every option given on the command line from ``spec``."""
    from farm.config import RunSpec

    data = like.model_dump()
    new = spec.model_dump()
    for option, fields in _FIELDS.items():
        if not given_here(option):
            continue
        for field in fields:
            *path, last = field.split(".")
            here, there = data, new
            for part in path:
                here, there = here[part], there[part]
            here[last] = there[last]
    if "n" not in kw or kw["n"] is None:
        data["n"] = like.n
    return RunSpec.model_validate(data)


def given_here(option: str) -> bool:
    """True when ``option`` was given on the command line (or its environment)."""
    import click
    from click.core import ParameterSource

    source = click.get_current_context().get_parameter_source(option)
    return source not in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)
