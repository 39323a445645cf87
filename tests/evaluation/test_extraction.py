"""Answer extraction on hand-written replies."""

import pytest

from gmaivl.evaluation.extraction import OpenAIJudge, extract_choice, extract_yes_no

OPTIONS = {"A": "Pneumonia", "B": "Viral pneumonia", "C": "Pleural effusion", "D": "No abnormality"}


@pytest.mark.parametrize(
    ("reply", "letters", "method"),
    [
        ("B", ("B",), "letter-only"),
        ("(C)", ("C",), "letter-only"),
        ("D. No abnormality", ("D",), "letter-only"),
        ("The answer is (B).", ("B",), "statement"),
        ("Answer: C", ("C",), "letter-only"),
        ("I think the most likely answer would be D, given the clear lung fields.", ("D",), "statement"),
        # letters in prose: an article "A" is not option A, and "B-mode" is not option B
        ("A dense opacity fills the lower lobe on this B-mode view, so I go with C", ("C",), "statement"),
        ("Looking at the effusion, C.", ("C",), "mention"),
        # an explanation naming another option does not override the stated answer
        ("A is correct; D is a common distractor.", ("A",), "verdict"),
        ("Option A: incorrect. Option B: incorrect. Option C: correct.", ("C",), "verdict"),
        ("Vitamin D deficiency is unrelated; this is pleural effusion.", ("C",), "option-text"),
        ("答案是C", ("C",), "statement"),
        ("选D，因为肺野清晰。", ("D",), "statement"),
        ("<think>Maybe A.</think><answer>B</answer>", ("B",), "answer-tag"),
        ("Both fit, but \\boxed{C}", ("C",), "boxed"),
        ("**C**. Unlike A, the fluid layers.", ("C",), "bold"),
        # option text only
        ("There is a pleural effusion on the left.", ("C",), "option-text"),
        # "viral pneumonia" also contains "pneumonia": the longer option wins
        ("The image is consistent with viral pneumonia.", ("B",), "option-text"),
        # two letters for a single-answer question: ambiguous, unanswerable (the judge's case)
        ("It could be A or B.", (), "ambiguous"),
        ("B, D", (), "ambiguous"),
        ("The lesion is bright on T2-weighted (B), not FLAIR (C).", (), "ambiguous"),
        # nothing to extract
        ("I cannot tell from this image.", (), "none"),
        ("", (), "none"),
    ],
)
def test_single_answer_rules(reply, letters, method):
    got = extract_choice(reply, OPTIONS)
    assert got.letters == letters
    assert got.method == method
    assert got.answered == bool(letters)


@pytest.mark.parametrize(
    ("reply", "letters"),
    [
        ("(b) viral pneumonia", ("B",)),
        ("c. Pleural effusion", ("C",)),
        ("Option (d)", ("D",)),
        ("The answer is b.", ("B",)),
        ("Answer: c", ("C",)),
        ("a", ("A",)),
        # lower-case letters that are words stay words
        ("The answer is a small effusion, maybe.", ()),
        ("a lesion is seen", ()),
        ("e.g. nothing definite", ()),
    ],
)
def test_lower_case_letters_count_only_where_they_cannot_be_words(reply, letters):
    assert extract_choice(reply, OPTIONS | {"E": "Atelectasis"}).letters == letters


def test_multi_answer_questions_keep_all_letters():
    assert extract_choice("A and C", OPTIONS, multi=True).letters == ("A", "C")
    assert extract_choice("The correct answers are B, D.", OPTIONS, multi=True).letters == ("B", "D")
    assert extract_choice("none of them", OPTIONS, multi=True).letters == ()


def test_last_answer_statement_wins():
    reply = "At first the answer is A, but looking again the answer is D."
    assert extract_choice(reply, OPTIONS).letters == ("D",)


