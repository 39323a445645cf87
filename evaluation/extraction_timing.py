"""Time to read adversarial replies: issue 24's shapes and others, at up to 100 000 characters.

    python -m gmaivl.evaluation.extraction_timing [--repeat 5]

Prints, for each shape, its length and the slowest of `--repeat` reads with `extract_choice` (and
`extract_yes_no`, which the closed questions and the GRPO reward use). The rules are linear in the
reply, so every shape should read in well under 0.2 s; the same shapes are in the fuzz test
(`tests/evaluation/test_extraction_fuzz.py`), which checks a generous 1 s bound only.
"""

from __future__ import annotations

import argparse
import time

from .extraction import MAX_REPLY_CHARS, extract_choice, extract_yes_no

OPTIONS = {"A": "Pneumonia", "B": "Viral pneumonia", "C": "Pleural effusion", "D": "No abnormality"}
N = MAX_REPLY_CHARS


def _fill(piece: str, n: int = N) -> str:
    return (piece * (n // len(piece) + 1))[:n]


SHAPES = {
    # issue 24's measurements (before: 15 s, 4-16 s, 6-22 s, 80 s)
    '"answer" + 250 spaces + "#"': "answer" + " " * 250 + "#",
    '"答案" + 250 spaces': "答案" + " " * 250,
    '48 KB of "( A ) "': _fill("( A ) ", 48_000),
    "100 KB of long words": _fill("pneumonoultramicroscopicsilicovolcanoconiosis" * 20 + " "),
    # the same families at 100 KB
    '"answer" + 100 KB of spaces + "#"': "answer" + " " * (N - 7) + "#",
    '"答案" + 100 KB of spaces + "#"': "答案" + " " * (N - 3) + "#",
    '100 KB of "( A ) "': _fill("( A ) "),
    '100 KB of "A "': _fill("A "),
    "100 KB of long words, each followed by a letter": _fill("x" * 2000 + " A "),
    '100 KB of "The answer is "': _fill("The answer is "),
    '100 KB of "Option A is "': _fill("Option A is "),
    '100 KB of "Not A, "': _fill("Not A, "),
    '100 KB of "选项A 是 "': _fill("选项A 是 "),
    "100 KB of mixed scripts": _fill("肺炎 Option A 是 (b) **C** 答案 "),
    '100 KB of "<think>"': _fill("<think>"),
    '100 KB of "\\boxed{"': _fill("\\boxed{"),
    '100 KB of "A. Pneumonia B. "': _fill("A. Pneumonia B. "),
    '100 KB of "A is correct. "': _fill("A is correct. "),
    "100 KB of tabs and newlines": _fill(" \t\n\u3000"),
    "300 KB reply (read as its first and last 50 000 characters)": "The answer is C. " + _fill("x ", 3 * N),
}


def measure(repeat: int = 5) -> list[tuple[str, int, float]]:
    """(shape, characters, slowest read in seconds) for every shape."""
    rows = []
    for name, reply in SHAPES.items():
        worst = 0.0
        for _ in range(repeat):
            start = time.perf_counter()
            extract_choice(reply, OPTIONS)
            extract_yes_no(reply)
            worst = max(worst, time.perf_counter() - start)
        rows.append((name, len(reply), worst))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="reads per shape; the slowest is printed")
    args = parser.parse_args(argv)
    rows = measure(args.repeat)
    print("| shape | characters | slowest read (s) |\n| --- | --- | --- |")
    for name, n, seconds in rows:
        print(f"| {name} | {n:,} | {seconds:.3f} |")
    print(f"\nslowest of all: {max(s for *_, s in rows):.3f} s")


if __name__ == "__main__":
    main()
