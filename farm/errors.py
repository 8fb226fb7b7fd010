"""Every error farm raises on purpose, with one line on when.

The CLI turns a :class:`FarmError` into one line on stderr and its ``exit_code``; anything
else is a bug and keeps its traceback. Foreign errors (h5py, vita, OS) are translated at
the boundary with ``raise ... from e``.
"""

from __future__ import annotations


class FarmError(Exception):
    """Root of all farm errors; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class UsageError(FarmError):
    """Bad input from the user: an unknown tier, n <= 0, a malformed option."""

    exit_code = 2


class OutputExistsError(UsageError):
    """The output path exists and ``--force`` was not given."""


class OutputPathError(UsageError):
    """The output path cannot be written (missing folder, no permission, escapes data/)."""


class RegistryError(FarmError):
    """The live vita Synth does not match what farm expects (counts, names, version)."""


class PresetError(FarmError):
    """One preset cannot be applied to the synth (unknown modulation name, bad value).

    Raised before any render, so a bad preset never reaches vita's segfaulting paths.
    """


class DatasetError(FarmError):
    """A dataset file is missing, unreadable or fails the schema check."""

    exit_code = 2
