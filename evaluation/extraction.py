"""Turning a free-text reply into an answer, with the evidence that decided it.

Every reply is first bounded and reduced to its answer span (`answer_span`), for every question
type. A reply longer than `MAX_REPLY_CHARS` (100 000) is read as its first and last 50 000
characters (the note says so: `Extraction.note`, and the evidence starts with it). Full-width
characters are folded (NFKC). The span is the last `<answer>...</answer>` block, else the last
`\\boxed{...}`, else the reply without its `<think>...</think>` block; remaining tags are stripped.

Multiple choice then goes through these rules; the first that decides wins and is recorded as
`Extraction.method`, with the text it read as `Extraction.evidence`. An echoed prompt (the
options list repeated back, "Options: A. Pneumonia B. Viral pneumonia C. ...", with a `Question:`
line before it) is removed first: it names every option and states nothing.

1. `answer-tag` / `boxed`: the span came from `<answer>` or `\\boxed{}` and names option(s)
   (read with rules 2-9 below).
2. `letter-only`: the reply is just a letter or letter list ("B", "(B)", "A, C"), or a letter
   followed by that option's own text ("D. No abnormality", "(b) viral pneumonia").
3. `statement`: an explicit answer statement ("The answer is (B)", "Answer: C", "the correct
   option is C", "I choose D", "it's B", "答案是C", "选C", "我认为是D选项"). **The last explicit
   statement wins**: the last statement, unless verdicts (rule 4) follow it, which then decide
   ("The answer is B. No wait, it's D." and "The answer is B. No, D is correct." are D). A
   statement naming two letters for a single-answer question is ambiguous (an earlier one does
   not win then). A negated statement is none: "Answer: B is incorrect", "I don't think it's B".
4. `verdict`: option-by-option analysis that calls exactly one option correct ("A is correct",
   "Option C: correct", "Option C (Pleural effusion) is correct", "C正确"). "incorrect", "not
   correct" are not verdicts; "B and C are correct" names two.
5. `bold`: exactly one option letter set in bold ("**C**", "**C. Pleural effusion**").
6. `leading-answer`: the reply opens with a letter and that option's own text, then goes on
   ("D. Emphysema. Unlike B (Edema), the lungs are hyperinflated."), unless a negative verdict
   follows the text ("A. Pneumonia - unlikely") or the reply lists other options the same way.
7. `mention`: exactly one option letter named anywhere, and no other option's text. A letter is a
   name only where it cannot be a word: not the article ("A mass"), not a compound ("B-mode",
   "Vitamin D deficiency", "type B", "B超", "A型"); lower-case letters only as "(b)" or "b)".
   Chinese text around a letter does not hide it ("选项C", "我认为是D"). A negated name is not
   a choice: "Not B", "Option A is incorrect", "B is wrong", "排除D", "D不正确"; a reply whose only
   names are negated is unanswered ("none").
8. `option-text`: exactly one option's text appears, not negated ("no pleural effusion", "不是肺炎"
   do not count); the longest match wins when texts nest. Chinese option texts match inside a
   sentence without spaces ("该图像显示胸腔积液。").
9. `judge`: only when the rules above found several options (`ambiguous`) or none (`none`), and
   a judge is configured: an LLM behind an OpenAI-compatible endpoint names the letter(s).

Without a judge, `ambiguous` and `none` replies are unanswerable: scored as wrong and counted.
"Both B and C are possible" names two options: ambiguous. The last letter of a reply never
decides by position. The same rules score GRPO's accuracy reward (`gmaivl.trainers.rewards`), so
training and evaluation read answers alike.

Bounded time: no pattern here can backtrack catastrophically (whitespace runs are matched with
possessive quantifiers, look-backs read a bounded window, tags are found in one scan), so every
rule is linear in the reply: a 100 000-character reply of any content is read in well under 0.2 s
(`python -m gmaivl.evaluation.extraction_timing` measures the adversarial shapes; the fuzz test
`tests/evaluation/test_extraction_fuzz.py` checks a generous bound).
"""

