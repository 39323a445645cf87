"""compose_gmaivl: a GMAI-VL from a pretrained ViT folder and a pretrained causal-LM folder."""

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForImageTextToText,
    CLIPConfig,
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from gmaivl.core.compose import compose_gmaivl

from ._helpers import conversation, random_image


def plain_tokenizer() -> PreTrainedTokenizerFast:
    """An LLM tokenizer that knows neither <image> nor the ChatML tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(["a chest ct scan of the liver", "what is shown in the image"], trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


def save_parts(tmp_path, full_clip: bool = False, tie_word_embeddings: bool = False):
    vision_config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=336,
        patch_size=14,
    )
    torch.manual_seed(0)
    if full_clip:
        clip = CLIPModel(
            CLIPConfig(
                vision_config=vision_config.to_dict(),
                text_config={
                    "hidden_size": 32,
                    "intermediate_size": 64,
                    "num_hidden_layers": 1,
                    "num_attention_heads": 4,
                },
            )
        )
        vision_state = {
            k.removeprefix("vision_model."): v
            for k, v in clip.state_dict().items()
            if k.startswith("vision_model.")
        }
    else:
        clip = CLIPVisionModel(vision_config)
        vision_state = clip.state_dict()
    clip.save_pretrained(tmp_path / "vision")
    tokenizer = plain_tokenizer()
    llm = Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=len(tokenizer),
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=tie_word_embeddings,
        )
    )
    llm.save_pretrained(tmp_path / "llm")
    tokenizer.save_pretrained(tmp_path / "llm")
    return vision_state, llm.state_dict(), len(tokenizer)


def test_compose_from_local_parts(tmp_path):
    vision_state, llm_state, old_vocab = save_parts(tmp_path)
    model, processor = compose_gmaivl(str(tmp_path / "vision"), str(tmp_path / "llm"), dtype=torch.float32)

    tokenizer = processor.tokenizer
    for token in ("<image>", "<|im_start|>", "<|im_end|>"):
        assert token in tokenizer.get_vocab()
    assert len(tokenizer) == old_vocab + 3
    assert (
        model.config.image_token_id == tokenizer.convert_tokens_to_ids("<image>") == processor.image_token_id
    )
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)
    assert model.lm_head.weight.shape[0] == len(tokenizer)
    assert model.config.text_config.vocab_size == len(tokenizer)

    # Pretrained weights arrive untouched: every vision weight, the old LLM rows.
    vision_now = model.model.vision_tower.state_dict()
    for name, value in vision_state.items():
        assert torch.equal(vision_now[name.removeprefix("vision_model.")], value), name
    embed = model.get_input_embeddings().weight
    assert torch.equal(embed[:old_vocab], llm_state["model.embed_tokens.weight"])
    assert torch.equal(model.lm_head.weight[:old_vocab], llm_state["lm_head.weight"])
    layer = "layers.1.self_attn.q_proj.weight"
    assert torch.equal(model.model.language_model.state_dict()[layer], llm_state[f"model.{layer}"])
    projector = model.model.multi_modal_projector
    assert projector.linear_1.in_features == 32 and projector.linear_2.out_features == 48
    assert torch.isfinite(projector.linear_1.weight).all() and projector.linear_1.weight.std() > 0

    # 336 px ViT-L-style geometry: 576 tokens per image, features from layer -2, no CLS.
    assert processor.num_image_tokens == model.config.num_image_tokens == 576
    text = processor.apply_chat_template(conversation("What is shown?"), add_generation_prompt=True)
    inputs = processor(text=text, images=[random_image(0)], return_tensors="pt")
    assert inputs["pixel_values"].shape == (1, 3, 336, 336)
    with torch.no_grad():
        out = model(**inputs)
    assert [f.shape for f in out.image_outputs.pooler_output] == [(576, 48)]
    assert torch.isfinite(out.logits).all()

    model.save_pretrained(tmp_path / "composed")
    processor.save_pretrained(tmp_path / "composed")
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "composed")
    with torch.no_grad():
        assert torch.equal(reloaded(**inputs).logits, out.logits)


def test_compose_takes_the_vision_half_of_a_full_clip_checkpoint(tmp_path):
    vision_state, _, _ = save_parts(tmp_path, full_clip=True)
    model, _ = compose_gmaivl(str(tmp_path / "vision"), str(tmp_path / "llm"), dtype=torch.float32)
    assert model.config.vision_config.model_type == "clip_vision_model"
    vision_now = model.model.vision_tower.state_dict()
    assert vision_state.keys() and all(torch.equal(vision_now[k], v) for k, v in vision_state.items())


def test_compose_keeps_tied_embeddings_tied_through_save_and_load(tmp_path):
    save_parts(tmp_path, tie_word_embeddings=True)
    model, _ = compose_gmaivl(str(tmp_path / "vision"), str(tmp_path / "llm"), dtype=torch.float32)
    assert model.config.tie_word_embeddings
    assert model.lm_head.weight is model.get_input_embeddings().weight
    model.save_pretrained(tmp_path / "composed")
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "composed")
    assert reloaded.lm_head.weight is reloaded.get_input_embeddings().weight
    assert torch.equal(reloaded.lm_head.weight, model.lm_head.weight)
