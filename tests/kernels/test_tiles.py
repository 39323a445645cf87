"""The flat tile table: only real tiles, heaviest first, built without a host sync."""

from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode

from gmaivl.kernels import packed_attention, seqlens_to_cu
from gmaivl.kernels.tiles import TABLE_BLOCKS, tile_capacity, tile_table

LENS_Q = [5, 0, 300, 17, 1, 64, 129]
LENS_K = [9, 4, 300, 0, 1, 64, 100]


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _work(rows: int, cols: int, start: int, block: int, causal: bool, queries: bool) -> int:
    if not causal:
        return cols
    if queries:
        return max(0, min(cols, min(start + block, rows) + cols - rows))
    return max(0, cols - max(0, start - (rows - cols)))


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("queries", [True, False], ids=["query-tiles", "key-tiles"])
def test_table_lists_every_real_tile_once_heaviest_first(causal, queries):
    rows, cols = (LENS_Q, LENS_K) if queries else (LENS_K, LENS_Q)
    cu_rows, cu_cols = seqlens_to_cu(rows), seqlens_to_cu(cols)
    total = sum(rows) + 7  # trailing tokens that belong to no sequence
    table = tile_table(cu_rows, cu_cols, total, max(rows), causal, rows_are_queries=queries)
    assert table.dtype == torch.int32 and table.shape[0] == len(TABLE_BLOCKS) and table.shape[2] == 2
    for r, block in enumerate(TABLE_BLOCKS):
        expected = {(b, i) for b, n in enumerate(rows) for i in range(_cdiv(n, block))}
        entries = [tuple(e) for e in table[r].tolist()]
        real = [e for e in entries if e[0] >= 0]
        assert set(real) == expected and len(real) == len(expected)  # every real tile, once
        assert entries[: len(real)] == real  # real tiles first, then the (-1, 0) padding
        assert all(e == (-1, 0) for e in entries[len(real) :])
        # the grid bound computed from shapes covers them; zero-length sequences get no tile
        assert len(real) <= tile_capacity(total, len(rows), max(rows), block) <= table.shape[1]
        work = [_work(rows[b], cols[b], i * block, block, causal, queries) for b, i in real]
        assert work == sorted(work, reverse=True)


def test_causal_order_starts_with_the_longest_sequence_tail():
    table = tile_table(seqlens_to_cu(LENS_Q), seqlens_to_cu(LENS_Q), sum(LENS_Q), 300, causal=True)
    row = TABLE_BLOCKS.index(64)
    assert table[row, 0].tolist() == [2, 4]  # last 64-row block of the 300-token sequence
    keys = tile_table(seqlens_to_cu(LENS_Q), seqlens_to_cu(LENS_Q), sum(LENS_Q), 300, True, False)
    assert keys[row, 0].tolist() == [2, 0]  # its first key block is seen by every query


class _HostSyncSpy(TorchFunctionMode):
    """Records torch calls that would wait for the device (reading a value back to the host)."""

    SYNCING = {"item", "tolist", "__bool__", "__int__", "__index__", "__float__", "nonzero", "numpy", "cpu"}

    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        if name in self.SYNCING:
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


def test_table_is_built_without_reading_values_back():
    """Only tensor ops on cu_seqlens: no .item(), .tolist(), bool() or nonzero (each a GPU sync)."""
    cu = seqlens_to_cu(LENS_Q)
    with _HostSyncSpy() as spy:
        tile_table(cu, cu, sum(LENS_Q), max(LENS_Q), causal=True)
        tile_table(cu, cu, sum(LENS_Q), max(LENS_Q), causal=False, rows_are_queries=False)
    assert spy.calls == []
    # and the spy does see such calls
    with _HostSyncSpy() as spy:
        cu.max().item()
    assert spy.calls == ["item"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_no_host_sync_in_forward_and_backward_on_gpu():
    lens = [1000, 3, 2048, 517]
    cu = seqlens_to_cu(lens, "cuda")
    q, k, v = (torch.randn(sum(lens), h, 128, device="cuda", dtype=torch.bfloat16) for h in (8, 2, 2))
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    packed_attention(q, k, v, cu, cu, max(lens), max(lens)).sum().backward()  # autotune first
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = packed_attention(q, k, v, cu, cu, max(lens), max(lens))
        torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
    finally:
        torch.cuda.set_sync_debug_mode("default")
