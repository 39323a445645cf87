"""TRL's stock trainers and CLI on a saved GMAI-VL, where this package cannot be imported.
The loss `SFTTrainer` logs and optimises is the mean over the tokens the model trains (image
placeholders excluded), and `--use_peft` needs no target names.

`Trainer` divides the summed loss by `num_items_in_batch`, counted from the collator's labels
(summed over gradient accumulation). Unless the image positions are already -100 there, that count
includes 16-576 untrained placeholders per image and the loss comes out several times too small,
by a factor that changes from batch to batch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from safetensors import safe_open

from gmaivl.core.tiny import build_tiny_gmaivl

from ._helpers import published_rows, write_hub_corpus

CHILD = textwrap.dedent(
    """
    import importlib.abc, json, sys
    class BlockGmaivl(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "gmaivl" or name.startswith("gmaivl."):
                raise ImportError("gmaivl must not be importable in this process")
    sys.meta_path.insert(0, BlockGmaivl())

    import torch
    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer

    folder, corpus, config, batch, accumulation = sys.argv[1:6]
    args = SFTConfig(
        output_dir="out", per_device_train_batch_size=int(batch),
        gradient_accumulation_steps=int(accumulation), learning_rate=0.0, logging_steps=1,
        max_steps=3, report_to="none", use_cpu=True, save_strategy="no", seed=0,
        model_init_kwargs={"trust_remote_code": True}, trust_remote_code=True,
    )
    trainer = SFTTrainer(model=folder, args=args, train_dataset=load_dataset(corpus, config, split="train"))
    image_token_id = trainer.model.config.image_token_id
    steps = {}  # optimizer step -> [summed token NLL, trained tokens], computed apart from the model's loss
    compute_loss = trainer.compute_loss

    def measured(model, inputs, return_outputs=False, num_items_in_batch=None):
        with torch.no_grad():
            logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                           pixel_values=inputs.get("pixel_values")).logits.float()
        targets = inputs["labels"][:, 1:]
        trained = (targets != -100) & (inputs["input_ids"][:, 1:] != image_token_id)
        nll = torch.nn.functional.cross_entropy(
            logits[:, :-1][trained], targets[trained], reduction="sum")
        total = steps.setdefault(trainer.state.global_step, [0.0, 0])
        total[0] += nll.item()
        total[1] += int(trained.sum())
        return compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)

    trainer.compute_loss = measured
    trainer.train()
    logged = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    true = [steps[k][0] / steps[k][1] for k in sorted(steps)]
    print(json.dumps({"logged": logged, "true": true,
                      "modules": sorted(m for m in sys.modules if m.startswith("gmaivl"))}))
    """
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("trl_loss")
    write_hub_corpus(root / "corpus", {"percept": published_rows(8)})
    model, processor = build_tiny_gmaivl(image_size=112)  # 64 placeholders per image
    model.save_pretrained(root / "gmaivl")
    processor.save_pretrained(root / "gmaivl")
    return root


def assert_logged_loss_is_the_true_mean(workdir, folder, corpus, config, batch, accumulation) -> None:
    """Run CHILD from `workdir` (outside the repository) and compare the logged and true means."""
    env = {**os.environ, "HF_MODULES_CACHE": str(workdir / "modules"), "PYTHONPATH": ""}
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder), str(corpus), config, str(batch), str(accumulation)],
        cwd=workdir,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    result = json.loads(child.stdout.strip().splitlines()[-1])
    assert result["modules"] == []
    assert len(result["logged"]) == len(result["true"]) == 3
    for logged, true in zip(result["logged"], result["true"], strict=True):
        assert logged == pytest.approx(true, rel=0.01), result


@pytest.mark.parametrize(("batch", "accumulation"), [(2, 1), (1, 3)])
def test_trl_sft_logs_the_mean_over_trained_tokens(workdir, batch, accumulation):
    assert_logged_loss_is_the_true_mean(workdir, "gmaivl", "corpus", "percept", batch, accumulation)


def test_trl_sft_use_peft_names_no_targets_and_adapts_the_language_model(workdir):
    cmd = [
        sys.executable, "-m", "trl.cli.main", "sft", "--model_name_or_path", "gmaivl", "--trust_remote_code",
        "--dataset_name", "corpus", "--dataset_config", "percept", "--output_dir", "out_peft", "--use_peft",
        "--max_steps", "1", "--per_device_train_batch_size", "2", "--report_to", "none", "--use_cpu", "true",
    ]  # fmt: skip
    env = {**os.environ, "HF_MODULES_CACHE": str(workdir / "modules"), "PYTHONPATH": ""}
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    keys = safe_open(workdir / "out_peft" / "adapter_model.safetensors", "pt").keys()
    assert keys and all(".language_model." in key and "lora_" in key for key in keys), sorted(keys)
