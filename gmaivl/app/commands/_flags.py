"""The command line's flag vocabulary, shared by every command.

Inputs are named for what they are (`--model`, `--corpus`, `--benchmark`, `--spec`,
`--config`), outputs are `--output-dir` (a folder) or `--output` (a file). Flags of earlier
releases (`--out`, `--records`, `--folder`, `--train`) are accepted as hidden aliases for one
release; `gmaivl train` passes TRL's own snake_case keys through unchanged.

Numeric options take a `type=` validator below, so an impossible value (`--seed -1`,
`--request-timeout 0`, `--workers x`) is argparse's one-line usage error before any work starts.
"""

from __future__ import annotations

import argparse
import copy
import math
from collections.abc import Callable
from typing import Any


def flag(parser: argparse.ArgumentParser | Any, name: str, *old: str, **kwargs: Any) -> argparse.Action:
    """Add `name`, also accepting the hidden old spellings `old` (left out of `--help`)."""
    action = parser.add_argument(name, *old, **kwargs)
    action.hidden_option_strings = set(old)
    return action


def _number(text: str, kind: type, ok: Callable[[Any], bool], expects: str) -> Any:
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or (kind is float and not math.isfinite(value)) or not ok(value):
        raise argparse.ArgumentTypeError(f"expects {expects}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1: counts, sizes, workers, lengths."""
    return _number(text, int, lambda v: v >= 1, "an integer >= 1")


def non_negative_int(text: str) -> int:
    """An integer >= 0: seeds, indices, retries, distances."""
    return _number(text, int, lambda v: v >= 0, "an integer >= 0")


def positive_float(text: str) -> float:
    """A finite number > 0: timeouts, durations."""
    return _number(text, float, lambda v: v > 0, "a number > 0")


def positive_int_or(*words: str) -> Callable[[str], str]:
    """One of `words` or an integer >= 1, returned as the text given (e.g. 'mixed' or '2048')."""

    def check(text: str) -> str:
        if text not in words:
            expects = f"{' or '.join(map(repr, words))} or an integer >= 1"
            _number(text, int, lambda v: v >= 1, expects)
        return text

    check.__name__ = f"positive_int_or_{'_'.join(words)}"
    return check


class HelpFormatter(argparse.HelpFormatter):
    """Lists each option under its current name only."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        hidden = getattr(action, "hidden_option_strings", ())
        if hidden:
            shown = copy.copy(action)
            shown.option_strings = [s for s in action.option_strings if s not in hidden]
            return super()._format_action_invocation(shown)
        return super()._format_action_invocation(action)


def output_dir(parser: argparse.ArgumentParser, help: str, **kwargs: Any) -> argparse.Action:
    return flag(parser, "--output-dir", "--out", dest="output_dir", metavar="DIR", help=help, **kwargs)


def source_and_destination(parser: argparse.ArgumentParser) -> None:
    """A checkpoint to read and a folder to write, as flags or as `SRC DST` positionals."""
    parser.add_argument("--model", help="checkpoint folder to read")
    output_dir(parser, "folder to write (must not exist or be empty)")
    parser.add_argument("src", nargs="?", help="checkpoint folder to read (same as --model)")
    parser.add_argument("dst", nargs="?", help="folder to write (same as --output-dir)")


def resolve_source_and_destination(args: argparse.Namespace, command: str) -> tuple[str, str]:
    src, dst = args.model or args.src, args.output_dir or args.dst
    if not src or not dst:
        raise ValueError(
            f"{command}: give the checkpoint (--model SRC) and the folder to write (--output-dir DST)"
        )
    return src, dst


def output_file(parser: argparse.ArgumentParser, help: str, **kwargs: Any) -> argparse.Action:
    return flag(parser, "--output", "--out", dest="output", metavar="FILE", help=help, **kwargs)


def quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def add_dry_run(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check the recipe; print parameters per part, data mixture, steps, global batch, memory per GPU",
    )
    p.add_argument(
        "--accelerate-config",
        help="with --dry-run: the accelerate config of the run (a path or a shipped one, e.g. deepspeed_zero3.yaml)",
    )
