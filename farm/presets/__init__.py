"""Real presets: finding files (:mod:`~farm.presets.files`), reading them through vita
into records (:mod:`~farm.presets.convert`), a run's library of presets and wavetables
(:mod:`~farm.presets.library`) and putting a run's sources into it
(:mod:`~farm.presets.ingest`)."""
