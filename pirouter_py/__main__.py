"""`python -m pirouter_py` runs the same command line as `pirouter`."""

from pirouter_py.cli import main

main()