from __future__ import annotations

import bisect
import functools
import re
import string
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .question_types import NO_WORDS, YES_WORDS

if TYPE_CHECKING:
    from gmaivl.core.openai_chat import EndpointConfig

#: Replies longer than this are read as their first and last half of it (with a note).
MAX_REPLY_CHARS = 100_000

_LETTER_LIST = r"[A-J](?:\s*+(?:,|/|&|、|和|或|\band\b|\bor\b)\s*+[A-J])*+"
_TAG = re.compile(r"<(/?)(answer|think)>", re.IGNORECASE)
_BOXED = re.compile(r"\\boxed\s*+\{((?:[^{}]++|\{[^{}]*+\})*+)\}")
_LATEX_TEXT = re.compile(r"\\(?:text|mathrm|textbf)\s*+\{([^{}]*+)\}")

_VERB = r"(?:\s++(?i:is|are|would\s++be|should\s++be|will\s++be|must\s++be|seems\s++to\s++be))"
_HEDGE = r"(?:\s++(?i:most\s++likely|likely|probably|definitely|clearly|actually|indeed))?"
# "answer"/"choose" may be followed directly by a letter ("I choose D"); "option"/"choice" only
# state an answer with a verb or a colon ("the correct option is C", "Option: C"): a bare mention
# ("Option A is a distractor") is not a statement. "it's B" is one ("No wait, it's D").
_STATEMENT_EN = re.compile(
    r"(?:(?i:answers?|choose|select|pick|go(?:ing)?\s++with|opt\s++for)(?:" + _VERB + r")?"
    r"|(?i:options?|choices?)(?:" + _VERB + r"|(?=\s*+[:=]))"
    r"|(?<![\w'’])(?i:it['’]s|it\s++(?:is|must\s++be|should\s++be|would\s++be)))"
    + _HEDGE
    + r"\s*+[\"']?\s*+[:=\-–]?\s*+[\"']?\s*+(?:(?i:options?|choices?)\s*+)?"
    r"(?:\(?(" + _LETTER_LIST + r")\)?(?![\w-])|\(([a-j])\)|([a-j])(?=[.:!]?\s*+$))",
)
_STATEMENT_ZH = re.compile(
    r"(?:(?:正确)?答案|正确选项|最佳选项|选项(?=\s*+(?:是|为|应为|应该是|:)))"
    r"\s*+(?:是|为|应为|应该是|应选)?\s*+:?\s*+(?:选项)?\s*+\(?(" + _LETTER_LIST + r")\)?(?![A-Za-z])"
    r"|(?<!不)选(?:择)?(?:的是|是|为)?\s*+\(?(" + _LETTER_LIST + r")\)?(?![A-Za-z])"
    r"|(?<![不非还])(?:应该|应当|应|认为|觉得|考虑|就)?是\s*+(?:选项\s*+)?\(?(" + _LETTER_LIST + r")\)?"
    r"(?![A-Za-z0-9型类级期组区段超])"
)
# a negative verdict right after a letter (a parenthesis may come between): "B is incorrect", "D不正确"
_NEGATED_AFTER = re.compile(
    r"\)?(?:\s*+\([^()\n]{0,60}\))?\s*+(?:[,:\-–—]\s*+)?"
    r"(?:(?:is|are|was|were|seems|appears|would\s++be|can\s++be|should\s++be)\s++"
    r"(?:not\b|incorrect|wrong|unlikely|false|less\s++likely|ruled\s++out|excluded)"
    r"|(?:is|are|was|were|does|do|did|would|could|can|should|seems|appears)(?:\s++not\b|n['’]t\b)"
    r"|(?:incorrect|wrong|unlikely|excluded|ruled\s++out)\b"
    r"|(?:选项|项)?\s*+(?:不|错|可排除|排除|可以排除))",
    re.IGNORECASE,
)
# a negation right before a letter: found in one scan, at the positions where a letter follows
_NEGATED_BEFORE = re.compile(
    r"(?:(?:n['’]t|\bnot)\s++(?:think|believe|say|consider|choose|pick|select|go\s++with)"
    r"(?:\s++(?:that|it['’]s|it\s++is|the\s++answer\s++is))?"
    r"|\b(?:not|never|excluding|exclude|except|without)|n['’]t|\brule[sd]?\s++out|\bruling\s++out"
    r"|不是|不选|不考虑|不|非|排除|除了)"
    r"\s*+(?:(?:the\s++)?(?:options?|choices?)\s*+)?(?:(?:it['’]?s|it\s++is|is)\s*+)?(?:选项\s*+)?(?=\(?[A-Ja-j])",
    re.IGNORECASE,
)
# a clause before a statement that takes it back: "I don't think it's B", "if it's A"
_CLAUSE_NEGATION = re.compile(
    r"(?:\b(?:not|never|if|whether|unless)\b|n['’]t\b|不|非|如果|若)", re.IGNORECASE
)
_CLAUSE_END = re.compile(r"[.;!?\n,，。；！？:]")
_POSITIVE = (
    r"(?:(?:the\s++|most\s++)*+(?:correct|right|true|accurate|best(?:\s++(?:answer|choice|option|fit))?|answer)"
    r"|(?:the\s++)?most\s++(?:likely|appropriate)(?:\s++(?:diagnosis|answer|option|choice|finding))?"
    r"(?=\s*+(?:[.,;:!)]|$)))"
)
_BOLD = re.compile(r"\*\*([^*\n]{1,120})\*\*|__([^_\n]{1,120})__")
_BOLD_LETTER = re.compile(r"^(?:(?i:options?|choices?)\s*+)?\(?([A-J])\)?\s*+(?:[.):]\s*+.*)?$")
# a letter standing alone: latin letters, digits or joiners around it make it part of a word;
# Chinese characters do not ("选项C", "我认为是D")
_STANDALONE = re.compile(r"(?<![A-Za-z0-9_\-'’])(\(?)([A-Ja-j])(\)?)(?![A-Za-z0-9_\-'’])")
_WORD_AFTER = re.compile(r"\s++([a-z0-9][\w\-]{0,40})")
# a bare letter followed by one of these words is still a name ("D is ...", "B or C")
_NAME_FOLLOWERS = {
    "or", "and", "is", "was", "seems", "appears", "looks", "would", "could", "because", "since", "as",
    "best", "fits", "matches", "describes", "corresponds", "correctly", "here", "instead",
    "are", "were", "both", "seem", "might", "may", "can", "cannot", "does", "do", "did", "has", "have",
    "fit", "from", "vs", "versus", "nor", "but", "also", "then", "only", "either", "neither", "alone",
    "respectively", "not", "isn", "doesn", "wasn", "aren",
}  # fmt: skip
# a letter after one of these words is part of a name ("vitamin D", "hepatitis B", "type A")
_COMPOUND_BEFORE_WORDS = {
    "vitamin", "hepatitis", "type", "grade", "class", "stage", "group", "phase", "zone", "factor",
    "level", "lead", "category", "segment", "cluster", "schedule", "protein", "kinase", "complex",
    "plan", "point", "figure", "fig", "panel", "bi-rads", "tirads", "lane", "section", "series",
}  # fmt: skip
# Chinese compounds with a letter: "A型" (type A), "B超" (B-mode ultrasound), "维生素D"
_COMPOUND_AFTER_ZH = frozenset("型超类级期组区段度波细因族肝株链端")
_COMPOUND_BEFORE = re.compile(
    r"(?:(?<![\w\-])(?i:" + "|".join(re.escape(w) for w in sorted(_COMPOUND_BEFORE_WORDS)) + r")"
    r"|维生素|类型|分级|分期|图|第)\s*+(?=\(?[A-Ja-j])"
)
_PUNCTUATION = frozenset(string.punctuation) | frozenset("。，、！？：；（）“”‘’《》")
_PUNCTUATION_TO_SPACE = {ord(ch): " " for ch in _PUNCTUATION}
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
# a negation right before an option's text, read on the normalised reply (punctuation -> spaces)
_TEXT_NEGATED_BEFORE = re.compile(
    r"(?:\b(?:not|no|without|excluding|exclude|except|isn t|n t)|\brule[sd]? out|\bruling out"
    r"|\bno (?:evidence|sign|signs|features?) of|\b(?:n t|not) (?:think|believe) (?:it s |it is |this is )?"
    r"|不是|无|没有|排除|非|未见|除外)\s?$"
)
# an option list entry as a prompt shows it: "A. Pneumonia", "(B) Viral pneumonia", "C: ..."
_ENTRY_GAP = re.compile(r"[\s,;，；、|]*+")
_ECHO_LABEL = re.compile(r"(?i:options?|choices?|answer\s++choices?)\s*+[:：]?\s*+$|选项\s*+[:：]?\s*+$")
_QUESTION_LINE = re.compile(
    r"^[ \t]*+(?i:question|q)\s*+[:：][^\n]*+\n?|^[ \t]*+问题\s*+[:：][^\n]*+\n?", re.MULTILINE
)
_LEAD_NEGATED = re.compile(
    r"\s*+(?:[-–—:,]\s*+)?(?:is\s++|are\s++)?(?:not\b|unlikely|incorrect|wrong|less\s++likely|ruled\s++out|excluded"
    r"|不|错|排除)",
    re.IGNORECASE,
)
_LEAD_BOUNDARY = re.compile(r"\s*+$|[ \t]*+[.,;:!?。，；：！？\n(（\-–—]")


