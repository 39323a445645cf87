"""Prompt text for the LLM-backed generators (own wording, structured like the GMAI-VL paper Table 2 / Table 12).

Every prompt carries the annotation (`<image, modality, label, department, bbox?>`) so the model
writes from verified facts; every reply is a JSON object that `llm.py` validates.
"""

from __future__ import annotations

from .labels import modality_name
from .records import MedicalRecord
from .templates import box_text

PROMPT_VERSION = "1"

SYSTEM = "You are an experienced physician specialised in medical imaging. You answer in valid JSON only."


def _facts(record: MedicalRecord) -> str:
    facts = [
        f"- modality: {modality_name(record.modality)}",
        f"- clinical department: {record.department}",
        f"- annotated label: {record.label}",
    ]
    if record.bbox is not None:
        facts.append(
            f"- bounding box of the labelled region (pixels, [x_min, y_min, x_max, y_max]): {box_text(record.bbox)}"
        )
    facts.append(f"- image size: {record.width} x {record.height} pixels")
    return "\n".join(facts)


def caption_prompt(record: MedicalRecord) -> str:
    if record.bbox is not None:
        return (
            "The attached medical image comes with an expert annotation:\n"
            f"{_facts(record)}\n\n"
            "Write a detailed description of the boxed region. Rules:\n"
            "1. Describe only what can be seen or inferred from the image.\n"
            "2. Cover the visual features that relate to the annotated label.\n"
            "3. Begin the description with the words 'This region'.\n"
            "4. Let the description imply the annotation rather than quote it verbatim.\n"
            "5. Mention the main structures inside and around the box, the background, texture and other notable features.\n"
            'Reply as JSON: {"caption": "This region ..."}'
        )
    return (
        "The attached medical image comes with an expert annotation:\n"
        f"{_facts(record)}\n\n"
        "Write a detailed description of the whole image. Rules:\n"
        "1. Describe only what can be seen or inferred from the image.\n"
        "2. Cover the anatomy shown, the imaging characteristics and the features that support the annotated label.\n"
        "3. Let the description imply the annotation rather than quote it verbatim.\n"
        "4. Do not invent patient history, measurements or findings that the image cannot show.\n"
        'Reply as JSON: {"caption": "..."}'
    )


def instruction_prompt(record: MedicalRecord, pairs: int = 3) -> str:
    return (
        "The attached medical image comes with an expert annotation:\n"
        f"{_facts(record)}\n\n"
        f"Write {pairs} question-answer pairs about this image. Rules:\n"
        "1. Every pair must rest on the image content and relate to the annotation; avoid textbook definitions.\n"
        "2. Lead the reader through the visible evidence for the label: location, extent, shape, signal or colour changes.\n"
        "3. Questions and answers must be specific and unambiguous; no speculation beyond the image.\n"
        '4. Reply as JSON: {"pairs": [{"question": "...", "answer": "..."}, ...]}'
    )


def translation_prompt(messages: list[dict[str, str]]) -> str:
    import json

    turns = [{"role": m["role"], "content": m["content"]} for m in messages]
    return (
        "Translate the following medical conversation from English into Simplified Chinese. Keep the meaning, "
        "medical terminology, numbers, option letters and bounding boxes exactly; translate every turn.\n"
        f"{json.dumps(turns, ensure_ascii=False)}\n"
        'Reply as JSON: {"messages": [{"role": "...", "content": "..."}, ...]} with the same roles in the same order.'
    )


def judge_prompt(record_fields: dict[str, str], messages: list[dict[str, str]]) -> str:
    dialogue = "\n".join(
        f"{'Question' if m['role'] == 'user' else 'Answer'}: {m['content']}"
        for m in messages
        if m["role"] != "system"
    )
    return (
        "Score the quality of this medical image-text training sample from 1 (best) to 5 (worst).\n"
        f"Modality: {record_fields.get('modality', '')}\nDepartment: {record_fields.get('department', '')}\n"
        f"Label: {record_fields.get('label', '')}\nDialogue:\n{dialogue}\n\n"
        "Judge four aspects: medical accuracy (terms and interpretation agree with current practice, nothing "
        "misleading), clarity and fluency of the language, completeness of the content, and relevance to the image.\n"
        "Scale: 1 = accurate, clear, complete and well grounded in the image; 2 = high quality with small "
        "imperfections; 3 = accurate and complete, could be phrased or interpreted more clearly, fit for training; "
        "4 = notable medical errors or unclear language; 5 = wrong or misleading, poor quality.\n"
        'Reply as JSON: {"score": <1-5>, "comments": "..."}'
    )
