"""`python -m gmaivl` is the `gmaivl` command."""

from gmaivl.app.cli import run

run()
