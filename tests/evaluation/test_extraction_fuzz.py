"""Reading replies in bounded time, whatever they hold (issue 24: catastrophic backtracking).

The rules are linear in the reply; these tests feed them adversarial shapes at up to 100 000
characters and check a generous bound (1 s per reply, about 8x the slowest read measured on the
shared 2-core machine), so a loaded CI machine does not fail them while any super-linear pattern
(the old ones took 15-80 s on these shapes) does. The exact figures are measured by
`python -m gmaivl.evaluation.extraction_timing` and written in the evaluation guide.
"""

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gmaivl.evaluation.extraction import MAX_REPLY_CHARS, extract_choice, extract_yes_no, strip_reply
from gmaivl.evaluation.extraction_timing import SHAPES

OPTIONS = {"A": "Pneumonia", "B": "Viral pneumonia", "C": "Pleural effusion", "D": "No abnormality"}
ZH = {"A": "肺炎", "B": "病毒性肺炎", "C": "胸腔积液", "D": "气胸"}
BOUND_S = 1.0

# pieces the patterns treat specially: whitespace runs, statement words, letters in every form,
# negations, tags, bold, braces, Chinese, long words
PIECES = [
    " ", "  ", "\t", "\n", "\u3000", "answer", "Answer:", "answer is", "the correct option is", "Option",
    "option A", "choose", "it's", "I think", "not", "Not", "n't", "is incorrect", "is correct", "correct",
    "A", "B", "c", "(A)", "( A )", "A.", "b)", "**", "**C**", "__", "<think>", "</think>", "<answer>",
    "</answer>", "\\boxed{", "{", "}", "\\text{", "答案", "答案是", "选", "选项", "是", "不是", "正确", "不",
    "肺炎", "胸腔积液", "Pneumonia", "Viral pneumonia", "pleural effusion", "No abnormality",
    "vitamin", "type", "Both", "and", "or", ",", ".", ":", "-", "'", "\"", "(", ")", "x" * 300,
    "pneumonoultramicroscopicsilicovolcanoconiosis", "Question:", "Options: A. Pneumonia B. Viral pneumonia",
]  # fmt: skip


def _read(reply: str, options: dict[str, str]) -> float:
    start = time.perf_counter()
    got = extract_choice(reply, options)
    extract_yes_no(reply)
    strip_reply(reply)
    elapsed = time.perf_counter() - start
    assert set(got.letters) <= set(options) and got.method
    return elapsed


@pytest.mark.parametrize("name", list(SHAPES))
def test_adversarial_shapes_read_in_bounded_time(name):
    reply = SHAPES[name]
    worst = max(_read(reply, OPTIONS), _read(reply, ZH))
    assert worst < BOUND_S, f"{name}: {worst:.2f} s"


@settings(
    max_examples=40,
    deadline=None,  # timed by the test itself, against a generous bound
    derandomize=True,  # the same examples on every run: no flaky failures
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    unit=st.lists(st.sampled_from(PIECES), min_size=1, max_size=6),
    noise=st.text(max_size=20),
    size=st.sampled_from([300, 5_000, MAX_REPLY_CHARS]),
)
def test_repeated_hostile_pieces_read_in_bounded_time(unit, noise, size):
    piece = "".join(unit) + noise
    reply = (piece * (size // max(1, len(piece)) + 1))[:size]
    assert _read(reply, OPTIONS) < BOUND_S
    assert _read(reply, ZH) < BOUND_S


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.text(
        alphabet=st.sampled_from("AaBbCc (){}*.:,-'\n\t是答案选项不肺炎 answerisnotOption<>/\\"),
        max_size=3_000,
    )
)
def test_random_text_never_raises_and_names_only_options(reply):
    assert _read(reply, OPTIONS) < BOUND_S


def test_the_cap_keeps_a_megabyte_reply_bounded():
    reply = "Answer: C " + "( A ) " * 200_000
    assert len(reply) > 10 * MAX_REPLY_CHARS
    assert _read(reply, OPTIONS) < BOUND_S
    assert extract_choice(reply, OPTIONS).note