@dataclass(frozen=True)
class Extraction:
    letters: tuple[str, ...]  # sorted option letters; empty when unanswerable
    method: str  # the rule that decided: see the module docstring; ambiguous | none when unanswerable
    evidence: str = ""  # the part of the reply the rule read
    note: str = ""  # set when the reply was too long to read whole

    @property
    def answered(self) -> bool:
        return bool(self.letters)


class Judge(Protocol):
    def __call__(self, question: str, options: dict[str, str], reply: str) -> str: ...


def _bounded(text: str) -> tuple[str, str]:
    if len(text) <= MAX_REPLY_CHARS:
        return text, ""
    half = MAX_REPLY_CHARS // 2
    note = f"reply of {len(text)} characters: read its first and last {half}"
    return text[:half] + "\n\n" + text[-half:], note


def _span(reply: str) -> tuple[str, str | None, str]:
    """(answer text, where it came from, note): the reply bounded, NFKC, tags resolved in one scan."""
    text, note = _bounded(reply or "")
    text = unicodedata.normalize("NFKC", text)
    if len(text) > MAX_REPLY_CHARS:  # NFKC can lengthen a text (ligatures, compatibility forms)
        text, again = _bounded(text)
        note = note or again
    tags = [(m.start(), m.end(), bool(m.group(1)), m.group(2).lower()) for m in _TAG.finditer(text)]
    # answer blocks: from each <answer> to the next </answer> (or the end), the last non-empty one
    blocks, pos = [], 0
    for start, end, closing, name in tags:
        if closing or name != "answer" or start < pos:
            continue
        close = next((t for t in tags if t[0] >= end and t[2] and t[3] == "answer"), None)
        stop, pos = (close[0], close[1]) if close else (len(text), len(text))
        block = text[end:stop].strip()
        if block:
            blocks.append(block)
    if blocks:
        return _TAG.sub("", blocks[-1]).strip(), "answer-tag", note
    boxed = _BOXED.findall(text)
    if boxed and boxed[-1].strip():
        return _LATEX_TEXT.sub(r"\1", boxed[-1]).strip(), "boxed", note
    closes = [t[0] for t in tags if t[2] and t[3] == "think"]
    pieces, pos, unfinished = [], 0, False
    for start, end, closing, name in tags:
        if closing or name != "think" or start < pos:
            continue
        i = bisect.bisect_left(closes, end)
        pieces.append(text[pos:start])
        if i == len(closes):  # reasoning cut off by the token budget: no answer was given
            unfinished = True
            pos = len(text)
            break
        pieces.append(" ")
        pos = closes[i] + len("</think>")
    pieces.append(text[pos:])
    without_think = "".join(pieces)
    if unfinished or without_think.strip():
        text = without_think
    return _TAG.sub(" ", text).strip(), None, note