def test_an_option_mentioned_after_the_answer_is_not_the_answer():
    # "Option A" without a verb is a mention, not a statement of the answer
    for reply in ("The answer is C. Option A is a distractor.", "I pick C. Option A would be wrong."):
        assert extract_choice(reply, OPTIONS).letters == ("C",)
    assert extract_choice("The correct option is C", OPTIONS).letters == ("C",)
    assert extract_choice("Option: C", OPTIONS).letters == ("C",)


def test_ambiguous_last_statement_does_not_fall_back_to_an_earlier_one():
    got = extract_choice("The answer is B. No wait, the answer is A or C.", OPTIONS)
    assert got.letters == () and got.method == "ambiguous"


def test_ambiguous_replies_go_to_the_judge():
    calls = []

    def judge(question, options, reply):
        calls.append(reply)
        return "B"

    got = extract_choice("The lesion is bright on T2-weighted (B), not FLAIR (C).", OPTIONS, judge=judge)
    assert got.letters == ("B",) and got.method == "judge" and len(calls) == 1


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("<answer>yes</answer>", "yes"),
        ("<think>no fracture line</think><answer>Yes.</answer>", "yes"),
        ("\\boxed{no}", "no"),
        ("是的，可以看到肝脏。", "yes"),
        ("否", "no"),
        ("不是", "no"),
    ],
)
def test_yes_no_reads_the_answer_span_and_chinese(reply, expected):
    assert extract_yes_no(reply) == expected


def test_answer_span_strips_tags_for_every_type():
    from gmaivl.evaluation.extraction import answer_span, strip_reply

    assert strip_reply("<answer>liver</answer>") == "liver"
    assert strip_reply("<think>the organ on the left</think>liver") == "liver"
    assert answer_span("so \\boxed{\\text{left kidney}}") == ("left kidney", "boxed")
    assert answer_span("<answer>") == ("", None)
    # reasoning cut off by the token budget has not answered yet
    assert extract_choice("<think>Maybe it is C because the fluid", OPTIONS).method == "none"


def test_letters_outside_the_options_are_ignored():
    assert extract_choice("E", OPTIONS).letters == ()


def test_judge_only_runs_after_rules_fail():
    calls = []

    def judge(question, options, reply):
        calls.append(reply)
        return "C"

    assert extract_choice("The answer is (B).", OPTIONS, judge=judge).letters == ("B",)
    assert calls == []
    got = extract_choice("the fluid collection between the pleural layers", OPTIONS, judge=judge)
    assert got.letters == ("C",) and got.method == "judge"
    assert calls == ["the fluid collection between the pleural layers"]


def test_openai_judge_speaks_the_chat_completions_protocol():
    import httpx

    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        import json

        seen["url"] = str(request.url)
        seen["body"] = json.loads(request.content)
        seen["auth"] = request.headers.get("authorization")
        return httpx.Response(200, json={"choices": [{"message": {"content": "Reasoning...\nB"}}]})

    client = httpx.Client(transport=httpx.MockTransport(handler), headers={"Authorization": "Bearer k"})
    judge = OpenAIJudge("http://judge.local/v1", "judge-model", client=client)
    got = extract_choice("something vague", OPTIONS, question="What is seen?", judge=judge)
    assert got.letters == ("B",) and got.method == "judge"
    assert seen["url"] == "http://judge.local/v1/chat/completions"
    assert seen["body"]["model"] == "judge-model" and seen["body"]["temperature"] == 0
    assert "Viral pneumonia" in seen["body"]["messages"][0]["content"]
    assert seen["auth"] == "Bearer k"


def test_judge_none_verdict_is_unanswerable():
    import httpx

    client = httpx.Client(
        transport=httpx.MockTransport(
            lambda r: httpx.Response(200, json={"choices": [{"message": {"content": "NONE"}}]})
        )
    )
    judge = OpenAIJudge("http://judge.local/v1", "m", client=client)
    assert extract_choice("hmm", OPTIONS, judge=judge).method == "none"


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Yes.", "yes"),
        ("no", "no"),
        ("There is no fracture, so no.", "no"),
        ("Possibly yes, possibly no.", None),
        ("Yes, there is no fracture.", "yes"),
        ("Maybe", None),
    ],
)
def test_yes_no(reply, expected):
    assert extract_yes_no(reply) == expected


