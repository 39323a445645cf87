"""Turning a free-text reply into an answer, with the evidence that decided it.

Every reply is first reduced to its answer span (`answer_span`), for every question type:
the last `<answer>...</answer>` block, else the last `\\boxed{...}`, else the reply without its
`<think>...</think>` block; remaining tags are stripped. Full-width characters are folded (NFKC).

Multiple choice then goes through these rules; the first that decides wins and is recorded as
`Extraction.method`, with the text it read as `Extraction.evidence`:

1. `answer-tag` / `boxed`: the span came from `<answer>` or `\\boxed{}` and names option(s)
   (read with rules 2-8 below).
2. `letter-only`: the reply is just a letter or letter list ("B", "(B)", "A, C"), or a letter
   followed by that option's own text ("D. No abnormality", "(b) viral pneumonia").
3. `statement`: an explicit answer statement ("The answer is (B)", "Answer: C", "the correct
   option is C", "I choose D", "答案是C", "选C"); the last one counts, and one naming two letters
   for a single-answer question is ambiguous (an earlier statement does not win then). A
   statement followed by a negative verdict ("Answer: B is incorrect") is not one.
4. `verdict`: option-by-option analysis that calls exactly one option correct ("A is correct",
   "Option C: correct", "C正确"). "incorrect", "not correct" are not verdicts.
5. `bold`: exactly one option letter set in bold ("**C**", "**C. Pleural effusion**").
6. `mention`: exactly one option letter named anywhere, and no other option's text. A letter is a
   name only where it cannot be a word: not the article ("A mass"), not a compound ("B-mode",
   "Vitamin D deficiency", "type B"); lower-case letters only as "(b)" or "b)".
7. `option-text`: exactly one option's text appears (the longest match wins when texts nest).
8. `judge`: only when the rules above found several options (`ambiguous`) or none (`none`), and
   a judge is configured: an LLM behind an OpenAI-compatible endpoint names the letter(s).

Without a judge, `ambiguous` and `none` replies are unanswerable: scored as wrong and counted.
The last letter of a reply never decides by position. The same rules score GRPO's accuracy
reward (`gmaivl.trainers.rewards`), so training and evaluation read answers alike.
"""

from __future__ import annotations

import re
import string
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .question_types import NO_WORDS, YES_WORDS

if TYPE_CHECKING:
    from gmaivl.core.openai_chat import EndpointConfig

_LETTER_LIST = r"[A-J](?:\s*(?:,|/|&|、|和|\band\b|\bor\b)\s*[A-J])*"
_ANSWER_BLOCK = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.IGNORECASE | re.DOTALL)
_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.IGNORECASE | re.DOTALL)
_ANY_TAG = re.compile(r"</?(?:answer|think)>", re.IGNORECASE)
_BOXED = re.compile(r"\\boxed\s*\{((?:[^{}]|\{[^{}]*\})*)\}")
_LATEX_TEXT = re.compile(r"\\(?:text|mathrm|textbf)\s*\{([^{}]*)\}")