def answer_span(reply: str) -> tuple[str, str | None]:
    """(answer text, where it came from): `answer-tag`, `boxed`, or None for the plain reply."""
    text, source, _ = _span(reply)
    return text, source


def strip_reply(reply: str) -> str:
    """The answer span of a reply (tags, think block and `\\boxed{}` removed): for open/closed questions."""
    return answer_span(reply)[0]


def _letters_in(text: str) -> list[str]:
    return [x.upper() for x in re.findall(r"(?<![A-Za-z])([A-Ja-j])(?![A-Za-z])", text)]


def _norm_text(s: str) -> str:
    s = unicodedata.normalize("NFKC", str(s)).lower().translate(_PUNCTUATION_TO_SPACE)
    return " ".join(s.split())


def _decide(letters: list[str], valid: set[str], multi: bool) -> tuple[str, ...] | None:
    """Sorted letters; () when a single-answer question gets several (ambiguous); None when none."""
    distinct = sorted({x for x in letters if x in valid})
    if not distinct:
        return None
    if multi or len(distinct) == 1:
        return tuple(distinct)
    return ()


@functools.lru_cache(maxsize=512)
def _entry_pattern(entries: tuple[tuple[str, str], ...]) -> re.Pattern[str]:
    """An options-list entry as a prompt shows it ("A. Pneumonia", "(B) Viral pneumonia", "C: ...")."""
    alternatives = "|".join(
        rf"(?P<{k}>{k})[)）]?[ \t]*+[.:、)）]?[ \t]*+(?i:{re.escape(v)})" for k, v in entries if v
    )
    return re.compile(rf"(?<![A-Za-z0-9])[(（]?(?:{alternatives})(?![A-Za-z0-9])")


