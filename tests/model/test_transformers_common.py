"""transformers' own common model tests (`ModelTesterMixin` of the installed version) on GMAI-VL.

The tester mirrors transformers' `LlavaVisionText2TextModelTester` (tiny CLIP vision tower, tiny
causal LM, placeholder tokens at the start of each row). Every skip below gives its reason; each
reason holds for transformers' LLaVA too (see modeling_gmaivl/README.md for the list).
"""

import unittest
from unittest import mock

import torch
from transformers import CLIPVisionConfig, Qwen2Config
from transformers.models.auto import modeling_auto

from gmaivl import GMAIVLConfig, GMAIVLForConditionalGeneration, GMAIVLModel

from .sdist_tests import load_common_tests

common = load_common_tests()
ids_tensor, floats_tensor = common.ids_tensor, common.floats_tensor


class GMAIVLModelTester:
    def __init__(self, parent, batch_size=3, text_seq_length=7, image_size=8, patch_size=4):
        self.parent = parent
        self.batch_size = batch_size
        self.is_training = True
        self.image_token_id = 0
        self.pad_token_id = 1
        self.vision_config = {
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": image_size,
            "patch_size": patch_size,
            "projection_dim": 32,
            "num_channels": 3,
        }
        self.text_config = {
            "vocab_size": 99,
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 512,
            "pad_token_id": self.pad_token_id,
            "eos_token_id": 2,
            "bos_token_id": 2,
            "tie_word_embeddings": False,
        }
        self.num_image_tokens = (image_size // patch_size) ** 2
        self.seq_length = text_seq_length + self.num_image_tokens
        self.encoder_seq_length = self.seq_length
        self.num_hidden_layers = self.text_config["num_hidden_layers"]
        self.num_attention_heads = self.text_config["num_attention_heads"]
        self.hidden_size = self.text_config["hidden_size"]
        self.vocab_size = self.text_config["vocab_size"]
        self.image_size, self.patch_size = image_size, patch_size

    def get_config(self) -> GMAIVLConfig:
        return GMAIVLConfig(
            vision_config=CLIPVisionConfig(**self.vision_config).to_dict(),
            text_config=Qwen2Config(**self.text_config).to_dict(),
            image_token_id=self.image_token_id,
            # As LLaVA's tester: the last vision layer feeds the projector, so every weight gets a gradient.
            vision_feature_layer=-1,
        )

    def prepare_config_and_inputs_for_common(self):
        config = self.get_config()
        pixel_values = floats_tensor([self.batch_size, 3, self.image_size, self.image_size])
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size - 2) + 2
        input_ids[:, : self.num_image_tokens] = self.image_token_id
        attention_mask = torch.ones_like(input_ids)
        return config, {
            "pixel_values": pixel_values,
            "input_ids": input_ids,
            "attention_mask": attention_mask,
        }


class GMAIVLCommonModelTest(common.ModelTesterMixin, unittest.TestCase):
    all_model_classes = (GMAIVLModel, GMAIVLForConditionalGeneration)
    _is_composite = True
    # CLIP's post_layernorm feeds only its pooled output, which LLaVA-style models never read (they
    # project hidden states), so it gets no gradient, in transformers' LLaVA as here.
    test_all_params_have_gradient = False
    # The mixin runs this test only for models whose config file is dated 2023 or later (LLaVA's is);
    # ours carries no copyright year, so opt in explicitly.
    test_can_init_all_missing_weights_before_2023 = True

    @classmethod
    def setUpClass(cls):
        # The mixin decides what a class is (base model: no labels, no training test; image-text-to-text:
        # causal-LM labels) by its name in transformers' static auto mappings, where LLaVA's classes are
        # listed. List GMAI-VL's beside them for the duration of these tests, so they are treated alike.
        cls._mappings = [
            mock.patch.dict(modeling_auto.MODEL_MAPPING_NAMES, {"gmai_vl": "GMAIVLModel"}),
            mock.patch.dict(
                modeling_auto.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES,
                {"gmai_vl": "GMAIVLForConditionalGeneration"},
            ),
        ]
        for patch in cls._mappings:
            patch.start()

    @classmethod
    def tearDownClass(cls):
        for patch in cls._mappings:
            patch.stop()

    def setUp(self):
        self.model_tester = GMAIVLModelTester(self)

    @unittest.skip(
        "GenerationTesterMixin (tests/generation/test_utils.py) is not in transformers' sdist, so no tester "
        "run from the sdist, LLaVA's included, can inherit it; generation is tested in test_generation.py"
    )
    def test_generation_tester_mixin_inheritance(self):
        pass