_VERB = r"(?:\s+(?i:is|are|would\s+be|should\s+be|will\s+be|must\s+be|seems\s+to\s+be))"
# "answer"/"choose" may be followed directly by a letter ("I choose D"); "option"/"choice" only
# state an answer with a verb or a colon ("the correct option is C", "Option: C"): a bare mention
# ("Option A is a distractor") is not a statement.
_STATEMENT_EN = re.compile(
    r"(?:(?i:answers?|choose|select|pick|go(?:ing)?\s+with|opt\s+for)(?:" + _VERB + r")?"
    r"|(?i:options?|choices?)(?:" + _VERB + r"|(?=\s*[:=])))"
    r"(?:\s+(?i:most\s+likely|likely|probably|definitely|clearly))?"
    r"\s*[\"']?\s*[:=\-–]?\s*[\"']?\s*(?:(?i:options?|choices?)\s*)?"
    r"(?:\(?(" + _LETTER_LIST + r")\)?(?![\w-])|\(([a-j])\)|([a-j])(?=[.:]?\s*$))",
)
_STATEMENT_ZH = re.compile(
    r"(?:(?:正确)?答案|正确选项|最佳选项|选项(?=\s*(?:是|为|应为|应该是|:)))"
    r"\s*(?:是|为|应为|应该是|应选)?\s*:?\s*(?:选项)?\s*\(?(" + _LETTER_LIST + r")\)?(?![A-Za-z])"
    r"|选(?:择)?(?:的是|是|为)?\s*\(?(" + _LETTER_LIST + r")\)?(?![A-Za-z])"
)
_NEGATED_AFTER = re.compile(
    r"^[^.;\n]{0,40}?\b(?:is|are|was|seems|appears)\s+(?:not\b|incorrect|wrong|unlikely|false|less\s+likely)"
    r"|^\s*(?:不|错)",
    re.IGNORECASE,
)
_POSITIVE = (
    r"(?:(?:the\s+|most\s+)*(?:correct|right|true|accurate|best(?:\s+(?:answer|choice|option|fit))?|answer)"
    r"|(?:the\s+)?most\s+(?:likely|appropriate)(?:\s+(?:diagnosis|answer|option|choice|finding))?(?=\s*(?:[.,;:!)]|$)))"
)
_BOLD = re.compile(r"\*\*([^*\n]{1,120})\*\*|__([^_\n]{1,120})__")
_STANDALONE = re.compile(r"(?<![\w\-'’])(\(?)([A-Ja-j])(\)?)(?![\w\-'’])")
# a bare letter followed by one of these words is still a name ("D is ...", "B or C")
_NAME_FOLLOWERS = {
    "or", "and", "is", "was", "seems", "appears", "looks", "would", "could", "because", "since", "as",
    "best", "fits", "matches", "describes", "corresponds", "correctly", "here", "instead",
}  # fmt: skip
# a letter after one of these words is part of a name ("vitamin D", "hepatitis B", "type A")
_COMPOUND_BEFORE = {
    "vitamin", "hepatitis", "type", "grade", "class", "stage", "group", "phase", "zone", "factor",
    "level", "lead", "category", "segment", "cluster", "schedule", "protein", "kinase", "complex",
    "plan", "point", "figure", "fig", "panel", "bi-rads", "tirads", "lane", "section", "series",
}  # fmt: skip
_PUNCTUATION = frozenset(string.punctuation) | frozenset("。，、！？：；（）“”‘’《》")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


@dataclass(frozen=True)
class Extraction:
    letters: tuple[str, ...]  # sorted option letters; empty when unanswerable
    method: str  # the rule that decided: see the module docstring; ambiguous | none when unanswerable
    evidence: str = ""  # the part of the reply the rule read

    @property
    def answered(self) -> bool:
        return bool(self.letters)


class Judge(Protocol):
    def __call__(self, question: str, options: dict[str, str], reply: str) -> str: ...


def answer_span(reply: str) -> tuple[str, str | None]:
    """(answer text, where it came from): `answer-tag`, `boxed`, or None for the plain reply."""
    text = unicodedata.normalize("NFKC", reply or "")
    blocks = [b.strip() for b in _ANSWER_BLOCK.findall(text)]
    blocks = [b for b in blocks if b]
    if blocks:
        return _ANY_TAG.sub("", blocks[-1]).strip(), "answer-tag"
    boxed = _BOXED.findall(text)
    if boxed and boxed[-1].strip():
        return _LATEX_TEXT.sub(r"\1", boxed[-1]).strip(), "boxed"
    without_think = _THINK_BLOCK.sub(" ", text)
    unfinished = re.search(r"<think>", without_think, re.IGNORECASE)
    if unfinished:  # reasoning cut off by the token budget: no answer was given
        without_think = without_think[: unfinished.start()]
        text = without_think
    elif without_think.strip():
        text = without_think
    return _ANY_TAG.sub(" ", text).strip(), None


