"""Batching of vision-language training rows, padded or packed.

TRL refuses `packing=True` for vision datasets, so this module packs itself: whole samples (never
split, their image tokens stay with their text) go into rows of at most `max_length` tokens by
best-fit-decreasing; position ids restart at 0 for every sample; `cu_seq_lens_q/k` describe the
samples (and the padding tail of each row) over the flattened `rows x length` layout for varlen
kernels. No `attention_mask` is returned in packed mode: with none, transformers' sdpa/eager build
a block-diagonal causal mask from the position ids (`masking_utils.find_packed_sequence_indices`),
so attention never crosses a sample boundary. Implementations that would ignore the position ids
are refused (`check_packing_attention`).

Labels are the assistant tokens only (from the chat template's `{% generation %}` markers), never
image placeholders, user/system turns, padding, or the first token of a sample. So the packed and
the padded batch of the same samples hold exactly the same label tokens, and TRL's loss (sum over
label tokens / number of label tokens) is the same number.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

#: Attention implementations under which a packed row stays exact. "gmaivl_packed" (our Triton
#: kernel) reads `cu_seq_lens_*`; sdpa and eager rebuild a block-diagonal mask from position ids as
#: long as no attention mask is passed.
PACKING_SAFE_ATTENTION: frozenset[str] = frozenset({"gmaivl_packed", "sdpa", "eager"})


class PackingAttentionError(ValueError):
    """Raised when packed rows would be trained with attention leaking across samples."""


def check_packing_attention(attn_implementation: str | None, batch: dict[str, Any] | None = None) -> None:
    """Refuse an attention setup under which packed samples would see each other."""
    if attn_implementation not in PACKING_SAFE_ATTENTION:
        raise PackingAttentionError(
            f"packed rows need an attention implementation that keeps samples apart; "
            f"{attn_implementation!r} is not one of {sorted(PACKING_SAFE_ATTENTION)}. Load the model with "
            "attn_implementation='gmaivl_packed' (Triton varlen kernel) or 'sdpa', or turn vlm_packing off."
        )
    if batch is not None and batch.get("attention_mask") is not None:
        raise PackingAttentionError(
            f"a packed batch must not carry an attention_mask under {attn_implementation!r}: with one, the padding "
            "mask is used instead of the sample boundaries (sdpa/eager: the block-diagonal mask from position ids; "
            "gmaivl_packed: cu_seq_lens), and samples attend to each other."
        )
    if batch is not None and batch.get("use_cache", True):
        raise PackingAttentionError(
            "a packed batch must run with use_cache=False: with a KV cache, transformers does not build the "
            "block-diagonal mask from position ids, and samples attend to each other."
        )


def best_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Pack items (by length) into bins of `capacity`: longest first, each into the fullest bin it fits.

    Returns bins as lists of item indices, each bin's items in decreasing length. O(n log n).
    """
    if capacity <= 0:
        raise ValueError(f"capacity must be positive, got {capacity}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    # (remaining capacity, bin index), kept sorted so the best fit is the first entry >= length.
    free: list[tuple[int, int]] = []
    for i in order:
        length = lengths[i]
        if length > capacity:
            raise ValueError(f"item {i} has length {length} > capacity {capacity}")
        pos = bisect.bisect_left(free, (length, -1))
        if pos < len(free):
            remaining, b = free.pop(pos)
        else:
            b, remaining = len(bins), capacity
            bins.append([])
        bins[b].append(i)
        bisect.insort(free, (remaining - length, b))
    return bins


@dataclass
class EncodedSample:
    """One tokenised training row."""

    input_ids: torch.Tensor  # (L,) long
    labels: torch.Tensor  # (L,) long, -100 where no loss
    pixel_values: torch.Tensor | None  # (n_images, C, H, W), or Qwen2-VL's (n_patches, D), or None
    image_grid_thw: torch.Tensor | None = None  # Qwen2-VL: (n_images, 3) patch grid per image
    mm_token_type_ids: torch.Tensor | None = None  # Qwen2-VL: (L,) 1 on image tokens

    def __len__(self) -> int:
        return int(self.input_ids.numel())


def _row_name(example: dict[str, Any], index: int) -> str:
    for key in ("id", "sample_id", "uid"):
        if example.get(key) is not None:
            return f"row {index} (id={example[key]!r})"
    return f"row {index}"


class GMAIVLDataCollator:
    """Collate `images` + `messages` rows for GMAI-VL SFT, padded (default) or packed.

    Args:
        processor: the GMAI-VL processor (tokenizer with a ChatML template carrying `{% generation %}`
            markers, image processor, `image_token`).
        max_length: longest sample in tokens (and length of a packed row). A longer sample is cut at
            the end if no image token is lost, otherwise it is an error naming the row.
        packing: pack whole samples into rows (best-fit-decreasing) instead of one row per sample.
        attn_implementation: the language model's attention; checked when `packing` is on.
        pad_to_multiple_of: round the row length up to a multiple of this.
        rope_index: Qwen2-VL / Qwen2.5-VL only, the model's `get_rope_index`. Packed rows then get
            position ids of shape (4, rows, length): text positions restarting per sample (from which
            transformers builds the block-diagonal mask), then the M-RoPE (t, h, w) positions of each
            sample computed on its own, as if it were alone in its row.
    """

    def __init__(
        self,
        processor: Any,
        max_length: int | None = None,
        packing: bool = False,
        attn_implementation: str | None = "sdpa",
        pad_to_multiple_of: int | None = None,
        rope_index: Any = None,
    ) -> None:
        self.processor = processor
        self.rope_index = rope_index
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.max_length = max_length
        self.packing = packing
        self.attn_implementation = attn_implementation
        self.pad_to_multiple_of = pad_to_multiple_of
        if packing:
            if max_length is None:
                raise ValueError("packing needs max_length (the length of a packed row)")
            check_packing_attention(attn_implementation)
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.eos_token_id
        if pad_id is None:
            raise ValueError("the tokenizer has neither a pad nor an eos token to pad with")
        self.pad_token_id = int(pad_id)
        image_token = getattr(processor, "image_token", "<image>")
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(image_token)

    # -- one sample ---------------------------------------------------------------------------------
    def encode(self, example: dict[str, Any], index: int = 0) -> EncodedSample:
        """Tokenise one row; labels on assistant tokens only."""
        from trl.data_utils import prepare_multimodal_messages

        name = _row_name(example, index)
        if "messages" not in example:
            raise KeyError(f"{name}: training rows need a `messages` column, got keys {sorted(example)}")
        images = example.get("images")
        if images is None and example.get("image") is not None:
            images = [example["image"]]
        images = [img.convert("RGB") if hasattr(img, "convert") else img for img in (images or [])]
        try:
            messages = prepare_multimodal_messages(
                self._split_image_tokens(example["messages"]), images=images
            )
        except ValueError as err:
            raise ValueError(f"{name}: {err}") from err
        n_placeholders = sum(
            1
            for m in messages
            for part in (m.get("content") or [])
            if isinstance(part, dict) and part.get("type") == "image"
        )
        if n_placeholders != len(images):
            raise ValueError(
                f"{name}: {n_placeholders} image placeholders in `messages` but {len(images)} images"
            )
        if not any(m.get("role") == "assistant" for m in messages):
            raise ValueError(f"{name}: no assistant turn, so nothing to train on")
        out = self.processor.apply_chat_template(
            messages,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            return_assistant_tokens_mask=True,
            processor_kwargs={"add_special_tokens": False, "padding": False},
        )
        input_ids = out["input_ids"][0].long()
        mask = torch.as_tensor(out["assistant_masks"]).reshape(-1).bool()
        labels = torch.where(mask, input_ids, torch.full_like(input_ids, -100))
        labels[input_ids == self.image_token_id] = -100
        labels[0] = -100  # nothing predicts the first token of a sample
        pixel_values = out.get("pixel_values") if images else None
        grid = out.get("image_grid_thw") if images else None
        token_types = out["mm_token_type_ids"][0].long() if "mm_token_type_ids" in out else None
        if self.max_length is not None and input_ids.numel() > self.max_length:
            if (input_ids[self.max_length :] == self.image_token_id).any():
                raise ValueError(
                    f"{name}: {input_ids.numel()} tokens, more than max_length={self.max_length}, and cutting it would "
                    "cut image tokens; raise max_length or drop the row"
                )
            input_ids, labels = input_ids[: self.max_length], labels[: self.max_length]
            token_types = token_types[: self.max_length] if token_types is not None else None
        if not (labels != -100).any():
            raise ValueError(
                f"{name}: no assistant tokens left to train on (empty answer or cut by max_length)"
            )
        return EncodedSample(input_ids, labels, pixel_values, grid, token_types)

    def _split_image_tokens(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """LLaVA-style string content with literal "<image>" markers -> structured parts."""
        token = getattr(self.processor, "image_token", "<image>")
        out = []
        for m in messages:
            content = m.get("content")
            if isinstance(content, str) and token in content:
                parts: list[dict[str, Any]] = []
                for k, piece in enumerate(content.split(token)):
                    if k:
                        parts.append({"type": "image"})
                    piece = piece.strip("\n") if k else piece.rstrip("\n")
                    if piece:
                        parts.append({"type": "text", "text": piece})
                m = {**m, "content": parts}
            out.append(m)
        return out

    # -- a batch ------------------------------------------------------------------------------------
    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        samples = [self.encode(ex, i) for i, ex in enumerate(examples)]
        return self.collate_encoded(samples)

    def collate_encoded(self, samples: list[EncodedSample]) -> dict[str, torch.Tensor]:
        if self.packing:
            rows = [
                [samples[i] for i in b]
                for b in best_fit_decreasing([len(s) for s in samples], self.max_length)
            ]
        else:
            rows = [[s] for s in samples]
        return self._build(rows)

    def _build(self, rows: list[list[EncodedSample]]) -> dict[str, torch.Tensor]:
        lengths = [sum(len(s) for s in row) for row in rows]
        width = max(lengths)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        n = len(rows)
        input_ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((n, width), -100, dtype=torch.long)
        position_ids = torch.zeros((n, width), dtype=torch.long)
        attention_mask = torch.zeros((n, width), dtype=torch.long)
        seq_lens: list[int] = []
        pixel_values, grids = [], []
        token_types = (
            torch.zeros((n, width), dtype=torch.long) if rows[0][0].mm_token_type_ids is not None else None
        )
        for r, row in enumerate(rows):
            offset = 0
            for s in row:
                end = offset + len(s)
                input_ids[r, offset:end] = s.input_ids
                labels[r, offset:end] = s.labels
                position_ids[r, offset:end] = torch.arange(len(s))
                attention_mask[r, offset:end] = 1
                seq_lens.append(len(s))
                if s.pixel_values is not None:
                    pixel_values.append(s.pixel_values)
                if s.image_grid_thw is not None:
                    grids.append(s.image_grid_thw)
                if token_types is not None:
                    token_types[r, offset:end] = s.mm_token_type_ids
                offset = end
            if offset < width:  # the padding tail is a sequence of its own
                position_ids[r, offset:] = torch.arange(width - offset)
                seq_lens.append(width - offset)
        batch: dict[str, torch.Tensor] = {"input_ids": input_ids, "labels": labels}
        if pixel_values:
            batch["pixel_values"] = torch.cat(pixel_values, dim=0)
        if grids:
            batch["image_grid_thw"] = torch.cat(grids, dim=0)
        if token_types is not None:
            batch["mm_token_type_ids"] = token_types
        if self.packing:
            if self.rope_index is not None:
                position_ids = self._mrope_position_ids(rows, width, position_ids)
            batch["position_ids"] = position_ids
            cu = torch.zeros(len(seq_lens) + 1, dtype=torch.int32)
            cu[1:] = torch.cumsum(torch.tensor(seq_lens, dtype=torch.int32), 0)
            batch["cu_seq_lens_q"] = cu
            batch["cu_seq_lens_k"] = cu.clone()
            batch["max_length_q"] = max(seq_lens)
            batch["max_length_k"] = max(seq_lens)
            # With a KV cache, transformers skips the block-diagonal mask (it only builds it without a cache).
            batch["use_cache"] = False
            check_packing_attention(self.attn_implementation, batch)
        else:
            batch["attention_mask"] = attention_mask
        return batch

    def _mrope_position_ids(
        self, rows: list[list[EncodedSample]], width: int, text: torch.Tensor
    ) -> torch.Tensor:
        """(4, rows, width): text positions, then each sample's own M-RoPE positions."""
        mrope = torch.zeros((3, *text.shape), dtype=torch.long)
        for r, row in enumerate(rows):
            offset = 0
            for s in row:
                end = offset + len(s)
                types = (
                    s.mm_token_type_ids if s.mm_token_type_ids is not None else torch.zeros_like(s.input_ids)
                )
                positions, _ = self.rope_index(
                    s.input_ids[None], mm_token_type_ids=types[None], image_grid_thw=s.image_grid_thw
                )
                mrope[:, r, offset:end] = positions[:, 0]
                offset = end
            mrope[:, r, offset:] = text[r, offset:]  # the padding tail: plain positions
        return torch.cat([text[None], mrope], dim=0)
