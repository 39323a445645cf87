"""The application layer above the parts: the `gmaivl` command line (`cli`, `commands`), the model
demo and the quickstart. Nothing below imports it; `tests/test_layers.py` checks it."""
