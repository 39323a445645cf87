"""Hand-written Triton kernels for packed (padding-free) attention.

``packed_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal=True,
softmax_scale=None, return_lse=False, deterministic=False, window_size=(-1, -1))`` has the shapes
and semantics of FlashAttention's ``flash_attn_varlen_func``: q ``(total_q, H, D)``, k/v ``(total_k, H_kv, D)``, int32 cumulative
sequence lengths, GQA/MQA without repeating K/V, causal (bottom-right aligned) or bidirectional,
head dims up to 256, fp16/bf16/fp32, with a Triton backward.

Importing this package registers the attention implementation ``"gmaivl_packed"`` with
transformers (``register()`` does it again, idempotently), so any model can use it::

    import gmaivl.kernels  # registers "gmaivl_packed"
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="gmaivl_packed")
    # or, on a built model: model.set_attn_implementation("gmaivl_packed")

For GMAI-VL set it on the language model only (``attn_implementation={"text_config":
"gmaivl_packed", "vision_config": "sdpa"}`` or the language model's config); the vision tower stays
on sdpa. Feed packed rows as one batch row with ``position_ids`` restarting at 0 per sample and no
``attention_mask``; passing ``cu_seq_lens_q/k`` and ``max_length_q/k`` as well avoids deriving them
from ``position_ids`` in every layer. Padded batches (a 2-D ``attention_mask``) are unpadded and
re-padded. On a machine without a GPU set ``TRITON_INTERPRET=1`` before import (tests only: slow).
"""

if __name__ != "gmaivl.kernels":  # imported by its folder name from a checkout: see gmaivl/_checkout.py
    import pathlib
    import runpy

    runpy.run_path(str(pathlib.Path(__file__).parents[1] / "gmaivl" / "_checkout.py"))["hand_over"](__name__)
else:
    from .reference import packed_attention_reference, seqlens_to_cu
    from .transformers_integration import ATTENTION_NAME, cu_seqlens_from_position_ids, register
    from .varlen import interpreter_active, packed_attention

    __all__ = [
        "ATTENTION_NAME",
        "cu_seqlens_from_position_ids",
        "interpreter_active",
        "packed_attention",
        "packed_attention_reference",
        "register",
        "seqlens_to_cu",
    ]

    register()
