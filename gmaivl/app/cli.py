"""The `gmaivl` command line: `gmaivl GROUP COMMAND [options]`.

Every command is one module in `gmaivl.app.commands` exposing `add_arguments(parser)` and
`run(args) -> int`; the table `COMMANDS` below names them. Only the module of the command being
run (or asked for `--help`) is imported, and command modules import torch, transformers or
datasets inside `run`, so `gmaivl --help` and every `--help` answer without loading them.

One error path: a user error (bad flag, missing file, wrong value) is one line
`gmaivl: error: ...` on stderr and exit status 2; `GMAIVL_TRACEBACK=1` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from dataclasses import dataclass

from gmaivl.app.commands._flags import HelpFormatter


@dataclass(frozen=True)
class Command:
    group: str
    name: str
    help: str
    aliases: tuple[str, ...] = ()  # old flat names, kept for one release

    @property
    def module(self) -> str:
        stem = self.name if self.group == self.name else f"{self.group}_{self.name}"
        return f"gmaivl.app.commands.{stem.replace('-', '_')}"


GROUPS: dict[str, str] = {
    "quickstart": "data -> stages I-III + GRPO -> held-out evaluation of a small GMAI-VL, on a CPU",
    "model": "build, export and describe GMAI-VL checkpoints",
    "data": "build the GMAI-VL-5.5M-style corpus from annotated medical datasets",
    "train": "train recipe stages (SFT, GRPO) and chains of them with TRL",
    "eval": "evaluate on medical benchmarks, build benchmarks, check contamination",
    "kernels": "check, benchmark and compile-check the Triton packed-attention kernels",
}

COMMANDS: tuple[Command, ...] = (
    Command("quickstart", "quickstart", GROUPS["quickstart"]),
    Command(
        "model", "demo", "ask a small random GMAI-VL about a real CT slice, save and reload it", ("demo",)
    ),
    Command("model", "export", "convert between GMAI-VL and native LLaVA checkpoint folders"),
    Command("model", "import", "the official GMAI-VL release or an original-LLaVA checkpoint as GMAI-VL"),
    Command("model", "card", "write the model card (README.md) of a checkpoint folder", ("card",)),
    Command("data", "demo", "write demo sources (real files shipped in pydicom/nibabel/scikit-image) + spec"),
    Command("data", "build", "all stages: ingest + generate, QC, Parquet, card"),
    Command("data", "ingest", "read sources and generate rows into resumable work units"),
    Command("data", "publish", "QC + judge over all work units, write Parquet configs, report and card"),
    Command("data", "export-llava", "write one config as LLaVA-style JSON + image files"),
    Command("data", "push", "upload a built corpus folder to a Hub dataset repo"),
    Command("data", "records", "summarise the standardised records of a built corpus"),
    Command("train", "run", "train one recipe stage (SFT or GRPO); TRL keys pass through as --key value"),
    Command("train", "chain", "run a chain of stages (I -> II -> III -> GRPO), resuming", ("train-chain",)),
    Command("eval", "run", "evaluate a model or a served endpoint on a benchmark (resumable)"),
    Command("eval", "bench-build", "build a GMAI-MMBench-style TSV from a built corpus", ("bench-build",)),
    Command("eval", "decontam", "find benchmark images that occur in a training corpus", ("decontam",)),
    Command("kernels", "check", "accuracy of the kernels against PyTorch on this device"),
    Command("kernels", "bench", "TFLOP/s against padded sdpa, flex_attention and FlashAttention"),
    Command("kernels", "compile-report", "compile every autotune tile for an NVIDIA arch, no GPU needed"),
)

# `gmaivl train --config X` and `gmaivl eval --model X` keep working: a group followed by an
# option runs its default command.
DEFAULT_COMMAND: dict[str, str] = {"train": "run", "eval": "run"}


class UsageError(Exception):
    """A command line that cannot be parsed."""


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:  # no prefix matching: `--acc` is not `--accelerate-config`
        super().__init__(*args, **{"allow_abbrev": False, **kwargs})

    def error(self, message: str) -> None:  # one line, not usage + message
        for action in self._actions:  # name options by their current spelling only
            for old in getattr(action, "hidden_option_strings", ()):
                message = message.replace(f"/{old}", "")
        raise UsageError(f"{self.prog.removeprefix('gmaivl ')}: {message} (see `{self.prog} --help`)")


def _find(group: str, name: str) -> Command | None:
    return next((c for c in COMMANDS if c.group == group and c.name == name), None)


def _normalise(argv: list[str]) -> list[str]:
    """Old flat names and default commands to `GROUP COMMAND ...`."""
    if not argv:
        return argv
    head = argv[0]
    for command in COMMANDS:
        if head in command.aliases:
            print(
                f"gmaivl: note: `gmaivl {head}` is now `gmaivl {command.group} {command.name}`; "
                "the old name goes away in the next release",
                file=sys.stderr,
            )
            return [command.group, command.name, *argv[1:]]
    if head in DEFAULT_COMMAND and (
        len(argv) == 1 or (argv[1].startswith("-") and argv[1] not in ("-h", "--help"))
    ):
        return [head, DEFAULT_COMMAND[head], *argv[1:]]
    return argv


def build_parser(argv: list[str]) -> tuple[argparse.ArgumentParser, Command | None]:
    """The parser tree, with the arguments of the one command named in `argv` only."""
    positional = [a for a in argv if not a.startswith("-")][:2]
    selected = None
    if positional and positional[0] in GROUPS:
        group = positional[0]
        selected = _find(group, group) or (_find(group, positional[1]) if len(positional) > 1 else None)

    parser = _Parser(
        prog="gmaivl", description="GMAI-VL medical vision-language toolkit.", formatter_class=HelpFormatter
    )
    groups = parser.add_subparsers(dest="group", required=True, metavar="GROUP")
    for group, help_text in GROUPS.items():
        group_parser = groups.add_parser(
            group, help=help_text, description=help_text, formatter_class=HelpFormatter
        )
        single = _find(group, group)
        if single is not None:
            if single is selected:
                _attach(group_parser, single)
            continue
        commands = group_parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
        for command in (c for c in COMMANDS if c.group == group):
            command_parser = commands.add_parser(
                command.name, help=command.help, description=command.help, formatter_class=HelpFormatter
            )
            if command is selected:
                _attach(command_parser, command)
    return parser, selected


def _attach(parser: argparse.ArgumentParser, command: Command) -> None:
    module = importlib.import_module(command.module)
    module.add_arguments(parser)
    parser.set_defaults(_module=module)


def main(argv: list[str] | None = None) -> int:
    argv = _normalise(list(sys.argv[1:] if argv is None else argv))
    parser, _command = build_parser(argv)
    args, extras = parser.parse_known_args(argv)
    module = args._module
    if extras:
        if not getattr(module, "PASSES_EXTRA_ARGS", False):
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        args.extra_args = [e for e in extras if e != "--"]
    return int(module.run(args) or 0)


def run() -> None:
    """Console entry point: user errors are one line on stderr and exit status 2."""
    try:
        sys.exit(main())
    except (UsageError, ValueError, FileNotFoundError, NotADirectoryError) as err:
        if os.environ.get("GMAIVL_TRACEBACK"):
            raise
        print(f"gmaivl: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    run()
