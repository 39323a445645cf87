"""`python -m gmaivl` is the `gmaivl` command."""

from gmaivl.cli import run

run()
