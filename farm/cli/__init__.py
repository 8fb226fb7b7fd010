"""The ``farm`` command line: :mod:`farm.cli.main` (the group and the data commands),
:mod:`farm.cli.run` (runs on the farm), :mod:`farm.cli.presets` (real presets and
wavetables), :mod:`farm.cli.options` (what they share). The only place the environment is
read."""

from farm.cli.main import cli, main

__all__ = ["cli", "main"]
