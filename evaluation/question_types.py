"""The one question-type inference, shared by the evaluator and the GRPO rewards.

A question is `mcq` when it has options, `closed` when its reference is a yes/no answer (English,
or SLAKE's Chinese 是/否), `open` otherwise. The reference is read after normalisation, so "Yes.",
" no " and "<answer>yes</answer>" are all closed. Reports are never inferred: a loader sets them.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Any, Literal

QuestionType = Literal["mcq", "closed", "open", "report"]
QUESTION_TYPES: tuple[str, ...] = ("mcq", "closed", "open", "report")
YES_WORDS = frozenset({"yes", "是"})
NO_WORDS = frozenset({"no", "否"})
YES_NO = YES_WORDS | NO_WORDS

_TAG = re.compile(r"</?(?:answer|think)>", re.IGNORECASE)
_STRIP = string.punctuation + "。，、！？：；（）“”‘’ \t\n"


def has_options(options: Any) -> bool:
    """True for a mapping with at least one non-empty value, or a non-empty list of options.

    Arrow stores a mapping column as one struct for all rows, so absent keys come back as None.
    """
    if not options:
        return False
    if isinstance(options, Mapping):
        return any(v is not None and str(v).strip() for v in options.values())
    if isinstance(options, str):
        return bool(options.strip())
    return any(v is not None and str(v).strip() for v in options)


def yes_no_reference(answer: Any) -> str | None:
    """ "yes" / "no" when a reference answer is a yes/no answer, else None."""
    text = _TAG.sub("", str(answer)).strip(_STRIP).lower()
    if text in YES_WORDS:
        return "yes"
    if text in NO_WORDS:
        return "no"
    return None


def infer_question_type(answer: Any, options: Any = None) -> QuestionType:
    """mcq when there are options, closed for yes/no references, open otherwise."""
    if has_options(options):
        return "mcq"
    if yes_no_reference(answer) is not None:
        return "closed"
    return "open"
