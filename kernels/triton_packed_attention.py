"""Triton kernels for packed (varlen) attention: forward, backward preprocess, dK/dV(+dQ) and dQ.

Layout follows FlashAttention's varlen API: ``q`` is ``(total_q, H, D)``, ``k``/``v`` are
``(total_k, H_kv, D)`` and sequence ``b`` owns rows ``cu[b]:cu[b+1]``.

Grid: one 1-D program per (tile, head), where a tile is a real (sequence, row block) pair read
from a tile table built on the device from ``cu_seqlens`` (:mod:`gmaivl.kernels.tiles`), heaviest
tiles first. Program ``pid`` handles head ``pid % heads`` of tile ``pid // heads``; the grid is
an upper bound computable from the shapes, and programs past the real tile count read a ``-1``
sequence and exit. The table holds one row per candidate block size (16, 32, 64, 128), so the
autotuner may pick any of them.

Numerics (FlashAttention-2): scores are scaled by ``softmax_scale * log2(e)`` so the online
softmax uses ``exp2``; the running max is taken on the unscaled scores and scaled once per row,
so ``p = exp2(s * scale - m)`` is one FFMA per score. Statistics and accumulators are fp32
whatever the input dtype. The log-sum-exp is kept in those scaled log2 units (the Python wrapper
converts it to natural log for callers), ``+inf`` for a row that sees no key: its output is 0 and
its gradients are 0, as in flash-attn.

Causal masking is bottom-right aligned (flash-attn >= 2.1): query ``i`` of a sequence with
``seqlen_q`` queries and ``seqlen_k`` keys sees key ``j`` iff ``j <= i + seqlen_k - seqlen_q``.
Blocks entirely visible run without masks; only blocks that straddle the diagonal or the end of a
sequence pay for masking, and blocks entirely above the diagonal are never visited. A masked block
clamps hidden scores to -2^99 or lower (``_mask_scores``, ``_mask_scores_t`` for the dK/dV
kernel's transposed scores: two float instructions per score, no predicates) instead of selecting
-inf. The dK/dV kernel walks its diagonal query blocks whose rows all lie inside the sequence in a
loop of their own, without the row handling that only the last partial query block needs.

Offsets: a row index times a token stride can exceed 2^31 (one sequence of 524k tokens at
H * D = 4096), so the base of every block is computed in int64 once; only offsets inside a block
(at most ``BLOCK * stride``) stay int32.

Backward: the dK/dV kernel owns a key block and walks the query blocks of every query head of its
GQA group. With ``ATOMIC_DQ`` it also computes dQ = dS K for each (query, key) block pair and adds
it to an fp32 buffer with atomics: five matrix multiplies per tile, as FlashAttention-2, at the
cost of a summation order that varies from run to run. That product is taken transposed,
dQ^T = K^T dS^T (head dim x BLOCK_M), so its M dimension is the head dim: a 32-row query tile
(all that fits in registers at head dim 128) still lowers to Hopper warpgroup MMAs (``wgmma``;
``dS K`` would have M = 32, below wgmma's 64, and fall back to ``mma.sync``), and the atomics
add the transposed tile. Without it a second kernel owns a query
block and recomputes P and dP for dQ (seven multiplies, bit-reproducible).
"""

from __future__ import annotations

import triton
import triton.language as tl

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453
#: Block sizes the tile table has a row for (row r is block 16 << r).
TABLE_BLOCKS = (16, 32, 64, 128)
#: Hidden scores of masked blocks are clamped to -MASK_BIG / 2 or lower (2^99, ~6e29) instead of
#: -inf; exact in fp32. ``softmax_scale * log2(e) * MASK_BIG / 2`` must exceed the 126 that
#: flushes ``exp2`` to 0 (``softmax_scale >= 2^-90``, checked by the launcher).
MASK_BIG = tl.constexpr(2.0**100)


@triton.jit
def _load_tile(ptrs, row_mask, d_mask, ROWS_MASKED: tl.constexpr, EVEN_D: tl.constexpr):
    """Load a (rows, BLOCK_D) tile, masking only what can be out of range."""
    if ROWS_MASKED:
        if EVEN_D:
            return tl.load(ptrs, mask=row_mask[:, None], other=0.0)
        else:
            return tl.load(ptrs, mask=row_mask[:, None] & d_mask[None, :], other=0.0)
    else:
        if EVEN_D:
            return tl.load(ptrs)
        else:
            return tl.load(ptrs, mask=d_mask[None, :], other=0.0)


@triton.jit
def _rows_ptrs(base, start, offs0, offs_d, stride, LONG_OFFSETS: tl.constexpr):
    """Pointers to rows ``start + offs0`` of a sequence (``base`` is its row 0 of one head).

    LONG_OFFSETS (some row x stride of a tensor reaches 2^31): the block's first row is offset in
    int64 (a scalar) and only offsets inside the block stay int32. Otherwise all int32, which lets
    the compiler recompute offsets per block instead of keeping a hoisted 2-D offset tensor live
    (about 45 more registers for the d=128 forward on sm_90, compile report).
    """
    if LONG_OFFSETS:
        return base + tl.cast(start, tl.int64) * stride + (offs0[:, None] * stride + offs_d[None, :])
    else:
        return base + (start + offs0)[:, None] * stride + offs_d[None, :]


