"""Prompts per question type, rendered through the model's own chat template.

The structure follows the MedEvalKit convention (Lingshu, Fig. 8): the image(s) first, then the
question, then (for multiple choice) the lettered options, then one short instruction that says
what form the answer must take. The wording here is this project's own. `PROMPT_VERSION` is part
of every predictions file header, so changing a template invalidates old predictions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .samples import EvalSample

PROMPT_VERSION = "gmaivl-eval-v1"

INSTRUCTIONS: dict[str, str] = {
    "mcq": "Reply with the letter of the correct option only.",
    "mcq_multi": "One or more options may be correct. Reply with the letters of all correct options, separated by commas.",
    "closed": "Reply with a single word or a short phrase.",
    "open": "Give a brief, direct answer.",
    "report": (
        "Write the radiology report for the image(s), with a findings section and an impression "
        "section, in exactly this layout:\nFindings: <findings>\nImpression: <impression>"
    ),
}


class MissingChatTemplateError(ValueError):
    """The processor cannot render conversations, so the evaluator cannot build prompts."""


def prompt_text(sample: EvalSample) -> str:
    """The user turn's text (without image placeholders)."""
    if sample.question_type == "report":
        head = f"{sample.question.strip()}\n" if sample.question.strip() else ""
        return head + INSTRUCTIONS["report"]
    lines = []
    hint = sample.metadata.get("hint")
    if hint:
        lines.append(f"Context: {hint}")
    lines.append(f"Question: {sample.question.strip()}")
    if sample.question_type == "mcq":
        lines.append("Options:")
        lines.extend(f"{k}. {v}" for k, v in sample.options.items())
        lines.append(INSTRUCTIONS["mcq_multi" if sample.is_multi_answer else "mcq"])
    else:
        lines.append(INSTRUCTIONS[sample.question_type])
    return "\n".join(lines)


def build_messages(
    sample: EvalSample, system_prompt: str | None = None, image_part: Callable[[Any], dict] | None = None
) -> list[dict[str, Any]]:
    """Chat messages: the image entries first, then the evaluator's prompt text. By default in the
    processor's format (`{"type": "image"}`); `image_part(image)` gives another (OpenAI's inline
    `image_url` for served models)."""
    if image_part is None:
        content: list[dict[str, Any]] = [{"type": "image"} for _ in sample.images]
    else:
        content = [image_part(image) for image in sample.load_images()]
    content.append({"type": "text", "text": prompt_text(sample)})
    messages: list[dict[str, Any]] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": content})
    return messages


def check_chat_template(processor: Any, name: str = "processor") -> None:
    template = getattr(processor, "chat_template", None)
    if template is None:
        tok = getattr(processor, "tokenizer", None)
        template = getattr(tok, "chat_template", None)
    if not template:
        raise MissingChatTemplateError(
            f"{name} ({type(processor).__name__}) has no chat template, so prompts cannot be rendered "
            "the way the model was trained; save the processor with its chat_template.jinja "
            "or set processor.chat_template"
        )


def render_prompt(processor: Any, sample: EvalSample, system_prompt: str | None = None) -> str:
    """The full prompt string, ending with the assistant turn's opening."""
    return processor.apply_chat_template(
        build_messages(sample, system_prompt), add_generation_prompt=True, tokenize=False
    )
