"""A table of realistic multiple-choice replies and what they answer.

Each entry: (reply, options, expected letter, states_answer). `states_answer` is True when the
reply states its answer explicitly (a statement, a verdict, a tag, bold, or only the letter):
then the evaluator must read exactly that letter. Otherwise (several options named without a
statement, refusals) the reply may be left unanswerable but must never be read as a wrong letter.
`expected` is None where no option is chosen at all.

Replies are written in the styles models produce: terse letters, explanations that name other
options, option-by-option analyses, reasoning models' `<think>`/`<answer>` tags and `\\boxed{}`,
Markdown bold, JSON, Chinese, and refusals. Templates are instantiated with several (answer,
distractor) pairs over three option sets, so a rule that favours a position (first or last
letter) fails somewhere.
"""

from __future__ import annotations

CHEST = {"A": "Pneumonia", "B": "Viral pneumonia", "C": "Pleural effusion", "D": "No abnormality"}
MODALITY = {"A": "CT", "B": "MRI", "C": "Ultrasound", "D": "X-ray", "E": "PET"}
FUNDUS = {"A": "Glaucoma", "B": "Diabetic retinopathy", "C": "Cataract", "D": "Normal fundus"}

# (template, states_answer); {a}/{t}: answer letter/text, {d}/{dt}: a distractor's, {al}: lower-case answer
STATED = [
    "{a}",
    "({a})",
    "{a}.",
    "{a}. {t}",
    "({a}) {t}",
    "The answer is {a}.",
    "The answer is ({a}).",
    "the answer is ({al})",
    "Answer: {a}",
    "Answer: {a}. {d} is a common distractor because it can look similar.",
    "**Answer:** {a}",
    "Answer: **{a}**",
    "Final answer: ({a})",
    "Correct answer - {a}",
    'Based on the image, {{"answer": "{a}"}}',
    "{a} is correct; {d} is a common distractor.",
    "{d} is incorrect. {a} is correct.",
    "Option {d}: incorrect, the findings do not support it. Option {a}: correct, the image shows {t}.",
    "Let's analyse each option.\n{d}. {dt} - unlikely, no typical signs.\n{a}. {t} - correct, consistent "
    "with the image.\nTherefore the answer is {a}.",
    "The correct option is ({a}) {t}. ({d}) {dt} would show different features.",
    "Option {a} is the right answer; option {d} describes a different condition.",
    "I would choose {a} because the image shows {t}, whereas {d} ({dt}) would look different.",
    "After excluding {d}, the best answer is {a}.",
    "My answer: {a}\nReason: {dt} ({d}) is less likely here.",
    "The most likely diagnosis is {t}, so the answer is {a}, not {d}.",
    "The answer is {a}: {t}. {d} ({dt}) can be excluded because the key sign is absent.",
    "At first glance {d} seems plausible, but on closer inspection the answer is {a}.",
    "Based on the findings, I'd go with {a}.",
    "The answer is {a}. Option {d} would be wrong here.",
    "<think>It could be {d} at first glance, but the pattern suggests {t}.</think><answer>{a}</answer>",
    "<think>{d} is ruled out because the key sign is missing.</think>\n<answer>{a}. {t}</answer>",
    "<think>Compare {d} and {a}. The image favours {t}.</think> <answer>({a})</answer>",
    "Considering {dt} ({d}) and {t} ({a}), the image favours the latter. \\boxed{{{a}}}",
    "\\boxed{{\\text{{{a}}}}}",
    "**{a}. {t}**\n\nUnlike {d}, the appearance here is typical.",
    "**{a}**",
    "答案是{a}。{d}选项不符合影像表现。",
    "选{a}，因为图像显示{t}。",
    "正确答案：{a}",
    "根据影像，{d}不正确，{a}正确。",
    "我的选择是{a}",
    "答案：（{a}）",
]
# No explicit statement: either the one option it names, or unanswerable, never another letter.
UNSTATED = [
    ("The image shows {t}. Thus, {a}.", "a"),
    ("Looking at the findings, {a}.", "a"),
    ("The findings are most consistent with {t}.", "a"),
    ("Among the options, {a} ({t}) fits best; {d} does not.", "a"),
    ("The lesion is bright on one sequence ({a}) but not on the other ({d}).", None),
    ("It could be {a} or {d}; the image is not conclusive.", None),
    ("{a}, {d}", None),
    ("Both {t} and {dt} are possible here.", None),
]
REFUSALS = [
    "I'm sorry, but I cannot determine the diagnosis from this image.",
    "As an AI, I can't provide medical advice. Please consult a radiologist.",
    "Unable to answer: the image quality is insufficient.",
    "The image is too blurry to say.",
    "",
    "<answer></answer>",
    "我无法根据这张图片做出判断。",
]
PAIRS = {
    id(CHEST): [("C", "A"), ("B", "D")],
    id(MODALITY): [("E", "A"), ("A", "C")],
    id(FUNDUS): [("D", "B"), ("A", "C")],
}
# replies written as they come, with letters that are words or names in them
SPECIAL = [
    ("Vitamin D deficiency is not relevant here; this is pneumonia.", CHEST, "A", False),
    ("A dense opacity fills the lower lobe on this B-mode view, so I go with C", CHEST, "C", True),
    ("A 3 cm mass is seen. The answer is D.", CHEST, "D", True),
    ("There is a pleural effusion on the left.", CHEST, "C", False),
    ("The image is consistent with viral pneumonia.", CHEST, "B", False),
    ("Type B aortic dissection is not shown; answer: D", CHEST, "D", True),
    ("Hepatitis B can be ruled out. Final answer: A", CHEST, "A", True),
    ("The answer is a small effusion, maybe.", CHEST, None, False),
    ("a lesion is seen", CHEST, None, False),
    ("e.g. nothing definite", CHEST | {"E": "Atelectasis"}, None, False),
    ("Answer: B is incorrect, C is correct", CHEST, "C", True),
    ("The answer is B. No wait, the answer is A or C.", CHEST, None, False),
    ("At first the answer is A, but looking again the answer is D.", CHEST, "D", True),
    ("(b) viral pneumonia", CHEST, "B", True),
    ("c. Pleural effusion", CHEST, "C", True),
    ("Option (d)", CHEST, "D", True),
    ("The answer is b.", CHEST, "B", True),
    ("a", CHEST, "A", True),
    ("This T2-weighted MRI shows a lesion; the modality is B.", MODALITY, "B", False),
    ("An X-ray would not show this; this is an MRI.", MODALITY, None, False),
    ("Ｃ", CHEST, "C", True),  # full-width letter
    ("答案为Ｂ", CHEST, "B", True),
]


def _fill(template: str, options: dict[str, str], a: str, d: str) -> str:
    return template.format(a=a, t=options[a], d=d, dt=options[d], al=a.lower())


def build_table() -> list[tuple[str, dict[str, str], str | None, bool]]:
    rows = []
    for options in (CHEST, MODALITY, FUNDUS):
        for a, d in PAIRS[id(options)]:
            rows += [(_fill(t, options, a, d), options, a, True) for t in STATED]
            rows += [(_fill(t, options, a, d), options, a if e == "a" else None, False) for t, e in UNSTATED]
        rows += [(r, options, None, False) for r in REFUSALS]
    rows += SPECIAL
    return rows
