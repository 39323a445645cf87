"""Image placeholders never count in the loss, whatever labels the caller passes: TRL's default
SFTTrainer (its collator labels every non-pad token, image placeholders included) trains none."""

import torch
import torch.nn.functional as F
from datasets import Dataset
from trl import SFTConfig, SFTTrainer
from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

from gmaivl.core.tiny import build_tiny_gmaivl

from ._helpers import conversation, random_image


def text_only_loss(logits: torch.Tensor, labels: torch.Tensor, image_token_id: int) -> torch.Tensor:
    """Next-token cross-entropy over the labels that are neither padding nor image placeholders."""
    labels = labels.masked_fill(labels == image_token_id, -100)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)


def test_model_loss_ignores_image_labels(tiny):
    model, processor = tiny
    text = processor.apply_chat_template(conversation("Modality?", "A chest CT."))
    inputs = processor(text=text, images=[random_image(0)], return_tensors="pt")
    labels = inputs["input_ids"].clone()  # image placeholders labelled, as a naive caller does
    image_token_id = model.config.image_token_id
    assert (labels == image_token_id).sum() == 16
    with torch.no_grad():
        out = model(**inputs, labels=labels)
        by_embeds = model(
            inputs_embeds=model.get_input_embeddings()(inputs["input_ids"]),
            attention_mask=inputs["attention_mask"],
            labels=labels,
        )
    torch.testing.assert_close(out.loss, text_only_loss(out.logits, labels, image_token_id))
    torch.testing.assert_close(by_embeds.loss, text_only_loss(by_embeds.logits, labels, image_token_id))
    assert torch.equal(labels, inputs["input_ids"]), "the caller's labels are not modified in place"


def test_trl_default_sft_trainer_trains_no_image_token(tmp_path):
    model, processor = build_tiny_gmaivl(seed=3)
    rows = []
    for i, (q, a) in enumerate([("Modality?", "A chest CT."), ("Any lesion?", "Yes, in the liver.")]):
        messages = conversation(q)
        messages.append({"role": "assistant", "content": [{"type": "text", "text": a}]})
        rows.append({"images": [random_image(i)], "messages": messages})
    dataset = Dataset.from_list(rows)
    args = SFTConfig(
        output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2, report_to=[], use_cpu=True
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor)
    assert isinstance(trainer.data_collator, DataCollatorForVisionLanguageModeling)
    batch = trainer.data_collator([dataset[0], dataset[1]])
    image_token_id = model.config.image_token_id
    assert int((batch["input_ids"] == image_token_id).sum()) == 32
    # TRL's collator sets `labels = input_ids.clone()`; the processor's batch masks the placeholders
    # as they are set, so the token count `Trainer` divides by is the trained tokens' own.
    assert int((batch["labels"] == image_token_id).sum()) == 0

    loss = trainer.compute_loss(model, dict(batch))
    # What compute_loss runs: TRL's fused LM head, patched over `forward`, reading the labels itself.
    # It scores only the positions it is told to; none is an image placeholder.
    with torch.no_grad():
        fused = model(**batch, use_cache=False, fused_lm_head=True)
    scored = fused.label_mask  # (batch, seq - 1): positions whose next token is trained
    next_tokens = batch["input_ids"][:, 1:]
    assert int(scored[next_tokens == image_token_id].sum()) == 0
    text_labels = (batch["labels"][:, 1:] != -100) & (next_tokens != image_token_id)
    assert torch.equal(scored, text_labels)
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    torch.testing.assert_close(loss.detach(), text_only_loss(logits, batch["labels"], image_token_id))
    trainer.train()  # one optimisation step runs end to end


def test_labels_set_on_the_processor_batch_never_train_placeholders():
    import pickle

    model, processor = build_tiny_gmaivl()
    text = processor.apply_chat_template(conversation("Modality?"), add_generation_prompt=True)
    batch = processor(text=[text], images=[[random_image(0)]], return_tensors="pt")
    placeholders = batch["input_ids"] == model.config.image_token_id
    assert int(placeholders.sum()) == processor.num_image_tokens
    for copy in (batch, pickle.loads(pickle.dumps(batch))):  # as a DataLoader worker returns it
        copy["labels"] = copy["input_ids"].clone()
        assert torch.equal(copy["labels"] == -100, placeholders)
        assert torch.equal(copy["labels"][~placeholders], copy["input_ids"][~placeholders])
