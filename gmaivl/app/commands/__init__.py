"""One module per `gmaivl` command, each with `add_arguments(parser)` and `run(args) -> int`.

Modules here import only the standard library at import time (heavy imports go inside `run`),
so every `--help` is fast. The table of commands is `gmaivl.app.cli.COMMANDS`.
"""
