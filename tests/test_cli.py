"""The `gmaivl` command line: fast help, one command pattern, one error path."""

from __future__ import annotations

import argparse
import importlib
import os
import resource
import subprocess
import sys
import time

import pytest

from gmaivl.app.cli import COMMANDS, GROUPS, UsageError, main
from gmaivl.app.commands._flags import HelpFormatter

HEAVY = ("torch", "transformers", "datasets", "trl", "triton", "pandas", "pyarrow")

# Runs the command line as the console script does (argv[0] == "gmaivl"), then reports which heavy
# libraries the process had imported.
_PROBE = """
import sys
sys.argv = ["gmaivl", *sys.argv[1:]]
try:
    from gmaivl.app.cli import run
    run()
except SystemExit:
    pass
print("HEAVY:" + ",".join(m for m in {heavy!r} if m in sys.modules))
"""


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=HEAVY), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=600,
    )


def _help_invocations() -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = [()]
    for group in GROUPS:
        out.append((group,))
    for c in COMMANDS:
        if c.group != c.name:
            out.append((c.group, c.name))
    return out


@pytest.mark.parametrize("words", _help_invocations(), ids=lambda w: " ".join(w) or "gmaivl")
def test_every_help_is_fast_and_loads_no_heavy_library(words):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = _cli(*words, "--help")
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: gmaivl"), proc.stdout
    assert proc.stdout.rstrip().endswith("HEAVY:"), proc.stdout.splitlines()[-1]  # nothing heavy imported
    assert cpu < 1.0, f"`gmaivl {' '.join(words)} --help` used {cpu:.2f} s of CPU ({wall:.2f} s wall)"


def test_help_lists_every_group_and_hides_old_flag_spellings():
    top = _cli("--help").stdout
    assert all(group in top for group in GROUPS)
    build = _cli("data", "build", "--help").stdout
    assert "--output-dir" in build and "--out " not in build and "--out," not in build


def _missing_input_calls(tmp_path) -> dict[str, list[str]]:
    """For each command, a call naming an input that does not exist (or leaving one out)."""
    missing = str(tmp_path / "missing")
    out = str(tmp_path / "out")
    return {
        "quickstart quickstart": ["quickstart", "--output-dir", out, "--bogus-flag"],
        "model demo": ["model", "demo", "--bogus-flag"],
        "model export": ["model", "export", "--format", "llava", "--model", missing, "--output-dir", out],
        "model import": ["model", "import", "--from", "enhanced-llava", missing, out],
        "model card": ["model", "card", "--model", missing],
        "data demo": ["data", "demo"],
        "data build": ["data", "build", "--spec", missing + ".yaml", "--output-dir", out],
        "data ingest": ["data", "ingest", "--spec", missing + ".yaml", "--output-dir", out],
        "data publish": ["data", "publish", "--spec", missing + ".yaml", "--output-dir", out],
        "data export-llava": ["data", "export-llava", "--corpus", missing, "--output", out + ".json"],
        "data push": ["data", "push", "--corpus", missing, "--repo-id", "org/x"],
        "data records": ["data", "records", "--corpus", missing],
        "train run": ["train", "run", "--config", missing + ".yaml"],
        "train chain": ["train", "chain", "--config", missing + ".yaml"],
        "eval run": ["eval", "run", "--model", missing, "--benchmark", missing + ".tsv"],
        "eval bench-build": ["eval", "bench-build", "--corpus", missing, "--output", out + ".tsv"],
        "eval decontam": [
            "eval",
            "decontam",
            "--benchmark",
            missing + ".tsv",
            "--corpus",
            missing,
            "--output",
            out,
        ],
        "kernels check": ["kernels", "check", "--head-dims", "x"],
        "kernels bench": ["kernels", "bench", "--dtype", "int3"],
        "kernels compile-report": ["kernels", "compile-report", "--kernels", "nope"],
    }


def test_every_command_has_a_bad_input_case(tmp_path):
    named = {f"{c.group} {c.name}" for c in COMMANDS}
    assert named == set(_missing_input_calls(tmp_path))


@pytest.mark.parametrize("command", [f"{c.group} {c.name}" for c in COMMANDS])
def test_bad_input_of_every_command_is_a_user_error(command, tmp_path):
    """`run()` prints these as one `gmaivl: error:` line with exit status 2 (next test)."""
    argv = _missing_input_calls(tmp_path)[command]
    with pytest.raises((UsageError, ValueError, FileNotFoundError)) as info:
        main(argv)
    assert "\n" not in str(info.value).strip()
    assert not (tmp_path / "out").exists()


def _command_parser(command) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"gmaivl {command.group} {command.name}", formatter_class=HelpFormatter
    )
    importlib.import_module(command.module).add_arguments(parser)
    return parser


def test_every_option_of_every_command_has_help():
    """`--help` explains every option (`gmaivl train` passes TRL's own keys through undeclared)."""
    checked, missing = 0, []
    for command in COMMANDS:
        parser = _command_parser(command)
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            checked += 1
            if not (action.help or "").strip():
                missing.append(
                    f"{command.group} {command.name} {'/'.join(action.option_strings) or action.dest}"
                )
        parser.format_help()  # every %(default)s in a help text expands
    assert checked >= 120 and not missing, f"options without help: {missing}"


