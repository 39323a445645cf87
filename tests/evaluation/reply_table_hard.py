"""A second table of realistic multiple-choice replies: the shapes the first table lacks.

Same entries as `reply_table.py`: (reply, options, expected letter, states_answer). It was written
from the reading errors reported in issue 24, before the rules were changed for them, and holds
what models write when they are not terse: the prompt echoed back (the options list repeated),
corrections ("The answer is B. No wait, it's D."), negations ("Option A is incorrect.", "Not B,
it's D."), hedges between two options ("Both B and C are possible"), a leading letter followed by a
discussion of other options, lower-case statements ("i think it's b"), and Chinese that names an
option's text or letter inside a sentence ("该图像显示胸腔积液。", "我认为是D选项", "选项C").

`states_answer` True: the reply commits to one option; the evaluator must read exactly it.
False with a letter: the reply names one option without a statement (reading it or leaving it
unanswerable are both acceptable). False with None: no option is chosen (negation only, two
options, an echoed prompt alone, refusals): it must be left unanswerable.
"""

from __future__ import annotations

CHEST = {"A": "Pneumonia", "B": "Viral pneumonia", "C": "Pleural effusion", "D": "No abnormality"}
MODALITY = {"A": "CT", "B": "MRI", "C": "Ultrasound", "D": "X-ray", "E": "PET"}
FUNDUS = {"A": "Glaucoma", "B": "Diabetic retinopathy", "C": "Cataract", "D": "Normal fundus"}
ZH_CHEST = {"A": "肺炎", "B": "病毒性肺炎", "C": "胸腔积液", "D": "气胸"}
ZH_EYE = {"A": "青光眼", "B": "糖尿病视网膜病变", "C": "白内障", "D": "正常眼底"}

PAIRS = {
    "CHEST": (CHEST, [("C", "A"), ("D", "B")]),
    "MODALITY": (MODALITY, [("B", "E"), ("E", "C")]),
    "FUNDUS": (FUNDUS, [("A", "D"), ("B", "C")]),
}
ZH_PAIRS = {
    "ZH_CHEST": (ZH_CHEST, [("C", "A"), ("B", "D")]),
    "ZH_EYE": (ZH_EYE, [("D", "A"), ("A", "C")]),
}

