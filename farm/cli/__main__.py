"""``python -m farm.cli``."""

from farm.cli.main import main

main()