def _drop_echo(text: str, options: dict[str, str]) -> str:
    """The reply without an echoed prompt: runs of the options list ("A. Pneumonia B. ...") in order."""
    order = sorted(k for k in options if options[k].strip() and k in "ABCDEFGHIJ" and len(k) == 1)
    need = min(3, len(order))
    if need < 2 or len(text) < need * 3:
        return text
    pattern = _entry_pattern(tuple((k, options[k].strip()) for k in order))
    runs, run = [], []  # run: [(start, end, position of the letter in the options)]
    for m in pattern.finditer(text):
        index = order.index(m.lastgroup)
        if run and index == run[-1][2] + 1 and _ENTRY_GAP.match(text, run[-1][1]).end() >= m.start():
            run.append((m.start(), m.end(), index))
            continue
        if len(run) >= need:
            runs.append(run)
        run = [(m.start(), m.end(), index)]
    if len(run) >= need:
        runs.append(run)
    if not runs:
        return text
    out, pos = [], 0
    for r in runs:
        start = r[0][0]
        label = _ECHO_LABEL.search(text, max(pos, start - 40), start)
        if label:
            start = label.start()
        out.append(text[pos:start])
        out.append("\n")
        pos = r[-1][1]
    out.append(text[pos:])
    return _QUESTION_LINE.sub("", "".join(out)).strip()


