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


class BrokerError(FarmError):
    """The broker (Redis) cannot be reached, refused the password, or lost the connection."""

    exit_code = 3


class RunNotFoundError(UsageError):
    """No run with the given id exists on the broker."""


class RunStateError(UsageError):
    """The run is in a state that does not allow the command (resume a finished run, ...)."""


class DiskSpaceError(UsageError):
    """The run's estimated size exceeds the free space of the data folder."""


class IntegrityError(FarmError):
    """Rows of a dataset do not match the checksums made when they were rendered."""


class DiskFullError(FarmError):
    """A disk filled up while a run wrote to it (shards, the final file, the broker's
    append-only file). Nothing half-written counts; free space and ``farm resume``."""


class RunFailedError(FarmError):
    """A run ended as failed (its reason is in the message and in ``farm status``)."""


class EnvironmentMismatchError(FarmError):
    """A worker cannot take part in a run: another vita (registry fingerprint), a codec
    it lacks, a data folder it cannot write. Not a preset's fault: the run fails."""


class RenderKilledError(FarmError):
    """A render child was killed from outside (the kernel's OOM killer, a person) every
    time it was tried: not the preset's crash, so its rows are not left out silently."""


class CollectError(FarmError):
    """The collector cannot build the final file (rows missing from the shards, ...)."""


class ShardBusyError(FarmError):
    """A shard is open in another process (HDF5's file lock); retry shortly."""


class InterruptedRun(FarmError):
    """Ctrl-C (or SIGTERM) stopped a run; its processes are stopped and it can be resumed."""

    exit_code = 130


class StoreError(FarmError):
    """An object of the content-addressed store is missing, corrupt or misnamed."""


class SourceError(UsageError):
    """A preset or wavetable source cannot be used (missing folder, no presets found,
    unreadable catalog, git failed)."""