# (the option the error names, a call giving it an impossible value); {tmp} is the test's folder.
_BENCH = "eval bench-build --corpus {tmp}/corpus --output {tmp}/out.tsv"
_SERVED = "eval run --endpoint http://localhost:1/v1 --served-model m --benchmark {tmp}/b.tsv"
_BUILD = "data build --spec {tmp}/spec.yaml --output-dir {tmp}/out"
IMPOSSIBLE_VALUES = [
    ("--cases-per-answer", f"{_BENCH} --cases-per-answer -1"),
    ("--cases-per-answer", f"{_BENCH} --cases-per-answer 0"),
    ("--seed", f"{_BENCH} --seed -1"),
    ("--seed", "quickstart --output-dir {tmp}/out --seed -5"),
    ("--threads", "quickstart --output-dir {tmp}/out --threads -1"),
    ("--max-new-tokens", "model demo --output-dir {tmp}/out --max-new-tokens 0"),
    ("--scale", "data demo --output-dir {tmp}/out --scale 0"),
    ("--workers", f"{_BUILD} --workers 0"),
    ("--tasks", "data ingest --spec {tmp}/spec.yaml --output-dir {tmp}/out --tasks 0"),
    ("--local-rank-offset", f"{_BUILD} --local-rank-offset -1"),
    ("--request-timeout", f"{_SERVED} --request-timeout 0"),
    ("--request-timeout", f"{_SERVED} --request-timeout -3.5"),
    ("--request-timeout", f"{_SERVED} --request-timeout nan"),
    ("--concurrency", f"{_SERVED} --concurrency 0"),
    ("--max-retries", f"{_SERVED} --max-retries -1"),
    ("--batch-size", f"{_SERVED} --batch-size eight"),
    ("--limit", f"{_SERVED} --limit 0"),
    (
        "--max-distance",
        "eval decontam --benchmark {tmp}/b.tsv --corpus {tmp}/c --output {tmp}/o.json --max-distance -1",
    ),
    ("--head-dims", "kernels check --head-dims 64 -32"),
    ("--rep", "kernels bench --output {tmp}/o.json --rep 0"),
    ("--warmup", "kernels bench --output {tmp}/o.json --warmup -1"),
    ("--workloads", "kernels bench --output {tmp}/o.json --workloads mixed 0"),
    ("--total-tokens", "kernels bench --output {tmp}/o.json --total-tokens 1.5"),
    ("--jobs", "kernels compile-report --output {tmp}/o.json --jobs 0"),
    ("--max-configs", "kernels compile-report --output {tmp}/o.json --max-configs -2"),
]


@pytest.mark.parametrize(("option", "call"), IMPOSSIBLE_VALUES, ids=[c for _, c in IMPOSSIBLE_VALUES])
def test_impossible_numbers_are_a_usage_error_before_any_work(option, call, tmp_path, monkeypatch, capsys):
    """As the console script runs it: one `gmaivl: error:` line naming the option, exit status 2."""
    from gmaivl.app.cli import run

    argv = call.format(tmp=tmp_path).split()
    for command in COMMANDS:  # parsing must stop it: no command may start
        module = importlib.import_module(command.module)
        monkeypatch.setattr(module, "run", lambda args: pytest.fail(f"`gmaivl {call}` started the command"))
    monkeypatch.setattr(sys, "argv", ["gmaivl", *argv])
    with pytest.raises(SystemExit) as info:
        run()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert info.value.code == 2, err
    assert len(lines) == 1 and lines[0].startswith("gmaivl: error: "), err
    assert f"argument {option}: expects " in lines[0] and repr(argv[-1]) in lines[0], lines[0]
    assert not any(tmp_path.iterdir())


def test_valid_numbers_keep_their_meaning():
    from gmaivl.app.cli import build_parser

    def parse(*argv: str) -> argparse.Namespace:
        parser, _ = build_parser(list(argv))
        args, extras = parser.parse_known_args(list(argv))
        assert not extras
        return args

    served = ["eval", "run", "--endpoint", "u", "--served-model", "m", "--benchmark", "b.tsv"]
    args = parse(*served, "--max-retries", "0", "--request-timeout", "2.5", "--limit", "3")
    assert (args.max_retries, args.request_timeout, args.limit, args.concurrency) == (0, 2.5, 3, 8)
    args = parse("data", "ingest", "--spec", "s", "--output-dir", "o", "--tasks", "4", "--local-tasks", "2")
    assert (args.tasks, args.local_tasks, args.local_rank_offset, args.workers) == (4, 2, 0, 1)
    args = parse(
        "eval", "decontam", "--benchmark", "b", "--corpus", "c", "--output", "o", "--max-distance", "0"
    )
    assert args.max_distance == 0
    args = parse("kernels", "bench", "--workloads", "mixed", "2048", "--warmup", "0", "--seed", "0")
    assert (args.workloads, args.warmup, args.seed, args.head_dims) == (["mixed", "2048"], 0, 0, [64, 128])
    args = parse("eval", "bench-build", "--corpus", "c", "--output", "o.tsv")
    assert (args.cases_per_answer, args.seed) == (30, 0)


