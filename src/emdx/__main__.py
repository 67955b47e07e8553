"""Allow `python -m emdx`."""

from emdx.cli import main

main()
