"""`gmaivl model demo`: the model plumbing, end to end on a CPU in seconds.

It builds a small random GMAI-VL at the paper's 336 px resolution (576 image tokens per image),
asks it about a real CT slice (pydicom's `CT_small.dcm`, windowed for soft tissue), saves model
and processor as a Hub-ready folder, reloads that folder through the auto classes with
`trust_remote_code=True` and checks that the reloaded model answers identically.
The weights are random, so the answer is gibberish: the point is the plumbing.
"""

from __future__ import annotations

from pathlib import Path

import torch


def run_demo(
    output_dir: str | Path,
    question: str,
    window: str | tuple[float, float] = "soft_tissue",
    max_new_tokens: int = 12,
) -> dict:
    from pydicom.data import get_testdata_file
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from gmaivl.core.tiny import build_tiny_gmaivl
    from gmaivl.dataset_builders.imaging import read_dicom

    output_dir = Path(output_dir)
    model, processor = build_tiny_gmaivl(image_size=336)
    frames, meta = read_dicom(get_testdata_file("CT_small.dcm"))
    ct_slice = frames[0]  # Hounsfield units

    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=prompt, images=[ct_slice], images_kwargs={"window": window}, return_tensors="pt")

    def answer(m) -> tuple[torch.Tensor, str]:
        with torch.no_grad():
            ids = m.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        new = ids[0, inputs["input_ids"].shape[1] :]
        return new, processor.decode(new, skip_special_tokens=True)

    ids_before, text_before = answer(model)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)

    reloaded = AutoModelForImageTextToText.from_pretrained(output_dir, trust_remote_code=True)
    reloaded_processor = AutoProcessor.from_pretrained(output_dir, trust_remote_code=True)
    inputs_again = reloaded_processor(
        text=prompt, images=[ct_slice], images_kwargs={"window": window}, return_tensors="pt"
    )
    if not torch.equal(inputs_again["pixel_values"], inputs["pixel_values"]):
        raise RuntimeError("The reloaded processor produced different pixel values.")
    ids_after, _ = answer(reloaded)
    summary = {
        "image": "pydicom CT_small.dcm",
        "dicom_fields_used": sorted(meta),
        "hounsfield_range": [float(ct_slice.min()), float(ct_slice.max())],
        "window": window,
        "image_tokens": int((inputs["input_ids"] == model.config.image_token_id).sum()),
        "prompt_tokens": int(inputs["input_ids"].shape[1]),
        "question": question,
        "answer": text_before,
        "saved_to": str(output_dir),
        "saved_files": sorted(p.name for p in output_dir.iterdir()),
        "reload_identical": bool(torch.equal(ids_before, ids_after)),
    }
    if not summary["reload_identical"]:
        raise RuntimeError("The reloaded model generated a different answer.")
    return summary