def test_user_errors_are_one_line_and_exit_2(tmp_path):
    missing = str(tmp_path / "missing.yaml")
    for argv in (["train", "--config", missing], ["data", "build", "--bogus"], ["eval", "nonsense"]):
        proc = _cli(*argv)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 0, proc.stderr  # the probe swallows SystemExit; check what it printed
        assert len(lines) == 1 and lines[0].startswith("gmaivl: error: "), proc.stderr
    run = subprocess.run(
        [sys.executable, "-m", "gmaivl", "train", "--config", missing], capture_output=True, text=True
    )
    assert run.returncode == 2 and run.stderr.strip() == run.stderr.strip().splitlines()[-1]
    assert missing in run.stderr and "Traceback" not in run.stderr


def test_traceback_on_request(tmp_path):
    env = {**os.environ, "GMAIVL_TRACEBACK": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "gmaivl", "train", "--config", str(tmp_path / "missing.yaml")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert run.returncode == 1 and "Traceback" in run.stderr


def test_old_names_still_work_for_one_release(capsys):
    with pytest.raises(UsageError, match="eval bench-build: the following arguments are required: --corpus"):
        main(["bench-build", "--output", "x.tsv"])
    assert "is now `gmaivl eval bench-build`" in capsys.readouterr().err
    # `gmaivl train --config` and `gmaivl eval --model` run the group's default command
    with pytest.raises(ValueError, match="needs --model .* or --endpoint"):
        main(["eval", "--benchmark", "x.tsv"])
    # and old flag spellings are accepted
    with pytest.raises(UsageError, match="--output"):
        main(["eval", "bench-build", "--records", "corpus"])


def test_import_gmaivl_still_registers_the_auto_classes():
    code = (
        "import gmaivl\n"
        "from transformers import AutoConfig\n"
        "from transformers.models.auto.configuration_auto import CONFIG_MAPPING\n"
        "print('gmai_vl' in CONFIG_MAPPING)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip() == "True", proc.stderr


def _documented_commands() -> list[tuple[str, list[str]]]:
    """Every `gmaivl ...` command line in the bash blocks of the README and the guides."""
    import re
    import shlex
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = []
    for doc in sorted([root / "README.md", *root.glob("*/README.md")]):
        text = doc.read_text()
        table_examples = [
            span
            for line in text.splitlines()
            if line.startswith("|")
            for span in re.findall(r"`([^`]*gmaivl [^`]*)`", line)
        ]
        for block in [*re.findall(r"```bash\n(.*?)```", text, flags=re.S), "\n".join(table_examples)]:
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
                lexer.whitespace_split = True
                words: list[str] = []
                for token in [*lexer, ";"]:
                    if token in {"&&", "||", "|", ";", "(", ")"}:
                        while words and "=" in words[0] and not words[0].startswith("-"):
                            words = words[1:]  # VAR=value prefixes
                        if words and words[0] == "gmaivl" and not any("$" in w for w in words):
                            out.append((f"{doc.relative_to(root)}: {' '.join(words)}", words[1:]))
                        words = []
                    else:
                        words.append(token)
    return out


def test_documented_commands_use_current_names_and_parse(capsys):
    from gmaivl.app.cli import _normalise, build_parser

    documented = _documented_commands()
    assert len(documented) >= 15
    for where, argv in documented:
        normal = _normalise(list(argv))
        assert "is now" not in capsys.readouterr().err, f"{where}: uses an old command name"
        parser, _ = build_parser(normal)
        args, extras = parser.parse_known_args(normal)
        assert not extras or getattr(args._module, "PASSES_EXTRA_ARGS", False), f"{where}: unknown {extras}"
        used = {a.split("=")[0] for a in argv if a.startswith("--")}
        assert not used & {"--out", "--records", "--folder", "--train", "--json"}, (
            f"{where}: old flag spelling"
        )


def test_data_builds_from_the_command_line_load_no_torch():
    """`gmaivl data build` and its worker processes (forked from it) never import torch or
    transformers: the windowing they share with the image processor is numpy only."""
    code = (
        "import sys; sys.argv = ['gmaivl']\n"
        "import gmaivl.app.commands.data_build, gmaivl.dataset_builders.build, gmaivl.dataset_builders.registry\n"
        "print(','.join(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


def test_commands_that_load_checkpoints_work_from_the_console(tiny_checkpoint, tmp_path):
    """The console command skips the auto-class registration on import; loaders register themselves."""
    out = tmp_path / "llava"
    cmd = [sys.executable, "-m", "gmaivl", "model", "export", "--format", "llava"]
    proc = subprocess.run(
        [*cmd, "--model", str(tiny_checkpoint), "--output-dir", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '"model_type": "llava"' in (out / "config.json").read_text()