def strip_reply(reply: str) -> str:
    """The answer span of a reply (tags, think block and `\\boxed{}` removed): for open/closed questions."""
    return answer_span(reply)[0]


def _letters_in(text: str) -> list[str]:
    return [x.upper() for x in re.findall(r"(?<![A-Za-z])([A-Ja-j])(?![A-Za-z])", text)]


def _norm_text(s: str) -> str:
    s = unicodedata.normalize("NFKC", str(s)).lower()
    s = "".join(" " if ch in _PUNCTUATION else ch for ch in s)
    return " ".join(s.split())


def _decide(letters: list[str], valid: set[str], multi: bool) -> tuple[str, ...] | None:
    """Sorted letters; () when a single-answer question gets several (ambiguous); None when none."""
    distinct = sorted({x for x in letters if x in valid})
    if not distinct:
        return None
    if multi or len(distinct) == 1:
        return tuple(distinct)
    return ()


def _letter_only(text: str, options: dict[str, str], valid: set[str], multi: bool) -> tuple | None:
    m = re.match(
        r"^\W*(?:(?i:(?:the\s+)?(?:final\s+)?(?:answer|option|choice)s?)\s*[:=]?\s*)?\(?("
        + _LETTER_LIST
        + r"|[a-j])\)?"
        r"(?![\w\-'’])(.*)$",
        text,
        re.DOTALL,
    )
    if not m:
        return None
    raw, rest = m.group(1), m.group(2)
    letters = _letters_in(raw)
    lead = text[: m.start(1)]
    lower = raw.islower()
    rest_text = _norm_text(rest)
    if not rest_text:
        # "a" alone, "(b)", "b." are letters; "a" inside a longer phrase is not
        if lower and lead.strip("( ") and not re.search(r"(?i)answer|option|choice", lead):
            return None
        return _decide(letters, valid, multi)
    if len(letters) != 1 or letters[0] not in valid:
        return None
    if lower and not re.match(r"^\s*[.):]", rest) and not lead.strip().endswith("("):
        return None  # "a lesion is seen": the article
    own = _norm_text(options.get(letters[0], ""))
    if own and (rest_text == own or (rest_text.startswith(own + " ") and len(rest_text) <= len(own) + 3)):
        return tuple(letters)
    return None


def _statements(text: str, valid: set[str], multi: bool) -> tuple[tuple | None, str]:
    found = []
    for m in _STATEMENT_EN.finditer(text):
        found.append((m.start(), m.end(), next(g for g in m.groups() if g), m.group(0)))
    for m in _STATEMENT_ZH.finditer(text):
        found.append((m.start(), m.end(), next(g for g in m.groups() if g), m.group(0)))
    found.sort()
    for _, end, letters, span in reversed(found):
        if _NEGATED_AFTER.match(text[end:]):
            continue
        got = _decide(_letters_in(letters), valid, multi)
        if got is not None:
            return got, span.strip()
    return None, ""


def _verdicts(text: str, options: dict[str, str], valid: set[str], multi: bool) -> tuple[tuple | None, str]:
    hits, spans = [], []
    for letter in sorted(valid):
        own = re.escape(options.get(letter, "").strip())
        own_part = rf"(?:\s*[.):]?\s*{own})?" if own else ""
        pattern = (
            rf"(?<![\w\-'’])(?:(?i:options?|choices?)\s*)?(?:\({letter}\)|{letter}(?![\w\-'’])){own_part}\)?\**"
            r"(?:\s*[:\-–—=]\s*|\s+(?i:is|are|seems\s+to\s+be|appears\s+to\s+be|would\s+be)\s+)"
            rf"(?i:{_POSITIVE})(?![\w-])"
            rf"|(?:选项)?\s*(?<![A-Za-z]){letter}(?![A-Za-z])\s*(?:选项)?\s*(?:是|为)?\s*(?:正确|对)"
        )
        for m in re.finditer(pattern, text):
            hits.append(letter)
            spans.append(m.group(0).strip())
    got = _decide(hits, valid, multi)
    return got, "; ".join(spans)


