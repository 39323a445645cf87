"""Turning a free-text reply into an answer.

Multiple choice is rule-based first, in this order (the first rule that decides wins):

1. `letter-only`: the reply is just a letter or a letter list ("B", "(B)", "B. Pneumonia", "A, C",
   "(b) pneumonia").
2. `answer-is`: an explicit statement ("The answer is (B)", "Answer: C", "correct options are A and D",
   "the answer is b."); the last such statement counts.
3. `final-letter`: exactly one option letter stands among the reply's final tokens, or in the whole
   reply ("...so I would pick C."). Articles ("A mass is seen") and hyphenated letters ("B-mode")
   are not letters.
4. `option-text`: exactly one option's text appears in the reply (an option whose text is part of a
   longer matching option does not count separately).
5. `judge`: only when a judge is configured, an LLM behind an OpenAI-compatible endpoint reads the
   question, options and reply and names the letter(s).

If nothing decides, the reply is unanswerable (`method="none"`): it is scored as wrong and counted.
Two different letters for a single-answer question are ambiguous, hence unanswerable. A lower-case
letter counts only where it cannot be a word: in parentheses, before ")", or before "." / ":" that
end the reply or a token ("the answer is a nodule" is not option A; "e.g." is not option E).

The same rules score GRPO's accuracy reward (`gmaivl.trainers.rewards`), so training and evaluation
read answers alike.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Any, Protocol

FINAL_WINDOW = 6  # tokens at the end of a reply that rule 3 looks at first

_LETTER_LIST = r"[A-J](?:\s*(?:,|/|&|\band\b|\bor\b)\s*[A-J])*"
_ONLY_LETTERS = re.compile(
    rf"^\W*(?:options?\s*|answers?\s*[:=]?\s*)?\(?({_LETTER_LIST})\)?(?:[.):]\s*.*)?\W*$",
    re.IGNORECASE | re.DOTALL,
)
_VERB = r"\s+(?i:is|are|would\s+be|should\s+be|will\s+be|must\s+be)"
# "answer"/"choose" may be followed directly by a letter ("I choose D"); "option"/"choice" only
# states an answer with a verb or a colon ("the correct option is C", "Option: C"): a bare mention
# ("Option A is a distractor") is not a statement.
_ANSWER_IS = re.compile(
    r"(?:(?i:answers?|choose|select|pick)(?:" + _VERB + r")?"
    r"|(?i:options?|choices?)(?:" + _VERB + r"|(?=\s*[:=])))"
    r"(?:\s+(?i:most\s+likely|likely|probably))?"
    r"\s*[:=]?\s*(?:(?i:options?|choices?)\s*)?"
    r"(?:\**\(?\**(" + _LETTER_LIST + r")\**\)?(?![\w-])|\(([a-j])\)|([a-j])(?=[.:]?\s*$))",
)
# a lone lower-case option letter leading a reply: "(b) ...", "b) ...", "b. ...", "Option (b)"
_LOWER_LEAD = re.compile(r"^\W*(?:(?i:options?|answers?)\s*[:=]?\s*)?(?:\([a-j]\)|[a-j]\)|[a-j][.:](?=\s|$))")
_NOT_NOUNS = {
    "or",
    "and",
    "is",
    "was",
    "seems",
    "appears",
    "looks",
    "would",
    "could",
    "because",
    "since",
    "as",
}
_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_STANDALONE = re.compile(r"(?<![\w-])\(?([A-J])\)?(?![\w-])")


@dataclass(frozen=True)
class Extraction:
    letters: tuple[str, ...]  # sorted option letters; empty when unanswerable
    method: str  # letter-only | answer-is | final-letter | option-text | judge | none

    @property
    def answered(self) -> bool:
        return bool(self.letters)


class Judge(Protocol):
    def __call__(self, question: str, options: dict[str, str], reply: str) -> str: ...


def _letters_in(text: str) -> list[str]:
    return [x.upper() for x in re.findall(r"(?<![A-Za-z])([A-Ja-j])(?![A-Za-z])", text)]


def _clean(reply: str) -> str:
    return reply.replace("**", "").replace("__", "").strip()


def _standalone_letters(text: str, valid: set[str]) -> list[str]:
    found = []
    for m in _STANDALONE.finditer(text):
        letter = m.group(1)
        if letter not in valid:
            continue
        after = text[m.end() :]
        parenthesised = m.group(0).startswith("(") and m.group(0).endswith(")")
        # "A" followed by a lower-case word is the article, not option A.
        article = re.match(r"\s+([a-z]+)", after)
        if letter == "A" and not parenthesised and article and article.group(1) not in _NOT_NOUNS:
            continue
        found.append(letter)
    return found


def _norm_text(s: str) -> str:
    s = s.lower()
    s = s.translate(str.maketrans(dict.fromkeys(string.punctuation, " ")))
    return " ".join(s.split())


def _decide(letters: list[str], valid: set[str], multi: bool) -> tuple[str, ...] | None:
    letters = [x for x in letters if x in valid]
    distinct = sorted(set(letters))
    if not distinct:
        return None
    if multi:
        return tuple(distinct)
    return tuple(distinct) if len(distinct) == 1 else ()


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
    text = _clean(reply or "")
    if not text:
        return Extraction((), "none")

    m = _ONLY_LETTERS.match(text)
    if m:
        raw = m.group(1)
        # a lower-case "a" is usually the article: accept a lone lower-case letter only when it
        # is the whole reply or leads it as "(b)", "b)", "b." or "b:"
        lead_lower = raw.islower() and len(raw) == 1 and _LOWER_LEAD.match(text)
        if re.sub(r"(?i)\band\b|\bor\b", "", raw).isupper() or len(text.strip("().: ")) == 1 or lead_lower:
            got = _decide(_letters_in(raw), valid, multi)
            if got:
                return Extraction(got, "letter-only")
            if got == ():
                return Extraction((), "none")

    statements = list(_ANSWER_IS.finditer(text))
    for st in reversed(statements):
        got = _decide(_letters_in(next(g for g in st.groups() if g)), valid, multi)
        if got:
            return Extraction(got, "answer-is")
        if got == ():  # the last statement names two letters: ambiguous, not an earlier statement
            return Extraction((), "none")

    letters = _standalone_letters(text, valid)
    if letters:
        tokens = text.split()
        tail = " ".join(tokens[-FINAL_WINDOW:])
        tail_letters = _standalone_letters(tail, valid)
        if multi:
            return Extraction(tuple(sorted(set(letters))), "final-letter")
        if len(set(tail_letters)) == 1:
            return Extraction((tail_letters[0],), "final-letter")
        if len(set(letters)) == 1:
            return Extraction((letters[0],), "final-letter")

    norm_reply = f" {_norm_text(text)} "
    hits = {
        k: _norm_text(v) for k, v in options.items() if _norm_text(v) and f" {_norm_text(v)} " in norm_reply
    }
    # "viral pneumonia" also contains "pneumonia": keep only maximal matches.
    hits = {k: v for k, v in hits.items() if not any(v != o and v in o for o in hits.values())}
    if hits and (multi or len(hits) == 1):
        return Extraction(tuple(sorted(hits)), "option-text")

    if judge is not None:
        verdict = judge(question, options, reply)
        got = _decide(_letters_in(verdict.split("\n")[-1]) if verdict.strip() else [], valid, multi)
        if got:
            return Extraction(got, "judge")
    return Extraction((), "none")


def normalize_answer(text: str) -> str:
    """SQuAD-style: lower case, punctuation and articles removed, single spaces."""
    text = str(text).lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def extract_yes_no(reply: str) -> str | None:
    """ "yes"/"no" when the reply commits to exactly one of them, else None."""
    words = _norm_text(reply).split()
    if not words:
        return None
    if words[0] in {"yes", "no"}:
        return words[0]
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
    run never asks twice.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        client: Any = None,
    ) -> None:
        import httpx

        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = client or httpx.Client(timeout=timeout, headers=headers)

    def __call__(self, question: str, options: dict[str, str], reply: str) -> str:
        opts = "\n".join(f"{k}. {v}" for k, v in options.items())
        body = {
            "model": self.model,
            "temperature": 0,
            "messages": [
                {"role": "user", "content": JUDGE_PROMPT.format(question=question, options=opts, reply=reply)}
            ],
        }
        resp = self.client.post(self.url, json=body)
        resp.raise_for_status()
        content = resp.json()["choices"][0]["message"]["content"] or ""
        return "" if "NONE" in content.upper().split() else content