@triton.jit
def _query_block_key_ranges(
    m_start, seqlen_q, seqlen_k, diag, win, CAUSAL: tl.constexpr, WINDOW: tl.constexpr, BLOCK_M, BLOCK_N
):
    """Key ranges of a query block, multiples of BLOCK_N: (lo, full_lo, full_hi, hi).

    Row ``i`` sees keys ``i + diag - win <= j <= i + diag`` under the causal mask (``win`` huge
    without a window). [lo, hi) holds every key some row sees; [full_lo, full_hi) the keys every
    row sees (no mask needed there).
    """
    if CAUSAL:
        m_last = tl.minimum(m_start + BLOCK_M, seqlen_q) - 1
        hi = tl.maximum(tl.minimum(seqlen_k, m_last + 1 + diag), 0)
        full_hi = (tl.maximum(tl.minimum(seqlen_k, m_start + 1 + diag), 0) // BLOCK_N) * BLOCK_N
        if WINDOW:
            lo = (tl.maximum(m_start + diag - win, 0) // BLOCK_N) * BLOCK_N
            full_lo = ((tl.maximum(m_last + diag - win, 0) + BLOCK_N - 1) // BLOCK_N) * BLOCK_N
        else:
            lo = 0
            full_lo = 0
    else:
        hi = seqlen_k
        full_hi = (seqlen_k // BLOCK_N) * BLOCK_N
        lo = 0
        full_lo = 0
    return lo, full_lo, full_hi, hi


@triton.jit
def _mask_scores(
    qk,
    offs_n0,
    offs_m,
    start_n,
    seqlen_k,
    diag,
    win,
    CAUSAL: tl.constexpr,
    WINDOW: tl.constexpr,
    RUNNING_MAX: tl.constexpr,
):
    """Scores of a masked block with every hidden (row, key) pair pushed to ``-MASK_BIG``.

    Two float instructions per score and no predicates: a per-row bound ``b`` (the row's last
    visible key, relative to the block; at least -1 with RUNNING_MAX) gives the limit
    ``(b + 0.5 - j) * MASK_BIG``, +-2^99 or more (exact), one FFMA per score, and
    ``min(score, limit)`` (FMNMX) leaves a visible score as it is and sends a hidden one to
    -2^99 or lower. Compares and selects instead (an ISETP + FSEL per score) cost the same with
    Triton 3.9's ptxas (CUDA 13) but make Triton 3.6's (CUDA 12.8) pack the 64 live predicates
    into registers: 669 instead of 604 instructions per iteration (fwd_tma 128 x 128, d=128).

    Causal: key ``j`` is visible from row ``i`` iff ``j <= i + diag``, which for a row inside the
    sequence also keeps ``j < seqlen_k`` (``i + diag <= seqlen_k - 1``): no separate sequence-end
    test. Rows past the end of the sequence may see keys past it (zeros or copies of the last
    key) and are never stored.
    Bidirectional: only the sequence end. The caller keeps rows that see no key at all apart
    (their scores are all -MASK_BIG, not -inf).
    """
    BLOCK_N: tl.constexpr = offs_n0.shape[0]
    cols = offs_n0.to(tl.float32) * MASK_BIG
    if CAUSAL:
        # no upper clamp: a bound past 2^23 loses its last bits (every key of the block is visible
        # anyway) and one past 2^27 makes the limit +inf, which min() also leaves visible
        # RUNNING_MAX (forward): the bound is kept at -1 or more so that a row's hidden scores times
        # a softmax scale up to 2^16 stay finite in its running max (-inf there would give
        # -inf - -inf). The dQ kernel subtracts a finite or +inf lse instead: a bound far below
        # the block, even one that overflows to -inf, gives p = 0, so it saves the max per row
        last = offs_m + (diag - start_n)
        if RUNNING_MAX:
            last = tl.maximum(last, -1)
        qk = tl.minimum(qk, (last.to(tl.float32) * MASK_BIG + 0.5 * MASK_BIG)[:, None] - cols[None, :])
        if WINDOW:  # the band's lower edge: visible iff j >= i + diag - win
            first = tl.minimum(tl.maximum(offs_m + (diag - start_n) - win, -1), BLOCK_N)
            qk = tl.minimum(qk, cols[None, :] - ((first.to(tl.float32) - 0.5) * MASK_BIG)[:, None])
    else:
        last = tl.maximum(seqlen_k - 1 - start_n, -1)
        qk = tl.minimum(qk, (last.to(tl.float32) * MASK_BIG + 0.5 * MASK_BIG) - cols[None, :])
    return qk


@triton.jit
def _mask_scores_t(qk_t, query_term, key_term, start_m, n_start, diag, win, WINDOW: tl.constexpr):
    """_mask_scores (causal) for the dK/dV kernel's transposed scores: rows are keys ``n_start + j``,
    columns queries ``start_m + i``; key ``j`` is visible iff ``j <= i + start_m + diag - n_start``.

    The limit ``(i - j + D + 0.5) * MASK_BIG`` (``D = start_m + diag - n_start``) is split into the
    loop-invariant ``query_term = i * MASK_BIG`` and the per-iteration key-row term
    ``(D + 0.5) * MASK_BIG - key_term`` (``key_term = j * MASK_BIG``; a few instructions per key
    row, not per query column): one FADD and one FMNMX per score, no predicates. A bound far
    outside the block overflows to +-inf, which min() handles (no running max here to poison).
    Rows past the sequence end are left to the caller (lse = +inf).
    """
    d = (start_m + diag - n_start).to(tl.float32)
    qk_t = tl.minimum(qk_t, query_term[None, :] + (d * MASK_BIG + 0.5 * MASK_BIG - key_term)[:, None])
    if WINDOW:  # the band's lower edge: visible iff j >= i + D - win
        dw = (start_m + diag - n_start - win).to(tl.float32)
        qk_t = tl.minimum(qk_t, (key_term - dw * MASK_BIG + 0.5 * MASK_BIG)[:, None] - query_term[None, :])
    return qk_t


@triton.jit
def _table_row(BLOCK: tl.constexpr):
    if BLOCK == 16:
        return 0
    elif BLOCK == 32:
        return 1
    elif BLOCK == 64:
        return 2
    else:
        tl.static_assert(BLOCK == 128, "tile tables exist for blocks of 16, 32, 64 and 128 rows")
        return 3


@triton.jit
def _next_tile(Tiles, stride_tile_row, num_heads, BLOCK: tl.constexpr):
    """(sequence, block index, head) of this program; sequence -1 past the last real tile."""
    pid = tl.program_id(0)
    head = pid % num_heads
    entry = Tiles + _table_row(BLOCK) * stride_tile_row + (pid // num_heads) * 2
    return tl.load(entry), tl.load(entry + 1), head


@triton.jit
def _fwd_inner(
    acc,
    l_i,
    m_i,
    q,
    k_base,
    v_base,
    stride_kt,
    stride_vt,
    offs_m,
    offs_d,
    d_mask,
    seqlen_k,
    diag,
    win,
    qk_scale,
    lo,
    hi,
    MASKED: tl.constexpr,
    CAUSAL: tl.constexpr,
    WINDOW: tl.constexpr,
    BLOCK_N: tl.constexpr,
    EVEN_D: tl.constexpr,
    DOT_PREC: tl.constexpr,
    LONG_OFFSETS: tl.constexpr,
    USE_TMA: tl.constexpr,
):
    """k_base / v_base: the sequence's row 0 of one head, pointers or (USE_TMA) tensor descriptors."""
    offs_n0 = tl.arange(0, BLOCK_N)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + offs_n0
        n_mask = offs_n < seqlen_k
        if USE_TMA:  # bounds-checked bulk copies: rows past the sequence and columns past D are 0
            k = k_base.load([start_n, 0])
            v = v_base.load([start_n, 0])
        else:
            # masked blocks read rows past the sequence end as copies of its last row (no load
            # masks): their scores are hidden by _mask_scores, so their p (and V's weight) is 0
            rows = tl.minimum(offs_n0, seqlen_k - 1 - start_n) if MASKED else offs_n0
            k_ptrs = _rows_ptrs(k_base, start_n, rows, offs_d, stride_kt, LONG_OFFSETS)
            v_ptrs = _rows_ptrs(v_base, start_n, rows, offs_d, stride_vt, LONG_OFFSETS)
            k = _load_tile(k_ptrs, n_mask, d_mask, False, EVEN_D)
            v = _load_tile(v_ptrs, n_mask, d_mask, False, EVEN_D)
        qk = tl.dot(q, tl.trans(k), input_precision=DOT_PREC)
        if MASKED:
            # hidden scores become -2^99 or lower, not -inf: the running max stays finite (no
            # inf - inf guard); a row that sees no key of this block gets p = 1 for its hidden keys,
            # which the first visible key's alpha = 0 wipes out (rows that see no key at all are
            # told apart by index after the loops)
            qk = _mask_scores(qk, offs_n0, offs_m, start_n, seqlen_k, diag, win, CAUSAL, WINDOW, True)
        m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        # scale and max subtraction in one FFMA per score (qk_scale > 0 keeps the max the max)
        p = tl.math.exp2(qk * qk_scale - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=DOT_PREC)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def packed_attn_fwd_kernel(
    Q,
    K,
    V,
    Out,
    Lse,
    cu_seqlens_q,
    cu_seqlens_k,
    Tiles,
    stride_tile_row,
    num_heads,
    stride_qt,
    stride_qh,
    stride_kt,
    stride_kh,
    stride_vt,
    stride_vh,
    stride_ot,
    stride_oh,
    stride_lh,
    qk_scale,
    window_left,
    SEQ_BUCKET,
    HEAD_DIM: tl.constexpr,
    GROUP: tl.constexpr,
    CAUSAL: tl.constexpr,
    DOT_PREC: tl.constexpr,
    LONG_OFFSETS: tl.constexpr,
    WINDOW: tl.constexpr,
    USE_TMA: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """USE_TMA (Hopper+): Q, K, V tiles come through tensor descriptors bounded by the sequence
    (device-side ``tl.make_tensor_descriptor``; the launcher checks 16-byte alignment)."""
    seq, pid_m, head = _next_tile(Tiles, stride_tile_row, num_heads, BLOCK_M)
    if seq < 0:
        return
    q_start = tl.load(cu_seqlens_q + seq)
    seqlen_q = tl.load(cu_seqlens_q + seq + 1) - q_start
    m_start = pid_m * BLOCK_M
    k_start = tl.load(cu_seqlens_k + seq)
    seqlen_k = tl.load(cu_seqlens_k + seq + 1) - k_start
    kv_head = head // GROUP
    EVEN_D: tl.constexpr = BLOCK_D == HEAD_DIM

    offs_m0 = tl.arange(0, BLOCK_M)
    offs_m = m_start + offs_m0
    offs_d = tl.arange(0, BLOCK_D)
    m_mask = offs_m < seqlen_q
    d_mask = offs_d < HEAD_DIM

    k_base = K + k_start.to(tl.int64) * stride_kt + kv_head * stride_kh
    v_base = V + k_start.to(tl.int64) * stride_vt + kv_head * stride_vh
    if USE_TMA:
        q_desc = tl.make_tensor_descriptor(
            Q + q_start.to(tl.int64) * stride_qt + head * stride_qh,
            shape=[seqlen_q, HEAD_DIM], strides=[stride_qt, 1], block_shape=[BLOCK_M, BLOCK_D],
        )  # fmt: skip
        q = q_desc.load([m_start, 0])
        k_base = tl.make_tensor_descriptor(
            k_base, shape=[seqlen_k, HEAD_DIM], strides=[stride_kt, 1], block_shape=[BLOCK_N, BLOCK_D]
        )
        v_base = tl.make_tensor_descriptor(
            v_base, shape=[seqlen_k, HEAD_DIM], strides=[stride_vt, 1], block_shape=[BLOCK_N, BLOCK_D]
        )
    else:
        q_row = (q_start + m_start).to(tl.int64)
        q_ptrs = Q + q_row * stride_qt + head * stride_qh + offs_m0[:, None] * stride_qt + offs_d[None, :]
        q = _load_tile(q_ptrs, m_mask, d_mask, True, EVEN_D)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    diag = seqlen_k - seqlen_q
    lo, full_lo, full_hi, hi = _query_block_key_ranges(
        m_start, seqlen_q, seqlen_k, diag, window_left, CAUSAL, WINDOW, BLOCK_M, BLOCK_N
    )

    # keys the window's lower edge cuts for some rows (masked), keys every row sees (no masks), then
    # keys the diagonal or the sequence end cuts (masked)
    if WINDOW:
        acc, l_i, m_i = _fwd_inner(
            acc, l_i, m_i, q, k_base, v_base, stride_kt, stride_vt, offs_m, offs_d, d_mask, seqlen_k, diag,
            window_left, qk_scale, lo, tl.minimum(full_lo, hi), True, CAUSAL, WINDOW, BLOCK_N, EVEN_D,
            DOT_PREC, LONG_OFFSETS, USE_TMA,
        )  # fmt: skip
    acc, l_i, m_i = _fwd_inner(
        acc, l_i, m_i, q, k_base, v_base, stride_kt, stride_vt, offs_m, offs_d, d_mask, seqlen_k, diag,
        window_left, qk_scale, full_lo, full_hi, False, CAUSAL, WINDOW, BLOCK_N, EVEN_D, DOT_PREC, LONG_OFFSETS,
        USE_TMA,
    )  # fmt: skip
    acc, l_i, m_i = _fwd_inner(
        acc, l_i, m_i, q, k_base, v_base, stride_kt, stride_vt, offs_m, offs_d, d_mask, seqlen_k, diag,
        window_left, qk_scale, tl.maximum(full_lo, full_hi), hi, True, CAUSAL, WINDOW, BLOCK_N, EVEN_D, DOT_PREC,
        LONG_OFFSETS, USE_TMA,
    )  # fmt: skip

    empty = l_i == 0.0
    if CAUSAL:  # rows before the first key (more queries than keys) see none; their masked scores
        empty = empty | (offs_m + diag < 0)  # gave them l > 0
    l_safe = tl.where(empty, 1.0, l_i)
    acc = tl.where(empty[:, None], 0.0, acc / l_safe[:, None])
    lse = tl.where(empty, float("inf"), m_i + tl.math.log2(l_safe))

    o_row = (q_start + m_start).to(tl.int64)
    o_ptrs = Out + o_row * stride_ot + head * stride_oh + offs_m0[:, None] * stride_ot + offs_d[None, :]
    tl.store(o_ptrs, acc.to(Out.dtype.element_ty), mask=m_mask[:, None] & d_mask[None, :])
    tl.store(Lse + head.to(tl.int64) * stride_lh + q_start + offs_m, lse, mask=m_mask)


@triton.jit
def packed_attn_bwd_preprocess_kernel(
    Out,
    DO,
    Delta,
    stride_ot,
    stride_oh,
    stride_dot,
    stride_doh,
    stride_dh,
    total_q,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    """delta[h, i] = sum_d dO[i, h, d] * O[i, h, d], in fp32."""
    pid_m = tl.program_id(0)
    head = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_m[:, None] < total_q) & (offs_d[None, :] < HEAD_DIM)
    rows = offs_m.to(tl.int64)[:, None]
    o = tl.load(Out + rows * stride_ot + head * stride_oh + offs_d[None, :], mask=mask, other=0.0)
    do = tl.load(DO + rows * stride_dot + head * stride_doh + offs_d[None, :], mask=mask, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(Delta + head.to(tl.int64) * stride_dh + offs_m, delta, mask=offs_m < total_q)


@triton.jit
def _bwd_dkdv_inner(
    dk,
    dv,
    k,
    v,
    q_base,
    do_base,
    dq_base,
    lse_base,
    delta_base,
    stride_qt,
    stride_dot,
    stride_dqt,
    n_start,
    offs_d,
    d_mask,
    col_bias,
    seqlen_q,
    diag,
    win,
    qk_scale,
    lo,
    hi,
    MASKED: tl.constexpr,
    PAST_END: tl.constexpr,
    CAUSAL: tl.constexpr,
    WINDOW: tl.constexpr,
    ATOMIC_DQ: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    EVEN_D: tl.constexpr,
    DOT_PREC: tl.constexpr,
    LONG_OFFSETS: tl.constexpr,
    USE_TMA: tl.constexpr,
):
    """Walk query blocks [lo, hi). MASKED: (causal) the blocks straddle the diagonal or a window
    edge; PAST_END: rows may pass seqlen_q (the last partial query block).

    q_base / do_base: the sequence's row 0 of one head, pointers or (USE_TMA) tensor descriptors.
    """
    offs_m0 = tl.arange(0, BLOCK_M)
    # masked blocks: key rows' and query columns' offsets in their blocks times MASK_BIG
    # (loop-invariant; _mask_scores_t)
    key_term = tl.arange(0, BLOCK_N).to(tl.float32) * MASK_BIG
    query_term = offs_m0.to(tl.float32) * MASK_BIG
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + offs_m0
        # rows past the sequence end read its last row (no load masks or predicated atomics);
        # their lse is set to +inf below, so their p, dS and dQ share are exactly 0
        rows = tl.minimum(offs_m0, seqlen_q - 1 - start_m) if PAST_END else offs_m0
        if USE_TMA:  # bounds-checked bulk copies: rows past the sequence and columns past D are 0
            q = q_base.load([start_m, 0])
            do = do_base.load([start_m, 0])
        else:
            q_ptrs = _rows_ptrs(q_base, start_m, rows, offs_d, stride_qt, LONG_OFFSETS)
            do_ptrs = _rows_ptrs(do_base, start_m, rows, offs_d, stride_dot, LONG_OFFSETS)
            q = _load_tile(q_ptrs, offs_m0, d_mask, False, EVEN_D)
            do = _load_tile(do_ptrs, offs_m0, d_mask, False, EVEN_D)
        # LSE and delta rows are padded past the last token (the launchers): rows past the end of
        # the sequence read the next sequence's or the padding's finite values
        lse = tl.load(lse_base + offs_m)
        delta = tl.load(delta_base + offs_m)
        if PAST_END:
            lse = tl.where(offs_m0 < seqlen_q - start_m, lse, float("inf"))
        qk_t = tl.dot(k, tl.trans(q), input_precision=DOT_PREC)
        if MASKED and CAUSAL:
            qk_t = _mask_scores_t(qk_t, query_term, key_term, start_m, n_start, diag, win, WINDOW)
        if CAUSAL:  # keys past the sequence end are hidden by the causal bound (see below)
            p_t = tl.math.exp2(qk_t * qk_scale - lse[None, :])
        else:
            p_t = tl.math.exp2(qk_t * qk_scale + col_bias[:, None] - lse[None, :])
        dv = tl.dot(p_t.to(do.dtype), do, dv, input_precision=DOT_PREC)
        dp_t = tl.dot(v, tl.trans(do), input_precision=DOT_PREC)
        ds_t = (p_t * (dp_t - delta[None, :])).to(q.dtype)
        dk = tl.dot(ds_t, q, dk, input_precision=DOT_PREC)
        if ATOMIC_DQ:
            # the fifth multiply: this key block's share of dQ, summed across key blocks in fp32
            # (rows past the end add exact zeros to the last row)
            dq_t = tl.dot(tl.trans(k), ds_t, input_precision=DOT_PREC)
            dq_ptrs = tl.trans(_rows_ptrs(dq_base, start_m, rows, offs_d, stride_dqt, LONG_OFFSETS))
            if EVEN_D:
                tl.atomic_add(dq_ptrs, dq_t, sem="relaxed")
            else:
                tl.atomic_add(dq_ptrs, dq_t, mask=d_mask[:, None], sem="relaxed")
    return dk, dv


@triton.jit
def packed_attn_bwd_dkdv_kernel(
    Q,
    K,
    V,
    DO,
    Lse,
    Delta,
    DK,
    DV,
    DQacc,
    cu_seqlens_q,
    cu_seqlens_k,
    Tiles,
    stride_tile_row,
    num_heads,
    stride_qt,
    stride_qh,
    stride_kt,
    stride_kh,
    stride_vt,
    stride_vh,
    stride_dot,
    stride_doh,
    stride_dkt,
    stride_dkh,
    stride_dvt,
    stride_dvh,
    stride_dqt,
    stride_dqh,
    stride_lh,
    sm_scale,
    qk_scale,
    window_left,
    SEQ_BUCKET,
    HEAD_DIM: tl.constexpr,
    GROUP: tl.constexpr,
    CAUSAL: tl.constexpr,
    DOT_PREC: tl.constexpr,
    LONG_OFFSETS: tl.constexpr,
    WINDOW: tl.constexpr,
    ATOMIC_DQ: tl.constexpr,
    USE_TMA: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """dK, dV for one key block of one key/value head (and, with ATOMIC_DQ, dQ into fp32 ``DQacc``).

    ``num_heads`` is the number of key/value heads here. USE_TMA (Hopper+): the K/V block and the
    Q/dO blocks come through tensor descriptors bounded by the sequence, as in the forward; the
    atomic dQ adds, LSE/delta loads and stores stay pointer accesses.
    """
    seq, pid_n, kv_head = _next_tile(Tiles, stride_tile_row, num_heads, BLOCK_N)
    if seq < 0:
        return
    k_start = tl.load(cu_seqlens_k + seq)
    seqlen_k = tl.load(cu_seqlens_k + seq + 1) - k_start
    n_start = pid_n * BLOCK_N
    q_start = tl.load(cu_seqlens_q + seq)
    seqlen_q = tl.load(cu_seqlens_q + seq + 1) - q_start
    EVEN_D: tl.constexpr = BLOCK_D == HEAD_DIM

    offs_n0 = tl.arange(0, BLOCK_N)
    offs_n = n_start + offs_n0
    offs_d = tl.arange(0, BLOCK_D)
    n_mask = offs_n < seqlen_k
    d_mask = offs_d < HEAD_DIM
    if USE_TMA:
        k = tl.make_tensor_descriptor(
            K + k_start.to(tl.int64) * stride_kt + kv_head * stride_kh,
            shape=[seqlen_k, HEAD_DIM], strides=[stride_kt, 1], block_shape=[BLOCK_N, BLOCK_D],
        ).load([n_start, 0])  # fmt: skip
        v = tl.make_tensor_descriptor(
            V + k_start.to(tl.int64) * stride_vt + kv_head * stride_vh,
            shape=[seqlen_k, HEAD_DIM], strides=[stride_vt, 1], block_shape=[BLOCK_N, BLOCK_D],
        ).load([n_start, 0])  # fmt: skip
    else:
        k_row = (k_start + n_start).to(tl.int64)
        k = _load_tile(
            K + k_row * stride_kt + kv_head * stride_kh + offs_n0[:, None] * stride_kt + offs_d[None, :],
            n_mask, d_mask, True, EVEN_D,
        )  # fmt: skip
        v = _load_tile(
            V + k_row * stride_vt + kv_head * stride_vh + offs_n0[:, None] * stride_vt + offs_d[None, :],
            n_mask, d_mask, True, EVEN_D,
        )  # fmt: skip
    # keys past the end load as zeros; -inf keeps their probabilities exactly 0
    col_bias = tl.where(n_mask, 0.0, float("-inf"))
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)

    diag = seqlen_k - seqlen_q
    # query blocks fully inside the sequence run without row masks; the last partial one is masked
    full_end = (seqlen_q // BLOCK_M) * BLOCK_M
    q_end = seqlen_q
    if CAUSAL:
        # first query that sees key n_start, and first query block that sees the whole key block
        lo = (tl.maximum(n_start - diag, 0) // BLOCK_M) * BLOCK_M
        mid = ((tl.maximum(n_start + BLOCK_N - 1 - diag, 0) + BLOCK_M - 1) // BLOCK_M) * BLOCK_M
        # window: query i sees key j only while i <= j - diag + win
        n_last = tl.minimum(n_start + BLOCK_N, seqlen_k) - 1
        q_end = tl.maximum(tl.minimum(seqlen_q, n_last - diag + window_left + 1), 0)
        full_end = tl.minimum(
            full_end, (tl.maximum(n_start - diag + window_left + 1, 0) // BLOCK_M) * BLOCK_M
        )
    else:
        lo = 0
        mid = 0
    # [lo, diag_end): diagonal (or window-edge) blocks whose rows all lie inside the sequence, masked
    # by the causal bound alone; [mid, full_end): unmasked; [tail, q_end): the rest (the last partial
    # query block, and blocks past full_end that a window edge or the diagonal cuts), which also
    # hides rows past the sequence end
    diag_end = tl.minimum(tl.minimum(mid, q_end), full_end)
    tail = tl.maximum(lo, full_end)

    q_row0 = q_start.to(tl.int64)
    for g in range(GROUP):
        head = kv_head * GROUP + g
        q_base = Q + q_row0 * stride_qt + head * stride_qh
        do_base = DO + q_row0 * stride_dot + head * stride_doh
        if USE_TMA:
            q_base = tl.make_tensor_descriptor(
                q_base, shape=[seqlen_q, HEAD_DIM], strides=[stride_qt, 1], block_shape=[BLOCK_M, BLOCK_D]
            )
            do_base = tl.make_tensor_descriptor(
                do_base, shape=[seqlen_q, HEAD_DIM], strides=[stride_dot, 1], block_shape=[BLOCK_M, BLOCK_D]
            )
        dq_base = DQacc + q_row0 * stride_dqt + head * stride_dqh
        lse_base = Lse + head.to(tl.int64) * stride_lh + q_start
        delta_base = Delta + head.to(tl.int64) * stride_lh + q_start
        dk, dv = _bwd_dkdv_inner(
            dk, dv, k, v, q_base, do_base, dq_base, lse_base, delta_base, stride_qt, stride_dot, stride_dqt,
            n_start, offs_d, d_mask, col_bias, seqlen_q, diag, window_left, qk_scale, lo, diag_end,
            True, False, CAUSAL, WINDOW, ATOMIC_DQ, BLOCK_M, BLOCK_N, EVEN_D, DOT_PREC, LONG_OFFSETS, USE_TMA,
        )  # fmt: skip
        dk, dv = _bwd_dkdv_inner(
            dk, dv, k, v, q_base, do_base, dq_base, lse_base, delta_base, stride_qt, stride_dot, stride_dqt,
            n_start, offs_d, d_mask, col_bias, seqlen_q, diag, window_left, qk_scale, mid, full_end,
            False, False, CAUSAL, WINDOW, ATOMIC_DQ, BLOCK_M, BLOCK_N, EVEN_D, DOT_PREC, LONG_OFFSETS, USE_TMA,
        )  # fmt: skip
        dk, dv = _bwd_dkdv_inner(
            dk, dv, k, v, q_base, do_base, dq_base, lse_base, delta_base, stride_qt, stride_dot, stride_dqt,
            n_start, offs_d, d_mask, col_bias, seqlen_q, diag, window_left, qk_scale, tail, q_end,
            True, True, CAUSAL, WINDOW, ATOMIC_DQ, BLOCK_M, BLOCK_N, EVEN_D, DOT_PREC, LONG_OFFSETS, USE_TMA,
        )  # fmt: skip

    dk = dk * sm_scale
    out_mask = n_mask[:, None] & d_mask[None, :]
    dk_ptrs = DK + (k_start + n_start).to(tl.int64) * stride_dkt + kv_head * stride_dkh
    dv_ptrs = DV + (k_start + n_start).to(tl.int64) * stride_dvt + kv_head * stride_dvh
    tl.store(
        dk_ptrs + offs_n0[:, None] * stride_dkt + offs_d[None, :], dk.to(DK.dtype.element_ty), mask=out_mask
    )
    tl.store(
        dv_ptrs + offs_n0[:, None] * stride_dvt + offs_d[None, :], dv.to(DV.dtype.element_ty), mask=out_mask
    )


@triton.jit
def _bwd_dq_inner(
    dq,
    q,
    do,
    lse,
    delta,
    k_base,
    v_base,
    stride_kt,
    stride_vt,
    offs_m,
    offs_d,
    d_mask,
    seqlen_k,
    diag,
    win,
    qk_scale,
    lo,
    hi,
    MASKED: tl.constexpr,
    CAUSAL: tl.constexpr,
    WINDOW: tl.constexpr,
    BLOCK_N: tl.constexpr,
    EVEN_D: tl.constexpr,
    DOT_PREC: tl.constexpr,
    LONG_OFFSETS: tl.constexpr,
    USE_TMA: tl.constexpr,
):
    """k_base / v_base: the sequence's row 0 of one head, pointers or (USE_TMA) tensor descriptors."""
    offs_n0 = tl.arange(0, BLOCK_N)
    for start_n in range(lo, hi, BLOCK_N):
        if USE_TMA:
            k = k_base.load([start_n, 0])
            v = v_base.load([start_n, 0])
        else:
            # as the forward: keys past the sequence end read its last key (hidden by _mask_scores,
            # so p and dS are 0 there) instead of masked loads
            rows = tl.minimum(offs_n0, seqlen_k - 1 - start_n) if MASKED else offs_n0
            k_ptrs = _rows_ptrs(k_base, start_n, rows, offs_d, stride_kt, LONG_OFFSETS)
            v_ptrs = _rows_ptrs(v_base, start_n, rows, offs_d, stride_vt, LONG_OFFSETS)
            k = _load_tile(k_ptrs, offs_n0, d_mask, False, EVEN_D)
            v = _load_tile(v_ptrs, offs_n0, d_mask, False, EVEN_D)
        qk = tl.dot(q, tl.trans(k), input_precision=DOT_PREC)
        if MASKED:  # hidden scores clamped to -2^99 or lower give p = 0 (rows' lse is finite or +inf)
            qk = _mask_scores(qk, offs_n0, offs_m, start_n, seqlen_k, diag, win, CAUSAL, WINDOW, False)
        p = tl.math.exp2(qk * qk_scale - lse[:, None])
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PREC)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, dq, input_precision=DOT_PREC)
    return dq


@triton.jit
def packed_attn_bwd_dq_kernel(
    Q,
    K,
    V,
    DO,
    Lse,
    Delta,
    DQ,
    cu_seqlens_q,
    cu_seqlens_k,
    Tiles,
    stride_tile_row,
    num_heads,
    stride_qt,
    stride_qh,
    stride_kt,
    stride_kh,
    stride_vt,
    stride_vh,
    stride_dot,
    stride_doh,
    stride_dqt,
    stride_dqh,
    stride_lh,
    sm_scale,
    qk_scale,
    window_left,
    SEQ_BUCKET,
    HEAD_DIM: tl.constexpr,
    GROUP: tl.constexpr,
    CAUSAL: tl.constexpr,
    DOT_PREC: tl.constexpr,
    LONG_OFFSETS: tl.constexpr,
    WINDOW: tl.constexpr,
    USE_TMA: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """dQ for one query block of one head (``deterministic=True``). USE_TMA (Hopper+): Q, dO, K
    and V come through tensor descriptors bounded by the sequence, as in the forward."""
    seq, pid_m, head = _next_tile(Tiles, stride_tile_row, num_heads, BLOCK_M)
    if seq < 0:
        return
    q_start = tl.load(cu_seqlens_q + seq)
    seqlen_q = tl.load(cu_seqlens_q + seq + 1) - q_start
    m_start = pid_m * BLOCK_M
    k_start = tl.load(cu_seqlens_k + seq)
    seqlen_k = tl.load(cu_seqlens_k + seq + 1) - k_start
    kv_head = head // GROUP
    EVEN_D: tl.constexpr = BLOCK_D == HEAD_DIM

    offs_m0 = tl.arange(0, BLOCK_M)
    offs_m = m_start + offs_m0
    offs_d = tl.arange(0, BLOCK_D)
    m_mask = offs_m < seqlen_q
    d_mask = offs_d < HEAD_DIM
    row0 = (q_start + m_start).to(tl.int64)
    if USE_TMA:
        q = tl.make_tensor_descriptor(
            Q + q_start.to(tl.int64) * stride_qt + head * stride_qh,
            shape=[seqlen_q, HEAD_DIM], strides=[stride_qt, 1], block_shape=[BLOCK_M, BLOCK_D],
        ).load([m_start, 0])  # fmt: skip
        do = tl.make_tensor_descriptor(
            DO + q_start.to(tl.int64) * stride_dot + head * stride_doh,
            shape=[seqlen_q, HEAD_DIM], strides=[stride_dot, 1], block_shape=[BLOCK_M, BLOCK_D],
        ).load([m_start, 0])  # fmt: skip
    else:
        q = _load_tile(
            Q + row0 * stride_qt + head * stride_qh + offs_m0[:, None] * stride_qt + offs_d[None, :],
            m_mask, d_mask, True, EVEN_D,
        )  # fmt: skip
        do = _load_tile(
            DO + row0 * stride_dot + head * stride_doh + offs_m0[:, None] * stride_dot + offs_d[None, :],
            m_mask, d_mask, True, EVEN_D,
        )  # fmt: skip
    lse_base = Lse + head.to(tl.int64) * stride_lh + q_start
    lse = tl.load(lse_base + offs_m, mask=m_mask, other=float("inf"))
    delta = tl.load(Delta + head.to(tl.int64) * stride_lh + q_start + offs_m, mask=m_mask, other=0.0)
    k_base = K + k_start.to(tl.int64) * stride_kt + kv_head * stride_kh
    v_base = V + k_start.to(tl.int64) * stride_vt + kv_head * stride_vh
    if USE_TMA:
        k_base = tl.make_tensor_descriptor(
            k_base, shape=[seqlen_k, HEAD_DIM], strides=[stride_kt, 1], block_shape=[BLOCK_N, BLOCK_D]
        )
        v_base = tl.make_tensor_descriptor(
            v_base, shape=[seqlen_k, HEAD_DIM], strides=[stride_vt, 1], block_shape=[BLOCK_N, BLOCK_D]
        )
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    diag = seqlen_k - seqlen_q
    lo, full_lo, full_hi, hi = _query_block_key_ranges(
        m_start, seqlen_q, seqlen_k, diag, window_left, CAUSAL, WINDOW, BLOCK_M, BLOCK_N
    )

    if WINDOW:
        dq = _bwd_dq_inner(
            dq, q, do, lse, delta, k_base, v_base, stride_kt, stride_vt, offs_m, offs_d, d_mask, seqlen_k,
            diag, window_left, qk_scale, lo, tl.minimum(full_lo, hi), True, CAUSAL, WINDOW, BLOCK_N, EVEN_D,
            DOT_PREC, LONG_OFFSETS, USE_TMA,
        )  # fmt: skip
    dq = _bwd_dq_inner(
        dq, q, do, lse, delta, k_base, v_base, stride_kt, stride_vt, offs_m, offs_d, d_mask, seqlen_k, diag,
        window_left, qk_scale, full_lo, full_hi, False, CAUSAL, WINDOW, BLOCK_N, EVEN_D, DOT_PREC, LONG_OFFSETS,
        USE_TMA,
    )  # fmt: skip
    dq = _bwd_dq_inner(
        dq, q, do, lse, delta, k_base, v_base, stride_kt, stride_vt, offs_m, offs_d, d_mask, seqlen_k, diag,
        window_left, qk_scale, tl.maximum(full_lo, full_hi), hi, True, CAUSAL, WINDOW, BLOCK_N, EVEN_D, DOT_PREC,
        LONG_OFFSETS, USE_TMA,
    )  # fmt: skip

    dq = dq * sm_scale
    dq_ptrs = DQ + row0 * stride_dqt + head * stride_dqh + offs_m0[:, None] * stride_dqt + offs_d[None, :]
    tl.store(dq_ptrs, dq.to(DQ.dtype.element_ty), mask=m_mask[:, None] & d_mask[None, :])