def _bold(raw: str, options: dict[str, str], valid: set[str], multi: bool) -> tuple[tuple | None, str]:
    letters, spans = [], []
    for m in _BOLD.finditer(raw):
        inner = (m.group(1) or m.group(2)).strip()
        got = _letter_only(inner, options, valid, True)
        if got is None:
            inner_m = re.match(r"^(?:(?i:options?|choices?)\s*)?\(?([A-J])\)?\s*(?:[.):]\s*.*)?$", inner)
            got = (inner_m.group(1),) if inner_m and inner_m.group(1) in valid else None
        if got:
            letters.extend(got)
            spans.append(m.group(0))
    return _decide(letters, valid, multi), "; ".join(spans)


def option_mentions(text: str, valid: set[str]) -> list[str]:
    """Option letters named in free text, with articles and compounds left out (rule 6)."""
    found = []
    for m in _STANDALONE.finditer(text):
        opening, letter, closing = m.groups()
        upper = letter.upper()
        if upper not in valid:
            continue
        parenthesised = bool(opening and closing)
        if letter.islower() and not (closing and (opening or _at_token_start(text, m.start()))):
            continue  # lower-case only as "(b)" or "b)"
        if not parenthesised:
            before = re.search(r"([\w\-]+)\s*$", text[: m.start()])
            if before and before.group(1).lower() in _COMPOUND_BEFORE:
                continue
            after = re.match(r"\s+([a-z0-9][\w\-]*)", text[m.end() :])
            if after and after.group(1) not in _NAME_FOLLOWERS:
                continue  # "A mass", "B cells", "D deficiency", "A 3 cm nodule"
        found.append(upper)
    return found


def _at_token_start(text: str, pos: int) -> bool:
    return pos == 0 or text[pos - 1].isspace()


def _option_text_hits(text: str, options: dict[str, str]) -> dict[str, str]:
    norm_reply = f" {_norm_text(text)} "
    hits = {
        k: _norm_text(v) for k, v in options.items() if _norm_text(v) and f" {_norm_text(v)} " in norm_reply
    }
    # "viral pneumonia" also contains "pneumonia": keep only maximal matches.
    return {k: v for k, v in hits.items() if not any(v != o and v in o for o in hits.values())}


def _rules(text: str, options: dict[str, str], valid: set[str], multi: bool) -> Extraction:
    """Rules 2-7 on an answer span; `ambiguous`/`none` when they do not decide."""
    plain = text.replace("**", "").replace("__", "").strip()
    if not plain:
        return Extraction((), "none")
    got = _letter_only(plain, options, valid, multi)
    if got is not None:
        return Extraction(got, "letter-only" if got else "ambiguous", plain)
    got, span = _statements(plain, valid, multi)
    if got is not None:
        return Extraction(got, "statement" if got else "ambiguous", span)
    got, span = _verdicts(plain, options, valid, multi)
    if got:
        return Extraction(got, "verdict", span)
    verdict_ambiguous = got == ()
    got, span = _bold(text, options, valid, multi)
    if got:
        return Extraction(got, "bold", span)
    if verdict_ambiguous:
        return Extraction((), "ambiguous", span)
    named = option_mentions(plain, valid)
    texts = _option_text_hits(plain, options)
    if named:
        got = _decide(named + list(texts), valid, multi)
        if got:
            return Extraction(got, "mention", ", ".join(sorted(set(named))))
        return Extraction((), "ambiguous", ", ".join(sorted(set(named) | set(texts))))
    if texts:
        got = _decide(list(texts), valid, multi)
        if got:
            return Extraction(got, "option-text", "; ".join(texts[k] for k in got))
        return Extraction((), "ambiguous", "; ".join(texts.values()))
    return Extraction((), "none")