EMPHYSEMA = {"A": "Pneumonia", "B": "Edema", "C": "Fibrosis", "D": "Emphysema"}
ZH = {"A": "肺炎", "B": "病毒性肺炎", "C": "胸腔积液", "D": "气胸"}


@pytest.mark.parametrize(
    ("reply", "options", "letters", "method"),
    [
        # issue 24: the reading errors it measured
        ("Options: A. Pneumonia B. Viral pneumonia C. Pleural effusion D. No abnormality", OPTIONS, (), "none"),
        ("Both B and C are possible.", OPTIONS, (), "ambiguous"),
        ("该图像显示胸腔积液。", ZH, ("C",), "option-text"),
        ("Option A is incorrect.", OPTIONS, (), "none"),
        ("The answer is B. No wait, it's D.", OPTIONS, ("D",), "statement"),
        ("D. Emphysema. Unlike B (Edema), the lungs are hyperinflated.", EMPHYSEMA, ("D",), "leading-answer"),
        ("Not B, it's D.", OPTIONS, ("D",), "statement"),
        ("我认为是D选项", ZH, ("D",), "statement"),
        ("i think it's b", OPTIONS, ("B",), "statement"),
        ("选项C", ZH, ("C",), "mention"),
        # more of the same kinds
        ("Question: What is seen?\nOptions: A. Pneumonia B. Viral pneumonia C. Pleural effusion "
         "D. No abnormality\nAnswer: C", OPTIONS, ("C",), "letter-only"),
        ("A. Pneumonia\nB. Viral pneumonia\nC. Pleural effusion\nD. No abnormality\n\nThe answer is B.",
         OPTIONS, ("B",), "statement"),
        ("The answer is B. No, on second thought D is correct.", OPTIONS, ("D",), "verdict"),
        ("I don't think it's B.", OPTIONS, (), "none"),
        ("B is wrong.", OPTIONS, (), "none"),
        ("It is not pneumonia.", OPTIONS, (), "none"),
        ("There is no pleural effusion; the lungs are clear. No abnormality.", OPTIONS, ("D",), "option-text"),
        ("Either A or C; the image is inconclusive.", OPTIONS, (), "ambiguous"),
        ("B and C are correct.", OPTIONS, (), "ambiguous"),
        ("Option C (Pleural effusion) is correct, while option A (Pneumonia) is incorrect.", OPTIONS,
         ("C",), "verdict"),
        ("该图像显示病毒性肺炎。", ZH, ("B",), "option-text"),
        ("不是A，是C", ZH, ("C",), "statement"),
        ("答案是A。不对，应该是C。", ZH, ("C",), "statement"),
        ("排除D，答案C", ZH, ("C",), "statement"),
        ("D不正确。", ZH, (), "none"),
        ("B和C都有可能。", ZH, (), "ambiguous"),
        ("未见胸腔积液，考虑肺炎。", ZH, ("A",), "option-text"),
        ("B超显示胸腔积液。", ZH, ("C",), "option-text"),
        ("选项：A. 肺炎 B. 病毒性肺炎 C. 胸腔积液 D. 气胸", ZH, (), "none"),
    ],
)  # fmt: skip
def test_issue_24_reading(reply, options, letters, method):
    got = extract_choice(reply, options)
    assert (got.letters, got.method) == (letters, method), got


def test_a_reply_over_the_size_cap_is_read_with_a_note():
    from gmaivl.evaluation.extraction import MAX_REPLY_CHARS

    reply = "The answer is C. " + "x " * MAX_REPLY_CHARS
    got = extract_choice(reply, OPTIONS)
    assert got.letters == ("C",) and "characters" in got.note and got.evidence.startswith("[reply of")
    tail = "<think>" + "hmm " * MAX_REPLY_CHARS + "</think><answer>B</answer>"
    assert extract_choice(tail, OPTIONS).letters == ("B",)
    assert extract_choice("B", OPTIONS).note == ""