# {opts}: the options list as the prompt showed it; {q}: the question
STATED = [
    # the prompt echoed, then the answer
    "Question: {q}\nOptions: {opts}\nAnswer: {a}",
    "{opts}\n\nThe correct answer is {a}.",
    "Options: {opts}. Based on the image, the answer is {a}. {t}",
    "Question: {q}\n{lines}\nAnswer: ({a}) {t}",
    # corrections: the last explicit statement wins
    "The answer is {d}. No wait, it's {a}.",
    "Answer: {d}. Actually, on second look, the answer is {a}.",
    "Initially I thought {d}, but the correct answer is {a}.",
    "I'd say {d}... no, {dt} does not fit. Final answer: {a}",
    # negation, then a positive statement
    "Not {d}, it's {a}.",
    "Option {d} is incorrect. Option {a} is correct.",
    "It is not {d}; the answer is {a}.",
    "{d} is wrong because the key sign is absent. The answer is {a}.",
    "I don't think it's {d}. I choose {a}.",
    # a leading letter and its text, then other options discussed
    "{a}. {t}. Unlike {d} ({dt}), the appearance here is typical.",
    "{a}. {t}\n\nExplanation: {d} ({dt}) would show different features.",
    "({a}) {t} - {d} is less likely given the distribution.",
    "{a} - {t}. Option {d} would need other findings.",
    # lower case and informal
    "i think it's {al}",
    "the answer is {al}.",
    "my answer: {al}",
    "It's {a}.",
    "I think it's {a}: {t}.",
    "I believe the answer is option {a}.",
    "Final Answer: {a}",
    "**Final Answer: {a}**",
    "### Answer\n{a}",
    "Answer: {a} ({t})",
    "Correct option: {a}",
    '{{"choice": "{a}", "reason": "{t} fits the image"}}',
    "The best answer is {a}, {t}.",
    "So the answer should be {a}.",
    "Therefore, {a} is the correct answer.",
    "{a} is the correct answer; {d} is not.",
    "Option {a} ({t}) is correct, while option {d} ({dt}) is incorrect.",
    "{lines}\n\nThe answer is {a}.",
    "{t}",
    "<think>{d} ({dt}) is possible but the image favours {t}.</think>\nThe answer is {a}.",
    "<think>Option {d} is incorrect.</think><answer>{a}</answer>",
    "Neither {d} nor the others fit as well; the answer is {a}.",
    "After reviewing each option, I select {a}.",
]
UNSTATED = [
    # names one option without a statement: that option or unanswerable
    ("The image shows {t}.", "a"),
    ("The findings suggest {t}.", "a"),
    ("It might be {a}, but I am not sure.", "a"),
    # no option chosen: must stay unanswerable
    ("Both {d} and {a} are possible.", None),
    ("Both {dt} and {t} are possible here.", None),
    ("Either {a} or {d}; the image is inconclusive.", None),
    ("{a} and {d} are both plausible.", None),
    ("Option {d} is incorrect.", None),
    ("Not {d}.", None),
    ("{d} is wrong.", None),
    ("I don't think it's {d}.", None),
    ("It is not {dt}.", None),
    ("Question: {q}\nOptions: {opts}", None),
    ("{lines}", None),
    ("Options: {opts}\nI cannot determine the answer from this image.", None),
    ("I cannot choose between {a} and {d} from this image.", None),
]
ZH_STATED = [
    "该图像显示{t}。",
    "图像提示{t}，故选{a}。",
    "我认为是{a}选项",
    "选项{a}",
    "答案应该是{a}",
    "{a}选项正确",
    "不是{d}，是{a}",
    "排除{d}，答案{a}",
    "答案是{d}。不对，应该是{a}。",
    "{a}. {t}。{d}的表现不同。",
    "根据影像表现，考虑为{t}，答案：{a}",
    "正确答案是{a}（{t}）",
    "选{a}",
    "本题选{a}。",
    "最可能的诊断是{t}。",
    "{d}错误，{a}正确。",
    "问题：{q}\n选项：{opts}\n答案：{a}",
    "<think>{d}不符合。</think><answer>{a}</answer>",
]
ZH_UNSTATED = [
    ("{d}和{a}都有可能。", None),
    ("{d}不正确。", None),
    ("不是{d}。", None),
    ("无法判断。", None),
    ("选项：{opts}", None),
]
SPECIAL = [
    ("D. Emphysema. Unlike B (Edema), the lungs are hyperinflated.",
     {"A": "Pneumonia", "B": "Edema", "C": "Fibrosis", "D": "Emphysema"}, "D", True),
    ("Both B and C are possible.", CHEST, None, False),
    ("该图像显示胸腔积液。", ZH_CHEST, "C", True),
    ("Option A is incorrect.", CHEST, None, False),
    ("The answer is B. No wait, it's D.", CHEST, "D", True),
    ("Not B, it's D.", CHEST, "D", True),
    ("我认为是D选项", ZH_CHEST, "D", True),
    ("i think it's b", CHEST, "B", True),
    ("选项C", ZH_CHEST, "C", True),
    ("Options: A. Pneumonia B. Viral pneumonia C. Pleural effusion D. No abnormality", CHEST, None, False),
]  # fmt: skip


def _opts(options: dict[str, str]) -> str:
    return " ".join(f"{k}. {v}" for k, v in options.items())


def _lines(options: dict[str, str]) -> str:
    return "\n".join(f"{k}. {v}" for k, v in options.items())


def _fill(template: str, options: dict[str, str], a: str, d: str, zh: bool) -> str:
    q = "图中最可能的诊断是什么？" if zh else "What is the most likely finding in this image?"
    return template.format(
        a=a, t=options[a], d=d, dt=options[d], al=a.lower(), opts=_opts(options), lines=_lines(options), q=q
    )


def build_table() -> list[tuple[str, dict[str, str], str | None, bool]]:
    rows = []
    for pairs, stated, unstated, zh in (
        (PAIRS, STATED, UNSTATED, False),
        (ZH_PAIRS, ZH_STATED, ZH_UNSTATED, True),
    ):
        for options, letter_pairs in pairs.values():
            for a, d in letter_pairs:
                rows += [(_fill(t, options, a, d, zh), options, a, True) for t in stated]
                rows += [
                    (_fill(t, options, a, d, zh), options, a if e == "a" else None, False)
                    for t, e in unstated
                ]
    rows += SPECIAL
    return rows
