"""The flat list of real (sequence, row block) tiles the kernels run over, built on the device.

A padded grid of ``cdiv(max_seqlen, BLOCK) x batch x heads`` programs wastes most of its programs
on a mixed pack (every short sequence gets as many programs as the longest). Instead every kernel
reads its tile from a table holding only the real tiles, heaviest first, so the longest causal
tiles start early and the short ones fill the tail of the wave.

The table is built with a handful of torch ops on ``cu_seqlens`` (no ``.item()``, no host
synchronisation) for every block size in :data:`TABLE_BLOCKS`, so whichever tile the autotuner
picks finds its row. The launch grid is an upper bound on the number of real tiles that needs
only shapes and ``max_seqlen`` (:func:`tile_capacity`); table entries past the real tiles hold
sequence ``-1`` and their programs exit at once.
"""

from __future__ import annotations

import torch

from .triton_packed_attention import TABLE_BLOCKS

__all__ = ["TABLE_BLOCKS", "tile_capacity", "tile_table"]


def tile_capacity(total_rows: int, num_seqs: int, max_seqlen: int, block: int) -> int:
    """Upper bound on the real tiles of ``block`` rows: sum(cdiv(len_i, block)) <= both bounds."""
    return min(-(-total_rows // block) + num_seqs, num_seqs * -(-max_seqlen // block))


def tile_table(
    cu_rows: torch.Tensor,
    cu_cols: torch.Tensor,
    total_rows: int,
    max_seqlen: int,
    causal: bool,
    rows_are_queries: bool = True,
) -> torch.Tensor:
    """Tiles of every sequence's rows (queries, or keys when ``rows_are_queries`` is False).

    Returns int32 ``(len(TABLE_BLOCKS), capacity, 2)``: row ``r`` lists ``(sequence, block index)``
    pairs for blocks of ``TABLE_BLOCKS[r]`` rows, sorted by decreasing work (the number of
    columns a tile visits: keys for a query tile, queries for a key tile, under the bottom-right
    causal mask), then ``(-1, 0)`` to the end. ``total_rows`` (the row count of the packed
    tensor, a shape) and ``max_seqlen`` bound the number of tiles without a sync.
    """
    device = cu_rows.device
    num_seqs = cu_rows.numel() - 1
    lens = (cu_rows[1:] - cu_rows[:-1]).long()
    other = (cu_cols[1:] - cu_cols[:-1]).long()
    blocks = 16 << torch.arange(len(TABLE_BLOCKS), device=device)[:, None]  # (S, 1), no host copy
    per_seq = (lens[None, :] + blocks - 1) // blocks  # (S, B) tiles of each sequence
    ends = per_seq.cumsum(1)
    capacity = max(1, tile_capacity(total_rows, num_seqs, max_seqlen, TABLE_BLOCKS[0]))
    idx = torch.arange(capacity, device=device).expand(len(TABLE_BLOCKS), capacity).contiguous()
    seq = torch.searchsorted(ends, idx, right=True)  # (S, cap), == num_seqs past the last tile
    valid = seq < num_seqs
    seq_c = seq.clamp(max=max(num_seqs - 1, 0))
    block_idx = idx - (ends.gather(1, seq_c) - per_seq.gather(1, seq_c))
    start = block_idx * blocks
    n_rows, n_cols = lens[seq_c], other[seq_c]
    if not causal:
        work = n_cols
    elif rows_are_queries:  # keys < min(row end, seqlen_q) + seqlen_k - seqlen_q
        work = torch.minimum(n_cols, torch.minimum(start + blocks, n_rows) + n_cols - n_rows)
    else:  # queries >= key start - (seqlen_k - seqlen_q)
        work = n_cols - (start - (n_rows - n_cols)).clamp(min=0)
    work = torch.where(valid, work.clamp(min=0), -1)
    order = torch.argsort(work, dim=1, descending=True, stable=True)
    seq = torch.where(valid, seq, -1).gather(1, order)
    block_idx = torch.where(valid, block_idx, 0).gather(1, order)
    return torch.stack([seq, block_idx], dim=-1).to(torch.int32).contiguous()