def _letter_only(text: str, options: dict[str, str], valid: set[str], multi: bool) -> tuple | None:
    m = re.match(
        r"^\W*+(?:(?i:(?:the\s++)?(?:final\s++)?(?:answer|option|choice)s?)\s*+[:=]?\s*+)?\(?("
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
    if lower and not re.match(r"^\s*+[.):]", rest) and not lead.strip().endswith("("):
        return None  # "a lesion is seen": the article
    own = _norm_text(options.get(letters[0], ""))
    if own and (rest_text == own or (rest_text.startswith(own + " ") and len(rest_text) <= len(own) + 3)):
        return tuple(letters)
    return None


def _leading_answer(text: str, options: dict[str, str], valid: set[str]) -> tuple[tuple | None, str]:
    """Rule 6: the reply opens with "X. <option X's text>" and then goes on."""
    m = re.match(r"\W{0,8}?[(（]?([A-J])[)）]?[ \t]*+[.:、)）\-–—]?[ \t]*+", text)
    if not m or m.group(1) not in valid:
        return None, ""
    letter = m.group(1)
    body = options.get(letter, "").strip()
    end = m.end() + len(body)
    if not body or text[m.end() : end].lower() != body.lower() or not _LEAD_BOUNDARY.match(text, end):
        return None, ""
    if _LEAD_NEGATED.match(text, end):
        return None, ""
    for other in valid - {letter}:  # an option-by-option list is an analysis, not an answer
        other_body = re.escape(options.get(other, "").strip())
        if other_body and re.search(rf"(?m)^\W{{0,4}}{other}[ \t]*+[.:、)）][ \t]*+(?i:{other_body})", text):
            return None, ""
    return (letter,), text[:end].strip()


class _Clauses:
    """Where clauses end and where negation words stand, found once: "is this clause negated?" in O(log n)."""

    def __init__(self, text: str) -> None:
        self.ends = [m.end() for m in _CLAUSE_END.finditer(text)]
        self.words = [(m.start(), m.end()) for m in _CLAUSE_NEGATION.finditer(text)]

    def negated_before(self, pos: int) -> bool:
        """A negation word in the clause that ends at `pos` (at most 60 characters back)."""
        i = bisect.bisect_right(self.ends, pos) - 1
        lo = max(pos - 60, self.ends[i] if i >= 0 else 0)
        j = bisect.bisect_left(self.words, (lo, -1))
        return j < len(self.words) and self.words[j][1] <= pos


def _last_statement(text: str, valid: set[str], multi: bool) -> tuple[int, int, tuple, str] | None:
    """The last explicit answer statement that is not negated: (start, end, decided letters, span)."""
    found = [m for pattern in (_STATEMENT_EN, _STATEMENT_ZH) for m in pattern.finditer(text)]
    found.sort(key=lambda m: m.start())
    clauses = _Clauses(text) if found else None
    for m in reversed(found):
        if _NEGATED_AFTER.match(text, m.end()) or clauses.negated_before(m.start()):
            continue
        got = _decide(_letters_in(next(g for g in m.groups() if g)), valid, multi)
        if got is not None:
            return m.start(), m.end(), got, m.group(0).strip()
    return None


@functools.lru_cache(maxsize=512)
def _verdict_pattern(texts: tuple[str, ...]) -> re.Pattern[str]:
    """One pattern for every option's verdict; `texts` are the options' own texts."""
    alternatives = "|".join(re.escape(t) for t in sorted(set(texts), key=len, reverse=True) if t)
    own_part = rf"(?:\s*+[.):(（]?\s*+(?P<text>(?i:{alternatives}))[)）]?)?" if alternatives else ""
    return re.compile(
        rf"(?<![\w\-'’])(?:(?i:options?|choices?)\s*+)?(?:\((?P<p>[A-J])\)|(?P<l>[A-J])(?![\w\-'’])){own_part}\)?\**+"
        r"(?:\s*+[:\-–—=]\s*+|\s++(?i:is|are|seems\s++to\s++be|appears\s++to\s++be|would\s++be)\s++)"
        rf"(?i:{_POSITIVE})(?![\w-])"
        r"|(?:选项\s*+)?(?<![A-Za-z])(?P<z>[A-J])(?![A-Za-z])\s*+(?:选项)?\s*+(?:是|为)?\s*+(?:正确|对(?!应|比|照))"
    )


_VERDICT_PARTNER = re.compile(
    r"([A-J])\)?\s*+(?:,|/|&|\band\b|\bor\b|和|或|与)\s*+(?:(?i:options?)\s*+)?\(?$"
)


def _verdicts(text: str, options: dict[str, str], valid: set[str]) -> list[tuple[int, str, str]]:
    """Positive verdicts: (start, letter, span); "B and C are correct" gives both letters."""
    hits = []
    pattern = _verdict_pattern(tuple(options.get(k, "").strip() for k in sorted(valid)))
    for m in pattern.finditer(text):
        letter = m.group("p") or m.group("l") or m.group("z")
        named = m.groupdict().get("text")
        if letter not in valid or (named and named.lower() != options.get(letter, "").strip().lower()):
            continue  # another option's text after this letter: not this letter's verdict
        hits.append((m.start(), letter, m.group(0).strip()))
        partner = _VERDICT_PARTNER.search(text[max(0, m.start() - 24) : m.start()])
        if partner and partner.group(1) in valid:
            hits.append((m.start(), partner.group(1), m.group(0).strip()))
    hits.sort()
    return hits


def _claims(
    text: str, options: dict[str, str], valid: set[str], multi: bool
) -> tuple[Extraction | None, str]:
    """Rules 3-4: the last explicit statement, or the verdicts after it; with the rule that decided."""
    statement = _last_statement(text, valid, multi)
    verdicts = _verdicts(text, options, valid)
    if statement:
        _, end, got, span = statement
        after = [v for v in verdicts if v[0] >= end]
        if not after:
            return Extraction(got, "statement" if got else "ambiguous", span), "statement"
        verdicts = after
    if not verdicts:
        return None, ""
    got = _decide([v[1] for v in verdicts], valid, multi)
    span = "; ".join(dict.fromkeys(v[2] for v in verdicts))
    return Extraction(got or (), "verdict" if got else "ambiguous", span), "verdict"


def _bold(raw: str, options: dict[str, str], valid: set[str], multi: bool) -> tuple[tuple | None, str]:
    letters, spans = [], []
    for m in _BOLD.finditer(raw):
        inner = (m.group(1) or m.group(2)).strip()
        got = _letter_only(inner, options, valid, True)
        if got is None:
            inner_m = _BOLD_LETTER.match(inner)
            got = (inner_m.group(1),) if inner_m and inner_m.group(1) in valid else None
        if got:
            letters.extend(got)
            spans.append(m.group(0))
    return _decide(letters, valid, multi), "; ".join(spans)


def _mentions(text: str, valid: set[str], skip: set[str] | None = None) -> Iterator[tuple[str, int, int]]:
    """(letter, start, end) of every option letter named in free text (rule 7), in one linear scan.

    Letters in `skip` (the caller may add to it while reading) are passed over without checks."""
    compounds = None
    for m in _STANDALONE.finditer(text):
        opening, letter, closing = m.groups()
        upper = letter.upper()
        if upper not in valid or (skip and upper in skip):
            continue
        parenthesised = bool(opening and closing)
        if letter.islower() and not (closing and (opening or _at_token_start(text, m.start()))):
            continue  # lower-case only as "(b)" or "b)"
        if not parenthesised:
            if compounds is None:
                compounds = {c.end() for c in _COMPOUND_BEFORE.finditer(text)}
            if m.start() in compounds:
                continue  # "vitamin D", "type B", "维生素D"
            after = _WORD_AFTER.match(text, m.end())
            if after and after.group(1) not in _NAME_FOLLOWERS:
                continue  # "A mass", "B cells", "D deficiency", "A 3 cm nodule"
            if m.end() < len(text) and text[m.end()] in _COMPOUND_AFTER_ZH:
                continue  # "A型", "B超"
        yield upper, m.start(), m.end()


def _named(text: str, valid: set[str]) -> tuple[list[str], set[str]]:
    """Rule 7: (letters named and not negated, in order of first naming; letters named only negated)."""
    negation_ends = {m.end() for m in _NEGATED_BEFORE.finditer(text)}
    named: list[str] = []
    negated: set[str] = set()
    clean: set[str] = set()  # a letter named once without negation needs no more checks
    for letter, start, end in _mentions(text, valid, clean):
        if start in negation_ends or _NEGATED_AFTER.match(text, end):
            negated.add(letter)
        else:
            named.append(letter)
            clean.add(letter)
    return named, negated - clean


def option_mentions(text: str, valid: set[str]) -> list[str]:
    """Option letters named in free text, with articles and compounds left out (rule 7); linear."""
    return [letter for letter, _, _ in _mentions(text, valid)]


def _at_token_start(text: str, pos: int) -> bool:
    return pos == 0 or text[pos - 1].isspace()


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() and not _CJK.match(ch)


def _option_text_hits(text: str, options: dict[str, str]) -> dict[str, str]:
    """Options whose text appears, not negated (rule 8); Chinese texts match without spaces."""
    norm_reply = _norm_text(text)
    spans = []  # (start, stop, letter) of every bounded occurrence
    for k, v in options.items():
        own = _norm_text(v)
        pos = norm_reply.find(own) if own else -1
        while pos >= 0:
            stop = pos + len(own)
            if (pos == 0 or not _is_word_char(norm_reply[pos - 1])) and (
                stop == len(norm_reply) or not _is_word_char(norm_reply[stop])
            ):
                spans.append((pos, stop, k))
            pos = norm_reply.find(own, pos + 1)
    spans.sort(key=lambda s: (s[0], -s[1]))
    hits, covered = {}, -1
    for start, stop, k in spans:
        if stop <= covered:
            continue  # inside a longer option's text: "pneumonia" in "viral pneumonia"
        covered = max(covered, stop)
        if k not in hits and not _TEXT_NEGATED_BEFORE.search(norm_reply[max(0, start - 40) : start]):
            hits[k] = _norm_text(options[k])
    # "viral pneumonia" also contains "pneumonia": keep only maximal matches.
    return {k: v for k, v in hits.items() if not any(v != o and v in o for o in hits.values())}


def _rules(text: str, options: dict[str, str], valid: set[str], multi: bool) -> Extraction:
    """Rules 2-8 on an answer span; `ambiguous`/`none` when they do not decide."""
    text = _drop_echo(text, options)
    plain = text.replace("**", "").replace("__", "").strip()
    if not plain:
        return Extraction((), "none")
    got = _letter_only(plain, options, valid, multi)
    if got is not None:
        return Extraction(got, "letter-only" if got else "ambiguous", plain)
    claimed, rule = _claims(plain, options, valid, multi)
    if claimed is not None and (claimed.answered or rule == "statement"):
        return claimed  # an ambiguous last statement does not fall back to other rules
    got, span = _bold(text, options, valid, multi)
    if got:
        return Extraction(got, "bold", span)
    if claimed is not None:
        return claimed  # verdicts for several options
    got, span = _leading_answer(plain, options, valid)
    if got:
        return Extraction(got, "leading-answer", span)
    named, negated = _named(plain, valid)
    texts = {k: v for k, v in _option_text_hits(plain, options).items() if k not in negated}
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
    span, source, note = _span(reply or "")
    result = _rules(span, options, valid, multi)
    if source and result.answered:
        result = Extraction(result.letters, source, result.evidence or span)
    elif not result.answered and judge is not None and (reply or "").strip():
        verdict = judge(question, options, reply)
        got = _decide(_letters_in(verdict.strip().split("\n")[-1]) if verdict.strip() else [], valid, multi)
        if got:
            result = Extraction(got, "judge", verdict.strip())
    if note:
        result = Extraction(result.letters, result.method, f"[{note}] {result.evidence}".strip(), note)
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