def extract_choice(
    reply: str,
    options: dict[str, str],
    *,
    multi: bool = False,
    question: str = "",
    judge: Judge | None = None,
) -> Extraction:
    """Apply the rules above. `multi` allows (and expects) several letters."""
    valid = {k.upper() for k in options}
    options = {k.upper(): unicodedata.normalize("NFKC", str(v or "")) for k, v in options.items()}
    span, source = answer_span(reply or "")
    result = _rules(span, options, valid, multi)
    if source and result.answered:
        return Extraction(result.letters, source, result.evidence or span)
    if not result.answered and judge is not None and (reply or "").strip():
        verdict = judge(question, options, reply)
        got = _decide(_letters_in(verdict.strip().split("\n")[-1]) if verdict.strip() else [], valid, multi)
        if got:
            return Extraction(got, "judge", verdict.strip())
    return result


def _cjk_tokens(text: str) -> list[str]:
    # Chinese has no spaces: every CJK character is a token, other runs split on whitespace
    out = []
    for word in text.split():
        if _CJK.search(word):
            out.extend(
                tok
                for tok in re.findall(
                    r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+",
                    word,
                )
            )
        else:
            out.append(word)
    return out


def normalize_answer(text: str) -> str:
    """SQuAD-style: NFKC, lower case, punctuation (ASCII and CJK) and English articles removed, single spaces."""
    text = unicodedata.normalize("NFKC", str(text)).lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def answer_tokens(text: str) -> list[str]:
    """Tokens of a normalised answer: words, and single characters for Chinese."""
    return _cjk_tokens(normalize_answer(text))


def extract_yes_no(reply: str) -> str | None:
    """ "yes"/"no" when the reply (its answer span) commits to exactly one of them, else None."""
    text = strip_reply(reply)
    if _CJK.search(text):
        head = normalize_answer(text).replace(" ", "")
        if head.startswith(("不是", "否", "没有", "无", "不")):
            return "no"
        if head.startswith(("是", "有", "对")):
            return "yes"
        return None
    words = _norm_text(text).split()
    if not words:
        return None
    if words[0] in YES_WORDS | NO_WORDS:
        return "yes" if words[0] in YES_WORDS else "no"
    has_yes, has_no = "yes" in words, "no" in words
    if has_yes != has_no:
        return "yes" if has_yes else "no"
    return None


# --------------------------------------------------------------------------- LLM judge


JUDGE_PROMPT = (
    "You read a model's reply to a multiple-choice question and report which option(s) it chose.\n"
    "Question: {question}\nOptions:\n{options}\nReply: {reply}\n\n"
    "Output only the chosen letter(s), comma separated, on the last line. If the reply does not "
    "clearly choose any option, output NONE."
)


class OpenAIJudge:
    """An LLM judge behind any OpenAI-compatible `/chat/completions` endpoint (vLLM, TGI, OpenAI).

    Only used after the rules fail; its verdicts are stored with the predictions, so a resumed
    run never asks twice. `endpoint` is an `EndpointConfig`, or a base URL with `model` and
    `EndpointConfig` settings (from a URL, `timeout` defaults to 60 s and `max_retries` to 3).
    """

    def __init__(
        self, endpoint: EndpointConfig | str, model: str | None = None, *, client: Any = None, **settings: Any
    ) -> None:
        from gmaivl.core.openai_chat import ChatEndpoint, EndpointConfig

        if not isinstance(endpoint, EndpointConfig):
            settings = {"timeout": 60.0, "max_retries": 3, **settings}
        self.config = EndpointConfig.of(endpoint, model, **settings)
        self.model = self.config.model
        self.endpoint = ChatEndpoint(self.config, client=client)

    def __call__(self, question: str, options: dict[str, str], reply: str) -> str:
        opts = "\n".join(f"{k}. {v}" for k, v in options.items())
        prompt = JUDGE_PROMPT.format(question=question, options=opts, reply=reply)
        content = self.endpoint.complete([{"role": "user", "content": prompt}], where="judge", temperature=0)
        return "" if "NONE" in content.upper().split() else content
