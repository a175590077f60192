"""`python -m pyrite` runs the CLI."""

from pyrite.cli import main

main()
